//! shoal's Raft layer: the openraft type config, the replicated state machine, the
//! HTTP Raft network and [`Cluster`], the handle through which the API writes and reads.

pub mod auth;
mod batch;
mod blob;
mod blob_store;
mod clock;
mod cluster;
mod contact;
mod error;
#[cfg(test)]
mod fixtures;
/// Entry points of the fuzz targets in `fuzz/` (the `fuzzing` feature).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod keys;
mod kv;
mod lease;
mod maintenance;
mod merge_patch;
pub mod network;
mod once;
mod progress;
pub mod rules;
mod state_machine;
mod types;

pub use auth::ClusterSecret;
pub use blob_store::{ClusterBlobStore, CHUNK_BYTES};
pub use clock::unix_millis;
pub use cluster::{Cluster, ClusterOptions, ClusterStatus, MembershipChange};
pub use error::{ClusterError, Result};
pub use keys::KV_HASH_BYTES;
pub use kv::parse_integer;
pub use maintenance::{spawn_maintenance, Toucher};
pub use network::{CallError, InternalClient};
pub use progress::transition;
pub use state_machine::{Namespace, ScanPage, StateMachineStore, StateReader, POSITION_BYTES};
pub use types::{
    BlobCommand, BlobMeta, BlobRecord, Command, Entry, ExpireCondition, KvCommand, KvRecord,
    KvReply, Node, NodeId, PartState, ProgressCommand, ProgressRecord, ProgressStatus,
    ProgressUpdate, Raft, Rejection, Request, RequestKey, Response, SessionChange, SessionRecord,
    SetCondition, Ttl, TypeConfig,
};
