//! [`WorkerPool`]: a fixed number of workers and a bounded queue, shared by all searches.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};

type Job = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The pool's counters, as `/api/health` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PoolStats {
    /// Workers: parts that run at once, at most.
    pub workers: u64,
    /// Parts running now.
    pub active: u64,
    /// Parts waiting for a worker.
    pub queued: u64,
    /// Parts finished since the node started.
    pub completed: u64,
    /// Parts that failed since the node started.
    pub failed: u64,
    /// Searches refused since the node started because the queue was full.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    queued: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

/// The queue had no room for all the jobs offered; none was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the worker queue is full")]
pub struct QueueFull;

/// Room reserved in the queue for a known number of jobs.
#[derive(Debug)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
}

/// Runs jobs on `workers` tasks, holding at most `capacity` waiting jobs.
#[derive(Debug, Clone)]
pub struct WorkerPool {
    jobs: mpsc::UnboundedSender<(Job, OwnedSemaphorePermit)>,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    workers: u64,
}

impl WorkerPool {
    /// Starts `workers` worker tasks on the current runtime.
    pub fn new(workers: usize, capacity: usize) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel::<(Job, OwnedSemaphorePermit)>();
        let receiver = Arc::new(Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        for _ in 0..workers {
            let receiver = receiver.clone();
            let counters = counters.clone();
            tokio::spawn(async move {
                loop {
                    let next = receiver.lock().await.recv().await;
                    let Some((job, slot)) = next else { return };
                    drop(slot);
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    counters.active.fetch_add(1, Ordering::Relaxed);
                    // Run the job as its own task: a panic fails the job, not the worker.
                    let succeeded = tokio::spawn(job).await.unwrap_or_else(|panic| {
                        tracing::error!(%panic, "a search part panicked");
                        false
                    });
                    counters.active.fetch_sub(1, Ordering::Relaxed);
                    let outcome = if succeeded { &counters.completed } else { &counters.failed };
                    outcome.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Self { jobs, slots: Arc::new(Semaphore::new(capacity)), counters, workers: workers as u64 }
    }

    /// Reserves queue room for `count` jobs at once, or none.
    pub fn reserve(&self, count: usize) -> Result<Reservation, QueueFull> {
        let count = u32::try_from(count).map_err(|_| QueueFull)?;
        match self.slots.clone().try_acquire_many_owned(count) {
            Ok(mut permits) => {
                let mut split = Vec::with_capacity(count as usize);
                for _ in 1..count {
                    split.push(permits.split(1).expect("more than one permit left"));
                }
                if count > 0 {
                    split.push(permits);
                }
                Ok(Reservation { permits: split })
            }
            Err(_) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Err(QueueFull)
            }
        }
    }

    /// Queues `job` in a slot of `reservation`; it reports success with its output.
    pub fn submit(
        &self,
        reservation: &mut Reservation,
        job: impl Future<Output = bool> + Send + 'static,
    ) {
        let slot = reservation.permits.pop().expect("one reserved slot per submitted job");
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send((Box::pin(job), slot)).is_err() {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("worker pool stopped; job dropped");
        }
    }

    /// Returns the counters.
    pub fn stats(&self) -> PoolStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        PoolStats {
            workers: self.workers,
            active: load(&self.counters.active),
            queued: load(&self.counters.queued),
            completed: load(&self.counters.completed),
            failed: load(&self.counters.failed),
            rejected: load(&self.counters.rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn bounded_queue_rejects_whole_batches_and_counts() {
        let pool = WorkerPool::new(1, 2);
        let (release, hold) = tokio::sync::watch::channel(false);
        let mut first = pool.reserve(2).unwrap();
        for _ in 0..2 {
            let mut hold = hold.clone();
            pool.submit(&mut first, async move { hold.wait_for(|go| *go).await.is_ok() });
        }
        // One job runs, one waits: a batch of two no longer fits, a batch of one does.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.stats().active != 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", pool.stats());
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.reserve(2).unwrap_err(), QueueFull);
        let mut one = pool.reserve(1).unwrap();
        pool.submit(&mut one, async { false });
        release.send_replace(true);
        while pool.stats().completed + pool.stats().failed < 3 {
            assert!(std::time::Instant::now() < deadline, "{:?}", pool.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.failed, stats.rejected, stats.queued), (2, 1, 1, 0));
    }
}
