//! The results: figures with their per-run values, the targets, the machine they ran on, a
//! printed table and a JSON document.

use crate::baseline::{format_change, Baseline};
use crate::stats::Summary;
use serde_json::json;
use std::fmt::Write as _;

/// One measured quantity and its value in every run.
#[derive(Debug, Clone)]
pub struct Figure {
    pub section: &'static str,
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    pub values: Vec<f64>,
    /// Why there is no value, for a figure that could not be measured.
    pub missing: Option<String>,
    /// Print every run's value beside the median: for figures with few, telling runs (a
    /// first-ever cold start differs from the later ones).
    pub listed: bool,
}

impl Figure {
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }

    /// Every run's value, as `a, b, c` with the unit's precision.
    fn values_text(&self) -> String {
        self.values
            .iter()
            .map(|&v| format_value(v, self.unit))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where and how the benchmark ran.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub nats_server: String,
    pub commit: String,
    pub date: String,
    pub optimized: bool,
    /// `/proc/loadavg`'s 1-, 5- and 15-minute load averages when the run started and ended:
    /// other work on the machine shows here.
    pub load_before: String,
    pub load_after: String,
}

/// The three load averages from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    /// Reads the machine's description from `/proc` and the workspace's git commit.
    pub fn describe(nats_server: String, root: &std::path::Path) -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = crate::resources::parse_status_number(&read("/proc/meminfo"), "MemTotal")
            .map(|kib| kib as f64 / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .current_dir(root)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .map(|s| s.trim().to_string())
        };
        let commit = match git(&["rev-parse", "--short", "HEAD"]) {
            Some(hash) => {
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if dirty {
                    format!("{hash} with local changes")
                } else {
                    hash
                }
            }
            None => "unknown".into(),
        };
        let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            nats_server,
            commit,
            date,
            optimized: !cfg!(debug_assertions),
            load_before: load_average(),
            load_after: String::new(),
        }
    }
}

/// A goal from the issue and how the run compares.
#[derive(Debug, Clone)]
pub struct Target {
    pub goal: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
}

/// Everything the run measured.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    pub settings: serde_json::Value,
    /// The report each figure is compared with, if any.
    pub baseline: Option<Baseline>,
}

impl Report {
    /// Appends `value` to figure `key`, creating it (in order of first appearance) if needed.
    pub fn add(
        &mut self,
        section: &'static str,
        key: &str,
        label: &str,
        unit: &'static str,
        value: f64,
    ) {
        match self.figures.iter_mut().find(|f| f.key == key) {
            Some(figure) => figure.values.push(value),
            None => self.figures.push(Figure {
                section,
                key: key.to_string(),
                label: label.to_string(),
                unit,
                values: vec![value],
                missing: None,
                listed: false,
            }),
        }
    }

    /// Records a figure that cannot be measured, and why.
    pub fn missing(
        &mut self,
        section: &'static str,
        key: &str,
        label: &str,
        unit: &'static str,
        why: &str,
    ) {
        self.figures.push(Figure {
            section,
            key: key.to_string(),
            label: label.to_string(),
            unit,
            values: Vec::new(),
            missing: Some(why.to_string()),
            listed: false,
        });
    }

    /// Prints every run's value of figure `key` beside its median.
    pub fn list_values(&mut self, key: &str) {
        if let Some(figure) = self.figures.iter_mut().find(|f| f.key == key) {
            figure.listed = true;
        }
    }

    /// The change of a figure's median against the baseline, as printed.
    fn change(&self, figure: &Figure) -> String {
        match (&self.baseline, figure.summary()) {
            (Some(baseline), Some(s)) => baseline
                .change_pct(&figure.key, s.median)
                .map(format_change)
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The line naming the baseline, or why there is none.
    fn baseline_line(&self) -> String {
        match &self.baseline {
            Some(b) => {
                let differing = b.differing_settings(&self.settings);
                let caveat = if differing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; NOT COMPARABLE, settings differ: {}",
                        differing.join(", ")
                    )
                };
                let date = if b.date.is_empty() {
                    "undated"
                } else {
                    &b.date
                };
                format!(
                    "vs baseline: {} ({date}), from {}{caveat}",
                    b.describe(),
                    b.path.display()
                )
            }
            None => "vs baseline: no baseline given or found, no comparison".to_string(),
        }
    }

    /// Adds a target: met when `ok(median)` holds for figure `key`.
    pub fn target(&mut self, goal: &str, key: &str, ok: impl Fn(f64) -> bool) {
        self.target_in(goal, key, None, ok);
    }

    /// Adds a target on figure `key` expressed in another unit: `Some((factor, unit))` converts
    /// the median (`median × factor` in `unit`) before `ok` sees it and before it is printed.
    pub fn target_in(
        &mut self,
        goal: &str,
        key: &str,
        unit: Option<(f64, &'static str)>,
        ok: impl Fn(f64) -> bool,
    ) {
        let figure = self.figures.iter().find(|f| f.key == key);
        let (measured, met) = match figure.and_then(|f| f.summary().map(|s| (f, s))) {
            Some((f, s)) => {
                let (factor, unit) = unit.unwrap_or((1.0, f.unit));
                let value = s.median * factor;
                (
                    format!(
                        "{} {unit} (median of {})",
                        format_value(value, unit),
                        f.values.len()
                    ),
                    Some(ok(value)),
                )
            }
            None => (
                figure
                    .and_then(|f| f.missing.clone())
                    .unwrap_or_else(|| "not measured".into()),
                None,
            ),
        };
        self.targets.push(Target {
            goal: goal.to_string(),
            measured,
            met,
        });
    }

    /// Appends figure `key`'s median to the last target's measurement, as `; {what}: {median}`:
    /// a figure that belongs beside the target without deciding it.
    pub fn beside_last_target(&mut self, what: &str, key: &str) {
        let figure = self.figures.iter().find(|f| f.key == key);
        let text = match figure.and_then(|f| f.summary().map(|s| (f, s))) {
            Some((f, s)) => format!(
                "{} {} (median of {})",
                format_value(s.median, f.unit),
                f.unit,
                f.values.len()
            ),
            None => figure
                .and_then(|f| f.missing.clone())
                .unwrap_or_else(|| "not measured".into()),
        };
        if let Some(target) = self.targets.last_mut() {
            let _ = write!(target.measured, "; {what}: {text}");
        }
    }

    /// The human-readable table.
    pub fn table(&self, machine: &Machine) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nSquall benchmark: {} ({} cores, {:.1} GiB), Linux {}, {}, commit {}, {}{}",
            machine.cpu,
            machine.cores,
            machine.memory_gib,
            machine.kernel,
            machine.nats_server,
            machine.commit,
            machine.date,
            if machine.optimized {
                ""
            } else {
                " (DEBUG BUILD: not representative)"
            }
        );
        let _ = writeln!(
            out,
            "load average before: {}, after: {}",
            machine.load_before, machine.load_after
        );
        let _ = writeln!(out, "settings: {}", self.settings);
        let _ = writeln!(out, "{}", self.baseline_line());
        let compare = self.baseline.is_some();
        let width = self
            .figures
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(40);
        // Sections are numbered, so sorting by name orders them; the sort is stable, so figures
        // keep their order of measurement within a section.
        let mut figures: Vec<&Figure> = self.figures.iter().collect();
        figures.sort_by_key(|f| f.section);
        let mut section = "";
        for figure in figures {
            if figure.section != section {
                section = figure.section;
                let _ = writeln!(out, "\n{section}");
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>9}  {:>10}  {:>10}  {:>10}  {}runs",
                    "figure",
                    "unit",
                    "median",
                    "min",
                    "max",
                    if compare { "vs baseline  " } else { "" }
                );
            }
            match figure.summary() {
                Some(s) => {
                    let change = if compare {
                        format!("{:>11}  ", self.change(figure))
                    } else {
                        String::new()
                    };
                    let values = if figure.listed {
                        format!(" ({})", figure.values_text())
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "  {:<width$}  {:>9}  {:>10}  {:>10}  {:>10}  {change}{}{values}",
                        figure.label,
                        figure.unit,
                        format_value(s.median, figure.unit),
                        format_value(s.min, figure.unit),
                        format_value(s.max, figure.unit),
                        figure.values.len()
                    );
                }
                None => {
                    let why = figure.missing.as_deref().unwrap_or("not measured");
                    let _ = writeln!(out, "  {:<width$}  {:>9}  {why}", figure.label, figure.unit);
                }
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\ntargets");
        }
        for target in &self.targets {
            let verdict = match target.met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            let _ = writeln!(out, "  {verdict}  {}: {}", target.goal, target.measured);
        }
        out
    }

    /// The figures and targets as Markdown tables, for BENCHMARKS.md.
    pub fn markdown(&self, machine: &Machine) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {} ({} cores, {:.1} GiB), Linux {}, {}; {}; load average before the \
             run {}.\n",
            machine.date,
            machine.cpu,
            machine.cores,
            machine.memory_gib,
            machine.kernel,
            machine.nats_server,
            self.settings["label"]
                .as_str()
                .map_or_else(|| format!("commit {}", machine.commit), str::to_string),
            machine.load_before,
        );
        let _ = writeln!(out, "Settings: `{}`", self.settings);
        let compare = self.baseline.is_some();
        if let Some(b) = &self.baseline {
            let differing = b.differing_settings(&self.settings);
            let _ = writeln!(
                out,
                "\nThe \"vs baseline\" column compares each median with {}{}.",
                b.describe(),
                if differing.is_empty() {
                    String::new()
                } else {
                    format!(" (not comparable: {})", differing.join(", "))
                }
            );
        }
        let mut figures: Vec<&Figure> = self.figures.iter().collect();
        figures.sort_by_key(|f| f.section);
        let mut section = "";
        for figure in figures {
            if figure.section != section {
                section = figure.section;
                let _ = writeln!(out, "\n**{section}**\n");
                if compare {
                    let _ = writeln!(out, "| figure | unit | median | min | max | vs baseline |");
                    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|");
                } else {
                    let _ = writeln!(out, "| figure | unit | median | min | max |");
                    let _ = writeln!(out, "|---|---|---:|---:|---:|");
                }
            }
            let label = figure.label.trim_start();
            let values = if figure.listed && !figure.values.is_empty() {
                format!(" (runs: {})", figure.values_text())
            } else {
                String::new()
            };
            let change = if compare {
                format!(" {} |", self.change(figure))
            } else {
                String::new()
            };
            match figure.summary() {
                Some(s) => {
                    let _ = writeln!(
                        out,
                        "| {label}{values} | {} | {} | {} | {} |{change}",
                        figure.unit,
                        format_value(s.median, figure.unit),
                        format_value(s.min, figure.unit),
                        format_value(s.max, figure.unit)
                    );
                }
                None => {
                    let why = figure.missing.as_deref().unwrap_or("not measured");
                    let _ = writeln!(out, "| {label} | {} | {why} | | |{change}", figure.unit);
                }
            }
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "\n**Targets**\n");
            let _ = writeln!(out, "| target | measured | verdict |");
            let _ = writeln!(out, "|---|---|---|");
        }
        for target in &self.targets {
            let verdict = match target.met {
                Some(true) => "met",
                Some(false) => "missed",
                None => "n/a",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", target.goal, target.measured);
        }
        out
    }

    /// The JSON document.
    pub fn json(&self, machine: &Machine) -> serde_json::Value {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| {
                let s = f.summary();
                let base = self.baseline.as_ref().and_then(|b| b.median(&f.key));
                let change = self
                    .baseline
                    .as_ref()
                    .zip(s)
                    .and_then(|(b, s)| b.change_pct(&f.key, s.median));
                json!({
                    "section": f.section,
                    "key": f.key,
                    "label": f.label,
                    "unit": f.unit,
                    "median": s.map(|s| s.median),
                    "min": s.map(|s| s.min),
                    "max": s.map(|s| s.max),
                    "runs": f.values,
                    "missing": f.missing,
                    "baseline_median": base,
                    "change_pct": change,
                })
            })
            .collect();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| json!({ "goal": t.goal, "measured": t.measured, "met": t.met }))
            .collect();
        json!({
            "machine": {
                "cpu": machine.cpu,
                "cores": machine.cores,
                "memory_gib": machine.memory_gib,
                "kernel": machine.kernel,
                "nats_server": machine.nats_server,
                "commit": machine.commit,
                "date": machine.date,
                "optimized_build": machine.optimized,
                "load_average_before": machine.load_before,
                "load_average_after": machine.load_after,
            },
            "settings": self.settings,
            "baseline": self.baseline.as_ref().map(|b| json!({
                "label": b.label,
                "commit": b.commit,
                "date": b.date,
            })),
            "figures": figures,
            "targets": targets,
        })
    }
}

/// A value printed with the precision its unit deserves.
pub fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "inv/s" | "jobs/s" | "req/s" | "µs" => group_thousands(value.round() as i64),
        "ms" | "MiB" | "ms/1k" | "µs/inv" => format!("{value:.2}"),
        "%" => format!("{value:.1}"),
        // Ratios sit next to thresholds such as 2×: show enough digits to tell which side.
        "×" => format!("{value:.3}"),
        _ => format!("{value:.3}"),
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    let sign = if n < 0 { "-" } else { "" };
    format!("{sign}{}", groups.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(21345.6, "jobs/s"), "21,346");
        assert_eq!(format_value(175.4, "µs"), "175");
        assert_eq!(format_value(1.23456, "ms"), "1.23");
        assert_eq!(format_value(48.25, "%"), "48.2");
        assert_eq!(format_value(-1234.0, "µs"), "-1,234");
        assert_eq!(format_value(999.0, "inv/s"), "999");
        assert_eq!(format_value(2.0024, "×"), "2.002");
    }

    #[test]
    fn figures_collect_values_per_key_in_order() {
        let mut report = Report::default();
        report.add("s", "a", "A", "ms", 1.0);
        report.add("t", "b", "B", "ms", 5.0);
        report.add("s", "a", "A", "ms", 3.0);
        assert_eq!(report.figures.len(), 2);
        assert_eq!(report.figures[0].values, vec![1.0, 3.0]);
        assert_eq!(report.figures[0].summary().unwrap().median, 2.0);
        let table = report.table(&Machine::default());
        assert!(
            table.find("\ns\n").unwrap() < table.find("\nt\n").unwrap(),
            "{table}"
        );
    }

    #[test]
    fn targets_compare_medians() {
        let mut report = Report::default();
        report.add("s", "ratio", "ratio", "%", 40.0);
        report.missing("s", "zero", "scale-from-zero", "ms", "n/a");
        report.target("at least half", "ratio", |v| v >= 50.0);
        report.target("fast", "zero", |v| v < 100.0);
        assert_eq!(report.targets[0].met, Some(false));
        assert_eq!(report.targets[1].met, None);
        assert_eq!(report.targets[1].measured, "n/a");
        let markdown = report.markdown(&Machine::default());
        assert!(
            markdown.contains("| ratio | % | 40.0 | 40.0 | 40.0 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| at least half | 40.0 % (median of 1) | missed |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| scale-from-zero | ms | n/a | | |"),
            "{markdown}"
        );
    }

    #[test]
    fn a_baseline_adds_each_figures_change() {
        let mut report = Report::default();
        report.add("s", "a", "A", "ms", 110.0);
        report.add("s", "b", "B", "ms", 1.0);
        let baseline = r#"{"machine": {"commit": "abc"}, "settings": {"label": null},
            "figures": [{"key": "a", "median": 100.0}]}"#;
        report.baseline =
            Some(Baseline::parse(baseline, std::path::Path::new("base.json")).unwrap());
        let table = report.table(&Machine::default());
        assert!(table.contains("+10.0 %"), "{table}");
        assert!(table.contains("vs baseline: commit abc"), "{table}");
        let markdown = report.markdown(&Machine::default());
        assert!(
            markdown.contains("| A | ms | 110.00 | 110.00 | 110.00 | +10.0 % |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| B | ms | 1.00 | 1.00 | 1.00 |  |"),
            "{markdown}"
        );
        let json = report.json(&Machine::default());
        assert_eq!(json["figures"][0]["change_pct"], 10.0);
        assert_eq!(json["figures"][1]["change_pct"], serde_json::Value::Null);
        assert_eq!(json["baseline"]["commit"], "abc");
    }

    #[test]
    fn listed_figures_show_every_run() {
        let mut report = Report::default();
        for v in [230.0, 45.5, 44.25] {
            report.add("s", "zero", "zero", "ms", v);
        }
        report.list_values("zero");
        let table = report.table(&Machine::default());
        assert!(table.contains("(230.00, 45.50, 44.25)"), "{table}");
        assert!(!table.contains("vs baseline  runs"), "{table}");
    }

    #[test]
    fn a_report_without_targets_has_no_targets_table() {
        let mut report = Report::default();
        report.add("s", "a", "A", "ms", 1.0);
        let table = report.table(&Machine::default());
        assert!(!table.contains("targets"), "{table}");
        let markdown = report.markdown(&Machine::default());
        assert!(!markdown.contains("Targets"), "{markdown}");
    }

    #[test]
    fn a_figure_may_be_printed_beside_a_target() {
        let mut report = Report::default();
        report.add("s", "gateway", "gateway", "µs/inv", 0.5);
        report.add("s", "holder", "holder", "µs/inv", 9.5);
        report.target("<= 2 µs", "gateway", |v| v <= 2.0);
        report.beside_last_target("the holder's cost", "holder");
        report.beside_last_target("absent", "nothing");
        assert_eq!(report.targets[0].met, Some(true));
        assert_eq!(
            report.targets[0].measured,
            "0.50 µs/inv (median of 1); the holder's cost: 9.50 µs/inv (median of 1); absent: \
             not measured"
        );
    }

    #[test]
    fn a_target_may_convert_its_figure() {
        let mut report = Report::default();
        report.add("s", "cpu", "cpu", "ms/1k", 10.8);
        report.target_in("<= 2 µs", "cpu", Some((1.0, "µs/inv")), |v| v <= 2.0);
        assert_eq!(report.targets[0].met, Some(false));
        assert_eq!(report.targets[0].measured, "10.80 µs/inv (median of 1)");
    }
}
