//! Validates a function artifact by reading its ELF structure; it never loads the file.

use object::{
    Architecture, BinaryFormat, Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolSection,
};

/// What validation learned about a good artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub abi_version: u32,
    pub has_init: bool,
}

/// Why an artifact was refused; each message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact is empty")]
    Empty,
    #[error("artifact is not an ELF shared library: {0}")]
    NotElf(String),
    #[error(
        "artifact is an ELF {0}, not a shared library (build it as a cdylib, or with -shared)"
    )]
    NotShared(&'static str),
    #[error("artifact is built for {found}, but this platform runs {expected}")]
    WrongArchitecture { found: String, expected: String },
    #[error("artifact is truncated: a section ends at byte {needed} but the file has {len} bytes")]
    Truncated { needed: u64, len: u64 },
    #[error("artifact does not export the required symbol {0}")]
    MissingSymbol(&'static str),
    #[error("artifact's squall_abi_version cannot be read from the file: {0}")]
    UnreadableVersion(&'static str),
    #[error("artifact has ABI version {found}; this platform supports ABI version 1")]
    WrongAbiVersion { found: u32 },
}

fn host_architecture() -> Architecture {
    if cfg!(target_arch = "x86_64") {
        Architecture::X86_64
    } else if cfg!(target_arch = "aarch64") {
        Architecture::Aarch64
    } else {
        Architecture::Unknown
    }
}

/// Checks that `bytes` is an ELF shared object for this platform that exports the ABI v1
/// symbols, with `squall_abi_version` == 1 read from the file's data.
pub fn validate_artifact(bytes: &[u8]) -> Result<ArtifactInfo, ArtifactError> {
    if bytes.is_empty() {
        return Err(ArtifactError::Empty);
    }
    if !bytes.starts_with(b"\x7fELF") {
        return Err(ArtifactError::NotElf(
            "it does not start with the ELF magic bytes".into(),
        ));
    }
    let file = object::File::parse(bytes)
        .map_err(|e| ArtifactError::NotElf(format!("{e} (the file may be truncated)")))?;
    if file.format() != BinaryFormat::Elf {
        return Err(ArtifactError::NotElf("unrecognised format".into()));
    }
    match file.kind() {
        ObjectKind::Dynamic => {}
        ObjectKind::Executable => return Err(ArtifactError::NotShared("executable")),
        ObjectKind::Relocatable => return Err(ArtifactError::NotShared("relocatable object")),
        ObjectKind::Core => return Err(ArtifactError::NotShared("core dump")),
        _ => return Err(ArtifactError::NotShared("file of unknown kind")),
    }
    let expected = host_architecture();
    if file.architecture() != expected {
        return Err(ArtifactError::WrongArchitecture {
            found: format!("{:?}", file.architecture()),
            expected: format!("{expected:?}"),
        });
    }
    let len = bytes.len() as u64;
    for section in file.sections() {
        if let Some((offset, size)) = section.file_range() {
            if offset.saturating_add(size) > len {
                return Err(ArtifactError::Truncated {
                    needed: offset + size,
                    len,
                });
            }
        }
    }
    let find = |name: &str| {
        file.dynamic_symbols()
            .find(|s| !s.is_undefined() && s.name() == Ok(name))
    };
    let version_symbol =
        find("squall_abi_version").ok_or(ArtifactError::MissingSymbol("squall_abi_version"))?;
    for required in ["squall_invoke", "squall_free"] {
        find(required).ok_or(ArtifactError::MissingSymbol(required))?;
    }
    let section_index = match version_symbol.section() {
        SymbolSection::Section(index) => index,
        _ => {
            return Err(ArtifactError::UnreadableVersion(
                "the symbol is not in a section",
            ))
        }
    };
    let section = file
        .section_by_index(section_index)
        .map_err(|_| ArtifactError::UnreadableVersion("its section is missing"))?;
    let raw = section
        .data_range(version_symbol.address(), 4)
        .map_err(|_| ArtifactError::UnreadableVersion("its section data is unreadable"))?
        .ok_or(ArtifactError::UnreadableVersion(
            "it has no initialised data (is it const?)",
        ))?;
    let raw: [u8; 4] = raw
        .try_into()
        .map_err(|_| ArtifactError::UnreadableVersion("it is shorter than 4 bytes"))?;
    let abi_version = if file.is_little_endian() {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    };
    if abi_version != 1 {
        return Err(ArtifactError::WrongAbiVersion { found: abi_version });
    }
    Ok(ArtifactInfo {
        abi_version,
        has_init: find("squall_init").is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_not_elf() {
        assert!(matches!(
            validate_artifact(b"hello world"),
            Err(ArtifactError::NotElf(_))
        ));
    }

    #[test]
    fn empty_file_is_refused() {
        assert_eq!(validate_artifact(b""), Err(ArtifactError::Empty));
    }

    #[test]
    fn elf_magic_alone_is_refused() {
        assert!(matches!(
            validate_artifact(b"\x7fELF\x02\x01\x01"),
            Err(ArtifactError::NotElf(_))
        ));
    }
}
