//! `squall_runtime_test`: a bundle's own `*Test` classes run with `squall.TestContext`.

mod common;

use common::{bundle, jar};
use squall_runtime_java::run_tests;

const APP: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;
import squall.Retry;

public class Counter implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        String stored = ctx.kvGetText("count");
        long count = stored == null ? 1 : Long.parseLong(stored) + 1;
        ctx.kvPut("count", Long.toString(count));
        ctx.publish("events.counted", Long.toString(count));
        ctx.info("counted " + count);
        if (ctx.secrets().containsKey("fail")) {
            throw new Retry(10);
        }
        return Map.of("count", count);
    }
}
"#;

const TESTS: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.Retry;
import squall.TestContext;

public class CounterTest {
    public static void testCountsInTheStore() throws Exception {
        TestContext ctx = new TestContext();
        Counter counter = new Counter();
        counter.handle(ctx, null);
        Object second = counter.handle(ctx, null);
        System.out.println("second call: " + second);
        assert second.equals(Map.of("count", EXPECTED)) : "got " + second;
        assert new String(ctx.kv().get("count")).equals("2");
        assert ctx.published().get(1).text().equals("2");
        assert ctx.logged(Context.INFO, "counted 2");
    }

    public static void testRetriesWhenTold() throws Exception {
        try {
            new Counter().handle(new TestContext().withSecrets(Map.of("fail", true)), null);
            throw new AssertionError("no retry");
        } catch (Retry expected) {
            assert expected.afterMs() == 10;
        }
    }

    public static void helperIsNotATest() {
        throw new AssertionError("not a test");
    }

    static final long EXPECTED = 2L;
}
"#;

#[test]
fn passing_tests_report_success() {
    let dir = bundle(
        "app.Counter",
        &jar(&[("app/Counter.java", APP), ("app/CounterTest.java", TESTS)]),
    );
    let report = run_tests(dir.path());
    assert_eq!(report.status, 0, "{}", report.text);
    assert_eq!(
        report.text,
        "PASS CounterTest.testCountsInTheStore\nPASS CounterTest.testRetriesWhenTold\n2 passed, 0 failed\n"
    );
}

#[test]
fn a_failing_test_reports_failure_with_its_name_and_output() {
    let failing = TESTS.replace("EXPECTED = 2L", "EXPECTED = 3L");
    let dir = bundle(
        "app.Counter",
        &jar(&[
            ("app/Counter.java", APP),
            ("app/CounterTest.java", &failing),
        ]),
    );
    let report = run_tests(dir.path());
    assert_eq!(report.status, 1, "{}", report.text);
    assert!(
        report.text.starts_with(
            "FAIL CounterTest.testCountsInTheStore: java.lang.AssertionError: got {count=2}\n"
        ),
        "{}",
        report.text
    );
    assert!(
        report.text.contains("    | second call: {count=2}\n"),
        "{}",
        report.text
    );
    assert!(
        report
            .text
            .contains("PASS CounterTest.testRetriesWhenTold\n"),
        "{}",
        report.text
    );
    assert!(
        report.text.ends_with("1 passed, 1 failed\n"),
        "{}",
        report.text
    );
}

#[test]
fn a_bundle_without_tests_cannot_run_them() {
    let dir = bundle("app.Counter", &jar(&[("app/Counter.java", APP)]));
    let report = run_tests(dir.path());
    assert_eq!(report.status, 2, "{}", report.text);
    assert!(report.text.starts_with("found no tests"), "{}", report.text);
}
