//! The dispatcher's metric definitions and their rendering for `GET /metrics`.

use crate::AppState;
use squall_broker::names::consumer_name;

/// Invocations this dispatcher accepted, by function and source.
pub const ACCEPTED: &str = "squall_dispatcher_invocations_accepted_total";

/// Synchronous invocations answered with a terminal outcome, by function and status.
pub const SYNC_OUTCOMES: &str = "squall_dispatcher_sync_outcomes_total";

/// Jobs of a function waiting in JOBS (read from its consumer at scrape time).
/// Live worker processes.
pub const WORKERS: &str = "squall_workers";

/// RESULTS messages applied to the query index.
pub const INDEXED: &str = "squall_dispatcher_index_applied_total";

pub const BACKLOG: &str = "squall_function_backlog";

/// Jobs of a function delivered to workers and not yet acknowledged.
pub const IN_FLIGHT: &str = "squall_function_in_flight";

/// A registry with every dispatcher metric described.
pub fn metrics_registry() -> squall_broker::metrics::Metrics {
    use squall_broker::metrics::Kind;
    let m = squall_broker::metrics::Metrics::default();
    m.describe(ACCEPTED, Kind::Counter, "Invocations accepted by this dispatcher (their job stored in JOBS), by function and source.");
    m.describe(SYNC_OUTCOMES, Kind::Counter, "Synchronous invocations this dispatcher answered with a terminal outcome, by function and status.");
    m.describe(
        WORKERS,
        Kind::Gauge,
        "Worker processes with a live heartbeat in the fleet bucket.",
    );
    m.describe(
        INDEXED,
        Kind::Counter,
        "RESULTS messages this dispatcher applied to its query index since it started.",
    );
    m.describe(
        BACKLOG,
        Kind::Gauge,
        "Jobs waiting for a worker, per function (JetStream consumer pending).",
    );
    m.describe(
        IN_FLIGHT,
        Kind::Gauge,
        "Jobs delivered to a worker and not yet acknowledged, per function.",
    );
    m
}

/// Refreshes the gauges read from JetStream (per-function backlog and in-flight work, live
/// workers) and renders every metric in the Prometheus text format.
pub async fn render(state: &AppState) -> String {
    for name in state.registry.names() {
        if let Ok(info) = state
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            let label = [("function", name.as_str())];
            state.metrics.set(BACKLOG, &label, info.num_pending as f64);
            state
                .metrics
                .set(IN_FLIGHT, &label, info.num_ack_pending as f64);
        }
    }
    if let Ok(fleet) = crate::fleet::read(state).await {
        state.metrics.set(WORKERS, &[], fleet.workers.len() as f64);
    }
    state.metrics.render()
}
