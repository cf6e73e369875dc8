//! The worker's metrics and the small HTTP endpoint that serves them.

use squall_broker::metrics::{Kind, Metrics};
use std::net::SocketAddr;
use std::sync::Arc;

/// Invocations by function and the status their attempt ended in.
pub const INVOCATIONS: &str = "squall_worker_invocations_total";
/// Time a function ran, per attempt.
pub const EXECUTION: &str = "squall_worker_execution_seconds";
/// Time from acceptance to the start of the first attempt.
pub const QUEUE_WAIT: &str = "squall_worker_queue_wait_seconds";
/// Attempts handed back for a retry, by the kind of failure.
pub const RETRIES: &str = "squall_worker_retries_total";
/// Invocations this worker dead-lettered.
pub const DEAD_LETTERS: &str = "squall_worker_dead_letters_total";
/// Jobs running now.
pub const IN_FLIGHT: &str = "squall_worker_in_flight";
/// Artifact loads (cold starts of a version in this process), by outcome.
pub const ARTIFACT_LOADS: &str = "squall_worker_artifact_loads_total";

/// A registry with every worker metric described.
pub fn registry() -> Metrics {
    let m = Metrics::default();
    m.describe(
        INVOCATIONS,
        Kind::Counter,
        "Attempts finished by this worker, by function and resulting status.",
    );
    m.describe(
        EXECUTION,
        Kind::Histogram,
        "Execution time of an attempt, in seconds.",
    );
    m.describe(
        QUEUE_WAIT,
        Kind::Histogram,
        "Time from acceptance to the start of the first attempt, in seconds.",
    );
    m.describe(
        RETRIES,
        Kind::Counter,
        "Attempts handed back for a retry, by error kind.",
    );
    m.describe(
        DEAD_LETTERS,
        Kind::Counter,
        "Invocations this worker ended as dead_lettered or timed_out.",
    );
    m.describe(IN_FLIGHT, Kind::Gauge, "Jobs running now.");
    m.describe(
        ARTIFACT_LOADS,
        Kind::Counter,
        "Artifact versions fetched and loaded (cold starts), by outcome.",
    );
    m
}

/// Binds `addr` and serves `GET /metrics` in the background.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    tracing::info!(message = "serving metrics", addr = %addr);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(message = "metrics endpoint stopped", %error);
        }
    });
    Ok(())
}
