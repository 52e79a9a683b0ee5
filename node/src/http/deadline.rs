//! How long a connection may take to send a request head, and to wait between requests.
//!
//! hyper 1.x (`proto/h1/conn.rs`, `poll_read_head`) starts its `header_read_timeout` when
//! it begins to wait for a head: for the first request when the connection is first
//! polled, and for each later one as soon as the previous response has gone out (`idle()`
//! asks for a read at once when the timeout is set). So hyper's one timer covers the
//! keep-alive wait and the head together: a keep-alive idle of 75 s would let a slow head
//! take 75 s, and a head timeout of 10 s would close keep-alive connections that a load
//! balancer means to reuse after 60 s. hyper's server HTTP/1 path uses its timer for
//! nothing else, so this module hands it a timer whose sleeps are two-phase instead:
//! - the idle timeout until the first byte of the next head arrives (seen by
//!   [`Counted`], which counts the reads that return data),
//! - then the header-read timeout from that byte;
//! - a new connection's first head: the header-read timeout from the accept.
//!
//! Either timeout may be off (`None`). While a response is being written hyper waits
//! for no head, so a long response (an SSE stream) is never idle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many reads of a connection returned data.
#[derive(Debug, Default)]
pub(super) struct Activity {
    reads: AtomicU64,
}

impl Activity {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// A socket that counts its reads into an [`Activity`].
#[derive(Debug)]
pub(super) struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a whole head, from its first byte (the first head: from the accept).
    pub header_read: Option<Duration>,
    /// For the first byte of the next request on a keep-alive connection.
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// Returns whether any limit applies.
    pub fn any(&self) -> bool {
        self.header_read.is_some() || self.idle.is_some()
    }
}

/// hyper's timer for one connection: each sleep is the deadline of the head hyper waits
/// for (see the module's documentation), whatever deadline hyper asked for.
#[derive(Debug, Clone)]
pub(super) struct HeadTimer {
    activity: Arc<Activity>,
    timeouts: Timeouts,
    /// The first head's deadline, for a connection hyper serves from its start; taken by
    /// the first sleep.
    first_head: Arc<Mutex<Option<Instant>>>,
}

impl HeadTimer {
    pub(super) fn new(
        activity: Arc<Activity>,
        timeouts: Timeouts,
        first_head: Option<Instant>,
    ) -> Self {
        Self { activity, timeouts, first_head: Arc::new(Mutex::new(first_head)) }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Plain(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, _hyper_deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let fixed = self.first_head.lock().expect("first head lock").take();
        Box::pin(HeadSleep {
            activity: self.activity.clone(),
            timeouts: self.timeouts,
            armed_at: Instant::now(),
            reads_at_arm: self.activity.reads(),
            fixed,
            first_byte_at: None,
            sleep: Box::pin(tokio::time::sleep(Duration::MAX / 4)),
            target: None,
        })
    }
}

/// A plain sleep, for any other use hyper might make of its timer.
struct Plain(Pin<Box<tokio::time::Sleep>>);

impl Future for Plain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Plain {}

/// Completes when the head hyper waits for is late. hyper polls it each time the
/// connection wakes (any read wakes it), so the first byte is noticed as it arrives.
struct HeadSleep {
    activity: Arc<Activity>,
    timeouts: Timeouts,
    armed_at: Instant,
    reads_at_arm: u64,
    /// A deadline that holds whatever arrives (a new connection's first head).
    fixed: Option<Instant>,
    first_byte_at: Option<Instant>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    target: Option<Instant>,
}

impl HeadSleep {
    fn deadline(&mut self) -> Option<Instant> {
        if let Some(fixed) = self.fixed {
            return Some(fixed);
        }
        if self.first_byte_at.is_none() && self.activity.reads() != self.reads_at_arm {
            self.first_byte_at = Some(Instant::now());
        }
        match self.first_byte_at {
            Some(first_byte_at) => self.timeouts.header_read.map(|timeout| first_byte_at + timeout),
            None => self.timeouts.idle.map(|timeout| self.armed_at + timeout),
        }
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline() else { return Poll::Pending };
        if self.target != Some(deadline) {
            self.target = Some(deadline);
            self.sleep.as_mut().reset(deadline.into());
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}
