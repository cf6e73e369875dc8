//! The query index: every invocation RESULTS reports, kept in sled by creation time for
//! listing, per-function stats and usage.
//!
//! Invariants: the index is only a view of RESULTS and can be rebuilt from it; applying a
//! result message twice changes nothing (each entry remembers the last stream sequence it
//! saw); an invocation's sort key (creation time, id) never changes, so pages are stable.

use serde::{Deserialize, Serialize};
use squall_broker::{InvocationStatus, ResultMeta};
use std::collections::{BTreeMap, HashMap};

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

/// The stream sequence of the last RESULTS message applied.
const SEQUENCE_KEY: &[u8] = b"results_sequence";

/// What the index keeps per invocation: its latest state and its metered totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// State operations summed over every attempt, and the bytes they moved. Last, so that an
    /// entry written before they existed still decodes (see `decode_entry`).
    pub kv_ops_total: u64,
    pub kv_bytes_total: u64,
}

/// An entry as written before the state totals were added.
#[derive(Serialize, Deserialize)]
struct EntryWithoutState {
    function: String,
    version: String,
    status: InvocationStatus,
    error_kind: Option<String>,
    attempts: u32,
    created_at_ms: u64,
    finished_at_ms: u64,
    duration_us: u64,
    wall_us_total: u64,
    cpu_us_total: u64,
    last_sequence: u64,
}

/// Decodes an entry of either layout.
fn decode_entry(bytes: &[u8]) -> Result<Entry, IndexError> {
    let current = bincode::serde::decode_from_slice::<Entry, _>(bytes, bincode::config::standard());
    match current {
        Ok((entry, read)) if read == bytes.len() => Ok(entry),
        _ => {
            let old: EntryWithoutState = decode(bytes)?;
            Ok(Entry {
                function: old.function,
                version: old.version,
                status: old.status,
                error_kind: old.error_kind,
                attempts: old.attempts,
                created_at_ms: old.created_at_ms,
                finished_at_ms: old.finished_at_ms,
                duration_us: old.duration_us,
                wall_us_total: old.wall_us_total,
                cpu_us_total: old.cpu_us_total,
                last_sequence: old.last_sequence,
                kv_ops_total: 0,
                kv_bytes_total: 0,
            })
        }
    }
}

impl Entry {
    /// The entry after applying the result `meta` found at `sequence`; `None` when the entry
    /// already reflects that message (a replay).
    pub fn apply(previous: Option<&Entry>, sequence: u64, meta: &ResultMeta) -> Option<Entry> {
        if previous.is_some_and(|p| p.last_sequence >= sequence) {
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

/// A sort key: creation time (big-endian, so byte order is time order), then the id.
fn time_key(created_at_ms: u64, id: &str) -> Vec<u8> {
    let mut key = created_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// The per-function prefix of `by_function` keys. Function names never contain a NUL byte.
fn function_prefix(function: &str) -> Vec<u8> {
    let mut key = function.as_bytes().to_vec();
    key.push(0);
    key
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

/// The sled trees of the query index.
#[derive(Clone)]
pub struct QueryIndex {
    entries: sled::Tree,
    by_time: sled::Tree,
    by_function: sled::Tree,
    meta: sled::Tree,
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

impl QueryIndex {
    /// The query trees of `db`.
    pub fn open(db: &sled::Db) -> Result<QueryIndex, IndexError> {
        Ok(QueryIndex {
            entries: db.open_tree("query_entries")?,
            by_time: db.open_tree("query_by_time")?,
            by_function: db.open_tree("query_by_function")?,
            meta: db.open_tree("query_meta")?,
        })
    }

    /// Forgets everything, so the next indexer run replays RESULTS from its start.
    pub fn clear(&self) -> Result<(), IndexError> {
        for tree in [&self.entries, &self.by_time, &self.by_function, &self.meta] {
            tree.clear()?;
        }
        Ok(())
    }

    /// The RESULTS sequence applied last (0 when empty).
    pub fn sequence(&self) -> Result<u64, IndexError> {
        Ok(self
            .meta
            .get(SEQUENCE_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Applies the result at `sequence`. Returns whether the entry changed.
    pub fn apply(&self, sequence: u64, meta: &ResultMeta) -> Result<bool, IndexError> {
        Ok(self.apply_all(&[(sequence, meta.clone())])? == 1)
    }

    /// Applies results in stream order (what the indexer does with whatever arrived together),
    /// writing each entry and the applied sequence once. Returns how many entries changed.
    pub fn apply_all(&self, results: &[(u64, ResultMeta)]) -> Result<usize, IndexError> {
        let Some((last_sequence, _)) = results.last() else {
            return Ok(0);
        };
        // Entries as of this batch, so an invocation's retries within it accumulate. Plain
        // inserts: a sled batch costs more than it saves for the few results that usually
        // arrive together (it made the dispatcher switch threads dozens of times per result).
        let mut latest: HashMap<&str, Entry> = HashMap::new();
        let mut changed = 0;
        for (sequence, meta) in results {
            let id = meta.invocation_id.as_str();
            let previous = match latest.remove(id) {
                Some(entry) => Some(entry),
                None => self.entry(id.as_bytes())?,
            };
            let Some(entry) = Entry::apply(previous.as_ref(), *sequence, meta) else {
                if let Some(previous) = previous {
                    latest.insert(id, previous);
                }
                continue;
            };
            // Secondary keys first: a crash between the writes leaves an entry that the replay
            // of these messages completes, never a key without an entry to find.
            let key = time_key(entry.created_at_ms, id);
            self.by_time
                .insert(key.as_slice(), entry.function.as_bytes())?;
            let mut fkey = function_prefix(&entry.function);
            fkey.extend_from_slice(&key);
            self.by_function.insert(fkey, &[])?;
            latest.insert(id, entry);
            changed += 1;
        }
        for (id, entry) in &latest {
            self.entries.insert(id.as_bytes(), encode(entry)?)?;
        }
        // Messages arrive in stream order (one ordered consumer), so this only moves forward.
        self.meta
            .insert(SEQUENCE_KEY, &last_sequence.to_be_bytes())?;
        Ok(changed)
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.entries.flush()?;
        self.meta.flush()?;
        Ok(())
    }

    fn entry(&self, id: &[u8]) -> Result<Option<Entry>, IndexError> {
        match self.entries.get(id)? {
            Some(bytes) => Ok(Some(decode_entry(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Visits entries created in `[since, until)` (optionally of one function) newest first,
    /// starting below `before` (a sort key), until `visit` returns false.
    fn scan(
        &self,
        function: Option<&str>,
        since_ms: u64,
        until_ms: u64,
        before: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], String, Entry) -> bool,
    ) -> Result<(), IndexError> {
        let prefix = function.map(function_prefix).unwrap_or_default();
        let with_prefix = |key: &[u8]| {
            let mut k = prefix.clone();
            k.extend_from_slice(key);
            k
        };
        let low = with_prefix(&since_ms.to_be_bytes());
        let mut high = with_prefix(&until_ms.to_be_bytes());
        if let Some(before) = before {
            let before = with_prefix(before);
            if before < high {
                high = before;
            }
        }
        if low >= high {
            return Ok(());
        }
        let tree = if function.is_some() {
            &self.by_function
        } else {
            &self.by_time
        };
        for item in tree.range(low..high).rev() {
            let (key, _) = item?;
            let sort_key = &key[prefix.len()..];
            let id = String::from_utf8_lossy(&sort_key[8..]).into_owned();
            // An entry may be missing after a crash between writes; skip it.
            let Some(entry) = self.entry(&sort_key[8..])? else {
                continue;
            };
            if !visit(sort_key, id, entry) {
                break;
            }
        }
        Ok(())
    }

    /// One page of invocations matching `filter`, newest first.
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
            |key, id, entry| {
                if filter.status.is_none_or(|s| s == entry.status) {
                    items.push((id, entry));
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
        self.scan(function, since_ms, until_ms, None, |_, _, entry| {
            out.push(entry);
            true
        })?;
        Ok(out)
    }

    /// Forgets entries created before `cutoff_ms`. Returns how many were removed.
    pub fn prune_before(&self, cutoff_ms: u64) -> Result<usize, IndexError> {
        let mut removed = 0;
        let high = cutoff_ms.to_be_bytes();
        for item in self.by_time.range(..high.as_slice()) {
            let (key, function) = item?;
            let mut fkey = function.to_vec();
            fkey.push(0);
            fkey.extend_from_slice(&key);
            self.by_function.remove(fkey)?;
            self.entries.remove(&key[8..])?;
            self.by_time.remove(&key)?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// A function's numbers over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Invocations with a terminal status.
    pub count: u64,
    pub succeeded: u64,
    /// Terminal but not succeeded: failed, timed out or dead-lettered.
    pub errors: u64,
    /// `errors / count`, 0 when there are none.
    pub error_rate: f64,
    /// Invocations still retrying.
    pub in_progress: u64,
    /// Latest-attempt wall time percentiles of terminal invocations, in ms.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The nearest-rank percentile `p` (0–100) of sorted `values`.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Stats over `entries`.
pub fn stats(entries: &[Entry]) -> Stats {
    let mut durations = Vec::new();
    let (mut succeeded, mut errors, mut in_progress) = (0, 0, 0);
    for entry in entries {
        if !entry.status.is_terminal() {
            in_progress += 1;
            continue;
        }
        durations.push(entry.duration_us);
        if entry.status == InvocationStatus::Succeeded {
            succeeded += 1;
        } else {
            errors += 1;
        }
    }
    durations.sort_unstable();
    let count = succeeded + errors;
    let ms = |p| percentile(&durations, p).map(|us| us as f64 / 1000.0);
    Stats {
        count,
        succeeded,
        errors,
        error_rate: if count == 0 {
            0.0
        } else {
            errors as f64 / count as f64
        },
        in_progress,
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
    pub kv_ops: u64,
    pub kv_bytes: u64,
}

/// Usage of `entries` grouped by function name or by hour (the hour's start in Unix ms).
pub fn usage(entries: &[Entry], group_by: GroupBy) -> BTreeMap<GroupKey, Usage> {
    let mut groups: BTreeMap<GroupKey, Usage> = BTreeMap::new();
    for entry in entries {
        let key = match group_by {
            GroupBy::Function => GroupKey::Function(entry.function.clone()),
            GroupBy::Hour => GroupKey::Hour(entry.created_at_ms - entry.created_at_ms % 3_600_000),
        };
        let group = groups.entry(key).or_default();
        group.invocations += 1;
        group.attempts += u64::from(entry.attempts);
        group.cpu_ms += entry.cpu_us_total as f64 / 1000.0;
        group.wall_ms += entry.wall_us_total as f64 / 1000.0;
        group.kv_ops += entry.kv_ops_total;
        group.kv_bytes += entry.kv_bytes_total;
    }
    groups
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

    #[test]
    fn an_entry_written_before_the_state_totals_still_decodes() {
        let old = EntryWithoutState {
            function: "f".into(),
            version: "v".into(),
            status: InvocationStatus::Succeeded,
            error_kind: None,
            attempts: 2,
            created_at_ms: 1,
            finished_at_ms: 2,
            duration_us: 3,
            wall_us_total: 4,
            cpu_us_total: 5,
            last_sequence: 6,
        };
        let entry = decode_entry(&encode(&old).unwrap()).unwrap();
        assert_eq!(
            (entry.attempts, entry.cpu_us_total, entry.last_sequence),
            (2, 5, 6)
        );
        assert_eq!((entry.kv_ops_total, entry.kv_bytes_total), (0, 0));
        let current = Entry {
            kv_ops_total: 7,
            kv_bytes_total: 8,
            ..entry
        };
        assert_eq!(decode_entry(&encode(&current).unwrap()).unwrap(), current);
    }
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
        }
    }

    fn index() -> (tempfile::TempDir, QueryIndex) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, QueryIndex::open(&db).unwrap())
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
        for id in ["a", "b"] {
            assert_eq!(
                all.entry(id.as_bytes()).unwrap(),
                one.entry(id.as_bytes()).unwrap()
            );
        }
        let a = all.entry(b"a").unwrap().unwrap();
        assert_eq!((a.attempts, a.wall_us_total), (2, 150));
        assert_eq!(all.sequence().unwrap(), 3);
        let filter = Filter::default();
        assert_eq!(
            all.list(&filter, 10, None).unwrap().items,
            one.list(&filter, 10, None).unwrap().items
        );
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
    fn status_filter_and_pruning() {
        let (_dir, index) = index();
        index
            .apply(1, &meta("a", "f", InvocationStatus::Failed, 10))
            .unwrap();
        index
            .apply(2, &meta("b", "f", InvocationStatus::Succeeded, 20))
            .unwrap();
        let failed = Filter {
            status: Some(InvocationStatus::Failed),
            ..Filter::default()
        };
        let page = index.list(&failed, 10, None).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].0, "a");
        assert_eq!(index.prune_before(15).unwrap(), 1);
        assert_eq!(index.collect(Some("f"), 0, u64::MAX).unwrap().len(), 1);
        assert!(index.list(&failed, 10, None).unwrap().items.is_empty());
    }

    #[test]
    fn stats_use_nearest_rank_percentiles_over_terminal_invocations() {
        let mut entries = Vec::new();
        for i in 1..=100u64 {
            let status = if i <= 10 {
                InvocationStatus::Failed
            } else {
                InvocationStatus::Succeeded
            };
            let mut e = Entry::apply(None, i, &meta("x", "f", status, 0)).unwrap();
            e.duration_us = i * 1000;
            entries.push(e);
        }
        let mut retrying = entries[0].clone();
        retrying.status = InvocationStatus::Retrying;
        entries.push(retrying);
        let s = stats(&entries);
        assert_eq!(
            (s.count, s.succeeded, s.errors, s.in_progress),
            (100, 90, 10, 1)
        );
        assert_eq!(s.error_rate, 0.1);
        assert_eq!(
            (s.p50_ms, s.p95_ms, s.p99_ms),
            (Some(50.0), Some(95.0), Some(99.0))
        );
        assert_eq!(stats(&[]).p50_ms, None);
    }

    #[test]
    fn usage_groups_by_function_and_by_hour() {
        let e = |f: &str, created| {
            Entry::apply(None, 1, &meta("x", f, InvocationStatus::Succeeded, created)).unwrap()
        };
        let entries = [e("a", 1000), e("b", 3_600_500), e("a", 3_601_000)];
        let by_fn = usage(&entries, GroupBy::Function);
        assert_eq!(by_fn[&GroupKey::Function("a".into())].invocations, 2);
        assert_eq!(by_fn[&GroupKey::Function("a".into())].cpu_ms, 3.0);
        let by_hour = usage(&entries, GroupBy::Hour);
        assert_eq!(by_hour[&GroupKey::Hour(0)].invocations, 1);
        assert_eq!(by_hour[&GroupKey::Hour(3_600_000)].wall_ms, 4.0);
    }
}
