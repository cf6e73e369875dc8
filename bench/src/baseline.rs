//! The figures of the last refresh of BENCHMARKS.md (`bench/baseline.json`, a report in this
//! benchmark's own JSON format) and every figure's change against them.

use anyhow::Context as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the committed baseline lives, relative to the workspace root.
pub const DEFAULT_PATH: &str = "bench/baseline.json";

/// A previous report's medians, by figure key.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub path: PathBuf,
    /// The report's `--label`, or else the commit it measured.
    pub label: String,
    pub commit: String,
    pub date: String,
    /// The baseline run's settings, to say when they differ from this run's.
    pub settings: serde_json::Value,
    medians: HashMap<String, f64>,
}

/// The settings that change what a figure means; a comparison across them says so.
const COMPARABLE_SETTINGS: [&str; 7] = [
    "smoke",
    "n",
    "latency_n",
    "payload_bytes",
    "concurrency",
    "http_submitters",
    "clients",
];

/// The parts of a report a baseline needs; anything else in the file is ignored, so a report of
/// an older or newer version of the benchmark still serves.
#[derive(Deserialize)]
struct ReportFile {
    machine: MachineFile,
    #[serde(default)]
    settings: serde_json::Value,
    figures: Vec<FigureFile>,
}

#[derive(Deserialize)]
struct MachineFile {
    #[serde(default)]
    commit: String,
    #[serde(default)]
    date: String,
}

#[derive(Deserialize)]
struct FigureFile {
    key: String,
    /// `null` for a figure the baseline could not measure.
    median: Option<f64>,
}

impl Baseline {
    /// Reads the baseline at `path`: `Ok(None)` when there is no such file, an error when it is
    /// not a report.
    pub fn load(path: &Path) -> anyhow::Result<Option<Baseline>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        Baseline::parse(&text, path).map(Some)
    }

    /// Parses the text of a report written by `--json` or `--write-baseline`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Baseline> {
        let file: ReportFile = serde_json::from_str(text).with_context(|| {
            format!(
                "{} is not a squall-bench JSON report (expected \"machine\" and \"figures\" \
                 with a \"key\" and a \"median\" each)",
                path.display()
            )
        })?;
        let commit = if file.machine.commit.is_empty() {
            "unknown".to_string()
        } else {
            file.machine.commit
        };
        let label = file.settings["label"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map_or_else(|| format!("commit {commit}"), str::to_string);
        let medians = file
            .figures
            .into_iter()
            .filter_map(|f| f.median.filter(|m| m.is_finite()).map(|m| (f.key, m)))
            .collect();
        Ok(Baseline {
            path: path.to_path_buf(),
            label,
            commit,
            date: file.machine.date,
            settings: file.settings,
            medians,
        })
    }

    /// The settings in which this run differs from the baseline, as `n 300 (baseline 50000)`.
    pub fn differing_settings(&self, now: &serde_json::Value) -> Vec<String> {
        COMPARABLE_SETTINGS
            .iter()
            .filter(|key| now[**key] != self.settings[**key])
            .map(|key| format!("{key} {} (baseline {})", now[*key], self.settings[*key]))
            .collect()
    }

    /// The label, with the commit when the label does not name it.
    pub fn describe(&self) -> String {
        if self.label.contains(&self.commit) {
            self.label.clone()
        } else {
            format!("{} (commit {})", self.label, self.commit)
        }
    }

    /// The baseline's median of figure `key`, if it measured it.
    pub fn median(&self, key: &str) -> Option<f64> {
        self.medians.get(key).copied()
    }

    /// The change of `now` against the baseline's median of `key`, in percent.
    pub fn change_pct(&self, key: &str, now: f64) -> Option<f64> {
        let base = self.median(key)?;
        (base != 0.0).then(|| 100.0 * (now - base) / base.abs())
    }
}

/// A change in percent as printed in the "vs baseline" column: `+4.2 %`, `−4.2 %`.
pub fn format_change(pct: f64) -> String {
    let rounded = (pct * 10.0).round() / 10.0;
    if rounded == 0.0 {
        "±0.0 %".to_string()
    } else if rounded > 0.0 {
        format!("+{rounded:.1} %")
    } else {
        format!("−{:.1} %", -rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{
        "machine": {"commit": "782bac0", "date": "2026-01-01T00:00:00Z", "cores": 2},
        "settings": {"label": null, "runs": 5, "n": 50000},
        "figures": [
            {"key": "a", "median": 200.0, "unit": "µs"},
            {"key": "zero", "median": null, "missing": "n/a"}
        ],
        "targets": []
    }"#;

    #[test]
    fn a_report_is_a_baseline() {
        let baseline = Baseline::parse(REPORT, Path::new("b.json")).unwrap();
        assert_eq!(baseline.label, "commit 782bac0");
        assert_eq!(baseline.median("a"), Some(200.0));
        assert_eq!(baseline.median("zero"), None);
        assert_eq!(baseline.change_pct("a", 210.0), Some(5.0));
        assert_eq!(baseline.change_pct("missing", 1.0), None);
        let now = serde_json::json!({"label": "x", "runs": 1, "n": 300});
        assert_eq!(
            baseline.differing_settings(&now),
            vec!["n 300 (baseline 50000)"]
        );
    }

    #[test]
    fn the_label_wins_over_the_commit() {
        let text = REPORT.replace(r#""label": null"#, r#""label": "before the fix""#);
        let baseline = Baseline::parse(&text, Path::new("b.json")).unwrap();
        assert_eq!(baseline.label, "before the fix");
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_it() {
        let error = Baseline::parse(r#"{"figures": 3}"#, Path::new("bench/b.json")).unwrap_err();
        assert!(format!("{error:#}").contains("bench/b.json"), "{error:#}");
        assert!(Baseline::parse("not json", Path::new("x")).is_err());
    }

    #[test]
    fn a_missing_file_is_no_baseline() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Baseline::load(&dir.path().join("none.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn changes_are_signed_percentages() {
        assert_eq!(format_change(4.24), "+4.2 %");
        assert_eq!(format_change(-12.34), "−12.3 %");
        assert_eq!(format_change(0.04), "±0.0 %");
    }
}
