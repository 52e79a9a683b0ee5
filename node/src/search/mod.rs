//! What a search is, apart from how it runs: its validated parameters and the notices it
//! finds. A leaf: the jobs that run searches and the reports that list their notices
//! both use it, and neither uses the other for it.

mod notice;
mod params;

pub use notice::{fold, matches, Notice};
pub use params::{InvalidSearch, SearchParams, SearchRequest, UF_CODES};
