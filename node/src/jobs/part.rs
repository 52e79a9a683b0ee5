//! [`PartJob`]: one UF of one search, run by a worker: it reads the source page by page,
//! publishes progress, and records its completion through the store.

use std::sync::Arc;

use serde_json::json;
use shoal_raft::ProgressUpdate;
use tokio::sync::watch;

use super::{sample, Sources};
use crate::search::{matches, Notice};
use crate::sse::{EventKind, Topic};
use crate::store::{patiently, Store, StoreError};

/// How one part ended.
pub(super) enum PartOutcome {
    Done { uf: String, notices: Vec<Notice> },
    Failed(String),
    Cancelled,
}

/// One UF of one search.
pub(super) struct PartJob {
    pub(super) store: Store,
    pub(super) topic: Arc<Topic>,
    pub(super) id: String,
    pub(super) uf: String,
    pub(super) first_day: i64,
    pub(super) last_day: i64,
    pub(super) keywords: Vec<String>,
    pub(super) source: String,
    pub(super) sources: Sources,
    pub(super) cancelled: watch::Receiver<bool>,
}

impl PartJob {
    /// Keeps the matching notices of a page and publishes the progress.
    async fn take_page(
        &self,
        notices: Vec<Notice>,
        page: usize,
        pages: usize,
        found: &mut Vec<Notice>,
    ) {
        found.extend(notices.into_iter().filter(|notice| matches(notice, &self.keywords)));
        let data = json!({ "uf": self.uf, "page": page, "pages": pages, "records": found.len() });
        self.topic.publish(EventKind::Progress, data).await;
    }

    /// Reads every page of the part's UF from its source; `None` when cancelled.
    async fn read_pages(&mut self) -> Result<Option<(usize, Vec<Notice>)>, String> {
        let (uf, first, last) = (self.uf.clone(), self.first_day, self.last_day);
        let mut found = Vec::new();
        let mut pages_read = 0;
        match self.source.as_str() {
            "sample" => {
                let pages =
                    sample::total_notices(&uf, first, last).div_ceil(sample::PAGE_SIZE).max(1);
                for page in 1..=pages {
                    let delay = self.sources.sample_page_delay;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.cancelled.wait_for(|cancelled| *cancelled) => return Ok(None),
                    }
                    self.take_page(sample::page(&uf, first, last, page), page, pages, &mut found)
                        .await;
                    pages_read += 1;
                }
            }
            "file" => {
                let all = self.sources.file.clone().ok_or("the file source is not configured")?;
                let mine: Vec<Notice> = all
                    .iter()
                    .filter(|n| n.uf == uf && (first..=last).contains(&n.published_on))
                    .cloned()
                    .collect();
                let pages = mine.len().div_ceil(sample::PAGE_SIZE).max(1);
                let mut chunks = mine.chunks(sample::PAGE_SIZE).map(<[Notice]>::to_vec);
                for page in 1..=pages {
                    if *self.cancelled.borrow() {
                        return Ok(None);
                    }
                    self.take_page(chunks.next().unwrap_or_default(), page, pages, &mut found)
                        .await;
                    pages_read += 1;
                }
            }
            "pncp" => {
                let client = self.sources.pncp.clone();
                let mut pages_known = 0;
                for &modality in client.modalities() {
                    let mut page = 1;
                    loop {
                        let fetched = tokio::select! {
                            fetched = client.page(&uf, first, last, modality, page) => fetched?,
                            _ = self.cancelled.wait_for(|cancelled| *cancelled) => return Ok(None),
                        };
                        if page == 1 {
                            pages_known += fetched.total_pages.max(1);
                        }
                        pages_read += 1;
                        self.take_page(fetched.notices, pages_read, pages_known, &mut found).await;
                        if page >= fetched.total_pages {
                            break;
                        }
                        page += 1;
                    }
                }
            }
            other => return Err(format!("unknown source {other}")),
        }
        Ok(Some((pages_read, found)))
    }

    pub(super) async fn run(mut self) -> PartOutcome {
        let (pages, found) = match self.read_pages().await {
            Ok(Some(read)) => read,
            Ok(None) => return PartOutcome::Cancelled,
            Err(error) => return PartOutcome::Failed(format!("part {}: {error}", self.uf)),
        };
        let (store, id, uf, attempt) = (&self.store, &self.id, &self.uf, self.topic.attempt);
        let records = found.len() as u64;
        let recorded = self
            .topic
            .publish_durable(EventKind::PartCompleted, |seq| async move {
                let update = ProgressUpdate::PartCompleted {
                    part: uf.clone(),
                    pages: pages as u32,
                    records,
                };
                let record =
                    patiently(|| store.record_milestone(id, attempt, seq, update.clone())).await?;
                let (completed_parts, total_parts) = (record.completed_parts(), record.total_parts);
                Ok::<_, StoreError>(json!({
                    "uf": uf,
                    "pages": pages,
                    "records": records,
                    "completed_parts": completed_parts,
                    "total_parts": total_parts,
                }))
            })
            .await;
        match recorded {
            Ok(_) => PartOutcome::Done { uf: uf.clone(), notices: found },
            Err(error) => PartOutcome::Failed(format!("part {uf}: {error}")),
        }
    }
}
