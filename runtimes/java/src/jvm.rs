//! The process's one JVM: where the JDK is, its options, and loading `libjvm.so` to create the
//! JVM or find the one another copy of this library created. All `dlopen`/`dlsym` and
//! `sigaction` calls live here.

use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use jni::sys::{jint, jsize, JavaVMInitArgs, JavaVMOption, JNI_EEXIST, JNI_OK, JNI_VERSION_1_8};
use jni::JavaVM;

/// The JDK the runtime loads, first choice.
pub const ENV_SQUALL_JAVA_HOME: &str = "SQUALL_JAVA_HOME";
/// The JDK the runtime loads when [`ENV_SQUALL_JAVA_HOME`] is not set.
pub const ENV_JAVA_HOME: &str = "JAVA_HOME";
/// The JVM's maximum heap, in MiB (default 256).
pub const ENV_MAX_HEAP_MB: &str = "SQUALL_JAVA_MAX_HEAP_MB";
/// The JDK used when neither variable is set: Debian 12's OpenJDK 17.
pub const DEFAULT_JAVA_HOME: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// The maximum heap without [`ENV_MAX_HEAP_MB`].
const DEFAULT_MAX_HEAP_MB: u32 = 256;

/// A class path that can never hold anything (a child of a file): the JVM's own class path.
/// Bundles and the SDK load through loaders of their own, and an empty class path would mean
/// the current directory.
const NO_CLASS_PATH: &str = "/dev/null/squall-no-class-path";

/// The signals whose handlers the JVM replaces with its own shutdown and thread-dump handlers;
/// the process's own handlers are put back after the JVM starts, so that the worker (not the
/// JVM) decides what SIGTERM means.
const PROCESS_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];

/// The JDK the runtime would use, from the process's environment: `SQUALL_JAVA_HOME`, else
/// `JAVA_HOME`, else [`DEFAULT_JAVA_HOME`]. The worker preloads [`libjsig`] from it.
pub fn java_home() -> PathBuf {
    java_home_from(|name| std::env::var_os(name))
}

/// [`java_home`] over any variable lookup; empty values count as unset.
pub fn java_home_from(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    [ENV_SQUALL_JAVA_HOME, ENV_JAVA_HOME]
        .iter()
        .find_map(|name| lookup(name).filter(|value| !value.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_JAVA_HOME))
}

/// The JVM library of a JDK home.
pub fn libjvm(home: &Path) -> PathBuf {
    home.join("lib").join("server").join("libjvm.so")
}

/// The signal-chaining library of a JDK home, to be preloaded (`LD_PRELOAD`) into a process
/// whose own code installs signal handlers after the JVM starts.
pub fn libjsig(home: &Path) -> PathBuf {
    home.join("lib").join("libjsig.so")
}

/// The JVM's options: modest memory (the process may run under `RLIMIT_DATA`, which counts
/// committed memory), the serial collector, no perf-data or attach files, the security manager
/// allowed (the runtime installs one that refuses `System.exit`), UTF-8 by default.
pub fn jvm_options(max_heap_mb: u32) -> Vec<String> {
    [
        format!("-Djava.class.path={NO_CLASS_PATH}"),
        "-Xss1m".to_owned(),
        // The initial heap is committed up front; the default (1/64 of the machine's memory)
        // would count against RLIMIT_DATA before a function allocates anything.
        format!("-Xms{}m", max_heap_mb.min(16)),
        format!("-Xmx{max_heap_mb}m"),
        "-XX:+UseSerialGC".to_owned(),
        "-XX:-UsePerfData".to_owned(),
        "-XX:+DisableAttachMechanism".to_owned(),
        "-Xshare:auto".to_owned(),
        "-XX:ReservedCodeCacheSize=32m".to_owned(),
        "-XX:MaxMetaspaceSize=128m".to_owned(),
        "-XX:CompressedClassSpaceSize=64m".to_owned(),
        "-Djava.security.manager=allow".to_owned(),
        "-Dfile.encoding=UTF-8".to_owned(),
        "-Djava.awt.headless=true".to_owned(),
    ]
    .into_iter()
    // A confined worker may write only its private temporary folder, which `TMPDIR` names.
    .chain(
        std::env::var("TMPDIR")
            .ok()
            .filter(|dir| !dir.is_empty())
            .map(|dir| format!("-Djava.io.tmpdir={dir}")),
    )
    .collect()
}

/// The maximum heap: from the environment, else within the process's `RLIMIT_DATA` (a
/// confined worker's `memory_mb` plus its allowance): half of what is left after ~96 MiB for
/// the JVM's own memory (metaspace, code, thread stacks), at least 16 MiB and at most the
/// default.
fn max_heap_mb() -> Result<u32, String> {
    let within_limit = || {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` into the struct it is given.
        let read = unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut limit) } == 0;
        match read && limit.rlim_cur != libc::RLIM_INFINITY {
            true => {
                let mb = limit.rlim_cur / (1024 * 1024);
                (mb.saturating_sub(96) / 2).clamp(16, u64::from(DEFAULT_MAX_HEAP_MB)) as u32
            }
            false => DEFAULT_MAX_HEAP_MB,
        }
    };
    match std::env::var(ENV_MAX_HEAP_MB) {
        Err(_) => Ok(within_limit()),
        Ok(text) if text.trim().is_empty() => Ok(within_limit()),
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(mb) if mb >= 16 => Ok(mb),
            _ => Err(format!(
                "{ENV_MAX_HEAP_MB}={text:?} is not a heap size in MiB (16 or more)"
            )),
        },
    }
}

type CreateJavaVmFn =
    unsafe extern "system" fn(*mut *mut jni::sys::JavaVM, *mut *mut c_void, *mut c_void) -> jint;
type GetCreatedJavaVmsFn =
    unsafe extern "system" fn(*mut *mut jni::sys::JavaVM, jsize, *mut jsize) -> jint;

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a C string valid until the next dl* call on this thread.
    unsafe {
        let message = libc::dlerror();
        if message.is_null() {
            "unknown error".to_owned()
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        }
    }
}

/// Looks up `name` in the loaded library `handle`.
///
/// # Safety
/// `handle` is a live `dlopen` handle and `T` is the symbol's function pointer type.
unsafe fn symbol<T: Copy>(handle: *mut c_void, name: &CStr) -> Result<T, String> {
    // SAFETY: the caller passes a live handle; `name` is a C string.
    let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if address.is_null() {
        return Err(format!(
            "libjvm.so has no {}: {}",
            name.to_string_lossy(),
            dlerror()
        ));
    }
    // SAFETY: the caller names the symbol's type; a function pointer is pointer-sized.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&address) })
}

/// How long a copy that found the JVM being created by another waits for it to be listed.
const CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The JVM another copy of the runtime in this process is creating (`JNI_CreateJavaVM`
/// answered `JNI_EEXIST`): it is listed by `JNI_GetCreatedJavaVMs` only when that creation ends,
/// so wait for it, up to `CREATION_WAIT`.
fn created_by_another(created: GetCreatedJavaVmsFn) -> Result<JavaVM, String> {
    let until = std::time::Instant::now() + CREATION_WAIT;
    loop {
        if let Some(vm) = existing(created)? {
            return Ok(vm);
        }
        if std::time::Instant::now() >= until {
            return Err("the JVM exists but was not listed within 30 s of its creation".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The process's JVM: the one that exists (created by another copy of this library), or a new
/// one created with [`jvm_options`]. The calling thread is left detached.
pub fn start() -> Result<JavaVM, String> {
    let home = java_home();
    let library = libjvm(&home);
    if !library.is_file() {
        return Err(format!(
            "no JVM at {} (the Java home is {}; set {ENV_SQUALL_JAVA_HOME} or {ENV_JAVA_HOME} to a JDK 17)",
            library.display(),
            home.display()
        ));
    }
    let path = CString::new(library.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", library.display()))?;
    // SAFETY: a valid C string; loading libjvm runs its initialisers, which only set up the
    // library. The handle is never closed: the JVM lives as long as the process.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(format!("cannot load {}: {}", library.display(), dlerror()));
    }
    // SAFETY: `handle` is live; these are the JNI invocation API's signatures.
    let (create, created): (CreateJavaVmFn, GetCreatedJavaVmsFn) = unsafe {
        (
            symbol(handle, c"JNI_CreateJavaVM")?,
            symbol(handle, c"JNI_GetCreatedJavaVMs")?,
        )
    };
    if let Some(vm) = existing(created)? {
        return Ok(vm);
    }
    let options: Vec<CString> = jvm_options(max_heap_mb()?)
        .into_iter()
        .map(|option| CString::new(option).expect("options hold no NUL byte"))
        .collect();
    let mut raw_options: Vec<JavaVMOption> = options
        .iter()
        .map(|option| JavaVMOption {
            optionString: option.as_ptr() as *mut _,
            extraInfo: std::ptr::null_mut(),
        })
        .collect();
    let mut args = JavaVMInitArgs {
        version: JNI_VERSION_1_8,
        nOptions: raw_options.len() as jint,
        options: raw_options.as_mut_ptr(),
        ignoreUnrecognized: 0,
    };
    let saved = save_signals();
    let mut vm: *mut jni::sys::JavaVM = std::ptr::null_mut();
    let mut env: *mut c_void = std::ptr::null_mut();
    // SAFETY: `args` and the option strings outlive the call; `vm` and `env` are writable.
    let status = unsafe { create(&mut vm, &mut env, (&mut args as *mut JavaVMInitArgs).cast()) };
    restore_signals(&saved);
    if status == JNI_EEXIST {
        // Another copy is creating it: the JVM is listed once its creation ends.
        return created_by_another(created);
    }
    if status != JNI_OK || vm.is_null() {
        return Err(format!(
            "JNI_CreateJavaVM failed with status {status} (the JVM prints its reason on standard error)"
        ));
    }
    // SAFETY: `vm` is the JVM just created.
    let vm = unsafe { JavaVM::from_raw(vm) }.map_err(|error| error.to_string())?;
    // The creating thread is attached as the JVM's main thread; detach it so that every thread,
    // this one included, attaches the same way (permanently, detached when it exits).
    // SAFETY: this thread is attached (it created the JVM) and holds no JNI references.
    unsafe {
        let detach = (**vm.get_java_vm_pointer())
            .DetachCurrentThread
            .expect("JNI invoke interface");
        detach(vm.get_java_vm_pointer());
    }
    Ok(vm)
}

/// The JVM of this process, if one was created.
fn existing(created: GetCreatedJavaVmsFn) -> Result<Option<JavaVM>, String> {
    let mut vm: *mut jni::sys::JavaVM = std::ptr::null_mut();
    let mut count: jsize = 0;
    // SAFETY: room for one pointer and the count.
    let status = unsafe { created(&mut vm, 1, &mut count) };
    if status != JNI_OK {
        return Err(format!("JNI_GetCreatedJavaVMs failed with status {status}"));
    }
    if count == 0 || vm.is_null() {
        return Ok(None);
    }
    // SAFETY: a JVM the library reports as created.
    unsafe { JavaVM::from_raw(vm) }
        .map(Some)
        .map_err(|error| error.to_string())
}

/// Runs `body` with the process's standard error (file descriptor 2) pointed at `/dev/null`.
///
/// `System.setSecurityManager` prints a deprecation warning straight to the JVM's initial
/// standard error, whatever `System.err` is; the runtime's own call to it should not put four
/// lines of warning in every worker's output. Other threads' writes to standard error during
/// `body` are lost too, so `body` must be short.
pub fn without_stderr<T>(body: impl FnOnce() -> T) -> T {
    // SAFETY: dup only duplicates a descriptor; -1 on failure is handled below.
    let saved = unsafe { libc::dup(2) };
    // SAFETY: a valid C string; the descriptor is closed below.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    let redirected = saved >= 0 && null >= 0 && {
        // SAFETY: both descriptors are open; dup2 replaces descriptor 2 atomically.
        unsafe { libc::dup2(null, 2) >= 0 }
    };
    let result = body();
    // SAFETY: puts descriptor 2 back and closes the descriptors this function opened.
    unsafe {
        if redirected {
            libc::dup2(saved, 2);
        }
        if saved >= 0 {
            libc::close(saved);
        }
        if null >= 0 {
            libc::close(null);
        }
    }
    result
}

fn save_signals() -> Vec<(i32, libc::sigaction)> {
    PROCESS_SIGNALS
        .iter()
        .filter_map(|&signal| {
            // SAFETY: `sigaction` is plain data for which all-zero is valid.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: reads the current disposition only.
            let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
            (read == 0).then_some((signal, old))
        })
        .collect()
}

fn restore_signals(saved: &[(i32, libc::sigaction)]) {
    for (signal, action) in saved {
        // SAFETY: puts back a disposition read from the kernel before the JVM started.
        unsafe { libc::sigaction(*signal, action, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_java_home_is_squall_java_home_then_java_home_then_debian_s_jdk() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| OsString::from(value))
            }
        };
        assert_eq!(
            java_home_from(env(&[("SQUALL_JAVA_HOME", "/a"), ("JAVA_HOME", "/b")])),
            PathBuf::from("/a")
        );
        assert_eq!(
            java_home_from(env(&[("SQUALL_JAVA_HOME", ""), ("JAVA_HOME", "/b")])),
            PathBuf::from("/b")
        );
        assert_eq!(java_home_from(env(&[])), PathBuf::from(DEFAULT_JAVA_HOME));
        assert_eq!(
            libjsig(Path::new("/jdk")),
            PathBuf::from("/jdk/lib/libjsig.so")
        );
    }

    #[test]
    fn the_options_bound_memory_and_keep_the_compiler() {
        let options = jvm_options(512);
        assert!(options.contains(&"-Xmx512m".to_owned()));
        assert!(options.contains(&"-Xms16m".to_owned()));
        assert!(options.contains(&"-Djava.security.manager=allow".to_owned()));
        assert!(!options
            .iter()
            .any(|option| option == "-Xrs" || option.contains("TieredStopAtLevel")));
    }
}
