//! The targets the single-node figures are held to, checked on the medians of the runs.

use crate::report::Report;

/// The targets for a 2-core machine (issue 12's second wave, and the cold start of issue 9):
/// medians of the runs, measured side by side with the bare pipeline.
pub fn add_targets(report: &mut Report) {
    report.target(
        "raw-NATS async throughput >= 70% of the bare pipeline (1 worker)",
        "squall.tput.nats.1.ratio",
        |v| v >= 70.0,
    );
    report.target(
        "HTTP async throughput, one request per invocation, >= 35% of the bare pipeline",
        "squall.tput.http.1.ratio",
        |v| v >= 35.0,
    );
    report.target(
        "HTTP batch throughput >= 60% of the bare pipeline",
        "squall.tput.batch.1.ratio",
        |v| v >= 60.0,
    );
    report.target(
        "sync p50 <= 1.5x the bare sequential round trip",
        "squall.sync.seq.p50.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "sync p50 <= 2.5x the bare round trip with concurrent clients",
        "squall.sync.conc.p50.ratio",
        |v| v <= 2.5,
    );
    report.target(
        "web request p50 <= 1.5x the bare sequential round trip",
        "squall.web.seq.p50.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "sync p99 <= 2x the bare sequential p99",
        "squall.sync.seq.p99.ratio",
        |v| v <= 2.0,
    );
    // Neither dispatcher submitted these jobs. The target is the gateway's: a dispatcher that
    // holds no index receives no results it did not ask for. The index holder's cost per result
    // is printed beside it, since some process pays it.
    report.target(
        "gateway dispatcher (no query index) CPU per raw-NATS invocation it did not submit <= 2 µs",
        "res.cpu.nats.gateway",
        |v| v <= 2.0,
    );
    report.beside_last_target(
        "the index holder's own cost per result",
        "res.cpu.nats.dispatcher",
    );
    report.target("a cached host kv_get < 5 µs", "state.cached.p50", |v| {
        v < 5.0
    });
    report.target(
        "an uncached host kv_get within 1.5x a bare KV get",
        "state.uncached.ratio",
        |v| v <= 1.5,
    );
    report.target(
        "scale-from-zero → first result < 50 ms",
        "cold.zero",
        |v| v < 50.0,
    );
    report.target(
        "scale-from-zero of one function among many → first result <= 20 ms",
        "cold.zero.many",
        |v| v <= 20.0,
    );
    report.target(
        "idle RSS per function process <= 12 MiB (after its first call)",
        "res.worker.rss.function",
        |v| v <= 12.0,
    );
    report.target(
        "worker idle RSS < 15 MiB (the worker process alone)",
        "res.worker.rss.idle.alone",
        |v| v < 15.0,
    );
    report.target(
        "worker idle RSS < 15 MiB (with its supervisor)",
        "res.worker.rss.idle",
        |v| v < 15.0,
    );
    report.target(
        "a new version's cold start < 5 ms beyond a warm call",
        "cold.version.extra",
        |v| v < 5.0,
    );
    if report.figures.iter().any(|f| f.key.starts_with("rt.")) {
        crate::runtimes::add_targets(report);
    }
    if report.figures.iter().any(|f| f.key.starts_with("scale.")) {
        crate::scale::add_targets(report);
    }
}
