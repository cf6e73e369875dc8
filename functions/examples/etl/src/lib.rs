//! A three-stage ETL pipeline in one library; the config value `stage` picks the stage.
//!
//! - `extract` takes a CSV upload (the input, raw bytes), checks its header and publishes its
//!   lines, with their line numbers, in batches of `batch_size` on `events.etl.extracted`.
//! - `transform` (triggered by `events.etl.extracted`) validates and normalises each line: good
//!   records go on `events.etl.transformed`, bad lines with their line number and the reason
//!   on `events.etl.rejected`.
//! - `load` (triggered by both) writes each batch to its state once and keeps running totals
//!   per upload; invoked directly with `{"report": "<upload>"}` it answers them.
//!
//! Markers in the data force a retry after the work is done, to show that it is not repeated:
//! a record whose customer is `retry-transform` fails transform's first attempt after it
//! published, and `retry-load` fails load's first attempt after it wrote its totals.

mod records;

use records::{Batch, Record, Rejected};
use serde::{Deserialize, Serialize};
use squall_sdk::{export_raw_function, Context, FnError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const EXTRACTED: &str = "events.etl.extracted";
pub const TRANSFORMED: &str = "events.etl.transformed";
pub const REJECTED: &str = "events.etl.rejected";

/// The settings in `[function.config]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    stage: Stage,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
}

fn default_batch_size() -> usize {
    500
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Stage {
    Extract,
    Transform,
    Load,
}

fn run(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let settings: Settings = serde_json::from_value(ctx.config().clone())
        .map_err(|e| FnError::permanent(format!("config: {e}")))?;
    match settings.stage {
        Stage::Extract => extract(ctx, input, settings.batch_size.max(1)),
        Stage::Transform => transform(ctx, input),
        Stage::Load => load(ctx, input),
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, FnError> {
    serde_json::to_vec(value).map_err(|e| FnError::permanent(e.to_string()))
}

#[derive(Serialize)]
struct Extracted {
    upload: String,
    rows: usize,
    batches: usize,
}

fn extract(ctx: &Context, input: &[u8], batch_size: usize) -> Result<Vec<u8>, FnError> {
    let text = std::str::from_utf8(input)
        .map_err(|e| FnError::permanent(format!("the upload is not UTF-8: {e}")))?;
    let lines = records::numbered_lines(text).map_err(FnError::permanent)?;
    let upload = ctx.invocation_id().to_string();
    let mut batches = 0;
    for (n, chunk) in lines.chunks(batch_size).enumerate() {
        let batch = Batch {
            upload: upload.clone(),
            batch: n,
            items: chunk.to_vec(),
        };
        ctx.publish(EXTRACTED, &json(&batch)?)?;
        batches += 1;
    }
    ctx.info(&format!(
        "extracted {} rows in {batches} batches",
        lines.len()
    ));
    json(&Extracted {
        upload,
        rows: lines.len(),
        batches,
    })
}

#[derive(Serialize)]
struct Transformed {
    records: usize,
    rejected: usize,
}

fn transform(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    let batch: Batch<records::Line> = serde_json::from_slice(input)?;
    let (good, bad) = records::transform_all(&batch.items);
    if !good.is_empty() {
        ctx.publish(TRANSFORMED, &json(&batch.with(good.clone()))?)?;
    }
    if !bad.is_empty() {
        ctx.publish(REJECTED, &json(&batch.with(bad.clone()))?)?;
    }
    if ctx.attempt() == 1 && good.iter().any(|r| r.customer == "retry-transform") {
        return Err(FnError::retry_after(
            "asked to retry after publishing (retry-transform)",
            Duration::from_millis(10),
        ));
    }
    json(&Transformed {
        records: good.len(),
        rejected: bad.len(),
    })
}

/// An upload's running totals, with the batches they include (so none counts twice).
#[derive(Serialize, Deserialize, Default)]
struct Totals {
    records: u64,
    rejected: u64,
    /// Sum of the amounts in cents, per currency.
    amount_cents: BTreeMap<String, i64>,
    /// `t<n>`: transformed batch n is counted; `r<n>`: rejected batch n is.
    applied: BTreeSet<String>,
}

#[derive(Serialize)]
struct Loaded {
    upload: String,
    batch: usize,
    counted: bool,
}

/// What `{"report": upload}` answers: the totals, and every loaded and rejected line.
#[derive(Serialize)]
struct Report {
    upload: String,
    records: u64,
    rejected: u64,
    amount_cents: BTreeMap<String, i64>,
    loaded_lines: Vec<u64>,
    rejected_rows: Vec<Rejected>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    report: String,
}

fn load(ctx: &Context, input: &[u8]) -> Result<Vec<u8>, FnError> {
    match ctx.event()["subject"].as_str() {
        Some(TRANSFORMED) => {
            let batch: Batch<Record> = serde_json::from_slice(input)?;
            let retry = batch.items.iter().any(|r| r.customer == "retry-load");
            let loaded = apply(ctx, &batch, "rows", 't', |totals, records| {
                totals.records += records.len() as u64;
                for r in records {
                    *totals.amount_cents.entry(r.currency.clone()).or_default() += r.amount_cents;
                }
            })?;
            if retry && ctx.attempt() == 1 {
                return Err(FnError::retry_after(
                    "asked to retry after loading (retry-load)",
                    Duration::from_millis(10),
                ));
            }
            json(&loaded)
        }
        Some(REJECTED) => {
            let batch: Batch<Rejected> = serde_json::from_slice(input)?;
            let loaded = apply(ctx, &batch, "rejects", 'r', |totals, rows| {
                totals.rejected += rows.len() as u64;
            })?;
            json(&loaded)
        }
        _ => {
            let request: ReportRequest = serde_json::from_slice(input)?;
            json(&report(ctx, &request.report)?)
        }
    }
}

/// Writes `batch` under `<prefix>/<upload>/<n>` and adds it to the upload's totals unless they
/// already include it. Load runs one attempt at a time fleet-wide (`max_concurrency = 1`), so
/// the read-modify-write of the totals key does not race.
fn apply<T: Serialize>(
    ctx: &Context,
    batch: &Batch<T>,
    prefix: &str,
    tag: char,
    add: impl FnOnce(&mut Totals, &[T]),
) -> Result<Loaded, FnError> {
    let kv = ctx.kv();
    let totals_key = format!("totals/{}", batch.upload);
    let mut totals: Totals = kv.get_json(&totals_key)?.unwrap_or_default();
    let mark = format!("{tag}{}", batch.batch);
    let counted = !totals.applied.contains(&mark);
    if counted {
        kv.put_json(
            &format!("{prefix}/{}/{}", batch.upload, batch.batch),
            &batch.items,
        )?;
        add(&mut totals, &batch.items);
        totals.applied.insert(mark);
        kv.put_json(&totals_key, &totals)?;
    }
    Ok(Loaded {
        upload: batch.upload.clone(),
        batch: batch.batch,
        counted,
    })
}

fn report(ctx: &Context, upload: &str) -> Result<Report, FnError> {
    let kv = ctx.kv();
    let totals: Totals = kv
        .get_json(&format!("totals/{upload}"))?
        .unwrap_or_default();
    let mut loaded_lines = Vec::new();
    let mut rejected_rows = Vec::new();
    for mark in &totals.applied {
        let (tag, n) = mark.split_at(1);
        if tag == "t" {
            let records: Vec<Record> = kv
                .get_json(&format!("rows/{upload}/{n}"))?
                .unwrap_or_default();
            loaded_lines.extend(records.iter().map(|r| r.line));
        } else {
            let rows: Vec<Rejected> = kv
                .get_json(&format!("rejects/{upload}/{n}"))?
                .unwrap_or_default();
            rejected_rows.extend(rows);
        }
    }
    loaded_lines.sort_unstable();
    rejected_rows.sort_by_key(|r| r.line);
    Ok(Report {
        upload: upload.to_string(),
        records: totals.records,
        rejected: totals.rejected,
        amount_cents: totals.amount_cents,
        loaded_lines,
        rejected_rows,
    })
}

export_raw_function!(run);
