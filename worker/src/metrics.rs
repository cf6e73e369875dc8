//! The worker's metrics (a prometheus-client registry), the small HTTP endpoint that serves
//! them in the Prometheus text format, and a fleet's path for them: each worker process
//! reports to its supervisor over a Unix socket, and the supervisor serves the sum.

use crate::aggregate::Exposition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use squall_broker::{ErrorKind, InvocationStatus};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// Upper bounds, in seconds, of the duration histograms' buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// The `Content-Type` of `GET /metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A function's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: Arc<str>,
}

/// A function and the status an attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusLabels {
    pub function: Arc<str>,
    pub status: &'static str,
}

/// A function and the kind of failure an attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub function: Arc<str>,
    pub kind: &'static str,
}

/// A function and whether its artifact loaded (`ok` or `error`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LoadLabels {
    pub function: Arc<str>,
    pub outcome: &'static str,
}

type Histograms = Family<FunctionLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Every worker metric, registered once. Counters are registered without their `_total`
/// suffix: the encoder appends it, so the exposed names are the ones in the comments.
pub struct Metrics {
    registry: Registry,
    /// `squall_worker_invocations_total{function, status}`.
    invocations: Family<StatusLabels, Counter>,
    /// `squall_worker_execution_seconds{function}`.
    execution: Histograms,
    /// `squall_worker_queue_wait_seconds{function}`.
    queue_wait: Histograms,
    /// `squall_worker_retries_total{function, kind}`.
    retries: Family<KindLabels, Counter>,
    /// `squall_worker_dead_letters_total{function}`.
    dead_letters: Family<FunctionLabels, Counter>,
    /// `squall_worker_failures_total{function, kind}`.
    failures: Family<KindLabels, Counter>,
    /// `squall_worker_in_flight{function}`.
    in_flight: Family<FunctionLabels, Gauge>,
    /// `squall_worker_artifact_loads_total{function, outcome}`.
    artifact_loads: Family<LoadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every worker metric described.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let invocations = Family::default();
        let execution = Histograms::new_with_constructor(duration_histogram);
        let queue_wait = Histograms::new_with_constructor(duration_histogram);
        let retries = Family::default();
        let dead_letters = Family::default();
        let failures = Family::default();
        let in_flight = Family::default();
        let artifact_loads = Family::default();
        // prometheus-client ends every help text with a period of its own.
        registry.register(
            "squall_worker_invocations",
            "Attempts finished by this worker, by function and resulting status",
            invocations.clone(),
        );
        registry.register(
            "squall_worker_execution_seconds",
            "Execution time of an attempt, in seconds",
            execution.clone(),
        );
        registry.register(
            "squall_worker_queue_wait_seconds",
            "Time from acceptance to the start of the first attempt, in seconds",
            queue_wait.clone(),
        );
        registry.register(
            "squall_worker_retries",
            "Attempts handed back for a retry, by error kind",
            retries.clone(),
        );
        registry.register(
            "squall_worker_dead_letters",
            "Invocations this worker ended as dead_lettered or timed_out",
            dead_letters.clone(),
        );
        registry.register(
            "squall_worker_failures",
            "Attempts that failed, by error kind (out_of_memory among them), retried or not",
            failures.clone(),
        );
        registry.register(
            "squall_worker_in_flight",
            "Jobs running now",
            in_flight.clone(),
        );
        registry.register(
            "squall_worker_artifact_loads",
            "Artifact versions fetched and loaded (cold starts), by outcome",
            artifact_loads.clone(),
        );
        Metrics {
            registry,
            invocations,
            execution,
            queue_wait,
            retries,
            dead_letters,
            failures,
            in_flight,
            artifact_loads,
        }
    }

    /// The handles of one function's series, resolved once for all its jobs.
    pub fn function(&self, function: &str) -> FunctionMetrics {
        let function: Arc<str> = function.into();
        let labels = FunctionLabels {
            function: function.clone(),
        };
        FunctionMetrics {
            execution: self.execution.get_or_create_owned(&labels),
            queue_wait: self.queue_wait.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            dead_letters: self.dead_letters.get_or_create_owned(&labels),
            invocations: self.invocations.clone(),
            retries: self.retries.clone(),
            failures: self.failures.clone(),
            function,
        }
    }

    /// Counts one artifact load of `function`'s version, good or bad.
    pub fn artifact_loaded(&self, function: &str, ok: bool) {
        let labels = LoadLabels {
            function: function.into(),
            outcome: if ok { "ok" } else { "error" },
        };
        self.artifact_loads.get_or_create(&labels).inc();
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// One function's series: what its jobs record around each attempt.
#[derive(Clone)]
pub struct FunctionMetrics {
    function: Arc<str>,
    execution: Histogram,
    queue_wait: Histogram,
    in_flight: Gauge,
    dead_letters: Counter,
    invocations: Family<StatusLabels, Counter>,
    retries: Family<KindLabels, Counter>,
    failures: Family<KindLabels, Counter>,
}

/// A job counted in `squall_worker_in_flight` until it is dropped.
pub struct Running<'a>(&'a Gauge);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl FunctionMetrics {
    /// Records how long an invocation waited for its first attempt.
    pub fn waited(&self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }

    /// Counts a job as running until the returned guard is dropped.
    pub fn running(&self) -> Running<'_> {
        self.in_flight.inc();
        Running(&self.in_flight)
    }

    /// Records how long an attempt ran.
    pub fn executed(&self, seconds: f64) {
        self.execution.observe(seconds);
    }

    /// Counts a failed attempt by its kind, whatever follows it.
    pub fn failed(&self, kind: ErrorKind) {
        self.failures
            .get_or_create(&KindLabels {
                function: self.function.clone(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts a settled attempt: by the status its result records, as a retry by the kind of
    /// failure, and as a dead letter when the invocation ended as `dead_lettered` or `timed_out`.
    pub fn settled(&self, status: InvocationStatus, retry: Option<ErrorKind>, dead_letter: bool) {
        self.invocations
            .get_or_create(&StatusLabels {
                function: self.function.clone(),
                status: status.as_str(),
            })
            .inc();
        if let Some(kind) = retry {
            self.retries
                .get_or_create(&KindLabels {
                    function: self.function.clone(),
                    kind: kind.as_str(),
                })
                .inc();
        }
        if dead_letter {
            self.dead_letters.inc();
        }
    }
}

/// Binds `addr` and serves `GET /metrics` in the background, answering with what `render`
/// returns at each scrape.
pub async fn serve(
    addr: SocketAddr,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render()) }
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

/// How often a fleet's worker process reports its metrics to its supervisor.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The largest report a supervisor reads; a longer frame ends the connection.
const MAX_REPORT: usize = 16 * 1024 * 1024;

/// Sends this process's whole exposition to the supervisor listening on the Unix socket
/// `socket` every [`REPORT_EVERY`] (a 4-byte big-endian length, then the text), and once more
/// when `stop` turns true, then returns. A lost connection is made again at the next report.
pub async fn report(socket: PathBuf, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut stream: Option<tokio::net::UnixStream> = None;
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => false,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        if stream.is_none() {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(connected) => stream = Some(connected),
                Err(error) => {
                    tracing::debug!(message = "cannot reach the supervisor's metrics socket", socket = %socket.display(), %error)
                }
            }
        }
        if let Some(connected) = stream.as_mut() {
            let text = metrics.render();
            let mut frame = Vec::with_capacity(text.len() + 4);
            frame.extend_from_slice(&(text.len() as u32).to_be_bytes());
            frame.extend_from_slice(text.as_bytes());
            if let Err(error) = connected.write_all(&frame).await {
                tracing::debug!(message = "metrics report lost; reconnecting", %error);
                stream = None;
            }
        }
        if last {
            return;
        }
    }
}

/// What a fleet supervisor serves: the sum of its worker processes' reports, with the counts
/// of workers that exited kept (see `aggregate`), and the supervisor's own metrics.
pub struct Collector {
    reports: Mutex<Reports>,
    own: Registry,
    /// `squall_fleet_workers`: worker processes this supervisor runs.
    pub workers: Gauge,
    /// `squall_fleet_worker_crashes_total`: worker processes that died without being asked.
    pub crashes: Counter,
}

#[derive(Default)]
struct Reports {
    retired: Exposition,
    live: HashMap<u64, Exposition>,
    next: u64,
}

impl Collector {
    /// A collector with no report yet.
    pub fn new() -> Collector {
        let mut own = Registry::default();
        let workers = Gauge::default();
        let crashes = Counter::default();
        own.register(
            "squall_fleet_workers",
            "Worker processes this fleet supervisor runs",
            workers.clone(),
        );
        own.register(
            "squall_fleet_worker_crashes",
            "Worker processes of this supervisor that died without being asked to stop",
            crashes.clone(),
        );
        Collector {
            reports: Mutex::new(Reports::default()),
            own,
            workers,
            crashes,
        }
    }

    /// Binds the Unix socket `path` (replacing a stale one) and reads reports from every
    /// worker that connects, in the background.
    pub fn listen(self: &Arc<Self>, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot listen for worker metrics on {}", path.display()))?;
        let collector = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(collector.clone().read_reports(stream));
                    }
                    Err(error) => {
                        tracing::warn!(message = "cannot accept a worker's metrics connection", %error);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Keeps one worker's latest report until its connection ends, then keeps its counts.
    async fn read_reports(self: Arc<Self>, mut stream: tokio::net::UnixStream) {
        let id = {
            let mut reports = self.reports.lock().expect("reports lock");
            reports.next += 1;
            reports.next
        };
        loop {
            let mut length = [0u8; 4];
            if stream.read_exact(&mut length).await.is_err() {
                break;
            }
            let length = u32::from_be_bytes(length) as usize;
            if length > MAX_REPORT {
                tracing::warn!(
                    message = "a worker's metrics report is too large; dropping its connection",
                    length
                );
                break;
            }
            let mut text = vec![0u8; length];
            if stream.read_exact(&mut text).await.is_err() {
                break;
            }
            let parsed = Exposition::parse(&String::from_utf8_lossy(&text));
            self.reports
                .lock()
                .expect("reports lock")
                .live
                .insert(id, parsed);
        }
        let mut reports = self.reports.lock().expect("reports lock");
        if let Some(last) = reports.live.remove(&id) {
            reports.retired.add(&last, false);
        }
    }

    /// The Prometheus text of the fleet: its workers' metrics summed, then its own.
    pub fn render(&self) -> String {
        let mut text = {
            let reports = self.reports.lock().expect("reports lock");
            Exposition::total(&reports.retired, reports.live.values()).render()
        };
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.own)
            .expect("writing to a String cannot fail");
        text
    }
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
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
        let hello = metrics.function("hello");
        hello.waited(0.003);
        {
            let _running = hello.running();
            hello.executed(0.02);
        }
        hello.settled(InvocationStatus::Succeeded, None, false);
        hello.settled(InvocationStatus::Retrying, Some(ErrorKind::Panic), false);
        hello.settled(InvocationStatus::DeadLettered, None, true);
        hello.failed(ErrorKind::OutOfMemory);
        metrics.artifact_loaded("hello", true);
        let text = metrics.render();
        let f = "{function=\"hello\"}";
        for (prefix, value) in [
            (
                "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}",
                "1",
            ),
            (
                "squall_worker_retries_total{function=\"hello\",kind=\"panic\"}",
                "1",
            ),
            (&format!("squall_worker_dead_letters_total{f}"), "1"),
            (
                "squall_worker_failures_total{function=\"hello\",kind=\"out_of_memory\"}",
                "1",
            ),
            (&format!("squall_worker_in_flight{f}"), "0"),
            (&format!("squall_worker_execution_seconds_count{f}"), "1"),
            (&format!("squall_worker_queue_wait_seconds_count{f}"), "1"),
            (
                "squall_worker_queue_wait_seconds_bucket{function=\"hello\",le=\"0.0025\"}",
                "0",
            ),
            (
                "squall_worker_queue_wait_seconds_bucket{function=\"hello\",le=\"0.005\"}",
                "1",
            ),
            (
                "squall_worker_queue_wait_seconds_bucket{function=\"hello\",le=\"30\"}",
                "1",
            ),
            (
                "squall_worker_queue_wait_seconds_bucket{function=\"hello\",le=\"+Inf\"}",
                "1",
            ),
            (
                "squall_worker_artifact_loads_total{function=\"hello\",outcome=\"ok\"}",
                "1",
            ),
        ] {
            assert_eq!(sample(&text, prefix), Some(value), "{prefix} in\n{text}");
        }
        assert!(
            text.contains("# TYPE squall_worker_invocations_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP squall_worker_in_flight Jobs running now.\n# TYPE squall_worker_in_flight gauge\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE squall_worker_execution_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains(".."),
            "a help text ends in two periods: {text}"
        );
    }

    #[test]
    fn duration_histograms_keep_their_buckets() {
        let metrics = Metrics::new();
        metrics.function("f").executed(0.5);
        let text = metrics.render();
        let bounds: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("squall_worker_execution_seconds_bucket"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        let expected: Vec<String> = DURATION_BUCKETS
            .iter()
            .map(f64::to_string)
            .chain(["+Inf".to_string()])
            .collect();
        assert_eq!(bounds, expected);
    }
}
