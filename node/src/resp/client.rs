//! [`Connection`]: the state of one Redis client connection, which `connection.rs` runs
//! and the commands of `admin.rs` change.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::pubsub::Subscriber;
use super::Resp;

/// Failed `AUTH` attempts before the connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 5;

/// The state of one connection.
pub struct Connection {
    pub resp: Arc<Resp>,
    pub id: u64,
    pub peer: SocketAddr,
    /// The address the client reached this node at.
    pub local: SocketAddr,
    pub connected: std::time::Instant,
    pub resp3: bool,
    pub authenticated: bool,
    pub auth_failures: u32,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_version: Option<Bytes>,
    pub subscriber: Subscriber,
    pub channels: HashSet<Bytes>,
    pub patterns: HashSet<Bytes>,
    /// Set by `QUIT`: close once the replies are written.
    pub closing: bool,
}

impl Connection {
    /// Returns whether the connection is in subscriber mode.
    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }
}
