//! The dispatcher's Prometheus metrics: every definition (a prometheus-client registry), the
//! per-function work and fleet gauges read from JetStream at scrape time, and the rendering.

use crate::AppState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use squall_broker::names::consumer_name;
use squall_broker::InvocationStatus;

/// The `Content-Type` of `GET /metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A function and what created its invocation (`http`, `replay`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    pub function: String,
    pub source: String,
}

/// A function and the terminal status a synchronous invocation was answered with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabels {
    pub function: String,
    pub status: &'static str,
}

/// A function, a destination target and how its delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub function: String,
    /// `on_success`, `on_failure` or `callback`.
    pub target: &'static str,
    /// `delivered` or `failed`.
    pub outcome: &'static str,
}

/// A function's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: String,
}

/// Every dispatcher metric, registered once. Counters are registered without their `_total`
/// suffix: the encoder appends it, so the exposed names are the ones in the comments.
pub struct Metrics {
    registry: Registry,
    /// `squall_dispatcher_invocations_accepted_total{function, source}`.
    accepted: Family<SourceLabels, Counter>,
    /// `squall_dispatcher_sync_outcomes_total{function, status}`.
    sync_outcomes: Family<StatusLabels, Counter>,
    /// `squall_destination_deliveries_total{function, target, outcome}`.
    deliveries: Family<DeliveryLabels, Counter>,
    /// `squall_workers`.
    workers: Gauge,
    /// `squall_dispatcher_index_applied_total`.
    indexed: Counter,
    /// `squall_function_backlog{function}`.
    backlog: Family<FunctionLabels, Gauge>,
    /// `squall_function_in_flight{function}`.
    in_flight: Family<FunctionLabels, Gauge>,
    /// Held by the scrape that refreshes the JetStream gauges and renders them, so that two
    /// scrapes at once never render each other's half-refreshed gauges.
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every dispatcher metric described.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            registry: Registry::default(),
            accepted: Family::default(),
            sync_outcomes: Family::default(),
            deliveries: Family::default(),
            workers: Gauge::default(),
            indexed: Counter::default(),
            backlog: Family::default(),
            in_flight: Family::default(),
            scraping: tokio::sync::Mutex::new(()),
        };
        // prometheus-client ends every help text with a period of its own.
        registry.register(
            "squall_dispatcher_invocations_accepted",
            "Invocations accepted by this dispatcher (their job stored in JOBS), by function and source",
            metrics.accepted.clone(),
        );
        registry.register(
            "squall_dispatcher_sync_outcomes",
            "Synchronous invocations this dispatcher answered with a terminal outcome, by function and status",
            metrics.sync_outcomes.clone(),
        );
        registry.register(
            "squall_destination_deliveries",
            "Terminal-state events this dispatcher delivered to destinations and callbacks (or finally failed to), by function, target and outcome",
            metrics.deliveries.clone(),
        );
        registry.register(
            "squall_workers",
            "Worker processes with a live heartbeat in the fleet bucket",
            metrics.workers.clone(),
        );
        registry.register(
            "squall_dispatcher_index_applied",
            "RESULTS messages this dispatcher applied to its query index since it started",
            metrics.indexed.clone(),
        );
        registry.register(
            "squall_function_backlog",
            "Jobs waiting for a worker, per function (JetStream consumer pending)",
            metrics.backlog.clone(),
        );
        registry.register(
            "squall_function_in_flight",
            "Jobs delivered to a worker and not yet acknowledged, per function",
            metrics.in_flight.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts an invocation whose job JetStream stored.
    pub fn accepted(&self, function: &str, source: &str) {
        let labels = SourceLabels {
            function: function.to_string(),
            source: source.to_string(),
        };
        self.accepted.get_or_create(&labels).inc();
    }

    /// Counts a destination delivery that ended (`delivered` or `failed`).
    pub fn delivery(&self, function: &str, target: &'static str, outcome: &'static str) {
        let labels = DeliveryLabels {
            function: function.to_string(),
            target,
            outcome,
        };
        self.deliveries.get_or_create(&labels).inc();
    }

    /// Counts a synchronous invocation answered with its terminal `status`.
    pub fn sync_outcome(&self, function: &str, status: InvocationStatus) {
        let labels = StatusLabels {
            function: function.to_string(),
            status: status.as_str(),
        };
        self.sync_outcomes.get_or_create(&labels).inc();
    }

    /// Counts RESULTS messages applied to the query index.
    pub fn indexed(&self, applied: usize) {
        self.indexed.inc_by(applied as u64);
    }

    /// Sets the per-function work gauges to `work` (function, jobs pending, jobs delivered and
    /// unacknowledged); a function left out, such as a deleted one, has no series any more.
    fn set_function_work(&self, work: &[(String, u64, u64)]) {
        self.backlog.clear();
        self.in_flight.clear();
        for (function, pending, unacknowledged) in work {
            let labels = FunctionLabels {
                function: function.clone(),
            };
            self.backlog
                .get_or_create(&labels)
                .set(i64::try_from(*pending).unwrap_or(i64::MAX));
            self.in_flight
                .get_or_create(&labels)
                .set(i64::try_from(*unacknowledged).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// What `GET /metrics` serves: this dispatcher's counters, with the per-function backlog and
/// in-flight work and the live worker count read from JetStream now.
pub async fn scrape(state: &AppState) -> String {
    let metrics = &state.metrics;
    let _scraping = metrics.scraping.lock().await;
    let mut work = Vec::new();
    for name in state.registry.names() {
        if let Ok(info) = state
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            work.push((name, info.num_pending, info.num_ack_pending as u64));
        }
    }
    metrics.set_function_work(&work);
    if let Ok(fleet) = crate::fleet::read(state).await {
        metrics.workers.set(fleet.workers.len() as i64);
    }
    metrics.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .map(|l| &l[prefix.len() + 1..])
    }

    #[test]
    fn exposed_names_and_labels_are_the_documented_ones() {
        let metrics = Metrics::new();
        metrics.accepted("hello", "http");
        metrics.accepted("hello", "http");
        metrics.sync_outcome("fail", InvocationStatus::Failed);
        metrics.indexed(3);
        metrics.workers.set(2);
        metrics.set_function_work(&[("hello".into(), 4, 1)]);
        let text = metrics.render();
        for (prefix, value) in [
            (
                "squall_dispatcher_invocations_accepted_total{function=\"hello\",source=\"http\"}",
                "2",
            ),
            (
                "squall_dispatcher_sync_outcomes_total{function=\"fail\",status=\"failed\"}",
                "1",
            ),
            ("squall_dispatcher_index_applied_total", "3"),
            ("squall_workers", "2"),
            ("squall_function_backlog{function=\"hello\"}", "4"),
            ("squall_function_in_flight{function=\"hello\"}", "1"),
        ] {
            assert_eq!(sample(&text, prefix), Some(value), "{prefix} in\n{text}");
        }
        for declared in [
            "# TYPE squall_dispatcher_invocations_accepted_total counter\n",
            "# TYPE squall_dispatcher_sync_outcomes_total counter\n",
            "# TYPE squall_dispatcher_index_applied_total counter\n",
            "# TYPE squall_workers gauge\n",
            "# TYPE squall_function_backlog gauge\n",
            "# TYPE squall_function_in_flight gauge\n",
        ] {
            assert!(text.contains(declared), "{declared} in\n{text}");
        }
        assert!(
            !text.contains(".."),
            "a help text ends in two periods: {text}"
        );
    }

    #[test]
    fn a_function_no_longer_deployed_leaves_the_work_gauges() {
        let metrics = Metrics::new();
        metrics.set_function_work(&[("gone".into(), 4, 1), ("kept".into(), 0, 0)]);
        metrics.set_function_work(&[("kept".into(), 2, 0)]);
        let text = metrics.render();
        assert!(!text.contains("function=\"gone\""), "{text}");
        assert_eq!(
            sample(&text, "squall_function_backlog{function=\"kept\"}"),
            Some("2")
        );
    }
}
