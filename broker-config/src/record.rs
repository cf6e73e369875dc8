//! Wire records: the registry's function record (bincode) and a result's metadata (NATS headers).

use crate::headers as h;
use crate::spec::{Backoff, Destinations, FunctionSpec, WebSpec};
use crate::status::{ErrorKind, InvocationStatus};
use crate::versions::{VersionEntry, Versions};
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("corrupt function record: {0}")]
    Decode(String),
    #[error("function record layout {0} is unknown to this release")]
    UnknownLayout(u8),
    #[error("result is missing header {0}")]
    MissingHeader(&'static str),
    #[error("result header {name} has an invalid value {value:?}")]
    BadHeader { name: &'static str, value: String },
}

/// What the registry KV holds for a deployed function, bincode-encoded.
///
/// The free-form `config` travels as a JSON string because bincode cannot carry a
/// self-describing `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// `sha256:<hex>` of the artifact.
    pub version: String,
    /// Hex sha256 of the artifact; the object store key is derived from it.
    pub sha256: String,
    pub artifact_size: u64,
    pub deployed_at_ms: u64,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub concurrency: u32,
    pub config_json: String,
    pub max_concurrency: Option<u32>,
    /// The function's secrets, a JSON object of strings; never shown by the API.
    pub secrets_json: String,
    /// How it is served over HTTP, when it is a web function. Records written before web
    /// functions end without this field; `decode` reads them as `None`.
    pub web: Option<WebSpec>,
    /// Where its invocations' terminal events go. Records written before destinations end
    /// without this field and the next; `decode` reads them as `None` and empty.
    pub destinations: Option<RecordDestinations>,
    /// The key of the HMAC-SHA256 signature of its destination and callback POSTs (hex),
    /// made at its first deploy and kept across redeploys; shown to admins only.
    pub destination_secret: String,
    /// Numbered versions and aliases; `version` and `sha256` above are `$LATEST`'s. Records
    /// written before versions (and destinations) decode with their artifact as version 1.
    pub versions: Versions,
    /// Most of its jobs queued or running at once, when its spec lowers the dispatcher's
    /// limit. Records of layouts before 5 decode as `None`.
    pub max_backlog: Option<u64>,
    /// Worker processes kept running when idle, and the most at once (its spec's
    /// `min_instances` and `max_instances`). Records of layouts before 6 decode as 0 and `None`.
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    /// Memory of one of its worker processes, in MiB. Records of layouts before 6 decode with
    /// the default.
    pub memory_mb: u32,
}

/// A spec's destinations as the record keeps them: every field always written, since bincode is
/// positional (the API type skips absent fields when it serializes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RecordDestinations {
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
}

impl RecordDestinations {
    fn of(spec: &Destinations) -> Option<RecordDestinations> {
        (!spec.is_empty()).then(|| RecordDestinations {
            on_success: spec.on_success.clone().filter(|d| !d.is_empty()),
            on_failure: spec.on_failure.clone().filter(|d| !d.is_empty()),
        })
    }

    /// The spec's form.
    pub fn spec(&self) -> Destinations {
        Destinations {
            on_success: self.on_success.clone(),
            on_failure: self.on_failure.clone(),
        }
    }

    /// The destination of an invocation that ended `succeeded` (or not).
    pub fn for_outcome(&self, succeeded: bool) -> Option<&str> {
        match succeeded {
            true => self.on_success.as_deref(),
            false => self.on_failure.as_deref(),
        }
    }
}

// How a registry value says which layout it has.
//
// Records of layouts 1 to 3 carry no tag: they are the bincode of a struct whose first field is
// `name`, a string, which bincode's standard configuration writes as its length in a
// variable-length integer. That integer's first byte is the length itself when below 251, or a
// marker (251 to 254) saying a wider integer follows; 255 is reserved, and no bincode decoder
// accepts it as the start of an integer. So no untagged record that any release could read
// begins with 0xFF (in practice a function name is 1 to 64 bytes, so the first byte is 1 to 64),
// and a tagged record is `RECORD_TAG`, the layout number, then the bincode of that layout.
// Tagging begins at layout 4, so that the layout numbers of untagged records stay meaningful.

/// The first byte of a tagged registry record.
const RECORD_TAG: u8 = 0xFF;
/// The layout this release writes: `RECORD_TAG`, this number, then the bincode of a
/// `FunctionRecord`. Appending a field to `FunctionRecord` means a new number here, a frozen
/// copy of the previous layout and a migration from it in `decode`.
const RECORD_LAYOUT: u8 = 6;
/// An earlier tagged layout: layout 4 plus `max_backlog`.
const RECORD_LAYOUT_5: u8 = 5;
/// An earlier tagged layout: the fields of layout 3, tagged.
const RECORD_LAYOUT_4: u8 = 4;

/// Layout 1, untagged: a record as written before web functions, every field of
/// `FunctionRecord` up to `secrets_json`, in order (bincode is positional, so a missing trailing
/// field is an error, not a default).
#[derive(Serialize, Deserialize)]
struct RecordLayout1 {
    name: String,
    version: String,
    sha256: String,
    artifact_size: u64,
    deployed_at_ms: u64,
    timeout_ms: u64,
    max_attempts: u32,
    backoff: Backoff,
    concurrency: u32,
    config_json: String,
    max_concurrency: Option<u32>,
    secrets_json: String,
}

/// Layout 2, untagged: a record as written before destinations and versions, layout 1 plus
/// `web` (bincode writes a nested struct as its fields in order, so nesting the older layout
/// encodes exactly as the flat record did).
#[derive(Serialize, Deserialize)]
struct RecordLayout2 {
    layout1: RecordLayout1,
    web: Option<WebSpec>,
}

/// Layout 3, untagged: a record as written before records were tagged, layout 2 plus
/// destinations, their secret and versions. Layout 4 is the same fields, tagged.
#[derive(Serialize, Deserialize)]
struct RecordLayout3 {
    layout2: RecordLayout2,
    destinations: Option<RecordDestinations>,
    destination_secret: String,
    versions: Versions,
}

/// Layout 5, tagged: layout 3 plus `max_backlog`.
#[derive(Serialize, Deserialize)]
struct RecordLayout5 {
    layout3: RecordLayout3,
    max_backlog: Option<u64>,
}

impl From<RecordLayout5> for FunctionRecord {
    fn from(old: RecordLayout5) -> Self {
        FunctionRecord {
            max_backlog: old.max_backlog,
            ..FunctionRecord::from(old.layout3)
        }
    }
}

impl From<RecordLayout1> for FunctionRecord {
    fn from(old: RecordLayout1) -> Self {
        FunctionRecord {
            versions: Versions::first(&old.sha256, old.artifact_size, old.deployed_at_ms),
            name: old.name,
            version: old.version,
            sha256: old.sha256,
            artifact_size: old.artifact_size,
            deployed_at_ms: old.deployed_at_ms,
            timeout_ms: old.timeout_ms,
            max_attempts: old.max_attempts,
            backoff: old.backoff,
            concurrency: old.concurrency,
            config_json: old.config_json,
            max_concurrency: old.max_concurrency,
            secrets_json: old.secrets_json,
            web: None,
            destinations: None,
            destination_secret: String::new(),
            max_backlog: None,
            min_instances: 0,
            max_instances: None,
            memory_mb: crate::spec::DEFAULT_MEMORY_MB,
        }
    }
}

impl From<RecordLayout2> for FunctionRecord {
    fn from(old: RecordLayout2) -> Self {
        FunctionRecord {
            web: old.web,
            ..FunctionRecord::from(old.layout1)
        }
    }
}

impl From<RecordLayout3> for FunctionRecord {
    fn from(old: RecordLayout3) -> Self {
        FunctionRecord {
            destinations: old.destinations,
            destination_secret: old.destination_secret,
            versions: old.versions,
            ..FunctionRecord::from(old.layout2)
        }
    }
}

/// Decodes `bytes` as exactly one `T`: trailing bytes are an error.
fn exactly<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, bincode::config::standard()) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok(_) => Err(RecordError::Decode(
            "trailing bytes after the record".into(),
        )),
        Err(e) => Err(RecordError::Decode(e.to_string())),
    }
}

/// Reads a record written before records were tagged (layouts 3, 2 and 1) into the current form.
///
/// Each layout is the previous one plus trailing fields, so a value decodes exactly (every byte
/// read) as one layout only: as an older layout it leaves bytes over, as a newer one it runs out.
fn migrate_untagged(bytes: &[u8]) -> Result<FunctionRecord, RecordError> {
    exactly::<RecordLayout3>(bytes)
        .map(FunctionRecord::from)
        .or_else(|newest| {
            exactly::<RecordLayout2>(bytes)
                .map(FunctionRecord::from)
                .or_else(|_| exactly::<RecordLayout1>(bytes).map(FunctionRecord::from))
                // The error worth reporting is the one of the layout most records have.
                .map_err(|_| newest)
        })
}

impl FunctionRecord {
    /// Builds a record for a validated spec.
    pub fn new(
        name: &str,
        sha256_hex: &str,
        artifact_size: u64,
        deployed_at_ms: u64,
        spec: &FunctionSpec,
    ) -> Self {
        FunctionRecord {
            name: name.to_string(),
            version: format!("sha256:{sha256_hex}"),
            sha256: sha256_hex.to_string(),
            artifact_size,
            deployed_at_ms,
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            backoff: spec.backoff.clone(),
            concurrency: spec.concurrency,
            config_json: serde_json::Value::Object(spec.config.clone()).to_string(),
            max_concurrency: spec.max_concurrency,
            secrets_json: String::new(),
            web: spec.web.clone(),
            destinations: spec.destinations.as_ref().and_then(RecordDestinations::of),
            destination_secret: String::new(),
            versions: Versions::first(sha256_hex, artifact_size, deployed_at_ms),
            max_backlog: spec.max_backlog,
            min_instances: spec.min_instances,
            max_instances: spec.max_instances,
            memory_mb: spec.memory_mb,
        }
    }

    /// Points the record at version `entry`: its artifact becomes the one `version` and
    /// `sha256` name.
    pub fn set_current(&mut self, entry: &VersionEntry) {
        self.version = format!("sha256:{}", entry.sha256);
        self.sha256 = entry.sha256.clone();
        self.artifact_size = entry.artifact_size;
        self.deployed_at_ms = entry.deployed_at_ms;
    }

    /// The number of the retained version with artifact `version` (`sha256:<hex>`), the newest
    /// when several share it.
    pub fn version_number(&self, version: &str) -> Option<u32> {
        let sha = version.strip_prefix("sha256:").unwrap_or(version);
        self.versions
            .list
            .iter()
            .rev()
            .find(|v| v.sha256 == sha)
            .map(|v| v.number)
    }

    /// The retained version whose artifact `version` (`sha256:<hex>`, as a job's
    /// `Squall-Version` names it) is, the newest when several share it; `None` when the
    /// function has no such version (another function's artifact, a dropped version, or not a
    /// version at all).
    pub fn retained_version(&self, version: &str) -> Option<&VersionEntry> {
        let sha = version.strip_prefix("sha256:")?;
        self.versions.list.iter().rev().find(|v| v.sha256 == sha)
    }

    /// The spec this record was built from.
    pub fn spec(&self) -> FunctionSpec {
        let config = match serde_json::from_str(&self.config_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        FunctionSpec {
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
            concurrency: self.concurrency,
            max_concurrency: self.max_concurrency,
            max_backlog: self.max_backlog,
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            memory_mb: self.memory_mb,
            config,
            web: self.web.clone(),
            destinations: self.destinations.as_ref().map(RecordDestinations::spec),
        }
    }

    /// The secrets' names, sorted.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.secrets().keys().cloned().collect();
        names.sort();
        names
    }

    /// The secrets as a JSON object (empty when none).
    pub fn secrets(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(&self.secrets_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The config JSON a function receives: its config values, plus its secrets under
    /// `"secrets"` when it has any.
    pub fn call_config(&self) -> String {
        let secrets = self.secrets();
        if secrets.is_empty() {
            return self.config_json.clone();
        }
        let mut config = match serde_json::from_str(&self.config_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        config.insert("secrets".into(), serde_json::Value::Object(secrets));
        serde_json::Value::Object(config).to_string()
    }

    /// Encodes the record for the registry, tagged with the layout this release writes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![RECORD_TAG, RECORD_LAYOUT];
        bincode::serde::encode_into_std_write(self, &mut bytes, bincode::config::standard())
            .expect("a FunctionRecord always encodes");
        bytes
    }

    /// Decodes a registry value: a tagged record of the current layout, or an untagged one an
    /// earlier release wrote, migrated to the current form.
    pub fn decode(bytes: &[u8]) -> Result<FunctionRecord, RecordError> {
        match bytes {
            [RECORD_TAG, RECORD_LAYOUT, body @ ..] => exactly::<FunctionRecord>(body),
            [RECORD_TAG, RECORD_LAYOUT_5, body @ ..] => {
                exactly::<RecordLayout5>(body).map(FunctionRecord::from)
            }
            [RECORD_TAG, RECORD_LAYOUT_4, body @ ..] => {
                exactly::<RecordLayout3>(body).map(FunctionRecord::from)
            }
            [RECORD_TAG, layout, ..] => Err(RecordError::UnknownLayout(*layout)),
            [RECORD_TAG] => Err(RecordError::Decode("a tag without a layout".into())),
            untagged => migrate_untagged(untagged),
        }
    }
}

/// A stable UUIDv7 for a job that a plain NATS client published without an id: the time part
/// is the stream's receive time and the rest is the stream sequence, so every redelivery of the
/// same message, and every process that looks at it, gets the same id.
/// A stable UUIDv7 for the invocation made from an event (a cron tick, a trigger message):
/// the time is the event's and the rest is a hash of where it came from (`origin`, e.g. the
/// trigger's name) and its stream sequence, so redelivered events map to the same invocation.
pub fn event_invocation_id(published_ms: u64, origin: &str, stream_sequence: u64) -> String {
    // FNV-1a over the origin and the sequence: stable across processes and versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in origin.bytes().chain(stream_sequence.to_be_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut tail = [0u8; 10];
    tail[..2].copy_from_slice(&[0x5c, 0x11]);
    tail[2..].copy_from_slice(&hash.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(published_ms, &tail)
        .into_uuid()
        .to_string()
}

pub fn derived_invocation_id(published_ms: u64, stream_sequence: u64) -> String {
    let mut tail = [0u8; 10];
    tail[2..].copy_from_slice(&stream_sequence.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(published_ms, &tail)
        .into_uuid()
        .to_string()
}

/// The invocation id a job names: its `Squall-Invocation-Id`, else its `Nats-Msg-Id` when that
/// is a UUID (the dispatcher's jobs carry the id only there, since JetStream needs it for
/// de-duplication anyway). `None` means the id is derived from the delivery.
pub fn job_invocation_id(header: impl Fn(&str) -> Option<String>) -> Option<String> {
    header(h::INVOCATION_ID).or_else(|| {
        header(h::NATS_MSG_ID).filter(|id| id.len() == 36 && uuid::Uuid::try_parse(id).is_ok())
    })
}

pub use squall_api::invocations::{LogLevel, LogLine};

/// The metadata of a result message; the body is the output, or the error message.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMeta {
    pub invocation_id: String,
    pub function: String,
    pub version: String,
    pub status: InvocationStatus,
    pub attempt: u32,
    pub error_kind: Option<ErrorKind>,
    pub created_at_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub duration_us: u64,
    /// CPU time of the call on its thread.
    pub cpu_us: u64,
    /// State operations (host `kv_*` calls) of the attempt, and the bytes they moved.
    pub kv_ops: u64,
    pub kv_bytes: u64,
    pub logs: Vec<LogLine>,
    /// The worker process that produced the result; empty when unknown.
    pub worker: String,
    /// The invocation's W3C trace id (32 hex digits); empty when unknown.
    pub trace_id: String,
}

impl ResultMeta {
    /// The `Nats-Msg-Id` of this status message: one per invocation, attempt and status, so a
    /// publish tried again after a lost acknowledgement is stored once; a terminal status has
    /// the invocation's one terminal id (`names::terminal_message_id`), so of two terminal
    /// results (a completion racing a cancellation) only the first is stored.
    pub fn message_id(&self) -> String {
        if self.status.is_terminal() {
            return crate::names::terminal_message_id(&self.invocation_id);
        }
        format!(
            "r:{}:{}:{}",
            self.invocation_id,
            self.attempt,
            self.status.as_str()
        )
    }

    /// Writes the metadata as NATS headers.
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(h::INVOCATION_ID, self.invocation_id.as_str());
        headers.insert(h::FUNCTION, self.function.as_str());
        headers.insert(h::VERSION, self.version.as_str());
        headers.insert(h::STATUS, self.status.as_str());
        headers.insert(h::ATTEMPT, self.attempt.to_string().as_str());
        if let Some(kind) = self.error_kind {
            headers.insert(h::ERROR_KIND, kind.as_str());
        }
        headers.insert(h::CREATED_AT, self.created_at_ms.to_string().as_str());
        headers.insert(h::STARTED_AT, self.started_at_ms.to_string().as_str());
        headers.insert(h::FINISHED_AT, self.finished_at_ms.to_string().as_str());
        headers.insert(h::DURATION_US, self.duration_us.to_string().as_str());
        headers.insert(h::CPU_US, self.cpu_us.to_string().as_str());
        if self.kv_ops > 0 {
            headers.insert(h::KV_OPS, self.kv_ops.to_string().as_str());
            headers.insert(h::KV_BYTES, self.kv_bytes.to_string().as_str());
        }
        if !self.worker.is_empty() {
            headers.insert(h::WORKER, self.worker.as_str());
        }
        if !self.trace_id.is_empty() {
            headers.insert(h::TRACE_ID, self.trace_id.as_str());
        }
        if !self.logs.is_empty() {
            // serde_json escapes newlines, so the JSON text is a valid single-line header value.
            let logs = serde_json::to_string(&self.logs).unwrap_or_default();
            headers.insert(h::LOGS, logs.as_str());
        }
        headers
    }

    /// Reads the metadata back from a result's headers.
    pub fn from_headers(headers: &HeaderMap) -> Result<ResultMeta, RecordError> {
        fn text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, RecordError> {
            headers
                .get(name)
                .map(|v| v.as_str())
                .ok_or(RecordError::MissingHeader(name))
        }
        fn number(headers: &HeaderMap, name: &'static str) -> Result<u64, RecordError> {
            let value = text(headers, name)?;
            value.parse().map_err(|_| RecordError::BadHeader {
                name,
                value: value.to_string(),
            })
        }
        let status_text = text(headers, h::STATUS)?;
        let status =
            InvocationStatus::parse(status_text).ok_or_else(|| RecordError::BadHeader {
                name: h::STATUS,
                value: status_text.to_string(),
            })?;
        let error_kind = match headers.get(h::ERROR_KIND) {
            None => None,
            Some(v) => {
                Some(
                    ErrorKind::parse(v.as_str()).ok_or_else(|| RecordError::BadHeader {
                        name: h::ERROR_KIND,
                        value: v.as_str().to_string(),
                    })?,
                )
            }
        };
        let logs = headers
            .get(h::LOGS)
            .and_then(|v| serde_json::from_str(v.as_str()).ok())
            .unwrap_or_default();
        Ok(ResultMeta {
            invocation_id: text(headers, h::INVOCATION_ID)?.to_string(),
            function: text(headers, h::FUNCTION)?.to_string(),
            version: text(headers, h::VERSION)?.to_string(),
            status,
            attempt: number(headers, h::ATTEMPT)? as u32,
            error_kind,
            created_at_ms: number(headers, h::CREATED_AT)?,
            started_at_ms: number(headers, h::STARTED_AT)?,
            finished_at_ms: number(headers, h::FINISHED_AT)?,
            duration_us: number(headers, h::DURATION_US)?,
            cpu_us: number(headers, h::CPU_US).unwrap_or(0),
            kv_ops: number(headers, h::KV_OPS).unwrap_or(0),
            kv_bytes: number(headers, h::KV_BYTES).unwrap_or(0),
            logs,
            worker: headers
                .get(h::WORKER)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
            trace_id: headers
                .get(h::TRACE_ID)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default(),
        })
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`): its 32 lowercase
/// hex digits, or empty when it is not one.
pub fn trace_id_of(traceparent: &str) -> String {
    match traceparent.split('-').nth(1) {
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod trace_id_tests {
    use super::trace_id_of;

    #[test]
    fn a_trace_id_is_read_from_a_traceparent_or_left_empty() {
        assert_eq!(
            trace_id_of("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id_of(""), "");
        assert_eq!(trace_id_of("00-short-00f067aa0ba902b7-01"), "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_names_its_id_in_either_header() {
        let id = "0193a5c2-2222-7000-8000-000000000001";
        let only_msg_id = |name: &str| (name == h::NATS_MSG_ID).then(|| id.to_string());
        assert_eq!(job_invocation_id(only_msg_id).as_deref(), Some(id));
        let both = |name: &str| match name {
            h::INVOCATION_ID => Some("0193a5c2-2222-7000-8000-000000000002".to_string()),
            _ => Some(id.to_string()),
        };
        assert_eq!(
            job_invocation_id(both).as_deref(),
            Some("0193a5c2-2222-7000-8000-000000000002")
        );
        // A client's own de-duplication key that is not a UUID is not an invocation id.
        let own_key = |name: &str| (name == h::NATS_MSG_ID).then(|| "order-17".to_string());
        assert_eq!(job_invocation_id(own_key), None);
    }

    #[test]
    fn a_job_version_must_be_a_retained_version_of_the_function() {
        let mut record = FunctionRecord::new("pa", "aa11", 10, 5, &FunctionSpec::default());
        record.versions.deploy("bb22", 20, 6);
        assert_eq!(record.retained_version("sha256:aa11").unwrap().number, 1);
        assert_eq!(record.retained_version("sha256:bb22").unwrap().number, 2);
        // Another function's artifact, a bare digest, or something else altogether.
        assert_eq!(record.retained_version("sha256:cc33"), None);
        assert_eq!(record.retained_version("aa11"), None);
        assert_eq!(record.retained_version("sha256:"), None);
        assert_eq!(record.retained_version("2"), None);
        record.versions.retain(1);
        assert_eq!(
            record.retained_version("sha256:aa11"),
            None,
            "a dropped version is no longer the function's"
        );
    }

    #[test]
    fn function_record_round_trips_with_config() {
        let mut spec = FunctionSpec::default();
        spec.config.insert("greeting".into(), "Hi".into());
        let record = FunctionRecord::new("hello", "ab12", 10, 5, &spec);
        let back = FunctionRecord::decode(&record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.spec(), spec);
    }

    /// A record with every field set, as this release writes it.
    fn full_record() -> FunctionRecord {
        let mut spec = FunctionSpec {
            max_concurrency: Some(3),
            max_backlog: Some(500),
            min_instances: 1,
            max_instances: Some(4),
            memory_mb: 1024,
            web: Some(WebSpec {
                auth: crate::spec::WebAuth::None,
                rate_per_s: Some(5.0),
            }),
            destinations: Some(Destinations {
                on_success: Some("events.next".into()),
                on_failure: Some("https://example.com/failed".into()),
            }),
            ..FunctionSpec::default()
        };
        spec.config.insert("greeting".into(), "Hi".into());
        let mut record = FunctionRecord::new("hook", "ab12", 10, 5, &spec);
        record.secrets_json = r#"{"token":"s3cret"}"#.into();
        record.destination_secret = "a".repeat(64);
        record.versions.deploy("cd34", 20, 6);
        record
            .versions
            .set_alias(
                "live",
                crate::versions::AliasTarget {
                    version: 1,
                    weights: vec![(2, 0.25)],
                },
                7,
            )
            .unwrap();
        let latest = record.versions.latest().unwrap().clone();
        record.set_current(&latest);
        record
    }

    fn layout1(r: &FunctionRecord) -> RecordLayout1 {
        RecordLayout1 {
            name: r.name.clone(),
            version: r.version.clone(),
            sha256: r.sha256.clone(),
            artifact_size: r.artifact_size,
            deployed_at_ms: r.deployed_at_ms,
            timeout_ms: r.timeout_ms,
            max_attempts: r.max_attempts,
            backoff: r.backoff.clone(),
            concurrency: r.concurrency,
            config_json: r.config_json.clone(),
            max_concurrency: r.max_concurrency,
            secrets_json: r.secrets_json.clone(),
        }
    }

    fn layout2(r: &FunctionRecord) -> RecordLayout2 {
        RecordLayout2 {
            layout1: layout1(r),
            web: r.web.clone(),
        }
    }

    fn untagged<T: Serialize>(layout: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(layout, bincode::config::standard()).unwrap()
    }

    #[test]
    fn a_record_is_written_tagged_with_its_layout() {
        let record = full_record();
        let bytes = record.encode();
        assert_eq!(bytes[..2], [RECORD_TAG, RECORD_LAYOUT]);
        assert_eq!(FunctionRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn a_layout_1_record_before_web_functions_migrates() {
        let current = full_record();
        let decoded = FunctionRecord::decode(&untagged(&layout1(&current))).unwrap();
        let expected = FunctionRecord {
            web: None,
            max_backlog: None,
            min_instances: 0,
            max_instances: None,
            memory_mb: crate::spec::DEFAULT_MEMORY_MB,
            destinations: None,
            destination_secret: String::new(),
            versions: Versions::first(
                &current.sha256,
                current.artifact_size,
                current.deployed_at_ms,
            ),
            ..current
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_layout_2_record_before_destinations_and_versions_migrates() {
        let current = full_record();
        let decoded = FunctionRecord::decode(&untagged(&layout2(&current))).unwrap();
        let expected = FunctionRecord {
            destinations: None,
            max_backlog: None,
            min_instances: 0,
            max_instances: None,
            memory_mb: crate::spec::DEFAULT_MEMORY_MB,
            destination_secret: String::new(),
            versions: Versions::first(
                &current.sha256,
                current.artifact_size,
                current.deployed_at_ms,
            ),
            ..current
        };
        assert_eq!(decoded, expected);
        assert!(decoded.web.is_some());
    }

    fn layout3(r: &FunctionRecord) -> RecordLayout3 {
        RecordLayout3 {
            layout2: layout2(r),
            destinations: r.destinations.clone(),
            destination_secret: r.destination_secret.clone(),
            versions: r.versions.clone(),
        }
    }

    #[test]
    fn a_layout_3_record_migrates_whole_but_its_backlog_limit() {
        let current = full_record();
        let decoded = FunctionRecord::decode(&untagged(&layout3(&current))).unwrap();
        let expected = FunctionRecord {
            max_backlog: None,
            min_instances: 0,
            max_instances: None,
            memory_mb: crate::spec::DEFAULT_MEMORY_MB,
            ..current
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_tagged_layout_5_record_migrates_with_no_instance_bounds_and_the_default_memory() {
        let current = full_record();
        let mut bytes = vec![RECORD_TAG, RECORD_LAYOUT_5];
        bytes.extend(untagged(&RecordLayout5 {
            layout3: layout3(&current),
            max_backlog: current.max_backlog,
        }));
        let decoded = FunctionRecord::decode(&bytes).unwrap();
        let expected = FunctionRecord {
            min_instances: 0,
            max_instances: None,
            memory_mb: crate::spec::DEFAULT_MEMORY_MB,
            ..current
        };
        assert_eq!(decoded, expected);
    }

    #[test]
    fn a_tagged_layout_4_record_of_the_previous_release_migrates() {
        let current = full_record();
        let mut bytes = vec![RECORD_TAG, RECORD_LAYOUT_4];
        bytes.extend(untagged(&layout3(&current)));
        let decoded = FunctionRecord::decode(&bytes).unwrap();
        assert_eq!(decoded.max_backlog, None);
        assert_eq!(decoded.versions, current.versions);
        assert_eq!(decoded.destination_secret, current.destination_secret);
    }

    #[test]
    fn an_unknown_layout_or_trailing_bytes_are_errors() {
        let mut bytes = full_record().encode();
        bytes[1] = RECORD_LAYOUT + 1;
        assert!(matches!(
            FunctionRecord::decode(&bytes),
            Err(RecordError::UnknownLayout(l)) if l == RECORD_LAYOUT + 1
        ));
        let mut bytes = full_record().encode();
        bytes.push(0);
        assert!(FunctionRecord::decode(&bytes).is_err());
        let mut bytes = untagged(&full_record());
        bytes.push(0);
        assert!(FunctionRecord::decode(&bytes).is_err());
        assert!(FunctionRecord::decode(&[RECORD_TAG]).is_err());
        assert!(FunctionRecord::decode(&[]).is_err());
    }

    #[test]
    fn destinations_and_their_secret_round_trip() {
        let spec = FunctionSpec {
            destinations: Some(crate::spec::Destinations {
                on_success: Some("events.next".into()),
                on_failure: None,
            }),
            ..FunctionSpec::default()
        };
        let mut record = FunctionRecord::new("f", "ab12", 10, 5, &spec);
        record.destination_secret = "a".repeat(64);
        let back = FunctionRecord::decode(&record.encode()).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.spec(), spec);
    }

    #[test]
    fn derived_ids_are_stable_and_time_ordered() {
        let a = derived_invocation_id(1_700_000_000_000, 7);
        assert_eq!(a, derived_invocation_id(1_700_000_000_000, 7));
        let b = derived_invocation_id(1_700_000_000_001, 1);
        assert!(a < b);
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 7);
    }

    #[test]
    fn corrupt_record_is_an_error() {
        assert!(FunctionRecord::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn result_meta_round_trips_through_headers() {
        let meta = ResultMeta {
            invocation_id: "id".into(),
            function: "hello".into(),
            version: "sha256:00".into(),
            status: InvocationStatus::Failed,
            attempt: 2,
            error_kind: Some(ErrorKind::Error),
            created_at_ms: 1,
            started_at_ms: 2,
            finished_at_ms: 3,
            duration_us: 4,
            cpu_us: 3,
            kv_ops: 4,
            kv_bytes: 50,
            logs: vec![LogLine {
                level: LogLevel::Info,
                message: "two\nlines".into(),
            }],
            worker: "host-1".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        assert_eq!(ResultMeta::from_headers(&meta.to_headers()).unwrap(), meta);
    }

    #[test]
    fn log_levels_are_stored_in_lowercase() {
        let line = LogLine {
            level: LogLevel::Warn,
            message: "careful".into(),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, r#"{"level":"warn","message":"careful"}"#);
        assert_eq!(serde_json::from_str::<LogLine>(&text).unwrap(), line);
        for level in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            let json = serde_json::to_value(level).unwrap();
            assert_eq!(json, level.as_str());
        }
    }
}
