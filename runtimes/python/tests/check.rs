//! `squall_runtime_check`: a bundle is validated without running any of its code.

mod common;

use common::{bundle, write};
use squall_runtime_python::check;

#[test]
fn a_valid_bundle_passes_without_running_its_code() {
    let app = "open('ran', 'w').write('yes')\n\ndef handler(event, context):\n    return 1\n";
    let dir = bundle(
        "app.handler",
        &[("app.py", app), ("lib/util.py", "X = 1\n")],
    );
    assert_eq!(check(dir.path()), Ok(()));
    assert!(!dir.path().join("ran").exists(), "the check ran the module");
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let broken = "def helper():\n    return 1\nx = = 2\n";
    let app = "def handler(event, context):\n    return 1\n";
    let dir = bundle("app.handler", &[("app.py", app), ("pkg/broken.py", broken)]);
    assert_eq!(
        check(dir.path()),
        Err("pkg/broken.py:3: invalid syntax".to_owned())
    );
}

#[test]
fn a_syntax_error_in_the_handler_module_is_reported_alone() {
    let dir = bundle(
        "app.handler",
        &[("app.py", "def handler(event, context)\n    return 1\n")],
    );
    assert_eq!(check(dir.path()), Err("app.py:1: expected ':'".to_owned()));
}

#[test]
fn site_packages_are_not_checked() {
    let dir = bundle(
        "app.handler",
        &[("app.py", "def handler(e, c):\n    pass\n")],
    );
    write(
        dir.path(),
        "site-packages/legacy/old.py",
        "print 'python 2'\n",
    );
    assert_eq!(check(dir.path()), Ok(()));
}

#[test]
fn a_missing_handler_module_is_named() {
    let dir = bundle(
        "main.handler",
        &[("app.py", "def handler(e, c):\n    pass\n")],
    );
    assert_eq!(
        check(dir.path()),
        Err("handler module main.py not found in the bundle".to_owned())
    );
}

#[test]
fn a_module_without_the_handler_is_refused() {
    let dir = bundle(
        "app.handler",
        &[("app.py", "def other(event, context):\n    pass\n")],
    );
    let error = check(dir.path()).unwrap_err();
    assert!(error.starts_with("app.py: no top-level handler"), "{error}");
}

#[test]
fn a_handler_defined_by_assignment_or_import_is_accepted() {
    let assigned = "def _impl(event, context):\n    pass\n\nhandler = _impl\n";
    let dir = bundle("app.handler", &[("app.py", assigned)]);
    assert_eq!(check(dir.path()), Ok(()));
    let imported = "from impl import run as handler\n";
    let dir = bundle(
        "app.handler",
        &[
            ("app.py", imported),
            ("impl.py", "def run(e, c):\n    pass\n"),
        ],
    );
    assert_eq!(check(dir.path()), Ok(()));
}

#[test]
fn an_async_handler_is_refused_with_its_line() {
    let dir = bundle(
        "app.handler",
        &[(
            "app.py",
            "import os\n\nasync def handler(event, context):\n    pass\n",
        )],
    );
    let error = check(dir.path()).unwrap_err();
    assert!(
        error.starts_with("app.py:3: handler is `async def`"),
        "{error}"
    );
}

#[test]
fn a_bundle_for_another_runtime_is_refused() {
    let dir = bundle(
        "app.handler",
        &[("app.py", "def handler(e, c):\n    pass\n")],
    );
    write(
        dir.path(),
        "squall-bundle.json",
        r#"{"format": 1, "runtime": "python3.12", "handler": "app.handler"}"#,
    );
    assert_eq!(
        check(dir.path()),
        Err(
            "squall-bundle.json: this platform runs python3.11; the bundle asks for python3.12"
                .to_owned()
        )
    );
}
