//! HTTP batch submission (`POST …/batch`, NDJSON), once per run, with one worker.

use crate::cluster::Cluster;
use crate::context::{Context, Server, S2};
use crate::drive::{self, NoBatchEndpoint, Submit};
use crate::measure::{Load, FUNCTION};
use crate::record::{add_throughput, add_usage};
use crate::report::Report;
use crate::resources::Watch;
use bytes::Bytes;
use squall_broker::names::RESULTS_STREAM;

/// Concurrent HTTP clients posting batches in the batch measurement: a few are enough to keep
/// the dispatcher busy when every request carries hundreds of invocations.
const BATCH_SUBMITTERS: usize = 4;

/// HTTP batch submission with one worker: `POST …/batch` of NDJSON bodies, each line the
/// payload as a JSON string, completion counted on the results subject as for the other async
/// measurements. Skipped, with the reason in the report, when the first batch answers 404 or 405.
/// Returns whether the dispatcher has the batch endpoint: without it, the later runs skip it.
pub async fn measure(
    cx: &Context,
    server: &Server,
    squall: &mut Cluster,
    report: &mut Report,
    run: usize,
) -> anyhow::Result<bool> {
    let s = cx.settings.clone();
    let batch = Load::squall(Submit::HttpBatch {
        http: squall.http.clone(),
        url: format!("{}/v1/functions/{FUNCTION}/batch", squall.url),
        submitters: BATCH_SUBMITTERS,
        lines: s.batch_lines,
        line: json_string_line(s.payload),
    });
    squall.add_worker(FUNCTION).await?;
    let warm = cx.driver(&server.nats).throughput(&batch, s.warmup()).await;
    if let Err(error) = warm {
        let Some(missing) = error.downcast_ref::<NoBatchEndpoint>() else {
            return Err(error);
        };
        let why = format!("n/a: the dispatcher has no batch endpoint ({})", missing.0);
        cx.progress(&why);
        let label = format!(
            "through the dispatcher (HTTP batch of {}), 1 worker",
            s.batch_lines
        );
        report.missing(S2, "squall.tput.batch.1", &label, "inv/s", &why);
        report.missing(
            S2,
            "squall.tput.batch.1.ratio",
            "  … as % of the bare pipeline (1 connection)",
            "%",
            &why,
        );
        squall.stop_workers().await;
        return Ok(false);
    }
    let dispatcher = Watch::process(squall.dispatcher.pid());
    let worker = Watch::tree(squall.workers[0].pid());
    let nats = Watch::process(server.pid);
    let own = Watch::process(std::process::id());
    let driver = cx.driver(&server.nats);
    driver.quiesce(&batch).await?;
    let (t, usage) = driver
        .measure(&batch, s.n, &[worker, dispatcher, nats, own])
        .await?;
    add_usage(
        report,
        "HTTP batch",
        &[
            ("batch.worker", "worker", true),
            ("batch.dispatcher", "dispatcher", true),
            ("batch.nats", "nats-server", false),
            ("batch.client", "benchmark client", false),
        ],
        &usage,
    );
    add_throughput(
        report,
        run,
        "squall.tput.batch.1",
        &format!(
            "through the dispatcher (HTTP batch of {}), 1 worker",
            s.batch_lines
        ),
        "bare.tput.1",
        t.per_second,
    );
    report.add(
        S2,
        "squall.submit.batch.1",
        "  … of which batch submission alone (invocations accepted per second)",
        "inv/s",
        s.n as f64 / t.submitted_in.as_secs_f64(),
    );
    cx.driver(&server.nats).quiesce(&batch).await?;
    squall.stop_workers().await;
    drive::purge(&server.nats, RESULTS_STREAM).await?;
    Ok(true)
}

/// One batch line: a JSON string of `size` bytes with its quotes (at least the two quotes), so
/// a batch input is as large as the other measurements' raw payload and still valid JSON.
fn json_string_line(size: usize) -> Bytes {
    let mut line = Vec::with_capacity(size.max(2));
    line.push(b'"');
    line.resize(size.max(2) - 1, b'x');
    line.push(b'"');
    Bytes::from(line)
}
