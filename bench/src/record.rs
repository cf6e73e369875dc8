//! How the single-node phases record their figures: latency percentiles, CPU and context
//! switches per invocation, throughputs with their ratio to the bare pipeline of the same run.

use crate::context::{S2, S5};
use crate::report::Report;
use crate::resources::Usage;
use crate::stats::Latency;

/// A figure of `report` in one run, for a ratio against it.
pub fn bare_figure(report: &Report, key: &str, run: usize) -> Option<f64> {
    report
        .figures
        .iter()
        .find(|f| f.key == key)
        .and_then(|f| f.values.get(run - 1).copied())
}

/// KiB in MiB, the unit of the RSS figures.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Records p50, p99 and p999 of a latency measurement under `key`.
pub fn add_latency(
    report: &mut Report,
    section: &'static str,
    key: &str,
    label: &str,
    latency: &Latency,
) {
    for (suffix, value) in [
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("p999", latency.p999),
    ] {
        report.add(
            section,
            &format!("{key}.{suffix}"),
            &format!("{label}, {suffix}"),
            "µs",
            value,
        );
    }
}

/// Records what measured processes used per invocation: CPU time, and context switches where
/// asked. Each entry is (key, process, with context switches).
pub fn add_usage(
    report: &mut Report,
    mode: &str,
    processes: &[(&str, &str, bool)],
    usage: &[Usage],
) {
    for (&(key, who, switches), usage) in processes.iter().zip(usage) {
        report.add(
            S5,
            &format!("res.cpu.{key}"),
            &format!("{who} CPU per 1,000 invocations, {mode}"),
            "ms/1k",
            usage.cpu_ms_per_1000,
        );
        if switches {
            report.add(
                S5,
                &format!("res.ctx.{key}"),
                &format!("{who} context switches per invocation, {mode}"),
                "/inv",
                usage.switches_per_unit,
            );
        }
    }
}

/// Records a Squall throughput and, when the same run measured it, its ratio to the bare one.
pub fn add_throughput(
    report: &mut Report,
    run: usize,
    key: &str,
    label: &str,
    bare_key: &str,
    value: f64,
) {
    report.add(S2, key, label, "inv/s", value);
    if let Some(bare) = bare_figure(report, bare_key, run) {
        let bare_label = match bare_key {
            "bare.tput.1" => "1 connection",
            _ => "2 connections",
        };
        report.add(
            S2,
            &format!("{key}.ratio"),
            &format!("  … as % of the bare pipeline ({bare_label})"),
            "%",
            100.0 * value / bare,
        );
    }
}
