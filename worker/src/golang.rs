//! Go function libraries: told apart by their build-info section, and held to one per process (Go runtimes cannot share a process, golang/go#18976, nor be unloaded, #11100).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Whether `bytes` is an ELF library built by the Go toolchain (it has `.go.buildinfo`).
pub fn is_go_library(bytes: &[u8]) -> bool {
    use object::{Object as _, ObjectSection as _};
    match object::File::parse(bytes) {
        Ok(file) => file
            .sections()
            .any(|section| section.name() == Ok(".go.buildinfo")),
        Err(_) => false,
    }
}

/// The Go library this process loaded, if any.
static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Admits loading the library at `path`: any library that is not Go's, and the first Go
/// library of the process; a second Go library is refused with the reason.
pub fn admit(path: &Path) -> Result<(), String> {
    let Ok(bytes) = std::fs::read(path) else {
        // Unreadable here: the load itself reports it.
        return Ok(());
    };
    admit_bytes(path, &bytes, &LOADED)
}

fn admit_bytes(path: &Path, bytes: &[u8], loaded: &Mutex<Option<PathBuf>>) -> Result<(), String> {
    if !is_go_library(bytes) {
        return Ok(());
    }
    let mut loaded = loaded.lock().unwrap_or_else(|e| e.into_inner());
    match loaded.as_deref() {
        Some(first) if first != path => Err(format!(
            "a Go library is loaded in this process already ({}): Go runtimes cannot share a \
             process, so each Go function version runs in a process of its own",
            first.display()
        )),
        _ => {
            *loaded = Some(path.to_path_buf());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_library_without_go_build_info_is_not_go_and_is_always_admitted() {
        let own = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_go_library(&own));
        assert!(!is_go_library(b"not an ELF file"));
        let loaded = Mutex::new(Some(PathBuf::from("/first.so")));
        assert_eq!(admit_bytes(Path::new("/x.so"), &own, &loaded), Ok(()));
    }
}
