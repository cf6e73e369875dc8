//! The commands that work on a function folder without a cluster: `squall init` makes one from a template and `squall test` runs its tests in the runtime it deploys to.

use crate::args::{InitArgs, InitRuntime, TestArgs};
use crate::{bundle, manifest};
use anyhow::{bail, Context as _};
use std::process::Command;

/// A template's files: (path in the folder, text with `NAME` for the function's name).
type Template = &'static [(&'static str, &'static str)];

const PYTHON: Template = &[
    (
        "squall.toml",
        include_str!("../../runtimes/python/template/squall.toml"),
    ),
    (
        "app.py",
        include_str!("../../runtimes/python/template/app.py"),
    ),
    (
        "test_app.py",
        include_str!("../../runtimes/python/template/test_app.py"),
    ),
    (
        "requirements.txt",
        include_str!("../../runtimes/python/template/requirements.txt"),
    ),
];

const JAVASCRIPT: Template = &[
    (
        "squall.toml",
        include_str!("../../runtimes/javascript/template/squall.toml"),
    ),
    (
        "app.mjs",
        include_str!("../../runtimes/javascript/template/app.mjs"),
    ),
    (
        "app.test.mjs",
        include_str!("../../runtimes/javascript/template/app.test.mjs"),
    ),
];

const GO: Template = &[
    (
        "squall.toml",
        include_str!("../../functions/sdk/templates/go/squall.toml"),
    ),
    (
        "go.mod",
        include_str!("../../functions/sdk/templates/go/go.mod"),
    ),
    (
        "main.go",
        include_str!("../../functions/sdk/templates/go/main.go"),
    ),
    (
        "main_test.go",
        include_str!("../../functions/sdk/templates/go/main_test.go"),
    ),
];

const JAVA: Template = &[
    (
        "squall.toml",
        include_str!("../../functions/sdk/templates/java/squall.toml"),
    ),
    (
        "src/app/Hello.java",
        include_str!("../../functions/sdk/templates/java/src/app/Hello.java"),
    ),
    (
        "test/app/HelloTest.java",
        include_str!("../../functions/sdk/templates/java/test/app/HelloTest.java"),
    ),
];

/// `squall init --runtime R NAME`: writes the folder `NAME` from R's template.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    squall_broker::validate_function_name(&args.name).context("the function's name")?;
    let dir = std::path::PathBuf::from(&args.name);
    if dir.exists() {
        bail!("{} exists already; pick another name", dir.display());
    }
    let template = match args.runtime {
        InitRuntime::Python => PYTHON,
        InitRuntime::Javascript => JAVASCRIPT,
        InitRuntime::Go => GO,
        InitRuntime::Java => JAVA,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, text) in template {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = match path.file_name().and_then(|f| f.to_str()) {
            Some("squall.toml" | "go.mod") => text.replace("NAME", &args.name),
            _ => text.to_string(),
        };
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("created {}/", dir.display());
    println!("  squall test {}     runs its tests", dir.display());
    println!("  squall deploy {}   deploys it", dir.display());
    Ok(())
}

/// `squall test DIR`: bundles the folder as a deploy would and runs its tests in the runtime.
pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    let manifest = manifest::load(&args.path)?;
    if manifest.go {
        return match crate::golang::test(&args.path)? {
            true => Ok(()),
            false => bail!("tests failed"),
        };
    }
    let source = manifest.source.with_context(|| {
        format!(
            "{} names no runtime: `squall test` runs Python, JavaScript, Go and Java functions' tests \
             (test a Rust function with `cargo test`)",
            args.path.join(manifest::MANIFEST_FILE).display()
        )
    })?;
    let staging = bundle::tempdir()?;
    bundle::stage_dir(&args.path, &source, staging.path())?;
    let worker = bundle::worker_binary();
    let status = Command::new(&worker)
        .arg("test-bundle")
        .arg(staging.path())
        .status()
        .with_context(|| {
            format!(
                "cannot run {} (it runs the {} runtime; install Squall's worker beside squall)",
                worker.display(),
                source.runtime
            )
        })?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => bail!("tests failed"),
        _ => bail!("the tests could not run ({status})"),
    }
}
