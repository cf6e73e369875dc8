//! Numbered versions and aliases as services: qualifier resolution for every path that takes a
//! function name, and the compare-and-set write every change of a function's record goes
//! through. Their routes are `api::versions`.

use crate::core::names::{FunctionName, NameError};
use crate::core::registry::{Registry, RegistryError};
use async_nats::jetstream::kv;
use squall_broker::versions::{split_qualified, VersionEntry, VersionError};
use squall_broker::FunctionRecord;

/// How many versions a function keeps unless the dispatcher is told otherwise.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// A version or alias operation refused: the function it concerns and why.
#[derive(Debug, thiserror::Error)]
#[error("{function}: {error}")]
pub struct Refused {
    pub function: String,
    pub error: VersionError,
}

/// A `name:qualifier` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum QualifierError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("the name's qualifier {in_name:?} and ?qualifier={in_query:?} disagree")]
    Disagree { in_name: String, in_query: String },
}

/// Why `modify` could not change a function's record.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0} changed too often while being updated; try again")]
    Contended(String),
}

/// A function name as routes take it: `name`, or `name:qualifier`, with `query` as a second
/// way to give the qualifier (both at once must agree).
pub struct Qualified {
    pub name: FunctionName,
    pub qualifier: Option<String>,
}

impl Qualified {
    pub fn parse(text: &str, query: Option<&str>) -> Result<Qualified, QualifierError> {
        let (name, in_name) = split_qualified(text);
        let name = FunctionName::parse(name.to_string())?;
        let qualifier = match (in_name, query) {
            (Some(a), Some(b)) if a != b => {
                return Err(QualifierError::Disagree {
                    in_name: a.to_string(),
                    in_query: b.to_string(),
                })
            }
            (Some(q), _) | (None, Some(q)) => Some(q.to_string()),
            (None, None) => None,
        };
        Ok(Qualified { name, qualifier })
    }
}

/// The draw in `[0, 1)` that picks among an alias's weighted versions for invocation `id`: its
/// random bits, so the same invocation (a resend with the same Idempotency-Key) runs the same
/// version and many invocations spread by the weights.
pub fn draw(id: &str) -> f64 {
    // FNV-1a, then splitmix64's finalizer: ids that differ in a few bits (a batch's line ids
    // differ only in their index) still get unrelated draws.
    let mut h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The version `qualifier` names for invocation `id`, or what is missing.
pub fn resolve(
    record: &FunctionRecord,
    qualifier: Option<&str>,
    id: &str,
) -> Result<VersionEntry, Refused> {
    record
        .versions
        .resolve(qualifier, draw(id))
        .cloned()
        .map_err(|error| Refused {
            function: record.name.clone(),
            error,
        })
}

/// `sha256:<hex>` of a version, as a job's `Squall-Version` names it.
pub fn job_version(entry: &VersionEntry) -> String {
    format!("sha256:{}", entry.sha256)
}

/// Reads `name`'s record, lets `change` edit it, and writes it back only if no one wrote in
/// between (the KV revision), trying again on a conflict. Returns the record as written and
/// what `change` returned; `change`'s own error ends it as it is.
pub async fn modify<T, E: From<ModifyError>>(
    registry: &Registry,
    name: &FunctionName,
    mut change: impl FnMut(&mut FunctionRecord) -> Result<T, E>,
) -> Result<(FunctionRecord, T), E> {
    let bucket = registry.bucket();
    let failed = |e: RegistryError| E::from(ModifyError::Registry(e));
    for _ in 0..10 {
        let entry = bucket
            .entry(name.as_str())
            .await
            .map_err(|e| failed(RegistryError::Broker(e.to_string())))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Err(failed(RegistryError::NotDeployed(name.to_string())));
        };
        let mut record = FunctionRecord::decode(&entry.value).map_err(|e| {
            failed(RegistryError::Corrupt {
                name: name.to_string(),
                error: e.to_string(),
            })
        })?;
        let answer = change(&mut record)?;
        match bucket
            .update(name.as_str(), record.encode().into(), entry.revision)
            .await
        {
            Ok(revision) => {
                registry.put(revision, record.clone());
                return Ok((record, answer));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => {
                return Err(failed(RegistryError::Broker(format!(
                    "cannot write the function registry: {e}"
                ))))
            }
        }
    }
    Err(E::from(ModifyError::Contended(name.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_stable_per_invocation_and_spread_over_many() {
        let id = uuid::Uuid::now_v7().to_string();
        assert_eq!(draw(&id), draw(&id));
        let n = 20_000;
        let below = (0..n)
            .filter(|_| draw(&uuid::Uuid::now_v7().to_string()) < 0.25)
            .count();
        let share = below as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    #[test]
    fn a_qualifier_comes_from_the_name_or_the_query() {
        let q = Qualified::parse("hello:live", None).unwrap();
        assert_eq!(
            (q.name.as_str(), q.qualifier.as_deref()),
            ("hello", Some("live"))
        );
        let q = Qualified::parse("hello", Some("3")).unwrap();
        assert_eq!(q.qualifier.as_deref(), Some("3"));
        assert!(Qualified::parse("hello:live", Some("3")).is_err());
        assert!(Qualified::parse("he llo:live", None).is_err());
    }
}
