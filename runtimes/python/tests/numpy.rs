//! A bundle with a C-extension dependency in its `site-packages`: numpy, installed by pip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bundle, call, Call};
use squall_runtime_python::Function;

/// numpy installed once per target directory with `pip install --target`; `None` when pip
/// cannot reach the package index.
fn numpy_site_packages() -> Option<PathBuf> {
    let site = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-numpy-site-packages");
    if site.join("numpy").is_dir() {
        return Some(site);
    }
    let partial = site.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let python = ["python3.11", "python3"]
        .into_iter()
        .find(|python| Command::new(python).arg("--version").output().is_ok())
        .expect("python3.11 or python3 on PATH to run pip");
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "--target"])
        .arg(&partial)
        .arg("numpy")
        .output()
        .expect("run pip");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let offline = [
            "NewConnectionError",
            "Max retries",
            "Temporary failure",
            "Network is unreachable",
            "No matching distribution",
        ];
        if offline.iter().any(|sign| stderr.contains(sign)) {
            println!("SKIPPED: pip cannot reach the package index to install numpy:\n{stderr}");
            return None;
        }
        panic!("pip install numpy failed:\n{stderr}");
    }
    std::fs::rename(&partial, &site).expect("move the installed packages in place");
    Some(site)
}

#[test]
fn numpy_from_the_bundles_site_packages_works() {
    let Some(site) = numpy_site_packages() else {
        return;
    };
    let app =
        "import numpy\n\ndef handler(event, context):\n    return int(numpy.arange(10).sum())\n";
    let dir = bundle("app.handler", &[("app.py", app)]);
    std::os::unix::fs::symlink(&site, dir.path().join("site-packages"))
        .expect("link site-packages");
    let function = Function::open(dir.path()).expect("bundle with numpy opens");
    let (output, _) = call(Call::default(), |ctx| function.invoke(ctx, b"{}"));
    assert_eq!(output.unwrap(), b"45");
}
