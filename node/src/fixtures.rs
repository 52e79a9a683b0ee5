//! Format fixtures of the JSON bodies nodes send each other (relay lines, forwarded
//! tracker events and searches, Redis channel messages), one sample each, as a release
//! wrote them (`tests/fixtures/formats/<release>/`). The postcard formats have their
//! fixtures in shoal-raft; the rule for both is in `docs/formats.md`.
//!
//! Every checked-in fixture must parse with this build, and this build must write the
//! same sample as those bytes. `SHOAL_WRITE_FIXTURES=1 cargo test -p shoal-node fixtures`
//! writes the missing ones into this release's directory and never overwrites one.

use std::path::Path;

use shoal_storage::fixtures::{self, Sample};

use crate::fabric::redis_feed::Message;
use crate::fabric::relay::Frame;
use crate::fabric::TrackerEvent;
use crate::jobs::SearchParams;

fn samples() -> Vec<Sample> {
    vec![
        // The owner's relay stream, one line per event (`/internal/searches/{id}/stream`).
        fixtures::json::<Frame>(
            "relay-frame/progress",
            r#"{"seq":3,"kind":"progress","data":{"uf":"SP","page":2,"pages":4,"records":50}}"#,
        ),
        fixtures::json::<Frame>(
            "relay-frame/part-completed",
            r#"{"seq":5,"kind":"part_completed","data":{"uf":"SP","pages":4,"records":180,"completed_parts":1,"total_parts":2}}"#,
        ),
        fixtures::json::<Frame>(
            "relay-frame/completed",
            r#"{"seq":9,"kind":"completed","data":{"status":"completed","result":{"total_records":180,"download":"/api/searches/x/download"},"error":null}}"#,
        ),
        fixtures::json::<Frame>(
            "relay-frame/failed",
            r#"{"seq":9,"kind":"failed","data":{"status":"failed","result":null,"error":"source unreachable"}}"#,
        ),
        fixtures::json::<Frame>(
            "relay-frame/cancelled",
            r#"{"seq":4,"kind":"cancelled","data":{"status":"cancelled","result":null,"error":null}}"#,
        ),
        // A tracker event forwarded to the tracker's owner.
        fixtures::json::<TrackerEvent>(
            "tracker-event/progress",
            r#"{"type":"progress","data":{"done":3}}"#,
        ),
        // A search started on another node whose queue had room.
        fixtures::json::<SearchParams>(
            "search-params/search",
            r#"{"ufs":["SP","RJ"],"date_from":"2026-01-01","date_to":"2026-01-31","keywords":["merenda"],"source":"sample"}"#,
        ),
        // An event on a Redis channel (compatibility mode), which every node reads.
        fixtures::json::<Message>(
            "redis-message/progress",
            r#"{"id":"5f0c8a3e","attempt":1,"seq":3,"event":"progress","data":{"page":2}}"#,
        ),
    ]
}

#[test]
fn every_release_fixture_parses_and_this_build_writes_it_again() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats");
    fixtures::check_releases(&dir, env!("CARGO_PKG_VERSION"), "json", &samples());
}
