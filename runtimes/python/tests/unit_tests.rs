//! `squall_runtime_test`: a bundle's own unittest files run with `squall.testing`'s context.

mod common;

use common::bundle;
use squall_runtime_python::run_tests;

const APP: &str = r#"
import squall

def handler(event, context):
    count = int(context.kv_get("count") or b"0") + 1
    context.kv_put("count", str(count))
    context.publish("events.counted", str(count))
    context.logger.info("counted %d", count)
    if context.secrets.get("fail"):
        raise squall.Retry(after_ms=10)
    return {"count": count}
"#;

const PASSING: &str = r#"
import unittest
import squall
from squall.testing import Context
import app

class AppTest(unittest.TestCase):
    def test_counts_in_the_store(self):
        ctx = Context(config={}, secrets={})
        self.assertEqual(app.handler({}, ctx), {"count": 1})
        self.assertEqual(app.handler({}, ctx), {"count": 2})
        self.assertEqual(ctx.kv["count"], b"2")
        self.assertEqual(ctx.published[-1], ("events.counted", b"2"))
        self.assertIn(("INFO", "counted 2"), ctx.logs)

    def test_retries_when_told_to(self):
        with self.assertRaises(squall.Retry):
            app.handler({}, Context(secrets={"fail": True}))
"#;

#[test]
fn passing_tests_report_success() {
    let dir = bundle("app.handler", &[("app.py", APP), ("test_app.py", PASSING)]);
    let report = run_tests(dir.path());
    assert_eq!(report.status, 0, "{}", report.text);
    assert!(
        report.text.contains("test_counts_in_the_store"),
        "{}",
        report.text
    );
    assert!(report.text.contains("Ran 2 tests"), "{}", report.text);
}

#[test]
fn a_failing_test_reports_failure_with_its_name() {
    let failing = PASSING.replace(r#"{"count": 2})"#, r#"{"count": 3})"#);
    let dir = bundle("app.handler", &[("app.py", APP), ("test_app.py", &failing)]);
    let report = run_tests(dir.path());
    assert_eq!(report.status, 1, "{}", report.text);
    assert!(
        report.text.contains("FAIL: test_counts_in_the_store"),
        "{}",
        report.text
    );
    assert!(
        report.text.contains("FAILED (failures=1)"),
        "{}",
        report.text
    );
}

#[test]
fn a_bundle_without_tests_cannot_run_them() {
    let dir = bundle("app.handler", &[("app.py", APP)]);
    let report = run_tests(dir.path());
    assert_eq!(report.status, 2, "{}", report.text);
    assert!(report.text.contains("found no tests"), "{}", report.text);
}

#[test]
fn the_test_context_records_streamed_chunks() {
    let app = r#"
def handler(event, context):
    context.stream_write("one ")
    context.stream_write(b"two ")
    return "three"
"#;
    let test = r#"
import unittest
from squall.testing import Context
import app

class StreamTest(unittest.TestCase):
    def test_streams_two_chunks_then_returns_the_last(self):
        ctx = Context()
        self.assertEqual(app.handler({}, ctx), "three")
        self.assertEqual(ctx.streamed, [b"one ", b"two "])
"#;
    let dir = bundle("app.handler", &[("app.py", app), ("test_app.py", test)]);
    let report = run_tests(dir.path());
    assert_eq!(report.status, 0, "{}", report.text);
    assert!(report.text.contains("Ran 1 test"), "{}", report.text);
}

#[test]
fn the_template_tests_pass() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/template");
    let read = |name: &str| std::fs::read_to_string(format!("{template}/{name}")).unwrap();
    let (app, test) = (read("app.py"), read("test_app.py"));
    let dir = bundle("app.handler", &[("app.py", &app), ("test_app.py", &test)]);
    let report = run_tests(dir.path());
    assert_eq!(report.status, 0, "{}", report.text);
}

#[test]
fn the_squall_module_runs_the_template_tests_under_plain_cpython() {
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/template");
    let read = |name: &str| std::fs::read_to_string(format!("{template}/{name}")).unwrap();
    let (app, test) = (read("app.py"), read("test_app.py"));
    let squall = squall_runtime_python::SQUALL_PY;
    let dir = bundle(
        "app.handler",
        &[
            ("app.py", &app),
            ("test_app.py", &test),
            ("squall.py", squall),
        ],
    );
    let output = std::process::Command::new("python3")
        .args(["-B", "-m", "unittest"])
        .current_dir(dir.path())
        .output()
        .expect("python3 on PATH");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("Ran 2 tests"), "{stderr}");
}
