//! The bundle on disk: `squall-bundle.json`, the handler string and the module files.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// The bundle's description file, at the bundle root.
pub const BUNDLE_FILE: &str = "squall-bundle.json";

/// The runtime name this library serves.
pub const RUNTIME: &str = "javascript";

/// Module file extensions, in the order a handler's module is looked for.
pub const EXTENSIONS: [&str; 2] = ["mjs", "js"];

#[derive(Deserialize)]
struct RawBundle {
    format: u32,
    runtime: String,
    handler: String,
}

/// A validated `squall-bundle.json` with the handler split into module and export.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub root: PathBuf,
    /// The handler's module file, relative to the root (`app.mjs`, `lib/app.js`).
    pub module: String,
    /// The exported function's name.
    pub export: String,
}

impl Bundle {
    /// Reads and checks `squall-bundle.json` in `root`; the module file must exist.
    pub fn load(root: &Path) -> Result<Bundle, Error> {
        let path = root.join(BUNDLE_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|error| Error::Bundle(format!("cannot read {BUNDLE_FILE}: {error}")))?;
        let raw: RawBundle = serde_json::from_str(&text)
            .map_err(|error| Error::Bundle(format!("invalid {BUNDLE_FILE}: {error}")))?;
        if raw.format != 1 {
            return Err(Error::Bundle(format!(
                "{BUNDLE_FILE} has format {}; this runtime reads format 1",
                raw.format
            )));
        }
        if raw.runtime != RUNTIME {
            return Err(Error::Bundle(format!(
                "the bundle is for runtime {:?}; this is the {RUNTIME} runtime",
                raw.runtime
            )));
        }
        let (module, export) = raw.handler.rsplit_once('.').ok_or_else(|| {
            Error::Bundle(format!(
                "handler {:?} is not MODULE.FUNCTION (for example \"app.handler\")",
                raw.handler
            ))
        })?;
        if module.is_empty() || !is_identifier(export) {
            return Err(Error::Bundle(format!(
                "handler {:?} is not MODULE.FUNCTION (for example \"app.handler\")",
                raw.handler
            )));
        }
        let stem = module.replace('.', "/");
        let file = EXTENSIONS
            .iter()
            .map(|ext| format!("{stem}.{ext}"))
            .find(|file| root.join(file).is_file())
            .ok_or_else(|| {
                Error::Bundle(format!(
                    "{stem}.mjs: the handler's module does not exist (handler {:?})",
                    raw.handler
                ))
            })?;
        Ok(Bundle {
            root: root.to_path_buf(),
            module: file,
            export: export.to_owned(),
        })
    }
}

/// Whether `name` is a plain JavaScript identifier (ASCII letters, digits, `_`, `$`).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Every module file under `root` (`.mjs` and `.js`), relative to it with `/` separators,
/// sorted; `node_modules` and hidden folders are skipped.
pub fn module_files(root: &Path) -> Result<Vec<String>, Error> {
    let mut files = Vec::new();
    let mut folders = vec![PathBuf::new()];
    while let Some(relative) = folders.pop() {
        let entries = std::fs::read_dir(root.join(&relative)).map_err(|error| {
            Error::Bundle(format!("cannot list {}: {error}", relative.display()))
        })?;
        for entry in entries {
            let entry = entry.map_err(|error| Error::Bundle(format!("cannot list: {error}")))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = relative.join(name);
            let kind = entry
                .file_type()
                .map_err(|error| Error::Bundle(format!("cannot stat {name}: {error}")))?;
            if kind.is_dir() {
                if !name.starts_with('.') && name != "node_modules" {
                    folders.push(path);
                }
            } else if EXTENSIONS
                .iter()
                .any(|ext| name.ends_with(&format!(".{ext}")))
            {
                let parts: Vec<_> = path.iter().filter_map(|p| p.to_str()).collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Resolves `specifier` imported from the module `base` (both relative to the bundle root) to
/// a module name relative to the root; `None` when it leaves the root or is not relative.
pub fn resolve_relative(base: &str, specifier: &str) -> Option<String> {
    if !(specifier.starts_with("./") || specifier.starts_with("../")) {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for part in specifier.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_specifiers_resolve_inside_the_root_only() {
        assert_eq!(
            resolve_relative("app.mjs", "./lib.mjs").as_deref(),
            Some("lib.mjs")
        );
        assert_eq!(
            resolve_relative("a/b.mjs", "../c/d.mjs").as_deref(),
            Some("c/d.mjs")
        );
        assert_eq!(resolve_relative("app.mjs", "../up.mjs"), None);
        assert_eq!(resolve_relative("app.mjs", "fs"), None);
    }

    #[test]
    fn identifiers_are_plain_names() {
        assert!(is_identifier("handler"));
        assert!(is_identifier("$h_1"));
        assert!(!is_identifier("1h"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a-b"));
    }
}
