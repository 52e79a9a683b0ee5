//! Reports: the Excel file of a finished search, stored with a TTL in the blob store,
//! and the signed link that downloads it from any node.

mod signing;
mod xlsx;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_raft::unix_millis;
use shoal_storage::{Blob, BlobError, BlobStore, S3BlobStore};
pub use signing::{DownloadSigner, LinkError};
pub use xlsx::{build, ReportInput, CONSTANT_MEMORY_ROWS};

use crate::search::{Notice, SearchParams};
use crate::store::patiently_while;
use crate::time::rfc3339_millis;

/// The content type of .xlsx files.
pub const XLSX_CONTENT_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Builds, stores and links reports.
#[derive(Debug)]
pub struct Reports {
    /// The state store's own blob store (cluster or Redis): every report when no S3 is
    /// configured, and the fallback when an S3 upload fails.
    store: Arc<dyn BlobStore>,
    s3: Option<S3Reports>,
    signer: DownloadSigner,
    ttl: Duration,
    instance_id: String,
}

/// Reports in S3, linked by pre-signed URLs.
#[derive(Debug)]
pub struct S3Reports {
    pub store: S3BlobStore,
    pub url_ttl: Duration,
}

impl Reports {
    /// Returns reports kept in `store` for `ttl`, linked with `signer`.
    pub fn new(
        store: Arc<dyn BlobStore>,
        signer: DownloadSigner,
        ttl: Duration,
        instance_id: String,
    ) -> Self {
        Self { store, s3: None, signer, ttl, instance_id }
    }

    /// Stores reports in S3 first, falling back to the state store's blob store.
    pub fn with_s3(mut self, s3: S3Reports) -> Self {
        self.s3 = Some(s3);
        self
    }

    /// Returns where reports go: `s3`, or the state store's `cluster` or `redis`.
    pub fn storage_kind(&self) -> &'static str {
        match &self.s3 {
            Some(_) => "s3",
            None => self.store.kind(),
        }
    }

    /// Returns the store reports are kept in.
    pub fn store(&self) -> &dyn BlobStore {
        &*self.store
    }

    /// Returns the link signer.
    pub fn signer(&self) -> &DownloadSigner {
        &self.signer
    }

    /// Builds the report of search `search_id`, stores it, and returns the `download`
    /// object of the search result: `{"id","url","expires_at"}`.
    pub async fn store_search_report(
        &self,
        search_id: &str,
        params: &SearchParams,
        notices: Vec<Notice>,
    ) -> Result<Value, String> {
        let generated_at_ms = unix_millis();
        let rows = notices.len();
        let (search, params_copy, instance) =
            (search_id.to_string(), params.clone(), self.instance_id.clone());
        let bytes = tokio::task::spawn_blocking(move || {
            let input = ReportInput {
                search_id: &search,
                params: &params_copy,
                notices: &notices,
                generated_at_ms,
                instance_id: &instance,
            };
            build(&input)
        })
        .await
        .map_err(|error| format!("report task failed: {error}"))?
        .map_err(|error| format!("building the report failed: {error}"))?;

        let id = format!("{:032x}", rand::random::<u128>());
        let stamp: String =
            rfc3339_millis(generated_at_ms)[..19].chars().filter(char::is_ascii_digit).collect();
        let name = format!(
            "shoal_{}_{}_{}.xlsx",
            &stamp[..8],
            &stamp[8..],
            &search_id[..8.min(search_id.len())]
        );
        let size = bytes.len();
        let blob = Blob { name: name.clone(), content_type: XLSX_CONTENT_TYPE.to_string(), bytes };
        if let Some(s3) = &self.s3 {
            match self.store_in_s3(s3, &id, blob.clone()).await {
                Ok(url) => {
                    tracing::info!(
                        search_id,
                        report_id = %id,
                        bytes = size,
                        rows,
                        storage = "s3",
                        "Excel uploaded to storage: {name} ({size} bytes, {rows} rows) in s3 bucket {} (TTL={}s)",
                        s3.store.bucket(),
                        self.ttl.as_secs()
                    );
                    let valid_secs = s3.url_ttl.min(self.ttl).as_secs();
                    let expires_unix = (generated_at_ms / 1000) + valid_secs;
                    return Ok(json!({
                        "id": id,
                        "url": url,
                        "expires_at": rfc3339_millis(expires_unix * 1000),
                    }));
                }
                Err(error) => tracing::warn!(
                    search_id,
                    report_id = %id,
                    %error,
                    "uploading the report to S3 failed; storing it in the {} blob store instead",
                    self.store.kind()
                ),
            }
        }
        // Between leaders, or cut off for a moment: the search has no client that would
        // retry, so it waits (each chunk is stored under its index: a retry rewrites it).
        let unavailable = |error: &BlobError| matches!(error, BlobError::Unavailable(_));
        patiently_while(unavailable, || self.store.put(&id, blob.clone(), self.ttl))
            .await
            .map_err(|error| format!("storing the report failed: {error}"))?;
        tracing::info!(
            search_id,
            report_id = %id,
            bytes = size,
            rows,
            storage = self.store.kind(),
            "report stored: {name} ({size} bytes, {rows} rows) in {} blob store (TTL={}s)",
            self.store.kind(),
            self.ttl.as_secs()
        );
        let expires_unix = (generated_at_ms / 1000) + self.ttl.as_secs();
        Ok(json!({
            "id": id,
            "url": self.signer.link(&id, expires_unix),
            "expires_at": rfc3339_millis(expires_unix * 1000),
        }))
    }

    /// Uploads `blob` to S3 and returns its pre-signed download URL.
    async fn store_in_s3(
        &self,
        s3: &S3Reports,
        id: &str,
        blob: Blob,
    ) -> Result<String, shoal_storage::BlobError> {
        s3.store.put(id, blob, self.ttl).await?;
        s3.store.signed_url(id).await
    }
}
