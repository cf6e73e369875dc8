//! The built library as the worker loads it: copies opened with `dlopen` without
//! `RTLD_GLOBAL`, each serving its own bundle through the exported C symbols, in one JVM.

mod common;

use std::ffi::c_void;
use std::mem::{offset_of, size_of, ManuallyDrop};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{bundle, jar};
use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
use squall_sdk::abi::{
    FreeFn, InvokeFn, LogFn, SquallBuf, SquallBytes, SquallCtx, SquallHost, SquallOutput,
    SQUALL_ERROR, SQUALL_OK,
};

type RuntimeFn = unsafe extern "C" fn(SquallBytes, *mut SquallBuf) -> i32;

/// The cdylib cargo built beside this test executable (`target/<profile>/deps/`).
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let library = exe.with_file_name("libsquall_runtime_java.so");
    assert!(library.exists(), "{} was not built", library.display());
    library
}

unsafe extern "C" fn collect(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: `data` is the `Mutex` that `Copy::invoke` keeps alive for the whole call.
    let lines = unsafe { &*(data as *const Mutex<Vec<(u32, String)>>) };
    // SAFETY: the SDK passes a message valid for the call.
    let text = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
    lines.lock().unwrap().push((level, text));
}

/// One loaded copy of the runtime, under a file name of its own as the worker does; never
/// unloaded, like the worker's.
struct Copy {
    library: ManuallyDrop<Library>,
}

impl Copy {
    fn load(dir: &Path, name: &str) -> Copy {
        let path = dir.join(name);
        std::fs::copy(built_library(), &path).expect("copy of the library");
        // SAFETY: loading the runtime runs no initialisers beyond Rust's.
        let library = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }.expect("dlopen");
        Copy {
            library: ManuallyDrop::new(library),
        }
    }

    fn symbol<T>(&self, name: &[u8]) -> Symbol<T> {
        // SAFETY: the caller names the symbol with its ABI type.
        unsafe { self.library.get(name) }.expect("exported symbol")
    }

    fn text(&self, buf: SquallBuf) -> String {
        let free: Symbol<FreeFn> = self.symbol(b"squall_free\0");
        // SAFETY: the library filled `buf`; it is read once and handed back to the same library.
        let text = String::from_utf8_lossy(unsafe {
            SquallBytes {
                ptr: buf.ptr,
                len: buf.len,
            }
            .as_slice()
        })
        .into_owned();
        // SAFETY: as above.
        unsafe { free(buf) };
        text
    }

    fn runtime(&self, symbol: &[u8], dir: &Path) -> (i32, String) {
        let call: Symbol<RuntimeFn> = self.symbol(symbol);
        let dir = dir.to_str().expect("UTF-8 temporary path");
        let mut out = SquallBuf::EMPTY;
        // SAFETY: the path is borrowed for the call and `out` is writable.
        let status = unsafe { call(SquallBytes::from_slice(dir.as_bytes()), &mut out) };
        (status, self.text(out))
    }

    /// Calls `squall_invoke` as function `name` with a host that only logs.
    fn invoke(&self, name: &str, input: &[u8]) -> (i32, String, Vec<(u32, String)>) {
        let invoke: Symbol<InvokeFn> = self.symbol(b"squall_invoke\0");
        let lines = Mutex::new(Vec::new());
        let host = SquallHost {
            size: (offset_of!(SquallHost, log) + size_of::<Option<LogFn>>()) as u32,
            data: &lines as *const Mutex<Vec<(u32, String)>> as *mut c_void,
            log: Some(collect),
            kv_get: None,
            kv_put: None,
            kv_delete: None,
            publish: None,
            buf_free: None,
            cancelled: None,
        };
        let ctx = SquallCtx {
            size: size_of::<SquallCtx>() as u32,
            function: SquallBytes::from_slice(name.as_bytes()),
            invocation_id: SquallBytes::from_slice(b"inv"),
            traceparent: SquallBytes::EMPTY,
            config: SquallBytes::from_slice(b"{}"),
            event: SquallBytes::from_slice(br#"{"source": "http"}"#),
            attempt: 1,
            deadline_unix_ms: 0,
            host: &host,
        };
        let mut out = SquallOutput {
            body: SquallBuf::EMPTY,
            retry_after_ms: 0,
        };
        // SAFETY: the context, its host and the input outlive the call; `out` is writable.
        let status = unsafe { invoke(&ctx, SquallBytes::from_slice(input), &mut out) };
        let body = self.text(out.body);
        (status, body, lines.into_inner().unwrap())
    }
}

const NAMED: &str = r#"
package app;

import squall.Context;
import squall.Handler;

public class Named implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        String what = new String(input);
        if (what.equals("exit")) {
            System.exit(3);
        }
        System.out.println(ctx.functionName() + " printed " + what);
        return (getClass().getSimpleName() + " in " + ctx.functionName() + ": " + what).getBytes();
    }
}
"#;

const OTHER: &str = r#"
package app;

import java.util.Map;
import squall.Context;
import squall.JsonHandler;

public class Other implements JsonHandler {
    @Override
    public Object handle(Context ctx, Object event) {
        ctx.info("other " + ctx.functionName());
        System.out.println("printed through the first copy's stream");
        return Map.of("event", event, "function", ctx.functionName());
    }
}
"#;

const TESTS: &str = r#"
package app;

public class NamedTest {
    public static void testNothingMuch() {
    }
}
"#;

#[test]
fn copies_loaded_without_rtld_global_share_one_jvm_and_keep_their_own_bundles() {
    let libraries = tempfile::tempdir().unwrap();
    let classes = jar(&[
        ("app/Named.java", NAMED),
        ("app/Other.java", OTHER),
        ("app/NamedTest.java", TESTS),
    ]);
    let one = bundle("app.Named", &classes);
    let two = bundle("app.Other", &classes);
    let missing = bundle("app.Missing", &classes);

    let first = Copy::load(libraries.path(), "runtime-1.so");
    assert_eq!(
        first.runtime(b"squall_runtime_open\0", one.path()),
        (0, String::new())
    );
    let second = Copy::load(libraries.path(), "runtime-2.so");
    assert_eq!(
        second.runtime(b"squall_runtime_open\0", two.path()),
        (0, String::new())
    );

    let (status, body, lines) = first.invoke("fn-one", b"hi");
    assert_eq!((status, body.as_str()), (SQUALL_OK, "Named in fn-one: hi"));
    assert_eq!(lines, vec![(3, "fn-one printed hi".to_owned())]);
    let (status, body, lines) = second.invoke("fn-two", br#"[1]"#);
    assert_eq!(status, SQUALL_OK, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"event": [1], "function": "fn-two"})
    );
    assert_eq!(
        lines,
        vec![
            (3, "other fn-two".to_owned()),
            (3, "printed through the first copy's stream".to_owned())
        ]
    );

    let (status, body, lines) = first.invoke("fn-one", b"exit");
    assert_eq!(status, SQUALL_ERROR);
    assert_eq!(
        body,
        "java.lang.SecurityException: exit(3) refused: a function cannot stop its worker process"
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(first.invoke("fn-one", b"still here").0, SQUALL_OK);

    let (status, message) = first.runtime(b"squall_runtime_open\0", two.path());
    assert_eq!(status, 1);
    assert!(message.contains("already serves"), "{message}");

    let third = Copy::load(libraries.path(), "runtime-3.so");
    let (status, message) = third.runtime(b"squall_runtime_open\0", missing.path());
    assert_eq!(
        (status, message.as_str()),
        (1, "class app.Missing not found in the bundle")
    );
    let (status, message, _) = third.invoke("fn-three", b"{}");
    assert_eq!(status, SQUALL_ERROR);
    assert!(message.contains("no bundle open"), "{message}");

    assert_eq!(
        third.runtime(b"squall_runtime_check\0", one.path()),
        (0, String::new())
    );
    assert_eq!(
        third.runtime(b"squall_runtime_check\0", missing.path()),
        (1, "app.jar: class app.Missing not found".to_owned())
    );
    assert_eq!(
        third.runtime(b"squall_runtime_test\0", one.path()),
        (
            0,
            "PASS NamedTest.testNothingMuch\n1 passed, 0 failed\n".to_owned()
        )
    );
}
