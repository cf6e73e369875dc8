//! The broker as the dispatcher's services see it: the connection, the topology's handles and
//! how a job publish is retried, shared behind one `Arc` so a handler's copy costs one count.

use squall_broker::publish::PublishPolicy;
use squall_broker::Topology;
use std::ops::Deref;
use std::sync::Arc;

/// A cheap handle on the broker connection and every stream and bucket of the topology.
#[derive(Clone)]
pub struct Broker(Arc<BrokerParts>);

/// What a `Broker` holds.
pub struct BrokerParts {
    pub client: async_nats::Client,
    pub topology: Topology,
    /// How long a job publish keeps trying through a leader election.
    pub publish: PublishPolicy,
}

impl Broker {
    pub fn new(client: async_nats::Client, topology: Topology, publish: PublishPolicy) -> Broker {
        Broker(Arc::new(BrokerParts {
            client,
            topology,
            publish,
        }))
    }
}

impl Deref for Broker {
    type Target = BrokerParts;

    fn deref(&self) -> &BrokerParts {
        &self.0
    }
}

/// A broker operation that failed: what was being done, and the broker's error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {error}")]
pub struct BrokerError {
    pub context: &'static str,
    pub error: String,
}

impl BrokerError {
    pub fn new(context: &'static str, error: impl std::fmt::Display) -> BrokerError {
        BrokerError {
            context,
            error: error.to_string(),
        }
    }
}
