//! The model: a synthetic plant table from a seeded generator, multinomial logistic regression
//! (softmax) trained on it by full-batch gradient descent, and the weights file's format.
//!
//! Everything here is deterministic: the generator uses integer arithmetic and exact float
//! operations only, and training runs a fixed number of iterations from zero weights.

use serde::{Deserialize, Serialize};

/// The measurements a prediction takes, in this order.
pub const FEATURES: [&str; 4] = ["height_cm", "leaf_length_cm", "leaf_width_cm", "stem_mm"];
/// The classes, in this order.
pub const LABELS: [&str; 3] = ["alpine", "coastal", "desert"];
/// The generator's seed.
pub const SEED: u64 = 0x5eed_2026;
/// Rows generated per class.
pub const ROWS_PER_CLASS: usize = 300;
/// Every `HELD_OUT_EVERY`-th row is held out of training.
pub const HELD_OUT_EVERY: usize = 4;
/// Gradient-descent iterations, step size and L2 penalty.
pub const ITERATIONS: usize = 400;
pub const LEARNING_RATE: f64 = 0.5;
pub const L2: f64 = 1e-3;

/// Each class's mean and spread per feature (made up for this example).
const CLASS_SHAPES: [[(f64, f64); 4]; 3] = [
    [(20.0, 6.0), (3.0, 0.8), (1.5, 0.4), (3.0, 0.8)],
    [(45.0, 10.0), (6.0, 1.2), (2.2, 0.5), (5.0, 1.0)],
    [(35.0, 9.0), (2.4, 0.7), (0.9, 0.3), (6.5, 1.3)],
];

/// One labelled row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub features: [f64; 4],
    pub label: usize,
}

/// SplitMix64: a small, well-mixed 64-bit generator.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits (exact).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal: the sum of twelve uniforms less six (Irwin–Hall), which needs
    /// no transcendental functions and so is bit-for-bit the same on every platform.
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }
}

/// The whole table: the classes interleaved, each value rounded to 0.001.
pub fn generate() -> Vec<Row> {
    let mut rng = SplitMix64::new(SEED);
    let mut rows = Vec::with_capacity(ROWS_PER_CLASS * LABELS.len());
    for _ in 0..ROWS_PER_CLASS {
        for (label, shape) in CLASS_SHAPES.iter().enumerate() {
            let mut features = [0.0; 4];
            for (value, (mean, spread)) in features.iter_mut().zip(shape) {
                let raw = (mean + spread * rng.normal()).max(0.0);
                *value = (raw * 1000.0).round() / 1000.0;
            }
            rows.push(Row { features, label });
        }
    }
    rows
}

/// The table split into (training, held-out) rows.
pub fn split(rows: &[Row]) -> (Vec<Row>, Vec<Row>) {
    let (held, train): (Vec<_>, Vec<_>) = rows
        .iter()
        .enumerate()
        .partition(|(i, _)| i % HELD_OUT_EVERY == 0);
    let strip = |v: Vec<(usize, &Row)>| v.into_iter().map(|(_, r)| r.clone()).collect();
    (strip(train), strip(held))
}

/// The table as CSV: a header, then one row per line.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = format!("{},label\n", FEATURES.join(","));
    for row in rows {
        let values: Vec<String> = row.features.iter().map(|v| format!("{v:.3}")).collect();
        out.push_str(&format!("{},{}\n", values.join(","), LABELS[row.label]));
    }
    out
}

/// Reads a table written by `to_csv`.
pub fn from_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != FEATURES.len() + 1 {
            return Err(format!("line {}: {} cells", n + 1, cells.len()));
        }
        let mut features = [0.0; 4];
        for (value, cell) in features.iter_mut().zip(&cells) {
            *value = cell
                .parse()
                .map_err(|e| format!("line {}: {cell}: {e}", n + 1))?;
        }
        let label = LABELS
            .iter()
            .position(|l| *l == cells[4])
            .ok_or_else(|| format!("line {}: unknown label {}", n + 1, cells[4]))?;
        rows.push(Row { features, label });
    }
    Ok(rows)
}

/// A trained model: standardisation, then one linear score per class and a softmax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub features: Vec<String>,
    pub labels: Vec<String>,
    /// Per feature: the training mean and standard deviation.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// Per class: one weight per (standardised) feature, and a bias.
    pub weights: Vec<Vec<f64>>,
    pub bias: Vec<f64>,
    /// How it was trained (for the record).
    pub seed: u64,
    pub iterations: usize,
}

impl Model {
    /// The class probabilities for one row of raw features.
    pub fn predict(&self, features: &[f64]) -> Vec<f64> {
        let x: Vec<f64> = features
            .iter()
            .zip(self.mean.iter().zip(&self.scale))
            .map(|(v, (m, s))| (v - m) / s)
            .collect();
        let scores: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(&x).map(|(w, x)| w * x).sum::<f64>())
            .collect();
        softmax(&scores)
    }

    /// The index of the most probable class.
    pub fn classify(&self, features: &[f64]) -> usize {
        argmax(&self.predict(features))
    }

    /// The weights file: JSON with every number at fixed precision (six decimals).
    pub fn to_file(&self) -> String {
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.6}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let names = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let weights = self
            .weights
            .iter()
            .map(|w| format!("    [{}]", list(w)))
            .collect::<Vec<_>>()
            .join(",\n");
        format!(
            "{{\n  \"features\": [{}],\n  \"labels\": [{}],\n  \"mean\": [{}],\n  \"scale\": [{}],\n  \"weights\": [\n{}\n  ],\n  \"bias\": [{}],\n  \"seed\": {},\n  \"iterations\": {}\n}}\n",
            names(&self.features),
            names(&self.labels),
            list(&self.mean),
            list(&self.scale),
            weights,
            list(&self.bias),
            self.seed,
            self.iterations
        )
    }

    /// Reads a weights file, checking its shape.
    pub fn from_file(text: &str) -> Result<Model, String> {
        let model: Model = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let (k, d) = (model.labels.len(), model.features.len());
        let shaped = model.mean.len() == d
            && model.scale.len() == d
            && model.bias.len() == k
            && model.weights.len() == k
            && model.weights.iter().all(|w| w.len() == d)
            && model.scale.iter().all(|s| *s > 0.0);
        match shaped {
            true => Ok(model),
            false => Err(format!("weights do not fit {k} labels by {d} features")),
        }
    }
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, v)| match *v > best.1 {
            true => (i, *v),
            false => best,
        })
        .0
}

/// Trains on `rows`: standardises each feature, then runs `ITERATIONS` steps of full-batch
/// gradient descent on the mean cross-entropy plus an L2 penalty, from zero weights.
pub fn train(rows: &[Row]) -> Model {
    let (d, k, n) = (FEATURES.len(), LABELS.len(), rows.len() as f64);
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r.features[j]).sum::<f64>() / n)
        .collect();
    let scale: Vec<f64> = (0..d)
        .map(|j| {
            let var = rows
                .iter()
                .map(|r| (r.features[j] - mean[j]).powi(2))
                .sum::<f64>()
                / n;
            var.sqrt().max(1e-9)
        })
        .collect();
    let mut model = Model {
        features: FEATURES.iter().map(|s| s.to_string()).collect(),
        labels: LABELS.iter().map(|s| s.to_string()).collect(),
        mean,
        scale,
        weights: vec![vec![0.0; d]; k],
        bias: vec![0.0; k],
        seed: SEED,
        iterations: ITERATIONS,
    };
    for _ in 0..ITERATIONS {
        let mut grad_w = vec![vec![0.0; d]; k];
        let mut grad_b = vec![0.0; k];
        for row in rows {
            let x: Vec<f64> = (0..d)
                .map(|j| (row.features[j] - model.mean[j]) / model.scale[j])
                .collect();
            let p = model.predict(&row.features);
            for (c, (gw, gb)) in grad_w.iter_mut().zip(&mut grad_b).enumerate() {
                let err = p[c] - f64::from(u8::from(c == row.label));
                *gb += err / n;
                for (g, xj) in gw.iter_mut().zip(&x) {
                    *g += err * xj / n;
                }
            }
        }
        let rows = model.weights.iter_mut().zip(&mut model.bias);
        for ((w, b), (gw, gb)) in rows.zip(grad_w.iter().zip(&grad_b)) {
            *b -= LEARNING_RATE * gb;
            for (wj, g) in w.iter_mut().zip(gw) {
                *wj -= LEARNING_RATE * (g + L2 * *wj);
            }
        }
    }
    model
}

/// The share of `rows` that `model` classifies correctly.
pub fn accuracy(model: &Model, rows: &[Row]) -> f64 {
    let right = rows
        .iter()
        .filter(|r| model.classify(&r.features) == r.label)
        .count();
    right as f64 / rows.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED_WEIGHTS: &str = include_str!("../model/weights.json");
    const COMMITTED_TRAIN: &str = include_str!("../data/train.csv");
    const COMMITTED_HELD_OUT: &str = include_str!("../data/heldout.csv");

    #[test]
    fn committed_data_is_what_the_generator_writes() {
        let (train, held) = split(&generate());
        assert_eq!(to_csv(&train), COMMITTED_TRAIN);
        assert_eq!(to_csv(&held), COMMITTED_HELD_OUT);
        assert_eq!(from_csv(COMMITTED_HELD_OUT).unwrap(), held);
    }

    #[test]
    fn committed_weights_match_a_fresh_training_run() {
        let committed = Model::from_file(COMMITTED_WEIGHTS).unwrap();
        let fresh = train(&from_csv(COMMITTED_TRAIN).unwrap());
        assert_eq!(committed.features, fresh.features);
        assert_eq!(committed.labels, fresh.labels);
        assert_eq!((committed.seed, committed.iterations), (SEED, ITERATIONS));
        let pairs = [
            (&committed.mean, &fresh.mean),
            (&committed.scale, &fresh.scale),
            (&committed.bias, &fresh.bias),
        ];
        let rows = committed.weights.iter().zip(&fresh.weights);
        for (a, b) in pairs.into_iter().chain(rows) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                // The file keeps six decimals.
                assert!((x - y).abs() <= 1e-6, "committed {x}, trained {y}");
            }
        }
    }

    #[test]
    fn the_trained_model_is_right_on_at_least_95_percent_of_held_out_rows() {
        let model = Model::from_file(COMMITTED_WEIGHTS).unwrap();
        let held = from_csv(COMMITTED_HELD_OUT).unwrap();
        assert!(
            accuracy(&model, &held) >= 0.95,
            "{}",
            accuracy(&model, &held)
        );
    }

    #[test]
    fn probabilities_sum_to_one() {
        let model = Model::from_file(COMMITTED_WEIGHTS).unwrap();
        let p = model.predict(&[20.0, 3.0, 1.5, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(model.classify(&[20.0, 3.0, 1.5, 3.0]), 0);
        // The README's example input.
        assert_eq!(model.classify(&[21.5, 3.1, 1.6, 2.9]), 0);
    }

    #[test]
    fn a_misshapen_weights_file_is_refused() {
        let mut model = Model::from_file(COMMITTED_WEIGHTS).unwrap();
        model.bias.pop();
        let err = Model::from_file(&model.to_file()).unwrap_err();
        assert!(err.contains("do not fit"), "{err}");
    }
}
