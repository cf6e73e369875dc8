//! The built library as the worker loads it: copies opened with `dlopen` without
//! `RTLD_GLOBAL`, each serving its own bundle through the exported C symbols.
//!
//! This test binary does not link the runtime crate (nor libpython), so the libpython that the
//! copies bring is local to them until the runtime promotes it.

mod common;

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

use common::bundle;
use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
use squall_sdk::abi::{
    FreeFn, InvokeFn, SquallBuf, SquallBytes, SquallCtx, SquallOutput, SQUALL_ERROR, SQUALL_OK,
};

type RuntimeFn = unsafe extern "C" fn(SquallBytes, *mut SquallBuf) -> i32;

/// The cdylib cargo built beside this test executable (`target/<profile>/deps/`).
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let library = exe.with_file_name("libsquall_runtime_python.so");
    assert!(library.exists(), "{} was not built", library.display());
    library
}

/// One loaded copy of the runtime, under a file name of its own as the worker does. Like the
/// worker, it never unloads the library: the threads' destructors registered by its code run
/// after the test.
struct Copy {
    library: ManuallyDrop<Library>,
}

impl Copy {
    fn load(dir: &Path, name: &str) -> Copy {
        let path = dir.join(name);
        std::fs::copy(built_library(), &path).expect("copy of the library");
        // SAFETY: loading the runtime runs no initialisers beyond Rust's and libpython's.
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

    fn invoke(&self, input: &[u8]) -> (i32, String) {
        let invoke: Symbol<InvokeFn> = self.symbol(b"squall_invoke\0");
        let ctx = SquallCtx {
            size: std::mem::size_of::<SquallCtx>() as u32,
            function: SquallBytes::from_slice(b"fn"),
            invocation_id: SquallBytes::from_slice(b"inv"),
            traceparent: SquallBytes::EMPTY,
            config: SquallBytes::from_slice(b"{}"),
            event: SquallBytes::from_slice(br#"{"source": "http"}"#),
            attempt: 1,
            deadline_unix_ms: 0,
            host: std::ptr::null(),
        };
        let mut out = SquallOutput {
            body: SquallBuf::EMPTY,
            retry_after_ms: 0,
        };
        // SAFETY: the context and input outlive the call; `out` is writable.
        let status = unsafe { invoke(&ctx, SquallBytes::from_slice(input), &mut out) };
        (status, self.text(out.body))
    }
}

fn libpython_loaded() -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.contains("libpython")
}

const USES_C_EXTENSIONS: &str = r#"
import math, _json, _decimal, json

def handler(event, context):
    return json.dumps({"copy": "one", "sqrt": math.sqrt(event["n"])})
"#;

const SECOND: &str = r#"
import math

def handler(event, context):
    return {"copy": "two", "floor": math.floor(event["n"])}
"#;

#[test]
fn copies_loaded_without_rtld_global_import_c_extensions_and_keep_their_own_bundles() {
    assert!(
        !libpython_loaded(),
        "this test must start without libpython"
    );
    let libraries = tempfile::tempdir().unwrap();
    let one = bundle("app.handler", &[("app.py", USES_C_EXTENSIONS)]);
    let two = bundle("app.handler", &[("app.py", SECOND)]);
    let broken = bundle("app.handler", &[("app.py", "raise ImportError('nope')\n")]);

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

    assert_eq!(
        first.invoke(br#"{"n": 16}"#),
        (SQUALL_OK, r#"{"copy": "one", "sqrt": 4.0}"#.to_owned())
    );
    assert_eq!(
        second.invoke(br#"{"n": 2.5}"#),
        (SQUALL_OK, r#"{"copy":"two","floor":2}"#.to_owned())
    );

    let (status, message) = first.runtime(b"squall_runtime_open\0", two.path());
    assert_eq!(status, 1);
    assert!(message.contains("already serves"), "{message}");
    assert_eq!(first.invoke(br#"{"n": 4}"#).0, SQUALL_OK);

    let third = Copy::load(libraries.path(), "runtime-3.so");
    let (status, message) = third.runtime(b"squall_runtime_open\0", broken.path());
    assert_eq!(status, 1);
    assert!(message.starts_with("importing app.py failed:"), "{message}");
    assert!(message.ends_with("ImportError: nope"), "{message}");
    assert!(
        !message.contains("importlib"),
        "the runtime's frames show: {message}"
    );
    let (status, message) = third.invoke(b"{}");
    assert_eq!(status, SQUALL_ERROR);
    assert!(message.contains("no bundle open"), "{message}");

    let (status, report) = third.runtime(b"squall_runtime_check\0", two.path());
    assert_eq!((status, report.as_str()), (0, ""));
    let (status, report) = third.runtime(b"squall_runtime_test\0", two.path());
    assert_eq!(status, 2, "{report}");
}
