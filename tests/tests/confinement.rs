//! Workers that serve one function confine themselves: a memory limit that ends an attempt `out_of_memory`, and a sandbox that refuses exec, processes and files outside the function's folders while normal functions and host services keep working.

use squall_api::operations::{Confinement, DeadLetterList, Fleet};
use squall_api::queries::UsageReport;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_tests::{built, compile_c, eventually, Cluster, ClusterOptions};
use std::time::Duration;

/// Allocates 1 GiB and touches every page; a null block would crash in `memset`, so only a
/// limit that stops the call before the function sees the failure ends it cleanly.
const HOG: &str = r#"
#include <stdlib.h>
#include <string.h>
#include "squall.h"

const uint32_t squall_abi_version = SQUALL_ABI_VERSION;
static char *volatile kept;
static const char DONE[] = "allocated";

int32_t squall_init(const squall_host *host) { (void)host; return 0; }

int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  size_t size = (size_t)1 << 30;
  (void)ctx; (void)input;
  kept = malloc(size);
  memset(kept, 1, size);
  out->retry_after_ms = 0;
  out->body.ptr = (uint8_t *)DONE;
  out->body.len = sizeof DONE - 1;
  out->body.cap = 0;
  return SQUALL_OK;
}

void squall_free(squall_buf buf) { if (buf.cap) free(buf.ptr); }
"#;

/// Tries what a sandbox refuses: `exec`, `fork`, `read <path>`; and `tmp`, writing and reading
/// a file in its private temporary folder. Answers `<command> ok` or `<command> <errno>`.
const ESCAPE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "squall.h"

extern char **environ;
const uint32_t squall_abi_version = SQUALL_ABI_VERSION;

int32_t squall_init(const squall_host *host) { (void)host; return 0; }

static int32_t reply(squall_output *out, const char *text) {
  size_t len = strlen(text);
  uint8_t *body = malloc(len ? len : 1);
  memcpy(body, text, len);
  out->retry_after_ms = 0;
  out->body.ptr = body;
  out->body.len = len;
  out->body.cap = len ? len : 1;
  return SQUALL_OK;
}

static int result(char *line, size_t size, const char *what, int ok) {
  if (ok) return snprintf(line, size, "%s ok", what);
  return snprintf(line, size, "%s %d", what, errno);
}

int32_t squall_invoke(const squall_ctx *ctx, squall_bytes input, squall_output *out) {
  char command[512], line[600];
  size_t len = input.len < sizeof command - 1 ? input.len : sizeof command - 1;
  (void)ctx;
  memcpy(command, input.ptr, len);
  command[len] = 0;
  if (strcmp(command, "exec") == 0) {
    char *argv[] = {"/bin/sh", "-c", "true", NULL};
    execve("/bin/sh", argv, environ);
    result(line, sizeof line, "exec", 0);
  } else if (strcmp(command, "fork") == 0) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    result(line, sizeof line, "fork", pid > 0);
  } else if (strncmp(command, "read ", 5) == 0) {
    int fd = open(command + 5, O_RDONLY);
    result(line, sizeof line, "read", fd >= 0);
    if (fd >= 0) close(fd);
  } else if (strcmp(command, "tmp") == 0) {
    char path[512];
    const char *dir = getenv("TMPDIR");
    FILE *file;
    snprintf(path, sizeof path, "%s/probe.txt", dir ? dir : "/tmp");
    file = fopen(path, "w");
    if (file != NULL) {
      fputs("x", file);
      fclose(file);
      file = fopen(path, "r");
    }
    result(line, sizeof line, "tmp", file != NULL);
    if (file != NULL) fclose(file);
  } else {
    snprintf(line, sizeof line, "unknown %s", command);
  }
  return reply(out, line);
}

void squall_free(squall_buf buf) { free(buf.ptr); }
"#;

const EPERM: i32 = 1;
const EACCES: i32 = 13;

/// A cluster without plain workers: each test starts the single-function workers it needs.
async fn cluster() -> Cluster {
    Cluster::start_with(ClusterOptions {
        workers: 0,
        ..ClusterOptions::default()
    })
    .await
}

async fn deploy(cluster: &Cluster, name: &str, library: &std::path::Path, spec: serde_json::Value) {
    let (status, body) = cluster.deploy(name, library, Some(spec)).await;
    assert_eq!(status, 201, "deploy {name}: {body}");
}

/// The confinement the worker serving `function` reports in `/v1/fleet`, once it applied it.
async fn confinement_of(cluster: &Cluster, function: &str) -> Confinement {
    eventually(
        Duration::from_secs(20),
        format_args!("the worker of {function} to report its confinement"),
        async || {
            let (status, fleet) = cluster.get_as::<Fleet>("/v1/fleet").await;
            assert_eq!(status, 200);
            fleet
                .workers
                .into_iter()
                .find(|w| w.functions == [function])
                .and_then(|w| w.confinement)
                .ok_or(())
        },
    )
    .await
}

/// Runs one command synchronously and returns the function's output.
async fn call(cluster: &Cluster, function: &str, input: &str) -> String {
    let response = cluster.invoke(function, input.to_string()).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{function} {input:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_past_its_memory_ends_out_of_memory_in_one_attempt_and_another_is_untouched() {
    let mut cluster = cluster().await;
    let hog = compile_c(cluster.dir.path(), "hog", HOG);
    deploy(
        &cluster,
        "hog",
        &hog,
        serde_json::json!({"memory_mb": 128, "max_attempts": 3}),
    )
    .await;
    deploy(
        &cluster,
        "greeter",
        built().library("c-hello"),
        serde_json::json!({}),
    )
    .await;
    // Outside [64, 10240] MiB, a spec is refused with the range named.
    let (status, body) = cluster
        .deploy("tiny", &hog, Some(serde_json::json!({"memory_mb": 32})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("memory_mb must be between 64 and 10240, got 32"),
        "{body}"
    );
    cluster.add_function_worker("hog", &[]);
    cluster.add_function_worker("greeter", &[]);
    let confinement = confinement_of(&cluster, "hog").await;
    println!(
        "memory limit mechanism: {} (RLIMIT_DATA {} bytes for memory_mb {})",
        confinement.memory_via, confinement.data_limit_bytes, confinement.memory_mb
    );
    assert_eq!(confinement.memory_mb, 128);
    assert_eq!(confinement.open_files, 1024);

    let ids = cluster.submit_async("hog", "", 1).await;
    let greetings = cluster.submit_async("greeter", "B", 20).await;
    let view = cluster
        .wait_terminal(&ids[0], Duration::from_secs(30))
        .await;
    assert_eq!(view.status, InvocationStatus::DeadLettered, "{view:?}");
    let error = view.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::OutOfMemory, "{}", error.message);
    assert!(error.message.contains("128 MiB"), "{}", error.message);
    assert_eq!(view.attempts, 1, "one attempt spent");

    let letters = eventually(
        Duration::from_secs(10),
        "the dead letter of the hog",
        async || {
            let (status, list) = cluster
                .get_as::<DeadLetterList>("/v1/dlq?function=hog")
                .await;
            assert_eq!(status, 200);
            let letters = list.dead_letters;
            (!letters.is_empty()).then_some(letters).ok_or(())
        },
    )
    .await;
    assert_eq!(letters[0].kind, Some(ErrorKind::OutOfMemory));
    assert_eq!(letters[0].attempts, 1);

    for id in greetings {
        let view = cluster.wait_terminal(&id, Duration::from_secs(30)).await;
        assert_eq!(view.status, InvocationStatus::Succeeded, "{view:?}");
        assert_eq!(view.attempts, 1);
    }
    // The greeter's process was not the one recycled.
    assert_eq!(
        call(&cluster, "greeter", "again").await,
        "Hello from C, again!"
    );

    // Usage prices the greeter's wall time at its memory (256 MiB, the default).
    let usage = eventually(
        Duration::from_secs(10),
        "usage to count the greeter's invocations",
        async || {
            let (status, report) = cluster
                .get_as::<UsageReport>("/v1/usage?group_by=function")
                .await;
            assert_eq!(status, 200);
            let row = report
                .groups
                .into_iter()
                .find(|g| g.function.as_deref() == Some("greeter"))
                .map(|g| g.usage);
            row.filter(|u| u.invocations == 21).ok_or(())
        },
    )
    .await;
    let expected = 0.25 * usage.wall_ms / 1000.0;
    assert!(
        (usage.gb_s - expected).abs() <= 1e-9 && usage.gb_s > 0.0,
        "{usage:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_exec_processes_and_files_outside_while_functions_still_work() {
    let mut cluster = cluster().await;
    let escape = compile_c(cluster.dir.path(), "escape", ESCAPE);
    deploy(&cluster, "escape", &escape, serde_json::json!({})).await;
    deploy(
        &cluster,
        "greeter",
        built().library("c-hello"),
        serde_json::json!({}),
    )
    .await;
    deploy(
        &cluster,
        "rusty",
        built().library("hello"),
        serde_json::json!({}),
    )
    .await;
    let probe_source =
        std::fs::read_to_string(squall_tests::workspace_root().join("tests/fixtures/host_probe.c"))
            .expect("read host_probe.c");
    let probe = compile_c(cluster.dir.path(), "host_probe", &probe_source);
    deploy(&cluster, "probe", &probe, serde_json::json!({})).await;
    for function in ["escape", "greeter", "rusty", "probe"] {
        cluster.add_function_worker(function, &["--sandbox", "auto"]);
    }
    let confinement = confinement_of(&cluster, "escape").await;
    let active = |name: &str| {
        let feature = confinement
            .features
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name} in {confinement:?}"));
        if !feature.active {
            println!("skipping the {name} checks: {}", feature.detail);
        }
        feature.active
    };
    let (landlock, seccomp) = (active("landlock"), active("seccomp"));
    assert!(active("no_new_privs"));

    // A file the test writes outside every folder the function may read.
    let outside = cluster.dir.path().join("outside.txt");
    std::fs::write(&outside, "secret").expect("write outside file");
    if seccomp {
        assert_eq!(
            call(&cluster, "escape", "exec").await,
            format!("exec {EPERM}")
        );
        assert_eq!(
            call(&cluster, "escape", "fork").await,
            format!("fork {EPERM}")
        );
    }
    if landlock {
        assert_eq!(
            call(&cluster, "escape", "read /etc/passwd").await,
            format!("read {EACCES}")
        );
        assert_eq!(
            call(&cluster, "escape", &format!("read {}", outside.display())).await,
            format!("read {EACCES}")
        );
    }
    // Its own temporary folder is writable.
    assert_eq!(call(&cluster, "escape", "tmp").await, "tmp ok");
    // The worker process itself is still alive after each refusal: it answers again.
    assert_eq!(
        call(&cluster, "escape", "read /etc/ld.so.cache").await,
        "read ok"
    );

    // A normal function and the host services work under the sandbox.
    assert_eq!(call(&cluster, "greeter", "B").await, "Hello from C, B!");
    let rusty = call(&cluster, "rusty", "{\"name\": \"B\"}").await;
    assert!(rusty.contains('B'), "{rusty}");
    assert_eq!(call(&cluster, "probe", "put greeting hi 0").await, "0");
    assert_eq!(call(&cluster, "probe", "get greeting").await, "0 hi");
    assert_eq!(call(&cluster, "probe", "pub events.sandboxed x").await, "0");
    let probe_confinement = confinement_of(&cluster, "probe").await;
    assert_eq!(probe_confinement.sandbox, "auto");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_off_keeps_the_limits_and_reports_every_feature_off_with_the_reason() {
    let mut cluster = cluster().await;
    let escape = compile_c(cluster.dir.path(), "escape", ESCAPE);
    deploy(
        &cluster,
        "escape",
        &escape,
        serde_json::json!({"memory_mb": 512}),
    )
    .await;
    cluster.add_function_worker("escape", &["--sandbox", "off"]);
    let confinement = confinement_of(&cluster, "escape").await;
    assert_eq!(confinement.sandbox, "off");
    assert_eq!(confinement.memory_mb, 512);
    assert_eq!(confinement.features.len(), 3);
    for feature in &confinement.features {
        assert!(!feature.active, "{feature:?}");
        assert_eq!(feature.detail, "--sandbox off");
    }
    // Without the sandbox, nothing stops the read.
    assert_eq!(
        call(&cluster, "escape", "read /etc/passwd").await,
        "read ok"
    );
    assert_eq!(call(&cluster, "escape", "tmp").await, "tmp ok");
}
