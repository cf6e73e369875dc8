//! The query index: every invocation RESULTS reports, kept compactly in sled by creation time
//! for listing, and pre-aggregated per function and minute (rolled up to hours) for stats and
//! usage.
//!
//! Layout: one sled tree, `query_v3`, with one-byte key prefixes, so that a batch of results
//! is written in one atomic `apply_batch` together with the sequence it reaches:
//!
//! - `e` ‖ created ms (BE) ‖ id → the entry, bincode of `Compact` (names as numbers);
//! - `f` ‖ function number (BE) ‖ created ms ‖ id → nothing: one function's entries in order;
//! - `m` / `h` ‖ function number ‖ minute / hour start (BE) → a `Bucket` of the invocations
//!   created in that minute / hour: counts by status, attempts, CPU and wall sums, state
//!   traffic and a latency sketch;
//! - `n` ‖ kind ‖ name → number, `i` ‖ kind ‖ number → name: the function and version names;
//! - `s` → the RESULTS sequence applied last.
//!
//! An id that is a lowercase UUID is kept as its 16 bytes (tagged 1), any other as its text
//! (tagged 2). Invariants: the index is only a view of RESULTS and can be rebuilt from it;
//! applying a result twice changes nothing (each entry remembers the last stream sequence it
//! saw); an invocation's sort key (creation time, id) never changes, so pages are stable; a
//! bucket is the sum of its invocations' latest states, whatever order they arrived in.

use crate::index::sketch::Sketch;
use serde::{Deserialize, Serialize};
use squall_broker::{ErrorKind, InvocationStatus, ResultMeta};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot open the invocation index at {path}: {source} (is another dispatcher using this data directory?)")]
    Open { path: String, source: sled::Error },
    #[error("invocation index error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt invocation index entry: {0}")]
    Decode(String),
}

const ENTRY: u8 = b'e';
const BY_FUNCTION: u8 = b'f';
const MINUTE: u8 = b'm';
const HOUR: u8 = b'h';
const NAME: u8 = b'n';
const NAME_OF: u8 = b'i';
const SEQUENCE_KEY: &[u8] = b"s";
/// Name kinds: functions and versions are numbered separately.
const FUNCTION_NAME: u8 = b'f';
const VERSION_NAME: u8 = b'v';

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// The trees of earlier layouts (one bincode entry per id plus two secondary trees; then
/// `query_v2`, whose buckets counted seven statuses, before `cancelled`); dropped at open, so
/// the index replays RESULTS into the current layout.
const OLD_TREES: [&str; 5] = [
    "query_entries",
    "query_by_time",
    "query_by_function",
    "query_meta",
    "query_v2",
];
const TREE: &str = "query_v3";

/// The entries and minute buckets are kept as long as RESULTS keeps results; hour buckets
/// longer, for usage reports. Defaults: RESULTS' default `max_age` and 30 days.
pub const DEFAULT_ENTRY_RETENTION_MS: u64 = 24 * HOUR_MS;
pub const DEFAULT_BUCKET_RETENTION_MS: u64 = 30 * 24 * HOUR_MS;

/// What the index keeps per invocation: its latest state and its metered totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub function: String,
    pub version: String,
    pub status: InvocationStatus,
    pub error_kind: Option<String>,
    pub attempts: u32,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    /// Wall time of the latest attempt.
    pub duration_us: u64,
    /// Wall time summed over every executed attempt (what is metered).
    pub wall_us_total: u64,
    /// CPU time summed over every executed attempt.
    pub cpu_us_total: u64,
    /// The RESULTS sequence this entry was last updated from.
    pub last_sequence: u64,
    /// State operations summed over every attempt, and the bytes they moved.
    pub kv_ops_total: u64,
    pub kv_bytes_total: u64,
}

/// An entry as stored: names as numbers, the finish time relative to the creation time, every
/// number a variable-length integer (bincode's standard configuration). The id and creation
/// time are in the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Compact {
    function: u32,
    version: u32,
    status: u8,
    /// 0 for none, else `ERROR_KINDS` index + 1.
    error_kind: u8,
    attempts: u32,
    finished_after_ms: i64,
    duration_us: u64,
    wall_us_total: u64,
    cpu_us_total: u64,
    last_sequence: u64,
    kv_ops_total: u64,
    kv_bytes_total: u64,
}

/// Statuses by their stored number (and their slot in a bucket's counts).
const STATUSES: [InvocationStatus; 8] = InvocationStatus::ALL;
const ERROR_KINDS: [ErrorKind; 7] = [
    ErrorKind::Error,
    ErrorKind::Retry,
    ErrorKind::Panic,
    ErrorKind::Timeout,
    ErrorKind::Crash,
    ErrorKind::Load,
    ErrorKind::OutOfMemory,
];

/// Whether an invocation in `status` counts in the latency sketch: one that ended by running
/// (a cancelled one may never have run).
fn timed(status: InvocationStatus) -> bool {
    status.is_terminal() && status != InvocationStatus::Cancelled
}

fn status_code(status: InvocationStatus) -> u8 {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0) as u8
}

impl Entry {
    /// The entry after applying the result `meta` found at `sequence`; `None` when the entry
    /// already reflects that message (a replay).
    pub fn apply(previous: Option<&Entry>, sequence: u64, meta: &ResultMeta) -> Option<Entry> {
        if previous.is_some_and(|p| p.last_sequence >= sequence) {
            return None;
        }
        // An invocation ends once: a record that arrives after its terminal one (a `retrying`
        // stored just after a cancellation) does not reopen it.
        if previous.is_some_and(|p| p.status.is_terminal()) && !meta.status.is_terminal() {
            return None;
        }
        let (wall, cpu, created) = previous.map_or((0, 0, meta.created_at_ms), |p| {
            (p.wall_us_total, p.cpu_us_total, p.created_at_ms)
        });
        let (kv_ops, kv_bytes) = previous.map_or((0, 0), |p| (p.kv_ops_total, p.kv_bytes_total));
        Some(Entry {
            function: meta.function.clone(),
            version: meta.version.clone(),
            status: meta.status,
            error_kind: meta.error_kind.map(|k| k.as_str().to_string()),
            attempts: meta.attempt.max(previous.map_or(0, |p| p.attempts)),
            created_at_ms: created,
            finished_at_ms: meta.finished_at_ms,
            duration_us: meta.duration_us,
            wall_us_total: wall + meta.duration_us,
            cpu_us_total: cpu + meta.cpu_us,
            last_sequence: sequence,
            kv_ops_total: kv_ops + meta.kv_ops,
            kv_bytes_total: kv_bytes + meta.kv_bytes,
        })
    }
}

/// An invocation id as stored: a lowercase UUID as its 16 bytes, anything else as its text.
fn id_key(id: &str) -> Vec<u8> {
    if let Ok(uuid) = uuid::Uuid::try_parse(id) {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        if uuid.hyphenated().encode_lower(&mut text).as_bytes() == id.as_bytes() {
            let mut key = Vec::with_capacity(17);
            key.push(1);
            key.extend_from_slice(uuid.as_bytes());
            return key;
        }
    }
    let mut key = Vec::with_capacity(id.len() + 1);
    key.push(2);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The id `id_key` stored.
fn id_of(key: &[u8]) -> String {
    match key.split_first() {
        Some((1, bytes)) => uuid::Uuid::from_slice(bytes)
            .map(|u| u.hyphenated().to_string())
            .unwrap_or_default(),
        Some((_, text)) => String::from_utf8_lossy(text).into_owned(),
        None => String::new(),
    }
}

/// A sort key: creation time (big-endian, so byte order is time order), then the id.
fn sort_key(created_at_ms: u64, id: &str) -> Vec<u8> {
    let mut key = created_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(&id_key(id));
    key
}

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(rest);
    key
}

fn function_prefix(kind: u8, function: u32) -> [u8; 5] {
    let mut key = [kind, 0, 0, 0, 0];
    key[1..].copy_from_slice(&function.to_be_bytes());
    key
}

fn bucket_key(level: u8, function: u32, created_at_ms: u64) -> Vec<u8> {
    let span = if level == HOUR { HOUR_MS } else { MINUTE_MS };
    let start = created_at_ms - created_at_ms % span;
    prefixed(&function_prefix(level, function), &start.to_be_bytes())
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// A page cursor: the hex of the last returned sort key. Opaque to clients.
pub fn encode_cursor(key: &[u8]) -> String {
    hex::encode(key)
}

/// Reads a cursor back; `None` when it was not made by `encode_cursor`.
pub fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    hex::decode(cursor).ok().filter(|k| k.len() > 8)
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub function: Option<String>,
    pub status: Option<InvocationStatus>,
    /// Created at or after, Unix ms.
    pub since_ms: Option<u64>,
    /// Created before, Unix ms.
    pub until_ms: Option<u64>,
}

/// One page of invocations, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<(String, Entry)>,
    /// Present when more items may follow.
    pub next_cursor: Option<String>,
}

/// Pre-aggregated numbers of the invocations created in one minute or hour, of one function
/// (or, merged, of a whole window). The totals come first, so that usage can decode them
/// without the sketch (bincode reads a prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub totals: Totals,
    /// Latest-attempt wall time (µs) of the terminal invocations.
    pub latency: Sketch,
}

/// A bucket's sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub invocations: u64,
    /// Invocations by status, in `STATUSES` order.
    pub statuses: [u64; 8],
    pub attempts: u64,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub kv_ops: u64,
    pub kv_bytes: u64,
}

impl Totals {
    fn change(&mut self, entry: &Entry, add: bool) {
        let step = |field: &mut u64, by: u64| {
            *field = if add {
                field.wrapping_add(by)
            } else {
                field.wrapping_sub(by)
            }
        };
        step(&mut self.invocations, 1);
        step(
            &mut self.statuses[usize::from(status_code(entry.status))],
            1,
        );
        step(&mut self.attempts, u64::from(entry.attempts));
        step(&mut self.cpu_us, entry.cpu_us_total);
        step(&mut self.wall_us, entry.wall_us_total);
        step(&mut self.kv_ops, entry.kv_ops_total);
        step(&mut self.kv_bytes, entry.kv_bytes_total);
    }

    /// Adds `other`'s sums.
    pub fn merge(&mut self, other: &Totals) {
        self.invocations += other.invocations;
        for (a, b) in self.statuses.iter_mut().zip(other.statuses) {
            *a += b;
        }
        self.attempts += other.attempts;
        self.cpu_us += other.cpu_us;
        self.wall_us += other.wall_us;
        self.kv_ops += other.kv_ops;
        self.kv_bytes += other.kv_bytes;
    }

    fn count(&self, status: InvocationStatus) -> u64 {
        self.statuses[usize::from(status_code(status))]
    }
}

impl Bucket {
    /// Counts `entry` in.
    pub fn add(&mut self, entry: &Entry) {
        self.totals.change(entry, true);
        if timed(entry.status) {
            self.latency.add(entry.duration_us);
        }
    }

    /// Counts `entry` (as it was added before) out again.
    pub fn remove(&mut self, entry: &Entry) {
        self.totals.change(entry, false);
        if timed(entry.status) {
            self.latency.remove(entry.duration_us);
        }
    }

    /// Adds `other`.
    pub fn merge(&mut self, other: &Bucket) {
        self.totals.merge(&other.totals);
        self.latency.merge(&other.latency);
    }

    /// The bucket of one entry.
    pub fn of(entry: &Entry) -> Bucket {
        let mut bucket = Bucket::default();
        bucket.add(entry);
        bucket
    }
}

/// Function and version names by number, as stored under `n` and `i`.
#[derive(Default)]
struct Names {
    function_numbers: HashMap<String, u32>,
    version_numbers: HashMap<String, u32>,
    functions: Vec<String>,
    versions: Vec<String>,
}

impl Names {
    fn parts(&mut self, kind: u8) -> (&mut HashMap<String, u32>, &mut Vec<String>) {
        if kind == FUNCTION_NAME {
            (&mut self.function_numbers, &mut self.functions)
        } else {
            (&mut self.version_numbers, &mut self.versions)
        }
    }

    fn get(&self, kind: u8, name: &str) -> Option<u32> {
        let numbers = if kind == FUNCTION_NAME {
            &self.function_numbers
        } else {
            &self.version_numbers
        };
        numbers.get(name).copied()
    }

    fn name(&self, kind: u8, number: u32) -> String {
        let list = if kind == FUNCTION_NAME {
            &self.functions
        } else {
            &self.versions
        };
        list.get(number as usize).cloned().unwrap_or_default()
    }
}

/// How far the index is: whether it is still replaying RESULTS up to the sequence the stream
/// was at when the feed started.
#[derive(Debug, Default)]
struct Progress {
    caught_up: AtomicBool,
    /// The stream's last sequence when the feed started.
    target: AtomicU64,
}

/// How many decoded buckets the feed keeps between batches (a function has two live ones: its
/// current minute and hour).
const RECENT_BUCKETS: usize = 1024;

/// The sled tree of the query index, and what it keeps in memory: the names, how far it is,
/// and how long it keeps what.
#[derive(Clone)]
pub struct QueryIndex {
    tree: sled::Tree,
    names: Arc<RwLock<Names>>,
    /// Held by whoever writes (the feed and the pruner), so a bucket is read and written back
    /// by one of them at a time.
    writing: Arc<Mutex<()>>,
    /// The buckets the feed wrote last, decoded: the next result of the same function and
    /// minute updates them without reading and decoding them again. Always what the tree
    /// holds: changed only after a batch is written, and emptied by whatever else writes
    /// buckets (the pruner, `clear`).
    recent: Arc<Mutex<HashMap<Vec<u8>, Bucket>>>,
    progress: Arc<Progress>,
    entry_retention_ms: Arc<AtomicU64>,
    bucket_retention_ms: Arc<AtomicU64>,
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, IndexError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| IndexError::Decode(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, IndexError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| IndexError::Decode(e.to_string()))
}

/// What a window is answered from: `(level, low, high)` with level `HOUR` or `MINUTE` for
/// buckets starting in `[low, high)`, or `ENTRY` for entries created in `[low, high)`.
fn plan(since: u64, until: u64) -> Vec<(u8, u64, u64)> {
    fn ceil(t: u64, span: u64) -> u64 {
        t.div_ceil(span).saturating_mul(span)
    }
    fn floor(t: u64, span: u64) -> u64 {
        t - t % span
    }
    fn minutes(a: u64, b: u64, out: &mut Vec<(u8, u64, u64)>) {
        if a >= b {
            return;
        }
        let (m0, m1) = (ceil(a, MINUTE_MS), floor(b, MINUTE_MS));
        if m0 < m1 {
            out.push((MINUTE, m0, m1));
            out.push((ENTRY, a, m0));
            out.push((ENTRY, m1, b));
        } else {
            out.push((ENTRY, a, b));
        }
    }
    let mut out = Vec::new();
    let (h0, h1) = (ceil(since, HOUR_MS), floor(until, HOUR_MS));
    if h0 < h1 {
        out.push((HOUR, h0, h1));
        minutes(since, h0, &mut out);
        minutes(h1, until, &mut out);
    } else {
        minutes(since, until, &mut out);
    }
    out.retain(|(_, low, high)| low < high);
    out
}

impl QueryIndex {
    /// The query tree of `db`; drops the trees of the earlier layout (RESULTS is then replayed).
    pub fn open(db: &sled::Db) -> Result<QueryIndex, IndexError> {
        let existing = db.tree_names();
        for old in OLD_TREES {
            if existing.iter().any(|n| n.as_ref() == old.as_bytes()) {
                db.drop_tree(old)?;
                tracing::info!(
                    message = "dropped a query index tree of the earlier layout; RESULTS is replayed into the compact one",
                    tree = old
                );
            }
        }
        let index = QueryIndex {
            tree: db.open_tree(TREE)?,
            names: Arc::default(),
            writing: Arc::default(),
            recent: Arc::default(),
            progress: Arc::default(),
            entry_retention_ms: Arc::new(AtomicU64::new(DEFAULT_ENTRY_RETENTION_MS)),
            bucket_retention_ms: Arc::new(AtomicU64::new(DEFAULT_BUCKET_RETENTION_MS)),
        };
        index.load_names()?;
        Ok(index)
    }

    /// Sets how long entries (and minute buckets) and hour buckets are kept, in ms.
    pub fn set_retention(&self, entries_ms: u64, buckets_ms: u64) {
        self.entry_retention_ms.store(entries_ms, Ordering::Relaxed);
        self.bucket_retention_ms
            .store(buckets_ms.max(entries_ms), Ordering::Relaxed);
    }

    fn load_names(&self) -> Result<(), IndexError> {
        let mut names = Names::default();
        for item in self.tree.scan_prefix([NAME_OF]) {
            let (key, value) = item?;
            let (Some(&kind), Some(number)) = (key.get(1), key.get(2..6)) else {
                continue;
            };
            let number = u32::from_be_bytes(number.try_into().unwrap_or_default());
            let name = String::from_utf8_lossy(&value).into_owned();
            let (numbers, list) = names.parts(kind);
            if list.len() <= number as usize {
                list.resize(number as usize + 1, String::new());
            }
            list[number as usize] = name.clone();
            numbers.insert(name, number);
        }
        *self.names.write().expect("names lock") = names;
        Ok(())
    }

    /// The number of `name`, adding it (to memory and to `batch`) when it is new.
    fn number(&self, kind: u8, name: &str, batch: &mut sled::Batch) -> u32 {
        if let Some(n) = self.names.read().expect("names lock").get(kind, name) {
            return n;
        }
        let mut names = self.names.write().expect("names lock");
        if let Some(n) = names.get(kind, name) {
            return n;
        }
        let (numbers, list) = names.parts(kind);
        let number = list.len() as u32;
        list.push(name.to_string());
        numbers.insert(name.to_string(), number);
        batch.insert(
            prefixed(&[NAME, kind], name.as_bytes()),
            &number.to_be_bytes(),
        );
        batch.insert(
            prefixed(&[NAME_OF, kind], &number.to_be_bytes()),
            name.as_bytes(),
        );
        number
    }

    fn function_number(&self, function: &str) -> Option<u32> {
        self.names
            .read()
            .expect("names lock")
            .get(FUNCTION_NAME, function)
    }

    fn compact(&self, entry: &Entry, batch: &mut sled::Batch) -> Compact {
        Compact {
            function: self.number(FUNCTION_NAME, &entry.function, batch),
            version: self.number(VERSION_NAME, &entry.version, batch),
            status: status_code(entry.status),
            error_kind: entry
                .error_kind
                .as_deref()
                .and_then(ErrorKind::parse)
                .and_then(|k| ERROR_KINDS.iter().position(|e| *e == k))
                .map_or(0, |i| i as u8 + 1),
            attempts: entry.attempts,
            finished_after_ms: entry.finished_at_ms as i64 - entry.created_at_ms as i64,
            duration_us: entry.duration_us,
            wall_us_total: entry.wall_us_total,
            cpu_us_total: entry.cpu_us_total,
            last_sequence: entry.last_sequence,
            kv_ops_total: entry.kv_ops_total,
            kv_bytes_total: entry.kv_bytes_total,
        }
    }

    fn expand(&self, created_at_ms: u64, compact: &Compact) -> Entry {
        let names = self.names.read().expect("names lock");
        Entry {
            function: names.name(FUNCTION_NAME, compact.function),
            version: names.name(VERSION_NAME, compact.version),
            status: STATUSES
                .get(usize::from(compact.status))
                .copied()
                .unwrap_or(InvocationStatus::Queued),
            error_kind: compact
                .error_kind
                .checked_sub(1)
                .and_then(|i| ERROR_KINDS.get(usize::from(i)))
                .map(|k| k.as_str().to_string()),
            attempts: compact.attempts,
            created_at_ms,
            finished_at_ms: (created_at_ms as i64 + compact.finished_after_ms).max(0) as u64,
            duration_us: compact.duration_us,
            wall_us_total: compact.wall_us_total,
            cpu_us_total: compact.cpu_us_total,
            last_sequence: compact.last_sequence,
            kv_ops_total: compact.kv_ops_total,
            kv_bytes_total: compact.kv_bytes_total,
        }
    }

    /// Forgets everything, so the next indexer run replays RESULTS from its start.
    pub fn clear(&self) -> Result<(), IndexError> {
        let _writing = self.writing.lock().expect("index write lock");
        self.recent.lock().expect("bucket cache lock").clear();
        self.tree.clear()?;
        *self.names.write().expect("names lock") = Names::default();
        self.progress.caught_up.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The RESULTS sequence applied last (0 when empty).
    pub fn sequence(&self) -> Result<u64, IndexError> {
        Ok(self
            .tree
            .get(SEQUENCE_KEY)?
            .map(|v| be_u64(&v))
            .unwrap_or(0))
    }

    /// The feed starts with RESULTS at `last_in_stream`: until it has applied that far, the
    /// index is catching up.
    pub fn start_catch_up(&self, applied: u64, last_in_stream: u64) {
        self.progress
            .target
            .store(last_in_stream, Ordering::Relaxed);
        self.progressed(applied);
    }

    /// The feed has seen RESULTS up to `sequence`.
    pub fn progressed(&self, sequence: u64) {
        if sequence >= self.progress.target.load(Ordering::Relaxed) {
            self.progress.caught_up.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the index is still replaying RESULTS (or its feed has not started yet), so
    /// answers may be partial.
    pub fn catching_up(&self) -> bool {
        !self.progress.caught_up.load(Ordering::Relaxed)
    }

    /// Applies the result at `sequence`. Returns whether the entry changed.
    pub fn apply(&self, sequence: u64, meta: &ResultMeta) -> Result<bool, IndexError> {
        Ok(self.apply_all(&[(sequence, meta.clone())])? == 1)
    }

    /// Applies results in stream order (what the indexer does with whatever arrived together)
    /// in one atomic sled batch: each touched entry and bucket written once, with the applied
    /// sequence. Returns how many entries changed.
    pub fn apply_all(&self, results: &[(u64, ResultMeta)]) -> Result<usize, IndexError> {
        let _writing = self.writing.lock().expect("index write lock");
        let applied = self.apply_locked(results);
        if applied.is_err() {
            // Names given numbers in a batch that was not written are forgotten again.
            self.load_names()?;
        }
        applied
    }

    fn apply_locked(&self, results: &[(u64, ResultMeta)]) -> Result<usize, IndexError> {
        let Some((last_sequence, _)) = results.last() else {
            return Ok(0);
        };
        let mut batch = sled::Batch::default();
        // Entries and buckets as of this batch, so an invocation's retries within it
        // accumulate and each is written once.
        let mut latest: HashMap<Vec<u8>, Entry> = HashMap::new();
        let mut buckets: HashMap<Vec<u8>, Bucket> = HashMap::new();
        let mut recent = self.recent.lock().expect("bucket cache lock");
        let mut changed = 0;
        for (sequence, meta) in results {
            let key = sort_key(meta.created_at_ms, &meta.invocation_id);
            let previous = match latest.get(&key) {
                Some(entry) => Some(entry.clone()),
                None => self.entry_at(&key)?,
            };
            let Some(entry) = Entry::apply(previous.as_ref(), *sequence, meta) else {
                continue;
            };
            let function = self.number(FUNCTION_NAME, &entry.function, &mut batch);
            let before = previous
                .as_ref()
                .map(|p| (self.number(FUNCTION_NAME, &p.function, &mut batch), p));
            for level in [MINUTE, HOUR] {
                if let Some((number, previous)) = before {
                    self.bucket_mut(
                        &mut buckets,
                        &mut recent,
                        bucket_key(level, number, previous.created_at_ms),
                    )?
                    .remove(previous);
                }
                self.bucket_mut(
                    &mut buckets,
                    &mut recent,
                    bucket_key(level, function, entry.created_at_ms),
                )?
                .add(&entry);
            }
            if previous.is_none() {
                batch.insert(
                    prefixed(&function_prefix(BY_FUNCTION, function), &key),
                    &[][..],
                );
            }
            latest.insert(key, entry);
            changed += 1;
        }
        for (key, entry) in &latest {
            let compact = self.compact(entry, &mut batch);
            batch.insert(prefixed(&[ENTRY], key), encode(&compact)?);
        }
        for (key, bucket) in &buckets {
            if bucket.totals.invocations == 0 {
                batch.remove(key.as_slice());
            } else {
                batch.insert(key.as_slice(), encode(bucket)?);
            }
        }
        // Messages arrive in stream order (one ordered consumer), so this only moves forward.
        batch.insert(SEQUENCE_KEY, &last_sequence.to_be_bytes());
        // Taken out of `recent` above: on an error they are simply not put back.
        self.tree.apply_batch(batch)?;
        if recent.len() + buckets.len() > RECENT_BUCKETS {
            recent.clear();
        }
        recent.extend(
            buckets
                .into_iter()
                .filter(|(_, bucket)| bucket.totals.invocations > 0),
        );
        Ok(changed)
    }

    fn bucket_mut<'a>(
        &self,
        buckets: &'a mut HashMap<Vec<u8>, Bucket>,
        recent: &mut HashMap<Vec<u8>, Bucket>,
        key: Vec<u8>,
    ) -> Result<&'a mut Bucket, IndexError> {
        use std::collections::hash_map::Entry as Slot;
        Ok(match buckets.entry(key) {
            Slot::Occupied(slot) => slot.into_mut(),
            Slot::Vacant(slot) => {
                let stored = match recent.remove(slot.key()) {
                    Some(bucket) => bucket,
                    None => match self.tree.get(slot.key())? {
                        Some(bytes) => decode(&bytes)?,
                        None => Bucket::default(),
                    },
                };
                slot.insert(stored)
            }
        })
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.tree.flush()?;
        Ok(())
    }

    /// The entry at sort key `key`.
    fn entry_at(&self, key: &[u8]) -> Result<Option<Entry>, IndexError> {
        match self.tree.get(prefixed(&[ENTRY], key))? {
            Some(bytes) => Ok(Some(self.expand(be_u64(key), &decode(&bytes)?))),
            None => Ok(None),
        }
    }

    /// The entry of invocation `id` created at `created_at_ms`.
    pub fn entry(&self, created_at_ms: u64, id: &str) -> Result<Option<Entry>, IndexError> {
        self.entry_at(&sort_key(created_at_ms, id))
    }

    /// Visits entries created in `[since, until)` (optionally of one function) newest first,
    /// starting below `before` (a sort key), until `visit` returns false.
    fn scan(
        &self,
        function: Option<&str>,
        since_ms: u64,
        until_ms: u64,
        before: Option<&[u8]>,
        visit: impl FnMut(&[u8], Entry) -> bool,
    ) -> Result<(), IndexError> {
        let prefix = match function {
            None => vec![ENTRY],
            Some(name) => match self.function_number(name) {
                Some(number) => function_prefix(BY_FUNCTION, number).to_vec(),
                None => return Ok(()),
            },
        };
        self.scan_prefix(&prefix, since_ms, until_ms, before, visit)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        since_ms: u64,
        until_ms: u64,
        before: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], Entry) -> bool,
    ) -> Result<(), IndexError> {
        let low = prefixed(prefix, &since_ms.to_be_bytes());
        let mut high = prefixed(prefix, &until_ms.to_be_bytes());
        if until_ms == u64::MAX {
            // Past every key of the prefix (an id follows the time).
            high.push(0xff);
        }
        if let Some(before) = before {
            let before = prefixed(prefix, before);
            if before < high {
                high = before;
            }
        }
        if low >= high {
            return Ok(());
        }
        let secondary = prefix[0] == BY_FUNCTION;
        for item in self.tree.range(low..high).rev() {
            let (key, value) = item?;
            let sort_key = &key[prefix.len()..];
            let entry = if secondary {
                // An entry may be missing after pruning raced a page; skip it.
                match self.entry_at(sort_key)? {
                    Some(entry) => entry,
                    None => continue,
                }
            } else {
                self.expand(be_u64(sort_key), &decode(&value)?)
            };
            if !visit(sort_key, entry) {
                break;
            }
        }
        Ok(())
    }

    /// One page of invocations matching `filter`, newest first, with their ids.
    pub fn list(
        &self,
        filter: &Filter,
        limit: usize,
        cursor: Option<&[u8]>,
    ) -> Result<Page, IndexError> {
        let mut items = Vec::new();
        let mut last_key = None;
        self.scan(
            filter.function.as_deref(),
            filter.since_ms.unwrap_or(0),
            filter.until_ms.unwrap_or(u64::MAX),
            cursor,
            |key, entry| {
                if filter.status.is_none_or(|s| s == entry.status) {
                    items.push((id_of(&key[8..]), entry));
                    last_key = Some(key.to_vec());
                }
                items.len() < limit
            },
        )?;
        let next_cursor = if items.len() == limit {
            last_key.as_deref().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Every entry created in `[since, until)`, optionally of one function, newest first.
    pub fn collect(
        &self,
        function: Option<&str>,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<Entry>, IndexError> {
        let mut out = Vec::new();
        self.scan(function, since_ms, until_ms, None, |_, entry| {
            out.push(entry);
            true
        })?;
        Ok(out)
    }

    /// Visits what the invocations created in `[since, until)` of `function` add up to, as
    /// (start of the bucket or creation time, function number, bucket): whole hours from hour
    /// buckets, whole minutes from minute buckets, the rest from entries. With `sketches`
    /// false, buckets are read without their latency sketch. Where the window reaches past
    /// the entries' retention it is widened to whole hours, which the hour buckets still hold.
    fn gather(
        &self,
        function: u32,
        since_ms: u64,
        until_ms: u64,
        sketches: bool,
        now_ms: u64,
        mut visit: impl FnMut(u64, &Bucket),
    ) -> Result<(), IndexError> {
        let kept_from = now_ms.saturating_sub(self.entry_retention_ms.load(Ordering::Relaxed));
        let since = if since_ms < kept_from {
            since_ms - since_ms % HOUR_MS
        } else {
            since_ms
        };
        let until = if until_ms < kept_from {
            until_ms.div_ceil(HOUR_MS).saturating_mul(HOUR_MS)
        } else {
            until_ms
        };
        for (level, low, high) in plan(since, until) {
            if level == ENTRY {
                let prefix = function_prefix(BY_FUNCTION, function);
                self.scan_prefix(&prefix, low, high, None, |_, entry| {
                    visit(entry.created_at_ms, &Bucket::of(&entry));
                    true
                })?;
                continue;
            }
            let prefix = function_prefix(level, function);
            let low = prefixed(&prefix, &low.to_be_bytes());
            let high = prefixed(&prefix, &high.to_be_bytes());
            for item in self.tree.range(low..high) {
                let (key, value) = item?;
                let start = be_u64(&key[prefix.len()..]);
                let bucket = if sketches {
                    decode(&value)?
                } else {
                    Bucket {
                        totals: decode(&value)?,
                        latency: Sketch::default(),
                    }
                };
                visit(start, &bucket);
            }
        }
        Ok(())
    }

    /// Stats of `function`'s invocations created in `[since, until)`.
    pub fn stats(
        &self,
        function: &str,
        since_ms: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> Result<Stats, IndexError> {
        let mut total = Bucket::default();
        if let Some(number) = self.function_number(function) {
            self.gather(number, since_ms, until_ms, true, now_ms, |_, b| {
                total.merge(b)
            })?;
        }
        Ok(stats(&total))
    }

    /// Usage of the invocations created in `[since, until)`, grouped by function name or by
    /// hour (the hour's start in Unix ms).
    /// `memory_mb` names each function's memory, for GB-seconds.
    pub fn usage(
        &self,
        since_ms: u64,
        until_ms: u64,
        group_by: GroupBy,
        now_ms: u64,
        memory_mb: &dyn Fn(&str) -> u32,
    ) -> Result<BTreeMap<GroupKey, Usage>, IndexError> {
        let functions = self.names.read().expect("names lock").functions.clone();
        let mut groups: BTreeMap<GroupKey, (Totals, f64)> = BTreeMap::new();
        for (number, name) in functions.iter().enumerate() {
            let gb = f64::from(memory_mb(name)) / 1024.0;
            self.gather(number as u32, since_ms, until_ms, false, now_ms, |t, b| {
                let key = match group_by {
                    GroupBy::Function => GroupKey::Function(name.clone()),
                    GroupBy::Hour => GroupKey::Hour(t - t % HOUR_MS),
                };
                let (totals, gb_s) = groups.entry(key).or_default();
                totals.merge(&b.totals);
                *gb_s += gb * b.totals.wall_us as f64 / 1e6;
            })?;
        }
        Ok(groups
            .into_iter()
            .filter(|(_, (t, _))| t.invocations > 0)
            .map(|(k, (t, gb_s))| {
                (
                    k,
                    Usage {
                        gb_s,
                        ..Usage::of(&t)
                    },
                )
            })
            .collect())
    }

    /// Forgets, at most `limit` keys at a time, entries and minute buckets older than the
    /// entries' retention and hour buckets older than the buckets'. Returns how many keys were
    /// removed: less than `limit` when nothing older is left.
    pub fn prune_step(&self, now_ms: u64, limit: usize) -> Result<usize, IndexError> {
        let entries_before = now_ms.saturating_sub(self.entry_retention_ms.load(Ordering::Relaxed));
        let hours_before = now_ms.saturating_sub(self.bucket_retention_ms.load(Ordering::Relaxed));
        let _writing = self.writing.lock().expect("index write lock");
        // Buckets removed below must not live on in the feed's cache.
        self.recent.lock().expect("bucket cache lock").clear();
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        let high = prefixed(&[ENTRY], &entries_before.to_be_bytes());
        for item in self.tree.range(vec![ENTRY]..high).take(limit) {
            let (key, value) = item?;
            let compact: Compact = decode(&value)?;
            batch.remove(prefixed(
                &function_prefix(BY_FUNCTION, compact.function),
                &key[1..],
            ));
            batch.remove(key);
            removed += 1;
        }
        let functions = self.names.read().expect("names lock").functions.len() as u32;
        for (level, span, before) in [
            (MINUTE, MINUTE_MS, entries_before),
            (HOUR, HOUR_MS, hours_before),
        ] {
            // A bucket goes once all of it is older than the cut.
            let before = before.saturating_sub(span - 1);
            for number in 0..functions {
                let prefix = function_prefix(level, number);
                let high = prefixed(&prefix, &before.to_be_bytes());
                for item in self
                    .tree
                    .range(prefix.to_vec()..high)
                    .take(limit.saturating_sub(removed))
                {
                    batch.remove(item?.0);
                    removed += 1;
                }
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(removed)
    }
}

/// A function's numbers over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Invocations with a terminal status.
    pub count: u64,
    pub succeeded: u64,
    /// Failed, timed out or dead-lettered (not cancelled).
    pub errors: u64,
    /// `errors / count`, 0 when there are none.
    pub error_rate: f64,
    /// Invocations still retrying.
    pub in_progress: u64,
    /// Latest-attempt wall time percentiles of terminal invocations, in ms (nearest rank,
    /// from the buckets' sketches: within 1% of the exact value).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Stats of the invocations `bucket` adds up.
pub fn stats(bucket: &Bucket) -> Stats {
    let t = &bucket.totals;
    let terminal: u64 = STATUSES
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| t.count(*s))
        .sum();
    let succeeded = t.count(InvocationStatus::Succeeded);
    let errors: u64 = STATUSES
        .iter()
        .filter(|s| s.is_error())
        .map(|s| t.count(*s))
        .sum();
    let ms = |p| bucket.latency.percentile(p).map(|us| us / 1000.0);
    Stats {
        count: terminal,
        succeeded,
        errors,
        error_rate: if terminal == 0 {
            0.0
        } else {
            errors as f64 / terminal as f64
        },
        in_progress: t.invocations - terminal,
        p50_ms: ms(50.0),
        p95_ms: ms(95.0),
        p99_ms: ms(99.0),
    }
}

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Function,
    /// The hour the invocation was created in (UTC).
    Hour,
}

/// Metered totals of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub invocations: u64,
    pub attempts: u64,
    pub cpu_ms: f64,
    pub wall_ms: f64,
    /// `memory_mb` / 1024 times the wall time in seconds.
    pub gb_s: f64,
    pub kv_ops: u64,
    pub kv_bytes: u64,
}

impl Usage {
    /// The usage of `totals`.
    pub fn of(totals: &Totals) -> Usage {
        Usage {
            invocations: totals.invocations,
            attempts: totals.attempts,
            cpu_ms: totals.cpu_us as f64 / 1000.0,
            wall_ms: totals.wall_us as f64 / 1000.0,
            gb_s: 0.0,
            kv_ops: totals.kv_ops,
            kv_bytes: totals.kv_bytes,
        }
    }
}

/// A usage group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    Function(String),
    /// Start of the hour, Unix ms.
    Hour(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_broker::ErrorKind;

    fn meta(id: &str, function: &str, status: InvocationStatus, created: u64) -> ResultMeta {
        ResultMeta {
            invocation_id: id.into(),
            function: function.into(),
            version: "sha256:00".into(),
            status,
            attempt: 1,
            error_kind: (status != InvocationStatus::Succeeded).then_some(ErrorKind::Error),
            created_at_ms: created,
            started_at_ms: created,
            finished_at_ms: created + 5,
            duration_us: 2000,
            cpu_us: 1500,
            kv_ops: 0,
            kv_bytes: 0,
            logs: vec![],
            worker: String::new(),
            trace_id: String::new(),
        }
    }

    fn index() -> (tempfile::TempDir, QueryIndex) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, QueryIndex::open(&db).unwrap())
    }

    #[test]
    fn a_compact_entry_and_its_keys_stay_far_below_200_bytes() {
        let (_dir, index) = index();
        let id = "0193a5c2-2222-7000-8000-000000000001";
        let mut m = meta(
            id,
            "thumbnail-resizer",
            InvocationStatus::Failed,
            1_764_000_000_000,
        );
        m.version = format!("sha256:{}", "ab".repeat(32));
        m.attempt = 3;
        m.duration_us = 1_234_567;
        m.cpu_us = 987_654;
        m.kv_ops = 12;
        m.kv_bytes = 4096;
        m.error_kind = Some(ErrorKind::Timeout);
        index.apply(123_456_789, &m).unwrap();
        let key = sort_key(m.created_at_ms, id);
        assert_eq!(key.len(), 8 + 17, "a UUID is kept as its 16 bytes");
        let value = index.tree.get(prefixed(&[ENTRY], &key)).unwrap().unwrap();
        // Entry key and value, and the function's secondary key (no value).
        let stored = (1 + key.len()) + value.len() + (5 + key.len());
        assert!(
            stored <= 100,
            "{stored} bytes per invocation before sled's own overhead"
        );
        let entry = index.entry(m.created_at_ms, id).unwrap().unwrap();
        assert_eq!(entry, Entry::apply(None, 123_456_789, &m).unwrap());
        assert_eq!(entry.error_kind.as_deref(), Some("timeout"));
        assert_eq!((entry.kv_ops_total, entry.kv_bytes_total), (12, 4096));
        // Ids that are not lowercase UUIDs are kept as they are.
        for other in ["job-7", "0193A5C2-2222-7000-8000-000000000001", ""] {
            assert_eq!(id_of(&id_key(other)), other);
        }
        assert_eq!(id_of(&id_key(id)), id);
    }

    #[test]
    fn the_earlier_layout_is_dropped_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("query_entries")
            .unwrap()
            .insert("a", "b")
            .unwrap();
        db.open_tree("query_meta")
            .unwrap()
            .insert("results_sequence", &7u64.to_be_bytes())
            .unwrap();
        let index = QueryIndex::open(&db).unwrap();
        assert_eq!(index.sequence().unwrap(), 0, "RESULTS is replayed");
        assert!(!db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"query_entries"));
    }

    #[test]
    fn retries_accumulate_metered_time_and_replays_change_nothing() {
        let mut m = meta("a", "f", InvocationStatus::Retrying, 10);
        let first = Entry::apply(None, 1, &m).unwrap();
        m.status = InvocationStatus::Succeeded;
        m.attempt = 2;
        let second = Entry::apply(Some(&first), 2, &m).unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(second.cpu_us_total, 3000);
        assert_eq!(second.wall_us_total, 4000);
        assert_eq!(second.status, InvocationStatus::Succeeded);
        assert!(Entry::apply(Some(&second), 2, &m).is_none());
        assert!(Entry::apply(Some(&second), 1, &m).is_none());
    }

    #[test]
    fn a_batch_applies_like_one_result_at_a_time() {
        let (_d1, one) = index();
        let (_d2, all) = index();
        let mut retry = meta("a", "f", InvocationStatus::Retrying, 10);
        retry.duration_us = 100;
        let mut done = meta("a", "f", InvocationStatus::Succeeded, 10);
        done.attempt = 2;
        done.duration_us = 50;
        let results = vec![
            (1, retry),
            (2, meta("b", "g", InvocationStatus::Failed, 20)),
            (3, done),
        ];
        for (sequence, m) in &results {
            one.apply(*sequence, m).unwrap();
        }
        assert_eq!(all.apply_all(&results).unwrap(), 3);
        // A replay of the same batch changes nothing.
        assert_eq!(all.apply_all(&results).unwrap(), 0);
        for (id, created) in [("a", 10), ("b", 20)] {
            assert_eq!(
                all.entry(created, id).unwrap(),
                one.entry(created, id).unwrap()
            );
        }
        let a = all.entry(10, "a").unwrap().unwrap();
        assert_eq!((a.attempts, a.wall_us_total), (2, 150));
        assert_eq!(all.sequence().unwrap(), 3);
        let filter = Filter::default();
        assert_eq!(
            all.list(&filter, 10, None).unwrap().items,
            one.list(&filter, 10, None).unwrap().items
        );
        let f = all.stats("f", 0, u64::MAX, 100).unwrap();
        assert_eq!((f.count, f.succeeded, f.in_progress), (1, 1, 0));
    }

    #[test]
    fn pages_are_newest_first_and_cover_everything_once() {
        let (_dir, index) = index();
        for i in 0..25u64 {
            let f = if i % 2 == 0 { "even" } else { "odd" };
            index
                .apply(
                    i + 1,
                    &meta(
                        &format!("id{i:02}"),
                        f,
                        InvocationStatus::Succeeded,
                        100 + i,
                    ),
                )
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = index
                .list(&Filter::default(), 10, cursor.as_deref())
                .unwrap();
            seen.extend(page.items.iter().map(|(id, _)| id.clone()));
            match page.next_cursor {
                Some(c) => cursor = decode_cursor(&c),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("id{i:02}")).collect();
        assert_eq!(seen, expected);
        let odd = index
            .list(
                &Filter {
                    function: Some("odd".into()),
                    since_ms: Some(110),
                    until_ms: Some(120),
                    ..Filter::default()
                },
                100,
                None,
            )
            .unwrap();
        let ids: Vec<_> = odd.items.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["id19", "id17", "id15", "id13", "id11"]);
        assert!(odd.next_cursor.is_none());
        assert_eq!(index.sequence().unwrap(), 25);
    }

    #[test]
    fn pruning_follows_the_entries_retention_and_keeps_hour_buckets_longer() {
        let (_dir, index) = index();
        let day = 24 * HOUR_MS;
        let now = 40 * day;
        index.set_retention(day, 30 * day);
        // One invocation 2 days old, one 35 days old, one an hour old.
        let times = [now - 2 * day, now - 35 * day, now - HOUR_MS];
        for (i, created) in times.iter().enumerate() {
            index
                .apply(
                    i as u64 + 1,
                    &meta(&format!("i{i}"), "f", InvocationStatus::Failed, *created),
                )
                .unwrap();
        }
        // Small steps: the pruner keeps going until a step removes less than its limit.
        let mut removed = 0;
        loop {
            let step = index.prune_step(now, 2).unwrap();
            removed += step;
            if step < 2 {
                break;
            }
        }
        // Two entries with their secondary keys, two minute buckets, one hour bucket.
        assert_eq!(removed, 2 + 2 + 1);
        let listed = index.list(&Filter::default(), 10, None).unwrap().items;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "i2");
        assert_eq!(index.collect(Some("f"), 0, u64::MAX).unwrap().len(), 1);
        // Usage over the last week still counts the 2-day-old one, from its hour bucket.
        let week = index
            .usage(now - 7 * day, u64::MAX, GroupBy::Function, now, &|_| 1024)
            .unwrap();
        assert_eq!(week[&GroupKey::Function("f".into())].invocations, 2);
        let all = index
            .usage(0, u64::MAX, GroupBy::Hour, now, &|_| 1024)
            .unwrap();
        assert_eq!(all.values().map(|u| u.invocations).sum::<u64>(), 2);
        let stats = index.stats("f", now - 3 * day, now, now).unwrap();
        assert_eq!((stats.count, stats.errors), (2, 2));
        assert_eq!(index.prune_step(now, 100).unwrap(), 0);
    }

    #[test]
    fn stats_use_nearest_rank_percentiles_over_terminal_invocations() {
        let (_dir, index) = index();
        for i in 1..=100u64 {
            let status = if i <= 10 {
                InvocationStatus::Failed
            } else {
                InvocationStatus::Succeeded
            };
            let mut m = meta(&format!("x{i}"), "f", status, 1000 + i * 7_000);
            m.duration_us = i * 1000;
            index.apply(i, &m).unwrap();
        }
        index
            .apply(101, &meta("r", "f", InvocationStatus::Retrying, 5000))
            .unwrap();
        let s = index.stats("f", 0, u64::MAX, 2_000_000).unwrap();
        assert_eq!(
            (s.count, s.succeeded, s.errors, s.in_progress),
            (100, 90, 10, 1)
        );
        assert_eq!(s.error_rate, 0.1);
        for (got, exact) in [(s.p50_ms, 50.0), (s.p95_ms, 95.0), (s.p99_ms, 99.0)] {
            let got = got.unwrap();
            assert!((got - exact).abs() / exact <= 0.01, "{got} vs {exact}");
        }
        assert_eq!(index.stats("nobody", 0, u64::MAX, 0).unwrap().p50_ms, None);
        // A window that cuts minutes and hours answers exactly what it covers.
        let part = index
            .stats("f", 1000 + 7_000, 1000 + 50 * 7_000 + 1, 2_000_000)
            .unwrap();
        assert_eq!(part.count + part.in_progress, 50, "{part:?}");
    }

    #[test]
    fn usage_groups_by_function_and_by_hour() {
        let (_dir, index) = index();
        index
            .apply(1, &meta("x", "a", InvocationStatus::Succeeded, 1000))
            .unwrap();
        index
            .apply(2, &meta("y", "b", InvocationStatus::Succeeded, 3_600_500))
            .unwrap();
        index
            .apply(3, &meta("z", "a", InvocationStatus::Succeeded, 3_601_000))
            .unwrap();
        let now = 4_000_000;
        let by_fn = index
            .usage(0, u64::MAX, GroupBy::Function, now, &|_| 1024)
            .unwrap();
        assert_eq!(by_fn[&GroupKey::Function("a".into())].invocations, 2);
        assert_eq!(by_fn[&GroupKey::Function("a".into())].cpu_ms, 3.0);
        let by_hour = index
            .usage(0, u64::MAX, GroupBy::Hour, now, &|_| 1024)
            .unwrap();
        assert_eq!(by_hour[&GroupKey::Hour(0)].invocations, 1);
        assert_eq!(by_hour[&GroupKey::Hour(3_600_000)].wall_ms, 4.0);
        // 1 GiB for each function: GB-seconds are the wall seconds.
        let a = &by_fn[&GroupKey::Function("a".into())];
        assert!((a.gb_s - a.wall_ms / 1000.0).abs() < 1e-12, "{a:?}");
        let half = index
            .usage(0, u64::MAX, GroupBy::Function, now, &|_| 512)
            .unwrap();
        let a_half = &half[&GroupKey::Function("a".into())];
        assert!((a_half.gb_s - a.gb_s / 2.0).abs() < 1e-12, "{a_half:?}");
    }

    /// A few thousand results over three functions and several hours, with retries that
    /// finish in a later message, in stream order.
    fn history() -> Vec<(u64, ResultMeta)> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for i in 0..3000u64 {
            let r = rand();
            let created = 7 * HOUR_MS + i * 9_777 + r % 5000;
            let function = ["a", "b", "c"][(r % 3) as usize];
            let id = format!("{:08x}-0000-7000-8000-{:012x}", i, r & 0xffff_ffff_ffff);
            let mut m = meta(&id, function, InvocationStatus::Succeeded, created);
            m.duration_us = 100 + (r >> 20) % 50_000;
            m.cpu_us = m.duration_us / 2;
            m.kv_ops = r % 3;
            m.kv_bytes = r % 300;
            if r.is_multiple_of(5) {
                m.status = InvocationStatus::Retrying;
                m.error_kind = Some(ErrorKind::Retry);
                let mut last = m.clone();
                last.attempt = 2;
                last.status = if r % 2 == 0 {
                    InvocationStatus::Succeeded
                } else {
                    InvocationStatus::TimedOut
                };
                last.error_kind =
                    (last.status != InvocationStatus::Succeeded).then_some(ErrorKind::Timeout);
                last.duration_us += 777;
                pending.push(last);
            }
            out.push(m);
            if r.is_multiple_of(7) {
                out.append(&mut pending);
            }
        }
        out.append(&mut pending);
        out.into_iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m))
            .collect()
    }

    fn pages(index: &QueryIndex, filter: &Filter) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = index.list(filter, 97, cursor.as_deref()).unwrap();
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = decode_cursor(&c),
                None => return out,
            }
        }
    }

    #[test]
    fn a_rebuilt_index_answers_like_the_incrementally_built_one() {
        let results = history();
        let (_d1, incremental) = index();
        let (_d2, rebuilt) = index();
        // Incrementally: small batches of varying size, as results trickle in, with one
        // batch delivered twice (a feed restarted from an older sequence).
        let mut at = 0;
        let mut size = 1;
        while at < results.len() {
            let end = (at + size).min(results.len());
            incremental.apply_all(&results[at..end]).unwrap();
            if size == 3 {
                incremental.apply_all(&results[at..end]).unwrap();
            }
            at = end;
            size = size % 13 + 1;
        }
        // Rebuilt: the replay in batches as large as the feed takes them.
        for chunk in results.chunks(4096) {
            rebuilt.apply_all(chunk).unwrap();
        }
        let now = 20 * HOUR_MS;
        assert_eq!(incremental.sequence().unwrap(), rebuilt.sequence().unwrap());
        for filter in [
            Filter::default(),
            Filter {
                function: Some("b".into()),
                status: Some(InvocationStatus::TimedOut),
                ..Filter::default()
            },
        ] {
            assert_eq!(pages(&incremental, &filter), pages(&rebuilt, &filter));
        }
        let windows = [
            (0, u64::MAX),
            (7 * HOUR_MS + 123_457, 12 * HOUR_MS + 59_999),
            (8 * HOUR_MS, 9 * HOUR_MS),
            (9 * HOUR_MS + 30_001, 9 * HOUR_MS + 30_002 + 45_000),
        ];
        for (since, until) in windows {
            for function in ["a", "b", "c"] {
                let one = incremental.stats(function, since, until, now).unwrap();
                assert_eq!(one, rebuilt.stats(function, since, until, now).unwrap());
                // And both agree with the entries themselves.
                let entries = incremental.collect(Some(function), since, until).unwrap();
                let mut exact = Bucket::default();
                for entry in &entries {
                    exact.add(entry);
                }
                let exact = stats(&exact);
                assert_eq!(
                    (one.count, one.succeeded, one.errors, one.in_progress),
                    (
                        exact.count,
                        exact.succeeded,
                        exact.errors,
                        exact.in_progress
                    ),
                    "{function} in [{since}, {until})"
                );
                let mut durations: Vec<u64> = entries
                    .iter()
                    .filter(|e| e.status.is_terminal())
                    .map(|e| e.duration_us)
                    .collect();
                durations.sort_unstable();
                if let Some(p99) = one.p99_ms {
                    let rank = ((0.99 * durations.len() as f64).ceil() as usize).max(1);
                    let exact = durations[rank - 1] as f64 / 1000.0;
                    assert!((p99 - exact).abs() / exact <= 0.01, "{p99} vs {exact}");
                }
            }
            for group_by in [GroupBy::Function, GroupBy::Hour] {
                let one = incremental
                    .usage(since, until, group_by, now, &|_| 256)
                    .unwrap();
                assert_eq!(
                    one,
                    rebuilt
                        .usage(since, until, group_by, now, &|_| 256)
                        .unwrap()
                );
                let entries = incremental.collect(None, since, until).unwrap();
                let total: u64 = one.values().map(|u| u.invocations).sum();
                assert_eq!(total, entries.len() as u64);
                let attempts: u64 = one.values().map(|u| u.attempts).sum();
                assert_eq!(
                    attempts,
                    entries.iter().map(|e| u64::from(e.attempts)).sum::<u64>()
                );
            }
        }
    }

    #[test]
    fn the_index_is_catching_up_until_the_feed_reaches_the_stream() {
        let (_dir, index) = index();
        assert!(index.catching_up(), "nothing known before the feed starts");
        index.start_catch_up(3, 10);
        assert!(index.catching_up());
        index.progressed(9);
        assert!(index.catching_up());
        index.progressed(10);
        assert!(!index.catching_up());
        index.clear().unwrap();
        assert!(index.catching_up(), "a cleared index replays RESULTS");
        index.start_catch_up(0, 0);
        assert!(
            !index.catching_up(),
            "an empty stream has nothing to catch up on"
        );
    }
}
