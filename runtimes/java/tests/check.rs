//! `squall_runtime_check`: a bundle is validated without running any of its code.

mod common;

use std::sync::OnceLock;

use common::{bundle, jar, write};
use squall_runtime_java::check;

const HELLO: &str = r#"
package com.example;

import squall.Context;
import squall.Handler;

public class Hello implements Handler {
    static {
        try {
            java.nio.file.Files.writeString(java.nio.file.Path.of(System.getProperty("java.io.tmpdir"), "squall-check-ran-" + ProcessHandle.current().pid()), "yes");
        } catch (java.io.IOException ignored) {
        }
    }

    @Override
    public byte[] handle(Context ctx, byte[] input) {
        return input;
    }
}
"#;

const PLAIN: &str = r#"
package com.example;

public class Plain {
    public byte[] handle(byte[] input) {
        return input;
    }
}
"#;

const ABSTRACT: &str = r#"
package com.example;

public abstract class Partial implements squall.JsonHandler {
}
"#;

fn app() -> &'static std::path::Path {
    static JAR: OnceLock<std::path::PathBuf> = OnceLock::new();
    JAR.get_or_init(|| {
        jar(&[
            ("com/example/Hello.java", HELLO),
            ("com/example/Plain.java", PLAIN),
            ("com/example/Partial.java", ABSTRACT),
        ])
    })
}

#[test]
fn a_valid_bundle_passes_without_running_its_code() {
    let dir = bundle("com.example.Hello", app());
    assert_eq!(check(dir.path()), Ok(()));
    let marker = std::env::temp_dir().join(format!("squall-check-ran-{}", std::process::id()));
    assert!(!marker.exists(), "the check ran the static initialiser");
}

#[test]
fn a_missing_class_is_named_with_its_jar() {
    let dir = bundle("com.example.Missing", app());
    assert_eq!(
        check(dir.path()),
        Err("app.jar: class com.example.Missing not found".to_owned())
    );
}

#[test]
fn a_class_that_is_no_handler_is_refused() {
    let dir = bundle("com.example.Plain", app());
    assert_eq!(
        check(dir.path()),
        Err(
            "app.jar: com.example.Plain does not implement squall.Handler or squall.JsonHandler"
                .to_owned()
        )
    );
    let dir = bundle("com.example.Partial", app());
    assert_eq!(
        check(dir.path()),
        Err(
            "app.jar: com.example.Partial is abstract; the handler must be a concrete class"
                .to_owned()
        )
    );
}

#[test]
fn a_broken_jar_and_a_bundle_without_classes_are_refused() {
    let dir = bundle("com.example.Hello", app());
    write(dir.path(), "broken.jar", "not a zip file");
    let error = check(dir.path()).unwrap_err();
    assert!(
        error.starts_with("broken.jar: not a valid jar: "),
        "{error}"
    );

    let empty = tempfile::tempdir().unwrap();
    write(
        empty.path(),
        "squall-bundle.json",
        r#"{"format": 1, "runtime": "java17", "handler": "com.example.Hello"}"#,
    );
    assert_eq!(
        check(empty.path()),
        Err("squall-bundle.json: the bundle has no classes: put *.jar files or a classes/ folder beside it".to_owned())
    );
}

#[test]
fn a_manifest_for_another_runtime_is_refused() {
    let dir = bundle("com.example.Hello", app());
    write(
        dir.path(),
        "squall-bundle.json",
        r#"{"format": 1, "runtime": "python3.11", "handler": "app.handler"}"#,
    );
    assert_eq!(
        check(dir.path()),
        Err(
            "squall-bundle.json: this platform runs java17; the bundle asks for python3.11"
                .to_owned()
        )
    );
}
