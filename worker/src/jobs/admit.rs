//! What a job's headers may not decide, checked before it runs: that the invocation id it claims
//! is not another invocation's, and that the version it names is one of its function's. The
//! decisions are pure (`claim_of`, `pinned_version`); `read_claim` reads RESULTS.

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::HeaderMap;
use squall_broker::names::{any_results_subject, is_invocation_id};
use squall_broker::versions::VersionEntry;
use squall_broker::{headers as h, FunctionRecord, InvocationStatus};

/// Whether the invocation id a job claims is its own to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// RESULTS has no record of the id, or only records of this job message's own attempts.
    Free,
    /// RESULTS holds another job's record of the id (of this function or any other): the id
    /// is an earlier invocation's.
    Taken { function: String, status: String },
    /// The id cannot name an invocation (see `names::is_invocation_id`).
    Malformed,
}

/// Whose invocation id `id` is, given the headers of the latest record RESULTS holds for it
/// (`latest`, from any function) and this job message: its `JOBS` sequence, its function and how
/// many times it was delivered.
///
/// A worker marks each record it stores with the sequence of the job message it ran
/// (`Squall-Job-Sequence`), so a redelivered message recognises its own earlier attempts and
/// nothing else. A record without the mark was stored by a dispatcher (a cancellation, the
/// dead-letter mover) or by a worker of an earlier release: it is taken as this message's own
/// only when it is a `retrying` record of the same function and this is a redelivery, which is
/// what an earlier release's retry leaves behind.
pub(crate) fn claim_of(
    id: &str,
    latest: Option<&HeaderMap>,
    sequence: u64,
    function: &str,
    delivered: u32,
) -> Claim {
    if !is_invocation_id(id) {
        return Claim::Malformed;
    }
    let Some(record) = latest else {
        return Claim::Free;
    };
    let get = |name: &str| record.get(name).map(|v| v.as_str());
    let same_function = get(h::FUNCTION) == Some(function);
    let own = match get(h::JOB_SEQUENCE) {
        Some(mark) => sequence != 0 && mark.parse::<u64>().ok() == Some(sequence),
        None => delivered > 1 && get(h::STATUS) == Some(InvocationStatus::Retrying.as_str()),
    };
    match own && same_function {
        true => Claim::Free,
        false => Claim::Taken {
            function: get(h::FUNCTION).unwrap_or_default().to_string(),
            status: get(h::STATUS).unwrap_or_default().to_string(),
        },
    }
}

/// Reads the latest record of invocation `id` in RESULTS, whichever function stored it, and
/// says whose the id is (`claim_of`).
pub(crate) async fn read_claim(
    results: &Stream,
    id: &str,
    sequence: u64,
    function: &str,
    delivered: u32,
) -> Result<Claim, async_nats::jetstream::stream::DirectGetError> {
    if !is_invocation_id(id) {
        // Not a subject token: never put it in a lookup's subject.
        return Ok(Claim::Malformed);
    }
    let latest = match results
        .direct_get_last_for_subject(any_results_subject(id))
        .await
    {
        Ok(message) => Some(message.headers),
        Err(error) if error.kind() == DirectGetErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    Ok(claim_of(id, latest.as_ref(), sequence, function, delivered))
}

/// Why a job's `Squall-Version` is refused: it names no retained version of the job's function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job names version {version:?}, which is not a version of function {function}; nothing ran"
)]
pub(crate) struct ForeignVersion {
    pub function: String,
    /// The header's value, cut to a readable length.
    pub version: String,
}

/// The longest part of a refused `Squall-Version` quoted in the error.
const QUOTED_VERSION: usize = 80;

/// The version a job runs: `Ok(None)` without `Squall-Version` (the function's current
/// version), the retained version it names, or an error when it names anything else (another
/// function's artifact, a version since dropped, text that is no version).
pub(crate) fn pinned_version<'r>(
    record: &'r FunctionRecord,
    version: Option<&str>,
) -> Result<Option<&'r VersionEntry>, ForeignVersion> {
    let Some(version) = version else {
        return Ok(None);
    };
    record
        .retained_version(version)
        .map(Some)
        .ok_or_else(|| ForeignVersion {
            function: record.name.clone(),
            version: version.chars().take(QUOTED_VERSION).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::FunctionSpec;

    const ID: &str = "0193a5c2-1111-7000-8000-000000000001";

    fn record(function: &str, status: &str, sequence: Option<u64>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(h::FUNCTION, function);
        headers.insert(h::STATUS, status);
        if let Some(sequence) = sequence {
            headers.insert(h::JOB_SEQUENCE, sequence.to_string().as_str());
        }
        headers
    }

    #[test]
    fn an_unused_id_is_free_and_a_malformed_one_never_is() {
        assert_eq!(claim_of(ID, None, 7, "pa", 1), Claim::Free);
        for id in ["", "a.b", "*", ">", "has space"] {
            assert_eq!(claim_of(id, None, 7, "pa", 1), Claim::Malformed, "{id:?}");
        }
    }

    #[test]
    fn a_record_of_another_job_takes_the_id() {
        let taken = |function: &str, status: &str| Claim::Taken {
            function: function.into(),
            status: status.into(),
        };
        // Another invocation of the same function, or of another one, finished or not.
        let other = record("pa", "succeeded", Some(3));
        assert_eq!(
            claim_of(ID, Some(&other), 7, "pa", 1),
            taken("pa", "succeeded")
        );
        let other = record("pb", "retrying", Some(3));
        assert_eq!(
            claim_of(ID, Some(&other), 7, "pa", 2),
            taken("pb", "retrying")
        );
        // A cancellation or the dead-letter mover: a dispatcher's record, unmarked.
        let dispatchers = record("pa", "cancelled", None);
        assert_eq!(
            claim_of(ID, Some(&dispatchers), 7, "pa", 2),
            taken("pa", "cancelled")
        );
        // An unmarked `retrying` record is never a first delivery's own.
        let earlier_release = record("pa", "retrying", None);
        assert_eq!(
            claim_of(ID, Some(&earlier_release), 7, "pa", 1),
            taken("pa", "retrying")
        );
        // The same sequence under another function's name is not this message's.
        let mismatched = record("pb", "retrying", Some(7));
        assert_eq!(
            claim_of(ID, Some(&mismatched), 7, "pa", 2),
            taken("pb", "retrying")
        );
        // An unknown sequence recognises nothing.
        let zero = record("pa", "retrying", Some(0));
        assert_eq!(
            claim_of(ID, Some(&zero), 0, "pa", 2),
            taken("pa", "retrying")
        );
    }

    #[test]
    fn a_redelivered_job_recognises_its_own_records() {
        let own = record("pa", "retrying", Some(7));
        assert_eq!(claim_of(ID, Some(&own), 7, "pa", 2), Claim::Free);
        // Its own terminal result whose acknowledgement was lost: it runs again, as before,
        // and RESULTS keeps the first terminal result.
        let own = record("pa", "succeeded", Some(7));
        assert_eq!(claim_of(ID, Some(&own), 7, "pa", 2), Claim::Free);
        let earlier_release = record("pa", "retrying", None);
        assert_eq!(
            claim_of(ID, Some(&earlier_release), 7, "pa", 2),
            Claim::Free
        );
    }

    #[test]
    fn a_job_runs_its_functions_versions_only() {
        let mut pa = FunctionRecord::new("pa", "aa11", 10, 5, &FunctionSpec::default());
        pa.versions.deploy("bb22", 20, 6);
        assert_eq!(pinned_version(&pa, None), Ok(None));
        assert_eq!(
            pinned_version(&pa, Some("sha256:aa11"))
                .unwrap()
                .unwrap()
                .number,
            1
        );
        let refused = pinned_version(&pa, Some("sha256:cc33")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the job names version \"sha256:cc33\", which is not a version of function pa; nothing ran"
        );
        let long = format!("sha256:{}", "f".repeat(500));
        let refused = pinned_version(&pa, Some(&long)).unwrap_err();
        assert_eq!(refused.version.len(), QUOTED_VERSION);
    }
}
