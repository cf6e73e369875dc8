//! A small metrics registry rendered in the Prometheus text format (counters, gauges and
//! histograms with labels). Pure bookkeeping: serving it over HTTP is each binary's business.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Mutex;

/// Upper bounds, in seconds, of the duration histograms' buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
enum Value {
    Number(f64),
    Histogram {
        buckets: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

type Labels = Vec<(String, String)>;

/// One metric's series, found by a hash of their labels so that updating an existing series
/// allocates nothing (this runs for every job).
type Series = HashMap<u64, Vec<(Labels, Value)>>;

#[derive(Default)]
struct Inner {
    help: BTreeMap<String, (Kind, String)>,
    values: HashMap<String, Series>,
}

fn label_hash(pairs: &[(&str, &str)]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in pairs {
        k.hash(&mut hasher);
        v.hash(&mut hasher);
    }
    hasher.finish()
}

fn same_labels(labels: &Labels, pairs: &[(&str, &str)]) -> bool {
    labels.len() == pairs.len()
        && labels
            .iter()
            .zip(pairs)
            .all(|((k, v), (pk, pv))| k == pk && v == pv)
}

impl Inner {
    /// The series of `name` with `pairs`, made with `initial` when it does not exist yet.
    fn series(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        initial: impl FnOnce() -> Value,
    ) -> &mut Value {
        if !self.values.contains_key(name) {
            self.values.insert(name.to_string(), Series::new());
        }
        let series = self.values.get_mut(name).expect("inserted above");
        let list = series.entry(label_hash(pairs)).or_default();
        let at = match list.iter().position(|(l, _)| same_labels(l, pairs)) {
            Some(at) => at,
            None => {
                list.push((labels(pairs), initial()));
                list.len() - 1
            }
        };
        &mut list[at].1
    }
}

/// A registry of labelled metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    /// Declares a metric's kind and help text (shown even before it has a value).
    pub fn describe(&self, name: &str, kind: Kind, help: &str) {
        let mut inner = self.inner.lock().expect("metrics lock");
        inner
            .help
            .insert(name.to_string(), (kind, help.to_string()));
    }

    /// Adds `by` to a counter or gauge.
    pub fn add(&self, name: &str, pairs: &[(&str, &str)], by: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        let entry = inner.series(name, pairs, || Value::Number(0.0));
        if let Value::Number(n) = entry {
            *n += by;
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        *inner.series(name, pairs, || Value::Number(0.0)) = Value::Number(value);
    }

    /// Records one observation, in seconds, in a duration histogram.
    pub fn observe(&self, name: &str, pairs: &[(&str, &str)], seconds: f64) {
        let mut inner = self.inner.lock().expect("metrics lock");
        let entry = inner.series(name, pairs, || Value::Histogram {
            buckets: vec![0; DURATION_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        });
        if let Value::Histogram {
            buckets,
            sum,
            count,
        } = entry
        {
            for (bucket, bound) in buckets.iter_mut().zip(DURATION_BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            *sum += seconds;
            *count += 1;
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        for (name, (kind, help)) in &inner.help {
            let kind_text = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind_text}");
            let mut series: Vec<&(Labels, Value)> = inner
                .values
                .get(name)
                .into_iter()
                .flat_map(|s| s.values().flatten())
                .collect();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            for (labels, value) in series {
                match value {
                    Value::Number(n) => {
                        let _ = writeln!(out, "{name}{} {n}", render_labels(labels, None));
                    }
                    Value::Histogram {
                        buckets,
                        sum,
                        count,
                    } => {
                        for (bucket, bound) in buckets.iter().zip(DURATION_BUCKETS) {
                            let le = render_labels(labels, Some(("le", bound.to_string())));
                            let _ = writeln!(out, "{name}_bucket{le} {bucket}");
                        }
                        let inf = render_labels(labels, Some(("le", "+Inf".to_string())));
                        let _ = writeln!(out, "{name}_bucket{inf} {count}");
                        let plain = render_labels(labels, None);
                        let _ = writeln!(out, "{name}_sum{plain} {sum}");
                        let _ = writeln!(out, "{name}_count{plain} {count}");
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.describe("jobs_total", Kind::Counter, "Jobs.");
        m.describe("wait_seconds", Kind::Histogram, "Wait.");
        m.describe("zz_depth", Kind::Gauge, "Depth.");
        m.add("jobs_total", &[("function", "hello")], 1.0);
        m.add("jobs_total", &[("function", "hello")], 2.0);
        m.observe("wait_seconds", &[("function", "a\"b")], 0.003);
        m.set("zz_depth", &[], 7.0);
        let text = m.render();
        assert!(
            text.contains("# TYPE jobs_total counter\njobs_total{function=\"hello\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_bucket{function=\"a\\\"b\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_bucket{function=\"a\\\"b\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_count{function=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("zz_depth 7\n"), "{text}");
    }
}
