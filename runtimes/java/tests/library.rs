//! The built library as the worker loads it: copies opened with `dlopen` without
//! `RTLD_GLOBAL`, each serving its own bundle through the exported C symbols, in one JVM. The
//! tests run in parallel, so their copies also start the process's JVM at the same moment (a
//! copy that finds it being created waits until it is listed).

mod common;

use std::ffi::c_void;
use std::mem::{offset_of, size_of, ManuallyDrop};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::{bundle, jar};
use libloading::os::unix::{Library, Symbol, RTLD_LOCAL, RTLD_NOW};
use squall_sdk::abi::{
    FreeFn, InvokeFn, LogFn, SquallBuf, SquallBytes, SquallCtx, SquallHost, SquallOutput,
    StreamWriteFn, SQUALL_ERROR, SQUALL_HOST_TOO_LARGE, SQUALL_OK,
};

type RuntimeFn = unsafe extern "C" fn(SquallBytes, *mut SquallBuf) -> i32;

/// The cdylib cargo built beside this test executable (`target/<profile>/deps/`).
fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let library = exe.with_file_name("libsquall_runtime_java.so");
    assert!(library.exists(), "{} was not built", library.display());
    library
}

/// What a test host received during one call: log lines and streamed chunks, in order.
#[derive(Default)]
struct Received {
    lines: Mutex<Vec<(u32, String)>>,
    chunks: Mutex<Vec<Vec<u8>>>,
}

/// The host `Copy::invoke` lends: which of the appended calls it offers.
#[derive(Clone, Copy)]
enum Host {
    /// A host from before the services: `size` ends after `log`.
    LogOnly,
    /// A host whose `stream_write` is `stream_write` (it offers no KV or publish).
    Streaming(StreamWriteFn),
}

unsafe extern "C" fn collect(data: *mut c_void, level: u32, message: SquallBytes) {
    // SAFETY: `data` is the `Received` that `Copy::invoke` keeps alive for the whole call.
    let received = unsafe { &*(data as *const Received) };
    // SAFETY: the SDK passes a message valid for the call.
    let text = String::from_utf8_lossy(unsafe { message.as_slice() }).into_owned();
    received.lines.lock().unwrap().push((level, text));
}

/// `stream_write` that keeps every chunk.
unsafe extern "C" fn record_chunk(ctx: *const SquallCtx, chunk: SquallBytes) -> i32 {
    // SAFETY: the SDK passes the call's context, whose host's `data` is the call's `Received`.
    let received = unsafe { &*((*(*ctx).host).data as *const Received) };
    // SAFETY: the SDK passes a chunk valid for the call.
    let chunk = unsafe { chunk.as_slice() }.to_vec();
    received.chunks.lock().unwrap().push(chunk);
    0
}

/// `stream_write` of a host whose output limit is already reached.
unsafe extern "C" fn refuse_chunk(_ctx: *const SquallCtx, _chunk: SquallBytes) -> i32 {
    SQUALL_HOST_TOO_LARGE
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
        let (status, body, received) = self.invoke_with(Host::LogOnly, name, input);
        (status, body, received.lines.into_inner().unwrap())
    }

    /// Calls `squall_invoke` as function `name` with `host`; what the host received.
    fn invoke_with(&self, host: Host, name: &str, input: &[u8]) -> (i32, String, Received) {
        let invoke: Symbol<InvokeFn> = self.symbol(b"squall_invoke\0");
        let received = Received::default();
        let (size, stream_write) = match host {
            Host::LogOnly => (
                offset_of!(SquallHost, log) + size_of::<Option<LogFn>>(),
                None,
            ),
            Host::Streaming(stream_write) => (size_of::<SquallHost>(), Some(stream_write)),
        };
        let host = SquallHost {
            size: u32::try_from(size).expect("host size"),
            data: &received as *const Received as *mut c_void,
            log: Some(collect),
            kv_get: None,
            kv_put: None,
            kv_delete: None,
            publish: None,
            buf_free: None,
            cancelled: None,
            stream_write,
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
        (status, body, received)
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

const STREAMER: &str = r#"
package app;

import java.nio.charset.StandardCharsets;
import squall.Context;
import squall.Handler;
import squall.HostException;

/** Streams each word of the input as a chunk, then returns "end"; a refused chunk is reported. */
public class Streamer implements Handler {
    @Override
    public byte[] handle(Context ctx, byte[] input) {
        String[] words = new String(input, StandardCharsets.UTF_8).split(" ");
        try {
            ctx.streamWrite(words[0]);
            for (int i = 1; i < words.length; i++) {
                ctx.streamWrite((" " + words[i]).getBytes(StandardCharsets.UTF_8));
            }
        } catch (HostException refused) {
            return ("refused: " + refused.code() + " (" + refused.getMessage() + ")").getBytes();
        }
        return " end".getBytes();
    }
}
"#;

const STREAMER_TESTS: &str = r#"
package app;

import java.util.List;
import squall.HostException;
import squall.TestContext;

public class StreamerTest {
    public static void testChunksAreRecordedInOrder() {
        TestContext ctx = new TestContext();
        byte[] last = new Streamer().handle(ctx, "zoë streams".getBytes());
        assert new String(last).equals(" end") : new String(last);
        assert ctx.streamed().size() == 2 : ctx.streamed().size();
        assert ctx.streamedText().equals("zoë streams") : ctx.streamedText();
    }

    public static void testAFailingHostRefusesChunks() {
        TestContext ctx = new TestContext().failWith("too_large");
        byte[] last = new Streamer().handle(ctx, "x".getBytes());
        assert new String(last).startsWith("refused: too_large") : new String(last);
        assert ctx.streamed().isEmpty();
    }
}
"#;

#[test]
fn streamed_chunks_reach_the_host_in_order_and_refusals_throw_host_exceptions() {
    let libraries = tempfile::tempdir().unwrap();
    let classes = jar(&[
        ("app/Streamer.java", STREAMER),
        ("app/StreamerTest.java", STREAMER_TESTS),
    ]);
    let streamer = bundle("app.Streamer", &classes);
    let copy = Copy::load(libraries.path(), "runtime-streams.so");
    assert_eq!(
        copy.runtime(b"squall_runtime_open\0", streamer.path()),
        (0, String::new())
    );

    let (status, body, received) = copy.invoke_with(
        Host::Streaming(record_chunk),
        "fn-stream",
        "one two zoë".as_bytes(),
    );
    assert_eq!((status, body.as_str()), (SQUALL_OK, " end"));
    assert_eq!(
        received.chunks.into_inner().unwrap(),
        vec![
            b"one".to_vec(),
            b" two".to_vec(),
            " zoë".as_bytes().to_vec()
        ]
    );

    let (status, body, received) =
        copy.invoke_with(Host::Streaming(refuse_chunk), "fn-stream", b"one two");
    assert_eq!(status, SQUALL_OK);
    assert!(
        body.starts_with("refused: too_large (stream_write: "),
        "{body}"
    );
    assert!(received.chunks.into_inner().unwrap().is_empty());

    let (status, body, received) = copy.invoke_with(Host::LogOnly, "fn-stream", b"one");
    assert_eq!(status, SQUALL_OK);
    assert!(
        body.starts_with("refused: unsupported (stream_write: "),
        "{body}"
    );
    assert!(received.chunks.into_inner().unwrap().is_empty());

    assert_eq!(
        copy.runtime(b"squall_runtime_test\0", streamer.path()),
        (
            0,
            "PASS StreamerTest.testAFailingHostRefusesChunks\nPASS StreamerTest.testChunksAreRecordedInOrder\n2 passed, 0 failed\n"
                .to_owned()
        )
    );
}
