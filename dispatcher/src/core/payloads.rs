//! Claim checks on the dispatcher's side: stores a large input in its function's payload bucket
//! as it streams in, and reads a large output back out as it streams to the caller.

use async_nats::jetstream::object_store::ObjectStore;
use bytes::Bytes;
use squall_broker::payloads::{self, PayloadError, PayloadRef};
use squall_broker::TopologyConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncRead;

/// The payload buckets this dispatcher has opened, and the limits.
#[derive(Clone)]
pub struct Payloads {
    inner: Arc<Inner>,
}

struct Inner {
    jetstream: async_nats::jetstream::Context,
    topology: TopologyConfig,
    stores: Mutex<HashMap<String, ObjectStore>>,
    /// A body up to this size travels inside its message.
    inline: usize,
    /// The largest input accepted (and output returned) through the payload store.
    max: usize,
}

impl Payloads {
    pub fn new(
        jetstream: async_nats::jetstream::Context,
        topology: TopologyConfig,
        inline: usize,
        max: usize,
    ) -> Payloads {
        Payloads {
            inner: Arc::new(Inner {
                jetstream,
                topology,
                stores: Mutex::new(HashMap::new()),
                inline,
                max,
            }),
        }
    }

    /// The largest body that travels inline.
    pub fn inline_limit(&self) -> usize {
        self.inner.inline
    }

    /// The largest input or output.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// `function`'s payload bucket, created when it does not exist yet. Callers make sure the
    /// function exists first: a bucket is never made for a name nobody deployed.
    pub async fn store(&self, function: &str) -> Result<ObjectStore, PayloadError> {
        if let Some(store) = self.cached(function) {
            return Ok(store);
        }
        let store = squall_broker::topology::ensure_payload_store(
            &self.inner.jetstream,
            &self.inner.topology,
            function,
        )
        .await
        .map_err(|e| PayloadError::Broker(e.to_string()))?;
        Ok(self.remember(function, store))
    }

    fn remember(&self, function: &str, store: ObjectStore) -> ObjectStore {
        self.inner
            .stores
            .lock()
            .expect("payload stores lock")
            .insert(function.to_string(), store.clone());
        store
    }

    fn cached(&self, function: &str) -> Option<ObjectStore> {
        self.inner
            .stores
            .lock()
            .expect("payload stores lock")
            .get(function)
            .cloned()
    }

    /// Stores an input of `function`: `first` (what was already read) and the rest of the body,
    /// at most `max` bytes in all.
    pub async fn upload(
        &self,
        function: &str,
        first: Bytes,
        rest: &mut (impl AsyncRead + Unpin),
    ) -> Result<PayloadRef, PayloadError> {
        self.store(function).await?;
        payloads::put(
            &self.inner.jetstream,
            &payloads::payload_bucket(function),
            &PayloadRef::input_name(),
            first,
            rest,
            self.inner.max,
        )
        .await
    }

    /// Opens a stored payload of `function` to stream it.
    pub async fn open(
        &self,
        function: &str,
        reference: &PayloadRef,
    ) -> Result<async_nats::jetstream::object_store::Object, PayloadError> {
        let store = self.open_store(function).await?;
        payloads::open(&store, reference).await
    }

    /// Reads a stored payload of `function` whole.
    pub async fn read(
        &self,
        function: &str,
        reference: &PayloadRef,
    ) -> Result<Bytes, PayloadError> {
        let store = self.open_store(function).await?;
        payloads::get(&store, reference, self.inner.max).await
    }

    /// Deletes a stored payload of `function` (nothing when its bucket is gone).
    pub async fn delete(&self, function: &str, reference: &PayloadRef) -> Result<(), PayloadError> {
        match self.open_store(function).await {
            Ok(store) => payloads::delete(&store, reference).await,
            Err(PayloadError::Missing(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// `function`'s payload bucket, opened (never made: a read needs no new bucket).
    async fn open_store(&self, function: &str) -> Result<ObjectStore, PayloadError> {
        if let Some(store) = self.cached(function) {
            return Ok(store);
        }
        let store = payloads::open_store(&self.inner.jetstream, function).await?;
        Ok(self.remember(function, store))
    }
}
