//! One Prometheus exposition for a host's worker processes: the fleet supervisor adds up the
//! snapshots its workers report (Prometheus text, as each renders its own registry), keeping
//! what exited workers had counted so counters never go backwards.
//!
//! Invariant: counters and histograms of the fleet only grow while the supervisor runs (a
//! worker that exits leaves its last report behind); gauges are the sum over live workers.

use std::collections::HashMap;

/// One metric family of an exposition: its `# HELP` and `# TYPE` lines and its samples, in
/// the order they were first seen (a histogram's buckets stay in order).
#[derive(Debug, Clone, Default, PartialEq)]
struct Family {
    help: Option<String>,
    kind: String,
    /// (sample name with labels, value), in first-seen order.
    samples: Vec<(String, f64)>,
    index: HashMap<String, usize>,
}

impl Family {
    fn add(&mut self, key: &str, value: f64) {
        match self.index.get(key) {
            Some(&i) => self.samples[i].1 += value,
            None => {
                self.index.insert(key.to_string(), self.samples.len());
                self.samples.push((key.to_string(), value));
            }
        }
    }
}

/// A parsed exposition, or a sum of several.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Families in first-seen order.
    families: Vec<(String, Family)>,
    index: HashMap<String, usize>,
}

impl Exposition {
    /// Reads the Prometheus text format (0.0.4) as `prometheus-client` writes it: `# HELP`,
    /// then `# TYPE`, then the family's samples, without timestamps. Lines it cannot read are
    /// skipped.
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                if let Some((name, help)) = rest.split_once(' ') {
                    let i = exposition.family(name);
                    exposition.families[i].1.help = Some(help.to_string());
                    current = Some(i);
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    let i = exposition.family(name);
                    exposition.families[i].1.kind = kind.to_string();
                    current = Some(i);
                }
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else if let (Some(i), Some((key, value))) = (current, line.rsplit_once(' ')) {
                if let Ok(value) = value.parse::<f64>() {
                    exposition.families[i].1.add(key, value);
                }
            }
        }
        exposition
    }

    fn family(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.index.insert(name.to_string(), self.families.len());
        self.families.push((name.to_string(), Family::default()));
        self.families.len() - 1
    }

    /// Adds `other`'s samples to these; with `gauges` false, gauge families of `other` are
    /// left out (what an exited worker leaves behind is its counts, not its current values).
    pub fn add(&mut self, other: &Exposition, gauges: bool) {
        for (name, family) in &other.families {
            if !gauges && family.kind == "gauge" {
                continue;
            }
            let i = self.family(name);
            let mine = &mut self.families[i].1;
            if mine.help.is_none() {
                mine.help.clone_from(&family.help);
            }
            if mine.kind.is_empty() {
                mine.kind.clone_from(&family.kind);
            }
            for (key, value) in &family.samples {
                mine.add(key, *value);
            }
        }
    }

    /// The sum of `retired` (counts of exited workers) and every live worker's latest report.
    pub fn total<'a>(retired: &Exposition, live: impl IntoIterator<Item = &'a Exposition>) -> Self {
        let mut total = Exposition::default();
        total.add(retired, false);
        for report in live {
            total.add(report, true);
        }
        total
    }

    /// The Prometheus text format of these families.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (name, family) in &self.families {
            if let Some(help) = &family.help {
                text.push_str(&format!("# HELP {name} {help}\n"));
            }
            if !family.kind.is_empty() {
                text.push_str(&format!("# TYPE {name} {}\n", family.kind));
            }
            for (key, value) in &family.samples {
                text.push_str(&format!("{key} {value}\n"));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use squall_broker::InvocationStatus;

    fn sample(text: &str, key: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
    }

    fn worker(succeeded: usize, running: bool) -> (Metrics, String) {
        let metrics = Metrics::new();
        let hello = metrics.function("hello");
        for _ in 0..succeeded {
            hello.executed(0.003);
            hello.settled(InvocationStatus::Succeeded, None, false);
        }
        let guard = running.then(|| hello.running());
        let text = metrics.render();
        drop(guard);
        (metrics, text)
    }

    #[test]
    fn live_workers_add_up_counters_histograms_and_gauges() {
        let (_, a) = worker(2, true);
        let (_, b) = worker(3, true);
        let total = Exposition::total(
            &Exposition::default(),
            [&Exposition::parse(&a), &Exposition::parse(&b)],
        )
        .render();
        let ok = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
        assert_eq!(sample(&total, ok), Some(5.0), "{total}");
        let count = "squall_worker_execution_seconds_count{function=\"hello\"}";
        assert_eq!(sample(&total, count), Some(5.0), "{total}");
        let bucket = "squall_worker_execution_seconds_bucket{function=\"hello\",le=\"0.005\"}";
        assert_eq!(sample(&total, bucket), Some(5.0), "{total}");
        let flight = "squall_worker_in_flight{function=\"hello\"}";
        assert_eq!(sample(&total, flight), Some(2.0), "{total}");
        assert_eq!(
            total
                .matches("# TYPE squall_worker_execution_seconds histogram\n")
                .count(),
            1
        );
    }

    #[test]
    fn an_exited_worker_keeps_its_counts_but_not_its_gauges() {
        let (_, gone) = worker(4, true);
        let (_, live) = worker(1, false);
        let mut retired = Exposition::default();
        retired.add(&Exposition::parse(&gone), false);
        let total = Exposition::total(&retired, [&Exposition::parse(&live)]).render();
        let ok = "squall_worker_invocations_total{function=\"hello\",status=\"succeeded\"}";
        assert_eq!(sample(&total, ok), Some(5.0), "{total}");
        let flight = "squall_worker_in_flight{function=\"hello\"}";
        assert_eq!(sample(&total, flight), Some(0.0), "{total}");
    }

    #[test]
    fn histogram_buckets_keep_their_order() {
        let (_, a) = worker(1, false);
        let rendered = Exposition::parse(&a).render();
        let bounds = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("squall_worker_execution_seconds_bucket"))
                .filter_map(|l| Some(l.split("le=\"").nth(1)?.split('"').next()?.to_string()))
                .collect()
        };
        assert_eq!(bounds(&rendered), bounds(&a));
        assert_eq!(bounds(&rendered).last().map(String::as_str), Some("+Inf"));
    }
}
