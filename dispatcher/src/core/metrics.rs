//! The dispatcher's Prometheus metrics: every definition (a prometheus-client registry), the
//! per-function work and fleet gauges read from JetStream at scrape time, and the rendering.

use crate::core::broker::Broker;
use crate::core::registry::Registry as FunctionRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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

/// A request by the route template it matched (`/v1/functions/{name}`, never the raw path;
/// `unmatched` when no route did), its method and the class of its answer (`2xx` … `5xx`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: &'static str,
    pub status_class: &'static str,
}

/// Upper bounds, in seconds, of the HTTP request duration buckets (a synchronous invoke
/// answers when its function finished, so the range reaches a minute).
pub const HTTP_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Upper bounds, in seconds, of the indexed invocation duration buckets (the worker's).
pub const INVOCATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn invocation_histogram() -> Histogram {
    Histogram::new(INVOCATION_BUCKETS)
}

/// The method label: the standard methods by name, anything else as `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status class label of an answer.
fn status_class(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
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
    /// `squall_function_oldest_job_age_seconds{function}`.
    oldest_job_age: Family<FunctionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `squall_http_request_duration_seconds{route, method, status_class}`.
    http: Histograms<RouteLabels>,
    /// `squall_index_invocation_duration_seconds{function, status}`.
    invocation_duration: Histograms<StatusLabels>,
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
            oldest_job_age: Family::default(),
            http: Histograms::new_with_constructor(http_histogram),
            invocation_duration: Histograms::new_with_constructor(invocation_histogram),
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
        registry.register(
            "squall_function_oldest_job_age_seconds",
            "Age of the oldest job of a function still in JOBS (waiting, running or retrying), in seconds; 0 without one",
            metrics.oldest_job_age.clone(),
        );
        registry.register(
            "squall_http_request_duration_seconds",
            "Time this dispatcher took to answer an HTTP request, in seconds, by route template, method and status class",
            metrics.http.clone(),
        );
        registry.register(
            "squall_index_invocation_duration_seconds",
            "Latest-attempt wall time of the terminal invocations this dispatcher's query index applied while running, in seconds, by function and status",
            metrics.invocation_duration.clone(),
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

    /// Records one answered HTTP request.
    pub fn http_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: axum::http::StatusCode,
        seconds: f64,
    ) {
        let labels = RouteLabels {
            route: route.to_string(),
            method: method_label(method),
            status_class: status_class(status),
        };
        self.http.get_or_create(&labels).observe(seconds);
    }

    /// Records the duration of a terminal result the query index applied; other statuses
    /// (`retrying`, …) are not an invocation's end and are left out.
    pub fn indexed_result(&self, function: &str, status: InvocationStatus, duration_us: u64) {
        if !status.is_terminal() {
            return;
        }
        let labels = StatusLabels {
            function: function.to_string(),
            status: status.as_str(),
        };
        self.invocation_duration
            .get_or_create(&labels)
            .observe(duration_us as f64 / 1e6);
    }

    /// Counts RESULTS messages applied to the query index.
    pub fn indexed(&self, applied: usize) {
        self.indexed.inc_by(applied as u64);
    }

    /// Sets the per-function work gauges to `work` (function, jobs pending, jobs delivered and
    /// unacknowledged, age in seconds of the oldest job); a function left out, such as a
    /// deleted one, has no series any more.
    fn set_function_work(&self, work: &[(String, u64, u64, f64)]) {
        self.backlog.clear();
        self.in_flight.clear();
        self.oldest_job_age.clear();
        for (function, pending, unacknowledged, age) in work {
            let labels = FunctionLabels {
                function: function.clone(),
            };
            self.backlog
                .get_or_create(&labels)
                .set(i64::try_from(*pending).unwrap_or(i64::MAX));
            self.in_flight
                .get_or_create(&labels)
                .set(i64::try_from(*unacknowledged).unwrap_or(i64::MAX));
            self.oldest_job_age.get_or_create(&labels).set(*age);
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

/// This process's metrics, as a handler takes them.
#[derive(Clone)]
pub struct SharedMetrics(pub std::sync::Arc<Metrics>);

/// The layer in front of every route: times each request and records it by the route
/// template it matched.
pub async fn track(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.http_request(
        &route,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// What `GET /metrics` serves: this dispatcher's counters, with the per-function backlog and
/// in-flight work and the live worker count read from JetStream now.
pub async fn scrape(metrics: &Metrics, registry: &FunctionRegistry, broker: &Broker) -> String {
    let _scraping = metrics.scraping.lock().await;
    let mut work = Vec::new();
    for name in registry.names() {
        if let Ok(info) = broker
            .topology
            .jobs
            .consumer_info(consumer_name(&name))
            .await
        {
            let (pending, unacknowledged) = (info.num_pending, info.num_ack_pending as u64);
            // A work queue keeps a job until it is acknowledged: the first one left on the
            // function's subject is the oldest unfinished one.
            let mut age = 0.0;
            if pending + unacknowledged > 0 {
                if let Ok(oldest) = broker
                    .topology
                    .jobs
                    .get_first_raw_message_by_subject(squall_broker::names::jobs_subject(&name), 1)
                    .await
                {
                    let stored_ms = (oldest.time.unix_timestamp_nanos() / 1_000_000) as u64;
                    age = squall_broker::time::now_ms().saturating_sub(stored_ms) as f64 / 1000.0;
                }
            }
            work.push((name, pending, unacknowledged, age));
        }
    }
    metrics.set_function_work(&work);
    if let Ok(fleet) = crate::core::fleet::read(broker).await {
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
        metrics.set_function_work(&[("hello".into(), 4, 1, 2.5)]);
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
            (
                "squall_function_oldest_job_age_seconds{function=\"hello\"}",
                "2.5",
            ),
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
    fn requests_are_timed_by_route_template_and_status_class() {
        use axum::http::{Method, StatusCode};
        let metrics = Metrics::new();
        let route = "/v1/functions/{name}/invocations";
        metrics.http_request(route, &Method::POST, StatusCode::OK, 0.002);
        metrics.http_request(route, &Method::POST, StatusCode::ACCEPTED, 0.003);
        metrics.http_request(route, &Method::POST, StatusCode::GATEWAY_TIMEOUT, 40.0);
        metrics.http_request(
            "unmatched",
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::NOT_FOUND,
            0.0001,
        );
        let text = metrics.render();
        let labels = "route=\"/v1/functions/{name}/invocations\",method=\"POST\"";
        assert_eq!(
            sample(
                &text,
                &format!(
                    "squall_http_request_duration_seconds_count{{{labels},status_class=\"2xx\"}}"
                )
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(&text, &format!("squall_http_request_duration_seconds_bucket{{{labels},status_class=\"5xx\",le=\"30\"}}")),
            Some("0"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "squall_http_request_duration_seconds_count{route=\"unmatched\",method=\"other\",status_class=\"4xx\"}"),
            Some("1"),
            "{text}"
        );
        assert!(text.contains("# TYPE squall_http_request_duration_seconds histogram\n"));
    }

    #[test]
    fn the_index_times_terminal_results_only() {
        let metrics = Metrics::new();
        metrics.indexed_result("hello", InvocationStatus::Retrying, 1_000);
        metrics.indexed_result("hello", InvocationStatus::Succeeded, 2_000);
        metrics.indexed_result("hello", InvocationStatus::Succeeded, 3_000_000);
        let text = metrics.render();
        let labels = "function=\"hello\",status=\"succeeded\"";
        assert_eq!(
            sample(
                &text,
                &format!("squall_index_invocation_duration_seconds_count{{{labels}}}")
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(
                    "squall_index_invocation_duration_seconds_bucket{{{labels},le=\"0.0025\"}}"
                )
            ),
            Some("1"),
            "{text}"
        );
        assert!(!text.contains("status=\"retrying\""), "{text}");
    }

    #[test]
    fn a_function_no_longer_deployed_leaves_the_work_gauges() {
        let metrics = Metrics::new();
        metrics.set_function_work(&[("gone".into(), 4, 1, 1.0), ("kept".into(), 0, 0, 0.0)]);
        metrics.set_function_work(&[("kept".into(), 2, 0, 0.5)]);
        let text = metrics.render();
        assert!(!text.contains("function=\"gone\""), "{text}");
        assert_eq!(
            sample(&text, "squall_function_backlog{function=\"kept\"}"),
            Some("2")
        );
    }
}
