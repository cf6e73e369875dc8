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
