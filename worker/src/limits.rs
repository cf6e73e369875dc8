//! Resource limits of a worker process that serves one function, and the detection of an attempt that runs out of memory.
//!
//! Memory: where this process sits alone in a delegated, writable cgroup v2, its `memory.max`
//! is set as well; the limit that runs everywhere is `RLIMIT_DATA`, which bounds the private
//! writable memory of the process (heap, anonymous mappings, thread stacks) and not its reserved
//! address space: glibc reserves 64 MiB of address space per malloc arena and the runtime runs
//! a few threads, so `RLIMIT_AS` would refuse memory the process never uses. The limit is the
//! process's data size when the function is first loaded (the runtime, the broker connection),
//! plus [`RUNTIME_ALLOWANCE_MB`] for the worker's own later needs, plus one stack per call
//! thread, plus the function's `memory_mb`.
//!
//! Out of memory: the process's `malloc`, `calloc` and `realloc` go through the binary's thin
//! wrappers (`alloc_hook` in the binary), which call [`allocation_failed`] when glibc returns
//! no memory. On a call thread of an armed process, that marks the running attempt out of
//! memory and parks the thread for good, so the function never sees the failure (most native
//! code would crash on it); the attempt's waiter ends the attempt with kind `out_of_memory` and
//! recycles the process, as after a timeout.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Memory kept for the worker itself beyond its size at the first load, in MiB: buffers of
/// jobs and results, the broker client's, metrics.
pub const RUNTIME_ALLOWANCE_MB: u64 = 64;
/// The stack of one call thread (Rust's default for spawned threads), counted beside
/// `memory_mb` so that a function's concurrency does not eat its memory.
pub const CALL_STACK_BYTES: u64 = 2 * 1024 * 1024;
/// Open files a single-function process may hold (Lambda's figure).
pub const MAX_OPEN_FILES: u64 = 1024;

const MIB: u64 = 1024 * 1024;

/// How the memory limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMechanism {
    /// `memory.max` of the process's own cgroup v2, with `RLIMIT_DATA` to tell an attempt
    /// that runs out of memory.
    Cgroup,
    /// `RLIMIT_DATA` alone.
    Rlimit,
}

impl MemoryMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryMechanism::Cgroup => "cgroup",
            MemoryMechanism::Rlimit => "rlimit",
        }
    }
}

/// The limits of one process, computed before any is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub memory_mb: u32,
    /// The `RLIMIT_DATA` (and cgroup `memory.max`) value, in bytes.
    pub data_bytes: u64,
    pub open_files: u64,
    /// Most call threads the function gets in this process.
    pub call_threads: usize,
}

/// The call threads a process gives its function: its concurrency, at most the process's
/// `--max-threads`, at least one.
pub fn call_threads(concurrency: u32, max_threads: usize) -> usize {
    (concurrency as usize).min(max_threads).max(1)
}

/// The limits of a process whose data size is `baseline_bytes` before it loads a function
/// with `memory_mb` and `call_threads` call threads.
pub fn plan(memory_mb: u32, baseline_bytes: u64, call_threads: usize) -> Plan {
    let data_bytes = baseline_bytes
        .saturating_add(RUNTIME_ALLOWANCE_MB * MIB)
        .saturating_add(call_threads as u64 * CALL_STACK_BYTES)
        .saturating_add(u64::from(memory_mb) * MIB);
    Plan {
        memory_mb,
        data_bytes,
        open_files: MAX_OPEN_FILES,
        call_threads,
    }
}

/// Reads `VmData` (kB) out of a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_data(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmData:"))?;
    let kb: u64 = line
        .trim_start_matches("VmData:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// This process's data size now, in bytes.
pub fn data_size() -> Option<u64> {
    parse_vm_data(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Why a limit could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("cannot set {resource}: {error}")]
    Rlimit {
        resource: &'static str,
        error: std::io::Error,
    },
}

/// The cgroup v2 `memory.max` file of this process's own cgroup, when it can be written: a
/// cgroup v2 (unified) hierarchy, a cgroup of its own (not the root) and write access.
fn own_cgroup_memory_max() -> Option<std::path::PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    if path == "/" || path.is_empty() {
        return None;
    }
    let root = std::path::Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        return None;
    }
    let file = root.join(path.trim_start_matches('/')).join("memory.max");
    let writable = std::fs::OpenOptions::new().write(true).open(&file).is_ok();
    writable.then_some(file)
}

fn set(
    resource: rustix::process::Resource,
    name: &'static str,
    value: u64,
) -> Result<(), LimitError> {
    // Without the privilege to raise a hard limit, a lower one already in force stays.
    let value = rustix::process::getrlimit(resource)
        .maximum
        .map_or(value, |hard| hard.min(value));
    let limit = rustix::process::Rlimit {
        current: Some(value),
        maximum: Some(value),
    };
    rustix::process::setrlimit(resource, limit).map_err(|error| LimitError::Rlimit {
        resource: name,
        error: error.into(),
    })
}

/// Applies `plan` to this process: memory, open files, no core dumps. Soft and hard limits
/// are the same, so the function cannot raise them.
pub fn apply(plan: &Plan) -> Result<MemoryMechanism, LimitError> {
    use rustix::process::Resource;
    set(Resource::Core, "RLIMIT_CORE", 0)?;
    set(Resource::Nofile, "RLIMIT_NOFILE", plan.open_files)?;
    let mechanism = match own_cgroup_memory_max() {
        // The cgroup catches what the rlimit does not count (a function's file mappings);
        // a little above it, so that the rlimit trips first and the attempt can be told.
        Some(file) => {
            let max = plan.data_bytes.saturating_add(RUNTIME_ALLOWANCE_MB * MIB);
            match std::fs::write(&file, max.to_string()) {
                Ok(()) => MemoryMechanism::Cgroup,
                Err(error) => {
                    tracing::warn!(message = "cannot write the cgroup's memory.max; using the rlimit alone",
                        file = %file.display(), %error);
                    MemoryMechanism::Rlimit
                }
            }
        }
        None => MemoryMechanism::Rlimit,
    };
    set(Resource::Data, "RLIMIT_DATA", plan.data_bytes)?;
    ARMED.store(true, Ordering::SeqCst);
    Ok(mechanism)
}

/// Set once limits apply: from then on an allocation failure on a call thread is the
/// attempt's `out_of_memory`.
static ARMED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The out-of-memory flag of the attempt running on this thread, if any.
    static CALL_OOM: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Whether this process's allocation failures end attempts (it serves one function with
/// limits).
pub fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// Runs `call` with `flag` as the running attempt's out-of-memory flag on this thread.
pub fn during_call<R>(flag: &Arc<AtomicBool>, call: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            CALL_OOM.with(|c| c.set(std::ptr::null()));
        }
    }
    CALL_OOM.with(|c| c.set(Arc::as_ptr(flag)));
    let _clear = Clear;
    call()
}

/// Called by the process's allocator wrappers when an allocation found no memory. On a call
/// thread of an armed process it flags the running attempt and never returns: the thread
/// parks until the process is replaced. Anywhere else it returns and the caller gets null.
///
/// It allocates nothing: it runs inside `malloc`.
pub fn allocation_failed() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let flag = CALL_OOM.with(|c| c.get());
    if flag.is_null() {
        return;
    }
    // SAFETY: `during_call` points the cell at an `AtomicBool` owned by an `Arc` that the
    // call's closure holds for as long as the call runs, and clears it before that ends; this
    // runs inside that call, on the same thread.
    unsafe { &*flag }.store(true, Ordering::SeqCst);
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_limit_adds_runtime_stacks_and_the_functions_memory() {
        let plan = plan(128, 40 * MIB, 4);
        assert_eq!(plan.data_bytes, (40 + 64 + 4 * 2 + 128) * MIB);
        assert_eq!(plan.open_files, 1024);
        assert_eq!(plan.call_threads, 4);
    }

    #[test]
    fn call_threads_are_the_concurrency_within_the_process_cap() {
        assert_eq!(call_threads(64, 256), 64);
        assert_eq!(call_threads(10_000, 256), 256);
        assert_eq!(call_threads(0, 256), 1);
    }

    #[test]
    fn vm_data_is_read_from_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmData:\t   2048 kB\nVmStk:\t 132 kB\n";
        assert_eq!(parse_vm_data(status), Some(2048 * 1024));
        assert_eq!(parse_vm_data("Name:\tx\n"), None);
        assert!(data_size().is_some_and(|bytes| bytes > 0));
    }

    #[test]
    fn an_allocation_failure_outside_an_armed_call_returns() {
        // Not armed: returns at once, whatever the thread.
        let flag = Arc::new(AtomicBool::new(false));
        during_call(&flag, allocation_failed);
        assert!(!flag.load(Ordering::SeqCst));
    }
}
