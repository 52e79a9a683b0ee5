//! Gossip over UDP in which every datagram is authenticated: only holders of the cluster
//! secret can make a node appear, change what it says, or look alive (or dead).
//!
//! Datagram layout: `shg1` (4 bytes), the sender's random process id (u64 LE), a counter
//! (u64 LE), the sender's clock in Unix milliseconds (u64 LE), chitchat's envelope, and a
//! 16-byte tag: HMAC-SHA256 under the gossip key (derived from the cluster secret) of
//! everything before it, truncated. Process id and counter make the nonce a receiver's
//! [`ReplayGuard`] admits once; the clock bounds how long it must remember it. Anything
//! else is dropped, and counted in `shoal_gossip_datagrams_dropped_total`.
//!
//! chitchat 0.13 keeps its wire encoding to itself (`ChitchatEnvelope::serialize` is
//! crate-private), so each sealed socket keeps a chitchat UDP socket on loopback for the
//! encoding: an envelope to send goes to a shim socket beside it, which seals the bytes and
//! sends them out; a datagram that opens goes from the shim to chitchat's socket, which
//! decodes it. Both loopback sockets take datagrams only from each other.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use shoal_raft::auth::{tags_match, AuthError, ReplayGuard, TAG_BYTES};
use shoal_raft::{unix_millis, ClusterSecret};

const MAGIC: &[u8; 4] = b"shg1";
/// Bytes before the envelope: magic, process id, counter, clock.
const HEADER_BYTES: usize = 4 + 8 + 8 + 8;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM_BYTES: usize = 65_507;

/// Opens gossip sockets that seal what they send and open only what was sealed under the
/// same secret.
pub struct SealedUdp {
    secret: ClusterSecret,
    replays: Arc<ReplayGuard>,
}

impl SealedUdp {
    /// Returns the transport of a node that started at `started_ms`.
    pub fn new(secret: ClusterSecret, started_ms: u64) -> Self {
        Self { secret, replays: Arc::new(ReplayGuard::new(started_ms)) }
    }
}

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let sealer = Sealer::new(self.secret.clone());
        let socket = SealedSocket::open(listen_addr, sealer, self.replays.clone()).await?;
        Ok(Box::new(socket))
    }
}

/// Seals datagrams and opens them, independently of any socket.
pub struct Sealer {
    secret: ClusterSecret,
    /// Random per process, so that a restarted node's counter starting over is no replay.
    process_id: u64,
    counter: u64,
}

impl Sealer {
    /// Returns a sealer with a fresh process id.
    pub fn new(secret: ClusterSecret) -> Self {
        Self { secret, process_id: rand::random(), counter: 0 }
    }

    /// Returns `payload` sealed, stamped `now_ms`.
    pub fn seal(&mut self, payload: &[u8], now_ms: u64) -> Vec<u8> {
        self.counter += 1;
        let mut datagram = Vec::with_capacity(HEADER_BYTES + payload.len() + TAG_BYTES);
        datagram.extend_from_slice(MAGIC);
        datagram.extend_from_slice(&self.process_id.to_le_bytes());
        datagram.extend_from_slice(&self.counter.to_le_bytes());
        datagram.extend_from_slice(&now_ms.to_le_bytes());
        datagram.extend_from_slice(payload);
        let tag = self.secret.gossip_tag(&datagram);
        datagram.extend_from_slice(&tag);
        datagram
    }

    /// Returns the payload of `datagram` if it was sealed under this secret, is fresh at
    /// `now_ms` and was not seen before.
    pub fn open<'a>(
        &self,
        datagram: &'a [u8],
        replays: &ReplayGuard,
        now_ms: u64,
    ) -> Result<&'a [u8], AuthError> {
        if datagram.len() < HEADER_BYTES + TAG_BYTES || &datagram[..4] != MAGIC {
            return Err(AuthError::Unsigned);
        }
        let (sealed, tag) = datagram.split_at(datagram.len() - TAG_BYTES);
        if !tags_match(&self.secret.gossip_tag(sealed), tag) {
            return Err(AuthError::Forged);
        }
        let field = |at: usize| u64::from_le_bytes(sealed[at..at + 8].try_into().expect("8 bytes"));
        let (process_id, counter, timestamp_ms) = (field(4), field(12), field(20));
        let nonce = (u128::from(process_id) << 64) | u128::from(counter);
        replays.admit(nonce, timestamp_ms, now_ms)?;
        Ok(&sealed[HEADER_BYTES..])
    }
}

struct SealedSocket {
    /// The gossip port peers reach.
    public: tokio::net::UdpSocket,
    /// chitchat's own socket on loopback, for its encoding.
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    /// Exchanges raw datagrams with `codec`.
    shim: tokio::net::UdpSocket,
    shim_addr: SocketAddr,
    /// Who sent each payload handed to `codec` and not yet taken back (with its size and
    /// when it was handed over), oldest first.
    handed_over: VecDeque<(SocketAddr, usize, tokio::time::Instant)>,
    sealer: Sealer,
    replays: Arc<ReplayGuard>,
    received: Box<[u8]>,
}

/// How long `codec` may take to decode a payload on loopback; a payload it has not
/// decoded by then did not decode (chitchat drops those silently).
const DECODE_TIMEOUT: Duration = Duration::from_millis(200);

impl SealedSocket {
    async fn open(
        listen_addr: SocketAddr,
        sealer: Sealer,
        replays: Arc<ReplayGuard>,
    ) -> anyhow::Result<Self> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("cannot bind {listen_addr}/UDP for gossip"))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let codec = chitchat::transport::UdpSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let shim = tokio::net::UdpSocket::bind(loopback).await?;
        let shim_addr = shim.local_addr()?;
        Ok(Self {
            public,
            codec,
            codec_addr,
            shim,
            shim_addr,
            handed_over: VecDeque::new(),
            sealer,
            replays,
            received: vec![0; MAX_DATAGRAM_BYTES + 1].into_boxed_slice(),
        })
    }
}

fn dropped(reason: &'static str) {
    metrics::counter!("shoal_gossip_datagrams_dropped_total", "reason" => reason).increment(1);
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("the gossip socket has no address")
    }

    /// chitchat awaits sends to the end (only `recv` runs in a `select!`), so the codec's
    /// datagram and the shim's receipt of it stay paired.
    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.codec.send(self.shim_addr, envelope).await?;
        let len = loop {
            let (len, from) = self.shim.recv_from(&mut self.received).await?;
            if from == self.codec_addr {
                break len;
            }
        };
        let datagram = self.sealer.seal(&self.received[..len], unix_millis());
        if datagram.len() > MAX_DATAGRAM_BYTES {
            // chitchat fills datagrams up to the UDP limit only with far more state than
            // shoal gossips (a few keys per node); dropping keeps the loop alive.
            tracing::warn!(bytes = datagram.len(), %to, "a gossip datagram is too large to send");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        // A peer that is down is not this transport's failure: chitchat tries again.
        if let Err(error) = self.public.send_to(&datagram, to).await {
            tracing::debug!(%error, %to, "sending gossip failed");
        }
        Ok(SendOutcome { num_bytes_sent: datagram.len() })
    }

    /// Cancellable at every await, as chitchat needs: a payload handed to the codec stays
    /// listed in `handed_over` until it is taken back.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(&(from_addr, num_bytes_received, handed_at)) = self.handed_over.front() {
                // The deadline counts from the handover: chitchat cancels and calls `recv`
                // again on every gossip tick, which must not restart it.
                let deadline = handed_at + DECODE_TIMEOUT;
                match tokio::time::timeout_at(deadline, self.codec.recv()).await {
                    Ok(decoded) => {
                        let decoded = decoded?;
                        if decoded.from_addr != self.shim_addr {
                            continue; // not from the shim: some other local process
                        }
                        self.handed_over.pop_front();
                        let envelope = decoded.envelope;
                        return Ok(RecvOutcome { from_addr, envelope, num_bytes_received });
                    }
                    Err(_) => {
                        // Sealed by a member, yet not chitchat's: another version, most likely.
                        tracing::warn!(from = %from_addr, "a member's gossip datagram does not decode");
                        dropped("malformed");
                        self.handed_over.pop_front();
                        continue;
                    }
                }
            }
            let (len, from_addr) = match self.public.recv_from(&mut self.received).await {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors of earlier sends surface here; the socket still works.
                    tracing::debug!(%error, "receiving gossip failed");
                    continue;
                }
            };
            let now_ms = unix_millis();
            match self.sealer.open(&self.received[..len], &self.replays, now_ms) {
                Ok(payload) => {
                    self.shim.send_to(payload, self.codec_addr).await?;
                    self.handed_over.push_back((from_addr, len, tokio::time::Instant::now()));
                }
                Err(error) => {
                    tracing::debug!(%error, from = %from_addr, "dropped a gossip datagram");
                    dropped(error.label());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;

    fn bad_cluster() -> ChitchatEnvelope {
        ChitchatEnvelope { version: ProtocolVersion::V1, message: ChitchatMessage::BadCluster }
    }

    /// Sealed sockets carry envelopes with the sender's address; a datagram sealed by a
    /// member that chitchat cannot decode is dropped without holding up the next one, even
    /// when `recv` is cancelled over and over (as chitchat's loop does every tick).
    #[tokio::test]
    async fn sealed_sockets_deliver_envelopes_and_skip_what_does_not_decode() {
        let secret = ClusterSecret::new(b"cluster secret 1".to_vec());
        let transport = SealedUdp::new(secret.clone(), 0);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut sender = transport.open(loopback).await.unwrap();
        let mut receiver = SealedUdp::new(secret.clone(), 0).open(loopback).await.unwrap();
        let (from, to) = (sender.local_addr().unwrap(), receiver.local_addr().unwrap());

        sender.send(to, bad_cluster()).await.unwrap();
        let received = receiver.recv().await.unwrap();
        assert_eq!((received.from_addr, received.envelope), (from, bad_cluster()));

        // A member's datagram that is not chitchat's, then a good one.
        let raw = tokio::net::UdpSocket::bind(loopback).await.unwrap();
        let garbage = Sealer::new(secret).seal(b"not an envelope", unix_millis());
        raw.send_to(&garbage, to).await.unwrap();
        sender.send(to, bad_cluster()).await.unwrap();
        let started = std::time::Instant::now();
        let received = loop {
            let attempt = tokio::time::timeout(Duration::from_millis(50), receiver.recv());
            if let Ok(received) = attempt.await {
                break received.unwrap();
            }
            assert!(started.elapsed() < Duration::from_secs(5), "the good datagram never came");
        };
        assert_eq!(received.from_addr, from);

        // A stranger's datagram never comes through.
        let stranger = SealedUdp::new(ClusterSecret::new(b"another secret!!".to_vec()), 0);
        let mut stranger = stranger.open(loopback).await.unwrap();
        stranger.send(to, bad_cluster()).await.unwrap();
        let nothing = tokio::time::timeout(Duration::from_millis(300), receiver.recv()).await;
        assert!(nothing.is_err(), "a stranger's envelope was delivered");
    }

    #[test]
    fn only_datagrams_sealed_under_the_secret_open_and_each_only_once() {
        let secret = ClusterSecret::new(b"cluster secret 1".to_vec());
        let replays = ReplayGuard::new(1_000);
        let mut sender = Sealer::new(secret.clone());
        let receiver = Sealer::new(secret);
        let sealed = sender.seal(b"syn", 5_000);
        assert_eq!(receiver.open(&sealed, &replays, 5_010), Ok(&b"syn"[..]));
        assert_eq!(receiver.open(&sealed, &replays, 5_020), Err(AuthError::Replayed));
        let second = sender.seal(b"syn", 5_100);
        assert_eq!(receiver.open(&second, &replays, 5_100), Ok(&b"syn"[..]));

        let mut stranger = Sealer::new(ClusterSecret::new(b"another secret!!".to_vec()));
        let forged = stranger.seal(b"syn", 5_000);
        assert_eq!(receiver.open(&forged, &replays, 5_000), Err(AuthError::Forged));
        let mut tampered = sender.seal(b"syn", 5_200);
        tampered[HEADER_BYTES] ^= 1;
        assert_eq!(receiver.open(&tampered, &replays, 5_200), Err(AuthError::Forged));
        assert_eq!(receiver.open(b"plain chitchat", &replays, 5_200), Err(AuthError::Unsigned));
        let old = sender.seal(b"syn", 5_300);
        assert_eq!(receiver.open(&old, &replays, 5_300 + 60_000), Err(AuthError::Stale));
    }
}
