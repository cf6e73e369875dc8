//! Delivers terminal results to the requests waiting for them.
//!
//! Each dispatcher subscribes once to its own direct-reply subjects
//! (`<inbox prefix>.squall-reply.<waiter>.*`); a synchronous job names its reply subject in
//! `Squall-Reply-To`, and the worker sends the terminal result there after storing it. So a
//! dispatcher receives only the results it waits for, whatever the fleet's total traffic.
//! A waiter is registered before its job is published, so a reply can never slip past it; the
//! caller reads the RESULTS stream once when its wait ends, which covers a lost reply, a
//! restarted dispatcher and a redelivered job. A second request for an invocation that another
//! request submitted (a repeated idempotency key) follows that invocation's own result subject.
//! A request that asked for a stream also registers for the chunks the worker sends to the same
//! subject as the function writes them (`Squall-Chunk-Offset`); a chunk that finds its queue
//! full is dropped, and the request fills the gap from the stored output when the result comes.

use bytes::Bytes;
use futures::StreamExt;
use squall_broker::names::{reply_root, results_subject};
use squall_broker::payloads::PayloadRef;
use squall_broker::ResultMeta;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A terminal result: its metadata and body (output, or error message).
#[derive(Debug, Clone)]
pub struct Finished {
    pub meta: ResultMeta,
    pub body: Bytes,
    /// A succeeded output above the inline limit: where it is stored (`body` is then empty).
    pub payload: Option<PayloadRef>,
}

impl Finished {
    /// A result record's terminal or latest outcome, from its headers and body.
    pub fn of_record(
        meta: ResultMeta,
        headers: Option<&async_nats::HeaderMap>,
        body: Bytes,
    ) -> Finished {
        // A failure may carry one too: what the function streamed before it failed.
        let payload = PayloadRef::from_headers(headers);
        Finished {
            meta,
            body,
            payload,
        }
    }
}

type Waiters = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Finished>>>>>;

/// One streamed chunk: its byte offset in the output, and its bytes.
pub type Chunk = (u64, Bytes);

/// How many chunks wait for a slow client before more are dropped (and filled in later).
const CHUNK_QUEUE: usize = 256;

type Streams = Arc<Mutex<HashMap<String, mpsc::Sender<Chunk>>>>;

/// Registry of in-progress synchronous invocations.
#[derive(Clone)]
pub struct ResultWaiter {
    waiters: Waiters,
    streams: Streams,
    /// This dispatcher's reply subjects, without the invocation id.
    root: String,
    client: async_nats::Client,
}

/// Removes its waiter when dropped, so an abandoned request leaves nothing behind.
pub struct Registration {
    id: String,
    waiters: Waiters,
    /// The chunk routes, when it registered for chunks too (`register_stream`).
    streams: Option<Streams>,
    receiver: oneshot::Receiver<Finished>,
    /// Where the worker sends the terminal result: the job's `Squall-Reply-To`.
    pub reply_to: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.waiters.lock().expect("waiters lock");
        if let Some(list) = map.get_mut(&self.id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                map.remove(&self.id);
            }
        }
        drop(map);
        if let Some(streams) = &self.streams {
            streams.lock().expect("streams lock").remove(&self.id);
        }
    }
}

impl Registration {
    /// The terminal result a direct reply brings (`None` once the waiter is gone).
    pub async fn finished(&mut self) -> Option<Finished> {
        (&mut self.receiver).await.ok()
    }
}

/// A streamed chunk's offset, when the message is one.
fn chunk_offset(message: &async_nats::Message) -> Option<u64> {
    message
        .headers
        .as_ref()?
        .get(squall_broker::headers::CHUNK_OFFSET)?
        .as_str()
        .parse()
        .ok()
}

/// Reads a terminal result out of a reply or result message, if it is one.
fn terminal(message: &async_nats::Message) -> Option<Finished> {
    let meta = ResultMeta::from_headers(message.headers.as_ref()?).ok()?;
    meta.status
        .is_terminal()
        .then(|| Finished::of_record(meta, message.headers.as_ref(), message.payload.clone()))
}

impl ResultWaiter {
    /// Subscribes to this dispatcher's direct replies under `inbox_prefix` and starts
    /// delivering them.
    pub async fn start(
        client: &async_nats::Client,
        inbox_prefix: &str,
    ) -> Result<ResultWaiter, async_nats::SubscribeError> {
        let root = reply_root(inbox_prefix, &uuid::Uuid::new_v4().simple().to_string());
        let mut subscription = client.subscribe(format!("{root}.*")).await?;
        let waiter = ResultWaiter {
            waiters: Waiters::default(),
            streams: Streams::default(),
            root,
            client: client.clone(),
        };
        let waiters = waiter.waiters.clone();
        let streams = waiter.streams.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                if let Some(offset) = chunk_offset(&message) {
                    let id = message.subject.as_str().rsplit('.').next().unwrap_or("");
                    if let Some(stream) = streams.lock().expect("streams lock").get(id) {
                        // A full queue drops the chunk: the stored output fills the gap.
                        let _ = stream.try_send((offset, message.payload));
                    }
                    continue;
                }
                let Some(outcome) = terminal(&message) else {
                    continue;
                };
                // Only the id the subject names, so a reply cannot complete another's wait.
                if message.subject.as_str().rsplit('.').next() != Some(&outcome.meta.invocation_id)
                {
                    continue;
                }
                let senders = waiters
                    .lock()
                    .expect("waiters lock")
                    .remove(&outcome.meta.invocation_id);
                for sender in senders.into_iter().flatten() {
                    let _ = sender.send(outcome.clone());
                }
            }
        });
        Ok(waiter)
    }

    /// Registers interest in `id`'s terminal result, before its job is published.
    pub fn register(&self, id: &str) -> Registration {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .entry(id.to_string())
            .or_default()
            .push(sender);
        Registration {
            id: id.to_string(),
            waiters: self.waiters.clone(),
            streams: None,
            receiver,
            reply_to: format!("{}.{id}", self.root),
        }
    }

    /// Registers interest in `id`'s streamed chunks as well as its terminal result: the chunks
    /// a direct reply carries come out of the receiver in the order they were sent.
    pub fn register_stream(&self, id: &str) -> (Registration, mpsc::Receiver<Chunk>) {
        let (sender, receiver) = mpsc::channel(CHUNK_QUEUE);
        self.streams
            .lock()
            .expect("streams lock")
            .insert(id.to_string(), sender);
        let mut registration = self.register(id);
        registration.streams = Some(self.streams.clone());
        (registration, receiver)
    }

    /// Completes this dispatcher's waits for `outcome`'s invocation with it (a cancellation
    /// made here).
    pub fn deliver(&self, outcome: &Finished) {
        let senders = self
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(&outcome.meta.invocation_id);
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(outcome.clone());
        }
    }

    /// Follows invocation `id`'s own result subject: for a request that waits on an
    /// invocation another request submitted (possibly through another dispatcher), whose job
    /// carries that request's reply subject. Check RESULTS after this, not before.
    pub async fn follow(&self, function: &str, id: &str) -> Option<async_nats::Subscriber> {
        self.client
            .subscribe(results_subject(function, id))
            .await
            .ok()
    }

    /// Waits up to `wait` for the terminal result of `registration`'s invocation, from a
    /// direct reply or from `followed`.
    pub async fn wait(
        &self,
        registration: &mut Registration,
        mut followed: Option<async_nats::Subscriber>,
        wait: Duration,
    ) -> Option<Finished> {
        let from_results = async {
            if let Some(results) = followed.as_mut() {
                while let Some(message) = results.next().await {
                    if let Some(outcome) = terminal(&message) {
                        return outcome;
                    }
                }
            }
            std::future::pending().await
        };
        let outcome = tokio::time::timeout(wait, async {
            tokio::select! {
                replied = &mut registration.receiver => replied.ok(),
                followed = from_results => Some(followed),
            }
        })
        .await
        .ok()
        .flatten();
        if let Some(mut results) = followed {
            let _ = results.unsubscribe().await;
        }
        outcome
    }
}
