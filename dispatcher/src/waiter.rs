//! Delivers terminal results to the requests waiting for them.
//!
//! One wildcard subscription on `results.>` feeds a map of invocation id → waiters. A waiter is
//! registered before its job is published, so a result can never slip past it; the caller also
//! checks the RESULTS stream once when its wait ends, which covers a subscription that fell behind.

use bytes::Bytes;
use futures::StreamExt;
use squall_broker::ResultMeta;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// A terminal result: its metadata and body (output, or error message).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub meta: ResultMeta,
    pub body: Bytes,
}

type Waiters = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<Outcome>>>>>;

/// Registry of in-progress synchronous invocations.
#[derive(Clone, Default)]
pub struct ResultWaiter {
    waiters: Waiters,
}

/// Removes its waiter when dropped, so an abandoned request leaves nothing behind.
pub struct Registration {
    id: String,
    waiters: Waiters,
    pub receiver: oneshot::Receiver<Outcome>,
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
    }
}

impl ResultWaiter {
    /// Subscribes to all results on `client` and starts delivering them.
    pub async fn start(
        client: &async_nats::Client,
    ) -> Result<ResultWaiter, async_nats::SubscribeError> {
        let mut subscription = client.subscribe("results.>").await?;
        let waiter = ResultWaiter::default();
        let waiters = waiter.waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                // The id is the subject's last token: look it up before parsing any header.
                let Some(id) = message.subject.as_str().rsplit('.').next() else {
                    continue;
                };
                if !waiters.lock().expect("waiters lock").contains_key(id) {
                    continue;
                }
                let Some(headers) = message.headers.as_ref() else {
                    continue;
                };
                let Ok(meta) = ResultMeta::from_headers(headers) else {
                    continue;
                };
                if !meta.status.is_terminal() {
                    continue;
                }
                let senders = waiters
                    .lock()
                    .expect("waiters lock")
                    .remove(&meta.invocation_id);
                for sender in senders.into_iter().flatten() {
                    let _ = sender.send(Outcome {
                        meta: meta.clone(),
                        body: message.payload.clone(),
                    });
                }
            }
        });
        Ok(waiter)
    }

    /// Registers interest in `id`'s terminal result.
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
            receiver,
        }
    }
}
