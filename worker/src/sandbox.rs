//! The sandbox of a worker process that serves one function: `no_new_privs`, a seccomp filter and a landlock ruleset for the function's threads.
//!
//! Applied once, after the worker connected to the broker and fetched the function's first
//! artifact and before it loads it:
//! - `no_new_privs` and the seccomp filter hold for every thread of the process (the filter is
//!   installed with `SECCOMP_FILTER_FLAG_TSYNC`). The filter refuses `execve`, `execveat`,
//!   `ptrace`, `process_vm_*`, mounting, namespaces, module and kernel loading, and starting
//!   processes (`fork`, `vfork`, `clone` without `CLONE_THREAD`; `clone3`, whose flags a
//!   filter cannot read, answers `ENOSYS`, on which the C library falls back to `clone`).
//! - Landlock holds for the threads that run function code: the call threads and the thread
//!   that loads each version. They may read the artifact cache, the libraries the dynamic
//!   loader needs and the JDK (for a Java function's JVM), and read and write a private
//!   temporary folder; nothing else of the
//!   filesystem. The worker's own threads keep what they need later (DNS, TLS roots, writing
//!   new versions to the cache, `/proc/self` for metrics). Landlock binds threads, not
//!   processes, before the kernel's thread-sync flag; native code in the same process could
//!   still act through another thread, which the seccomp filter still binds.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Whether a single-function worker sandboxes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Refuse to start when the kernel lacks a feature.
    Required,
    /// Use what the kernel offers and report the rest.
    #[default]
    Auto,
    /// No sandbox.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Required => "required",
            Mode::Auto => "auto",
            Mode::Off => "off",
        }
    }
}

/// What the kernel offers, probed without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// The landlock ABI version, or why there is none.
    pub landlock: Result<u32, String>,
    /// Whether seccomp filters can be installed, or why not.
    pub seccomp: Result<(), String>,
}

/// One feature of the sandbox and its state.
pub use squall_broker::fleet::SandboxFeature as Feature;

fn feature(name: &str, active: bool, detail: impl Into<String>) -> Feature {
    Feature {
        name: name.to_string(),
        active,
        detail: detail.into(),
    }
}

/// Probes the kernel.
pub fn probe() -> Support {
    Support {
        landlock: landlock_abi(),
        seccomp: seccomp_support(),
    }
}

/// Refuses a `required` sandbox on a kernel that lacks a feature, naming it.
pub fn check_required(mode: Mode, support: &Support) -> Result<(), String> {
    if mode != Mode::Required {
        return Ok(());
    }
    if !cfg!(target_arch = "x86_64") {
        return Err("--sandbox required: the seccomp filter is only built for x86_64".into());
    }
    if let Err(why) = &support.landlock {
        return Err(format!(
            "--sandbox required: the kernel lacks landlock ({why})"
        ));
    }
    if let Err(why) = &support.seccomp {
        return Err(format!(
            "--sandbox required: the kernel lacks seccomp ({why})"
        ));
    }
    Ok(())
}

/// The report of a sandbox that was not applied, one line per feature.
pub fn report_off(mode: Mode, why: &str) -> Vec<Feature> {
    let _ = mode;
    ["no_new_privs", "landlock", "seccomp"]
        .into_iter()
        .map(|name| feature(name, false, why))
        .collect()
}

/// The filesystem a function's threads may reach.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Read only: the artifact cache.
    pub artifacts: PathBuf,
    /// Read and write: the process's private temporary folder.
    pub tmp: PathBuf,
}

/// Read-only folders the dynamic loader and the C library need.
const SYSTEM_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/share/zoneinfo",
];
/// Where Debian keeps the configuration files of OpenJDK 17 (read-only for a JVM).
const JDK_CONFIG: &str = "/etc/java-17-openjdk";
/// Read-only files the dynamic loader and the C library need.
const SYSTEM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
];
/// Files read and written.
const SYSTEM_RW_FILES: &[&str] = &["/dev/null"];

/// The ruleset the function's threads enter, once made.
static RULESET: OnceLock<OwnedFd> = OnceLock::new();

/// Applies the sandbox to this process: `no_new_privs` and seccomp now, for every thread;
/// landlock for the threads that run function code from now on (see [`enter_thread`]).
/// `required` turns any failure into an error; `auto` reports it.
pub fn apply(mode: Mode, paths: &Paths) -> Result<Vec<Feature>, String> {
    if mode == Mode::Off {
        return Ok(report_off(mode, "--sandbox off"));
    }
    let mut report = Vec::new();
    let strict = mode == Mode::Required;
    match set_no_new_privs() {
        Ok(()) => report.push(feature("no_new_privs", true, "set")),
        Err(error) if strict => return Err(format!("cannot set no_new_privs: {error}")),
        Err(error) => report.push(feature("no_new_privs", false, error.to_string())),
    }
    match landlock_ruleset(paths) {
        Ok((fd, abi)) => {
            let _ = RULESET.set(fd);
            report.push(feature(
                "landlock",
                true,
                format!(
                    "ABI {abi}: function threads read the artifact cache and system libraries, \
                     write only {}",
                    paths.tmp.display()
                ),
            ));
        }
        Err(error) if strict => return Err(format!("cannot set up landlock: {error}")),
        Err(error) => report.push(feature("landlock", false, error)),
    }
    match install_seccomp() {
        Ok(()) => report.push(feature(
            "seccomp",
            true,
            "exec, ptrace, mount, namespaces, module loading and new processes refused",
        )),
        Err(error) if strict => return Err(format!("cannot install the seccomp filter: {error}")),
        Err(error) => report.push(feature("seccomp", false, error)),
    }
    Ok(report)
}

/// Confines the calling thread with the landlock ruleset, when there is one: called first by
/// every thread that runs function code. An error leaves the thread unconfined.
pub fn enter_thread() -> Result<(), String> {
    let Some(ruleset) = RULESET.get() else {
        return Ok(());
    };
    set_no_new_privs().map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    // SAFETY: `landlock_restrict_self` takes a ruleset descriptor, which `ruleset` owns and
    // keeps open, and flags; it reads no memory of ours.
    let status = unsafe {
        libc::syscall(
            libc::SYS_landlock_restrict_self,
            ruleset.as_raw_fd(),
            0 as libc::c_uint,
        )
    };
    if status != 0 {
        return Err(format!(
            "landlock_restrict_self: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn set_no_new_privs() -> std::io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let status = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn seccomp_support() -> Result<(), String> {
    // SAFETY: PR_GET_SECCOMP takes no argument and reads no memory of ours.
    let status = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    match status {
        0 => Ok(()),
        -1 => Err(format!(
            "prctl(PR_GET_SECCOMP): {}",
            std::io::Error::last_os_error()
        )),
        _ => Err("this process is already in a strict seccomp mode".into()),
    }
}

// The landlock ABI (linux/landlock.h).
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_uint = 1;
const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;

/// Access rights that apply to a file (not a folder).
const FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The filesystem rights the kernel's landlock ABI `abi` knows.
pub fn handled_rights(abi: u32) -> u64 {
    // ABI 1: bits 0 to 12; 2 adds REFER (13); 3 TRUNCATE (14); 5 IOCTL_DEV (15).
    let mut rights = (1u64 << 13) - 1;
    if abi >= 2 {
        rights |= 1 << 13;
    }
    if abi >= 3 {
        rights |= FS_TRUNCATE;
    }
    if abi >= 5 {
        rights |= FS_IOCTL_DEV;
    }
    rights
}

fn landlock_abi() -> Result<u32, String> {
    // SAFETY: with the VERSION flag, `landlock_create_ruleset` takes a null attribute and a
    // zero size and only returns the ABI version.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        let error = std::io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::ENOSYS) => "not built into this kernel".into(),
            Some(libc::EOPNOTSUPP) => "built in but disabled at boot".into(),
            _ => error.to_string(),
        });
    }
    Ok(abi as u32)
}

/// Makes the ruleset of the function's threads; returns it and the ABI version.
fn landlock_ruleset(paths: &Paths) -> Result<(OwnedFd, u32), String> {
    let abi = landlock_abi()?;
    let handled = handled_rights(abi);
    let attr = RulesetAttr {
        handled_access_fs: handled,
        handled_access_net: 0,
        scoped: 0,
    };
    // Older kernels take the attribute up to the fields they know.
    let size = if abi >= 6 {
        std::mem::size_of::<RulesetAttr>()
    } else if abi >= 4 {
        16
    } else {
        8
    };
    // SAFETY: `attr` is a valid `landlock_ruleset_attr` of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!(
            "landlock_create_ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let read = FS_READ_FILE | FS_READ_DIR;
    let read_write = handled & !FS_EXECUTE;
    std::fs::create_dir_all(&paths.tmp)
        .map_err(|e| format!("cannot create {}: {e}", paths.tmp.display()))?;
    add_rule(&ruleset, &paths.artifacts, read, handled)?;
    add_rule(&ruleset, &paths.tmp, read_write, handled)?;
    for dir in SYSTEM_DIRS {
        add_rule(&ruleset, Path::new(dir), read, handled)?;
    }
    // The JDK a Java function's JVM comes from, and Debian's folder of its configuration
    // (the JDK's `conf/` links there).
    let java_home = crate::process::java_home();
    for dir in [
        java_home.canonicalize().unwrap_or(java_home),
        JDK_CONFIG.into(),
    ] {
        add_rule(&ruleset, &dir, read, handled)?;
    }
    for file in SYSTEM_FILES {
        add_rule(&ruleset, Path::new(file), FS_READ_FILE, handled)?;
    }
    for file in SYSTEM_RW_FILES {
        add_rule(
            &ruleset,
            Path::new(file),
            FS_READ_FILE | FS_WRITE_FILE,
            handled,
        )?;
    }
    Ok((ruleset, abi))
}

/// Allows `access` beneath `path`; a path that does not exist is skipped.
fn add_rule(ruleset: &OwnedFd, path: &Path, access: u64, handled: u64) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Err(format!("{} has a NUL byte", path.display()));
    };
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Ok(());
    }
    // SAFETY: `open` just returned this descriptor to us; nothing else owns it.
    let parent = unsafe { OwnedFd::from_raw_fd(fd) };
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    let mut allowed = access & handled;
    if !is_dir {
        allowed &= FILE_RIGHTS;
    }
    let rule = PathBeneathAttr {
        allowed_access: allowed,
        parent_fd: parent.as_raw_fd(),
    };
    // SAFETY: `rule` is a valid `landlock_path_beneath_attr` that outlives the call, and
    // `ruleset` an open ruleset descriptor.
    let status = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0 as libc::c_uint,
        )
    };
    if status != 0 {
        return Err(format!(
            "landlock_add_rule {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

// Classic BPF, as seccomp reads it (linux/filter.h, linux/seccomp.h, linux/audit.h).
/// `BPF_LD | BPF_W | BPF_ABS` (0x00, 0x00, 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05, 0x10, 0x00), and so on.
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_JMP_JSET_K: u16 = 0x45;
const BPF_RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;

/// The system calls the filter refuses with `EPERM` (x86_64 numbers).
#[cfg(target_arch = "x86_64")]
const DENIED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_fork,
    libc::SYS_vfork,
];

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The seccomp program: x86_64 only (another architecture's call is killed, an x32 one
/// refused), the calls in `DENIED` refused, `clone` refused unless it makes a thread, `clone3`
/// answered `ENOSYS`, everything else allowed.
#[cfg(target_arch = "x86_64")]
pub fn filter() -> Vec<libc::sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let enosys = RET_ERRNO | libc::ENOSYS as u32;
    let mut program = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, eperm),
    ];
    for nr in DENIED {
        program.push(jump(BPF_JMP_JEQ_K, *nr as u32, 0, 1));
        program.push(stmt(BPF_RET_K, eperm));
    }
    program.extend([
        jump(BPF_JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, enosys),
        // Not clone: on to the last instruction, allow.
        jump(BPF_JMP_JEQ_K, libc::SYS_clone as u32, 0, 3),
        stmt(BPF_LD_W_ABS, DATA_ARG0_LOW),
        // A thread: allow; a process: refuse.
        jump(BPF_JMP_JSET_K, libc::CLONE_THREAD as u32, 1, 0),
        stmt(BPF_RET_K, eperm),
        stmt(BPF_RET_K, RET_ALLOW),
    ]);
    program
}

#[cfg(target_arch = "x86_64")]
fn install_seccomp() -> Result<(), String> {
    seccomp_support()?;
    let mut program = filter();
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `program`, a valid classic BPF program that outlives the call;
    // the kernel copies it. TSYNC applies it to every thread of the process.
    let status = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        )
    };
    match status {
        0 => Ok(()),
        -1 => Err(format!("seccomp: {}", std::io::Error::last_os_error())),
        thread => Err(format!(
            "seccomp: thread {thread} could not take the filter"
        )),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn install_seccomp() -> Result<(), String> {
    Err("the filter is only built for x86_64".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_names_the_missing_feature() {
        let missing = Support {
            landlock: Err("not built into this kernel".into()),
            seccomp: Ok(()),
        };
        let error = check_required(Mode::Required, &missing).unwrap_err();
        assert!(
            error.contains("lacks landlock (not built into this kernel)"),
            "{error}"
        );
        assert_eq!(check_required(Mode::Auto, &missing), Ok(()));
        let no_seccomp = Support {
            landlock: Ok(3),
            seccomp: Err("prctl".into()),
        };
        let error = check_required(Mode::Required, &no_seccomp).unwrap_err();
        assert!(error.contains("lacks seccomp"), "{error}");
    }

    #[test]
    fn off_reports_every_feature_inactive_with_the_reason() {
        let report = report_off(Mode::Off, "--sandbox off");
        assert_eq!(report.len(), 3);
        assert!(report
            .iter()
            .all(|f| !f.active && f.detail == "--sandbox off"));
    }

    #[test]
    fn handled_rights_grow_with_the_abi() {
        assert_eq!(handled_rights(1), 0x1fff);
        assert_eq!(handled_rights(2), 0x3fff);
        assert_eq!(handled_rights(3), 0x7fff);
        assert_eq!(handled_rights(7), 0xffff);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_filter_refuses_exec_and_processes_and_allows_threads() {
        let program = filter();
        // Every jump stays inside the program.
        for (at, op) in program.iter().enumerate() {
            if op.code & 0x07 == 0x05 {
                assert!(at + 1 + usize::from(op.jt.max(op.jf)) < program.len());
            }
        }
        assert_eq!(program.last().unwrap().k, RET_ALLOW);
        for nr in [libc::SYS_execve, libc::SYS_ptrace, libc::SYS_init_module] {
            assert!(program
                .iter()
                .any(|op| op.code == BPF_JMP_JEQ_K && op.k == nr as u32));
        }
    }
}
