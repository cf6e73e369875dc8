//! Claim checks on the worker's side: reads a job's stored input out of its function's payload
//! bucket, and stores an output above the inline limit there, so functions see bytes as before.

use async_nats::jetstream::object_store::ObjectStore;
use bytes::Bytes;
use squall_broker::payloads::{self, PayloadError, PayloadRef};
use std::collections::HashMap;
use std::sync::Mutex;

/// The payload buckets this process has opened, and its limits.
pub struct Payloads {
    jetstream: async_nats::jetstream::Context,
    stores: Mutex<HashMap<String, ObjectStore>>,
    /// An output up to this size travels inside its result.
    pub inline: usize,
    /// The largest input read and output stored.
    pub max: usize,
}

impl Payloads {
    /// The limits: the inline limit follows the RESULTS stream's largest message; the largest
    /// payload is `SQUALL_MAX_PAYLOAD` (the dispatcher's setting), 100 MiB by default.
    pub fn new(jetstream: async_nats::jetstream::Context, results_max_message: i64) -> Payloads {
        let max = std::env::var(squall_broker::env::ENV_MAX_PAYLOAD)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(squall_broker::env::DEFAULT_MAX_PAYLOAD);
        let inline = if results_max_message > 0 {
            payloads::inline_limit(results_max_message)
        } else {
            squall_broker::env::DEFAULT_INLINE_PAYLOAD
        };
        Payloads {
            jetstream,
            stores: Mutex::new(HashMap::new()),
            inline: inline.min(max),
            max,
        }
    }

    async fn store(&self, function: &str) -> Result<ObjectStore, PayloadError> {
        if let Some(store) = self.stores.lock().expect("stores lock").get(function) {
            return Ok(store.clone());
        }
        let store = payloads::open_store(&self.jetstream, function).await?;
        self.stores
            .lock()
            .expect("stores lock")
            .insert(function.to_string(), store.clone());
        Ok(store)
    }

    /// A job's stored input, whole.
    pub async fn input(
        &self,
        function: &str,
        reference: &PayloadRef,
    ) -> Result<Bytes, PayloadError> {
        let store = self.store(function).await?;
        payloads::get(&store, reference, self.max).await
    }

    /// Stores an output above the inline limit; the result then carries the reference.
    pub async fn store_output(
        &self,
        function: &str,
        invocation_id: &str,
        attempt: u32,
        output: Bytes,
    ) -> Result<PayloadRef, PayloadError> {
        self.store(function).await?;
        payloads::put(
            &self.jetstream,
            &payloads::payload_bucket(function),
            &PayloadRef::output_name(invocation_id, attempt),
            output,
            &mut tokio::io::empty(),
            self.max,
        )
        .await
    }
}
