//! Training program: generates the table, writes `data/*.csv`, trains and writes `model/weights.json`.
//!
//! Run from anywhere: `cargo run -p squall-example-ml-inference --bin train`. The output is
//! deterministic, and the crate's tests check the committed files against a fresh run.

use ml_inference::model;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (train, held) = model::split(&model::generate());
    std::fs::write(dir.join("data/train.csv"), model::to_csv(&train))?;
    std::fs::write(dir.join("data/heldout.csv"), model::to_csv(&held))?;
    let trained = model::train(&train);
    std::fs::write(dir.join("model/weights.json"), trained.to_file())?;
    println!(
        "{} training rows, {} held out; accuracy: training {:.4}, held out {:.4}",
        train.len(),
        held.len(),
        model::accuracy(&trained, &train),
        model::accuracy(&trained, &held)
    );
    Ok(())
}
