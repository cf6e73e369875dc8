//! Child processes that die with their parent: a supervisor killed with SIGKILL leaves no
//! worker running on as an orphan.
//!
//! Architecture invariant: this is the worker's only `unsafe` outside `loader`: one
//! `pre_exec` hook around `prctl(PR_SET_PDEATHSIG)`.

/// Makes the process `command` starts receive SIGKILL when this process dies, however it dies.
/// Linux delivers it when the thread that spawned the child ends, so spawn from a long-lived
/// thread (a tokio worker thread, not the blocking pool).
pub fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before `exec`, where only async-signal-safe
    // calls are allowed: `prctl` and `getppid` are system calls that allocate nothing and
    // take no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the signal was armed.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the parent exited before the child started",
                ));
            }
            Ok(())
        });
    }
}

/// The JDK whose JVM the Java runtime embeds, chosen as the runtime chooses it
/// (`squall_runtime_java::java_home`, not linked here): `$SQUALL_JAVA_HOME`, `$JAVA_HOME` (an
/// empty one is unset), else Debian's OpenJDK 17.
pub fn java_home() -> std::path::PathBuf {
    ["SQUALL_JAVA_HOME", "JAVA_HOME"]
        .iter()
        .find_map(|name| std::env::var_os(name).filter(|home| !home.is_empty()))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64"))
}

/// Preloads the JVM's signal-chaining library (`libjsig.so`) into the process `command`
/// starts, when a JDK is installed: a Java function's JVM then chains the signals it uses
/// (SIGSEGV for its null checks) to the handlers the worker installed before it, instead of
/// replacing them. A process that never starts a JVM is unaffected: the library passes every
/// call through. Which process runs Java is known only once it fetched its function's
/// artifact, after it started, so every function process gets it.
pub fn chain_jvm_signals(command: &mut tokio::process::Command) {
    let jsig = java_home().join("lib/libjsig.so");
    if !jsig.is_file() {
        return;
    }
    let mut preload = std::ffi::OsString::from(jsig);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    command.env("LD_PRELOAD", preload);
}
