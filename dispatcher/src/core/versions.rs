//! Numbered versions and aliases: the routes that list and delete versions and set, show,
//! delete and roll back aliases; qualifier resolution for every path that takes a function
//! name; and the compare-and-set write every change of a function's record goes through.

use crate::http::error::ApiError;
use crate::core::names::FunctionName;
use crate::AppState;
use async_nats::jetstream::kv;
use axum::http::StatusCode;
use squall_broker::versions::{split_qualified, VersionEntry, VersionError};
use squall_broker::FunctionRecord;

/// How many versions a function keeps unless the dispatcher is told otherwise.
pub const DEFAULT_KEEP_VERSIONS: usize = 10;

/// The answer a refused version or alias operation gives.
pub fn version_error(function: &str, error: VersionError) -> ApiError {
    let message = format!("{function}: {error}");
    match error {
        VersionError::NoSuchVersion(_) => ApiError::not_found("version_not_found", message),
        VersionError::NoSuchAlias(_) => ApiError::not_found("alias_not_found", message),
        VersionError::BadQualifier(_) => ApiError::bad_request("invalid_qualifier", message),
        VersionError::BadWeight(_) | VersionError::WeightsOver => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_weights", message)
        }
        VersionError::Aliased { .. } | VersionError::Latest(_) | VersionError::NoPrevious(_) => {
            ApiError::new(StatusCode::CONFLICT, "version_in_use", message)
        }
    }
}

/// A function name as routes take it: `name`, or `name:qualifier`, with `query` as a second
/// way to give the qualifier (both at once must agree).
pub struct Qualified {
    pub name: FunctionName,
    pub qualifier: Option<String>,
}

impl Qualified {
    pub fn parse(text: &str, query: Option<&str>) -> Result<Qualified, ApiError> {
        let (name, in_name) = split_qualified(text);
        let name = FunctionName::parse(name.to_string())?;
        let qualifier = match (in_name, query) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::bad_request(
                    "invalid_qualifier",
                    format!("the name's qualifier {a:?} and ?qualifier={b:?} disagree"),
                ))
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

/// The version `qualifier` names for invocation `id`, or the 404 that says what is missing.
pub fn resolve(
    record: &FunctionRecord,
    qualifier: Option<&str>,
    id: &str,
) -> Result<VersionEntry, ApiError> {
    record
        .versions
        .resolve(qualifier, draw(id))
        .cloned()
        .map_err(|e| version_error(&record.name, e))
}

/// `sha256:<hex>` of a version, as a job's `Squall-Version` names it.
pub fn job_version(entry: &VersionEntry) -> String {
    format!("sha256:{}", entry.sha256)
}

/// Reads `name`'s record, lets `change` edit it, and writes it back only if no one wrote in
/// between (the KV revision), trying again on a conflict. Returns the record as written and
/// what `change` returned.
pub async fn modify<T>(
    state: &AppState,
    name: &FunctionName,
    mut change: impl FnMut(&mut FunctionRecord) -> Result<T, ApiError>,
) -> Result<(FunctionRecord, T), ApiError> {
    let registry = &state.broker.topology.registry;
    for _ in 0..10 {
        let entry = registry
            .entry(name.as_str())
            .await
            .map_err(|e| ApiError::broker("cannot read the function registry", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Err(ApiError::not_found(
                "function_not_found",
                format!("function {:?} is not deployed", name.as_str()),
            ));
        };
        let mut record =
            FunctionRecord::decode(&entry.value).map_err(|e| ApiError::internal("registry", e))?;
        let answer = change(&mut record)?;
        match registry
            .update(name.as_str(), record.encode().into(), entry.revision)
            .await
        {
            Ok(revision) => {
                state.registry.put(revision, record.clone());
                return Ok((record, answer));
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(ApiError::broker("cannot write the function registry", e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "concurrent_change",
        format!("{name} changed too often while being updated; try again"),
    ))
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
