//! The invocations cancelled while their jobs wait or run: a set local to the worker, kept by
//! a watch on the `squall_cancels` bucket, consulted before a job runs and before its result
//! is stored, so that checking costs a job one hash lookup and no broker round trip.
//!
//! Invariant: while the watch is live, every cancellation stored before the watch caught up
//! is in the set; while it is not (starting, or after an error), `is_cancelled` asks the bucket
//! instead. A cancellation that lands between a lookup and the result is settled by RESULTS:
//! every terminal result carries the invocation's one terminal message id, so the later of two
//! is dropped as a duplicate.

use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How often remembered cancellations older than the bucket's retention are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The cancelled invocation ids this worker knows of.
pub struct Cancellations {
    bucket: kv::Store,
    /// Cancelled ids and when this worker heard of each.
    ids: RwLock<HashMap<String, Instant>>,
    /// True while the watch is caught up, so the set is complete.
    live: AtomicBool,
    /// How long an id is remembered: the bucket's own retention.
    keep: Duration,
}

impl Cancellations {
    /// Starts following `bucket` (kept for `keep`); the set serves lookups once the watch has
    /// caught up, the bucket before that.
    pub fn start(
        bucket: kv::Store,
        keep: Duration,
    ) -> (Arc<Cancellations>, tokio::task::JoinHandle<()>) {
        let cancels = Arc::new(Cancellations {
            bucket,
            ids: RwLock::default(),
            live: AtomicBool::new(false),
            keep,
        });
        let watch = tokio::spawn(follow(cancels.clone()));
        (cancels, watch)
    }

    /// Whether the set holds `id` (no broker call).
    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .read()
            .expect("cancellations lock")
            .contains_key(id)
    }

    /// Whether the watch is caught up, so `contains` is the whole answer.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Whether invocation `id` was cancelled: the set, or the bucket while the watch is not
    /// live. A bucket that cannot be read counts as not cancelled: the job runs, and its
    /// terminal result's message id still keeps the invocation to one state.
    pub async fn is_cancelled(&self, id: &str) -> bool {
        if self.contains(id) {
            return true;
        }
        if self.is_live() {
            return false;
        }
        match self.bucket.entry(id).await {
            Ok(Some(entry)) => {
                let cancelled = entry.operation == kv::Operation::Put;
                if cancelled {
                    self.insert(id);
                }
                cancelled
            }
            Ok(None) => false,
            Err(error) => {
                tracing::debug!(message = "cannot read the cancellation bucket", invocation_id = %id, %error);
                false
            }
        }
    }

    /// Remembers `id` as cancelled.
    pub fn insert(&self, id: &str) {
        let now = Instant::now();
        self.ids
            .write()
            .expect("cancellations lock")
            .insert(id.to_string(), now);
    }

    fn remove(&self, id: &str) {
        self.ids.write().expect("cancellations lock").remove(id);
    }

    /// Forgets ids heard of longer ago than the bucket keeps them.
    fn prune(&self, now: Instant) {
        let keep = self.keep;
        self.ids
            .write()
            .expect("cancellations lock")
            .retain(|_, at| now.duration_since(*at) < keep);
    }

    /// How many cancelled ids this worker remembers.
    pub fn len(&self) -> usize {
        self.ids.read().expect("cancellations lock").len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Follows the bucket into the set, restarting the watch when it fails.
async fn follow(cancels: Arc<Cancellations>) {
    let mut pruned = Instant::now();
    loop {
        match cancels.bucket.watch_all().await {
            Ok(mut changes) => {
                // An empty bucket delivers nothing to catch up on.
                let empty = cancels
                    .bucket
                    .status()
                    .await
                    .map(|status| status.values() == 0)
                    .unwrap_or(false);
                if empty {
                    cancels.live.store(true, Ordering::Release);
                }
                while let Some(change) = changes.next().await {
                    match change {
                        Ok(entry) => {
                            match entry.operation {
                                kv::Operation::Put => cancels.insert(&entry.key),
                                kv::Operation::Delete | kv::Operation::Purge => {
                                    cancels.remove(&entry.key)
                                }
                            }
                            if entry.seen_current || entry.delta == 0 {
                                cancels.live.store(true, Ordering::Release);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(message = "cancellation watch failed; asking the bucket until it resumes", error = %error);
                            break;
                        }
                    }
                    if pruned.elapsed() >= PRUNE_EVERY {
                        pruned = Instant::now();
                        cancels.prune(pruned);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(message = "cannot watch the cancellation bucket; asking it per job", error = %error)
            }
        }
        cancels.live.store(false, Ordering::Release);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
