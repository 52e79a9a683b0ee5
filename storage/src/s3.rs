//! The S3 adapter: reports as objects in a bucket (AWS S3, MinIO, Supabase Storage, any
//! S3-compatible server), downloaded through pre-signed GET URLs, and deleted by shoal
//! itself once expired, since such stores may have no lifecycle rules.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
    RetryConfig,
};

use crate::blob::{Blob, BlobError, BlobStore, BoxFuture};

/// Where the bucket is and how to reach it. Credentials and anything not given here
/// come from the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`, …).
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// A custom endpoint (MinIO, Supabase, a local test server), else AWS's.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allows `http://` endpoints (local servers).
    pub allow_http: bool,
    /// `bucket.host/key` instead of `host/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Prepended to every object name, e.g. `reports/`.
    pub prefix: String,
    /// How long a pre-signed download URL is valid.
    pub url_ttl: Duration,
    /// How long one request may take before the upload falls back.
    pub timeout: Duration,
}

/// Reports in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    settings: S3Settings,
}

fn failed(error: object_store::Error) -> BlobError {
    match error {
        object_store::Error::Generic { .. } => BlobError::Unavailable(format!("s3: {error}")),
        other => BlobError::Failed(format!("s3: {other}")),
    }
}

impl S3BlobStore {
    /// Returns the store of `settings`, with credentials from the environment.
    pub fn new(settings: S3Settings) -> Result<Self, BlobError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(settings.virtual_hosted_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(settings.timeout)
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_allow_http(settings.allow_http),
            )
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: settings.timeout,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        let store = builder
            .build()
            .map_err(|error| BlobError::Failed(format!("invalid S3 settings: {error}")))?;
        Ok(Self { store: Arc::new(store), settings })
    }

    /// Returns the bucket's name.
    pub fn bucket(&self) -> &str {
        &self.settings.bucket
    }

    fn path(&self, id: &str) -> Path {
        Path::from(format!("{}{id}.xlsx", self.settings.prefix))
    }

    /// Returns a pre-signed GET URL of report `id`, valid for the configured TTL.
    pub async fn signed_url(&self, id: &str) -> Result<String, BlobError> {
        let url = self
            .store
            .signed_url(http::Method::GET, &self.path(id), self.settings.url_ttl)
            .await
            .map_err(failed)?;
        Ok(url.to_string())
    }

    /// Deletes the reports stored more than `ttl` ago; returns how many.
    pub async fn delete_expired(&self, ttl: Duration) -> Result<usize, BlobError> {
        let prefix = Path::from(self.settings.prefix.trim_end_matches('/'));
        let cutoff = SystemTime::now() - ttl;
        let mut listing = self.store.list(Some(&prefix));
        let mut deleted = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(failed)?;
            if SystemTime::from(meta.last_modified) > cutoff
                || !meta.location.as_ref().ends_with(".xlsx")
            {
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(error) => return Err(failed(error)),
            }
        }
        Ok(deleted)
    }
}

impl BlobStore for S3BlobStore {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        blob: Blob,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, blob.content_type.into());
            let disposition = format!("attachment; filename=\"{}\"", blob.name.replace('"', ""));
            attributes.insert(Attribute::ContentDisposition, disposition.into());
            let options = PutOptions { attributes, ..PutOptions::default() };
            self.store
                .put_opts(&self.path(id), PutPayload::from(blob.bytes), options)
                .await
                .map_err(failed)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Blob>, BlobError>> {
        Box::pin(async move {
            let result = match self.store.get(&self.path(id)).await {
                Ok(result) => result,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(error) => return Err(failed(error)),
            };
            let content_type = result
                .attributes
                .get(&Attribute::ContentType)
                .map(|value| value.to_string())
                .unwrap_or_else(|| "application/octet-stream".to_string());
            let bytes = result.bytes().await.map_err(failed)?;
            Ok(Some(Blob { name: format!("{id}.xlsx"), content_type, bytes: bytes.to_vec() }))
        })
    }
}
