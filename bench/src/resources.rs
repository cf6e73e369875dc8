//! Resource readings from `/proc`: CPU time from `/proc/<pid>/stat`, resident memory from
//! `/proc/<pid>/status`, and a sampler that keeps the peak resident size during a load.

use anyhow::Context as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// User plus system CPU time, in clock ticks, from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces or parentheses,
/// so the fields are counted from the last `)`: `utime` and `stime` are fields 14 and 15.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field k is `fields[k - 3]`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A number such as `VmRSS` (in kB) or `voluntary_ctxt_switches` from the text of
/// `/proc/<pid>/status`.
pub fn parse_status_number(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second, as `getconf CLK_TCK` reports it (100 on every common Linux).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The parent pid from the text of `/proc/<pid>/stat` (field 4).
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_stat_ticks(&text).with_context(|| format!("cannot parse {path}"))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_number(&text, "VmRSS").with_context(|| format!("no VmRSS in {path}"))
}

/// Voluntary plus involuntary context switches of every thread `pid` has now, summed over
/// `/proc/<pid>/task/*/status` (threads that already exited are not counted).
fn context_switches(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path().join("status")) else {
            continue; // The thread ended meanwhile.
        };
        total += parse_status_number(&text, "voluntary_ctxt_switches").unwrap_or(0);
        total += parse_status_number(&text, "nonvoluntary_ctxt_switches").unwrap_or(0);
    }
    Ok(total)
}

/// `root` and every process descended from it, found through the parent pids in `/proc`.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if let Some(ppid) = parse_stat_ppid(&stat) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    tree
}

/// A process to measure: alone, or with every process it started (a supervisor and the
/// worker it runs count as one worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub pid: u32,
    pub children: bool,
}

impl Watch {
    /// The process alone.
    pub fn process(pid: u32) -> Watch {
        Watch {
            pid,
            children: false,
        }
    }

    /// The process and its descendants.
    pub fn tree(pid: u32) -> Watch {
        Watch {
            pid,
            children: true,
        }
    }

    fn pids(self) -> Vec<u32> {
        if self.children {
            process_tree(self.pid)
        } else {
            vec![self.pid]
        }
    }

    /// CPU time so far, in clock ticks. A descendant that ended meanwhile is skipped.
    pub fn cpu_ticks(self) -> anyhow::Result<u64> {
        let mut total = cpu_ticks(self.pid)?;
        for pid in self.pids().into_iter().skip(1) {
            total += cpu_ticks(pid).unwrap_or(0);
        }
        Ok(total)
    }

    /// Resident set size, in KiB.
    pub fn rss_kib(self) -> anyhow::Result<u64> {
        let mut total = rss_kib(self.pid)?;
        for pid in self.pids().into_iter().skip(1) {
            total += rss_kib(pid).unwrap_or(0);
        }
        Ok(total)
    }

    /// Context switches so far.
    pub fn context_switches(self) -> anyhow::Result<u64> {
        let mut total = context_switches(self.pid)?;
        for pid in self.pids().into_iter().skip(1) {
            total += context_switches(pid).unwrap_or(0);
        }
        Ok(total)
    }
}

/// What one process used over a measurement, per unit of work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Milliseconds of CPU (user + system) per 1,000 units.
    pub cpu_ms_per_1000: f64,
    /// Context switches per unit.
    pub switches_per_unit: f64,
}

/// CPU time and context switches of several processes over one measurement.
pub struct CpuMeter {
    ticks_per_second: u64,
    start: Vec<(Watch, u64, u64)>,
}

impl CpuMeter {
    /// Reads the processes' counters now.
    pub fn start(ticks_per_second: u64, watched: &[Watch]) -> anyhow::Result<CpuMeter> {
        let start = watched
            .iter()
            .map(|&w| Ok((w, w.cpu_ticks()?, w.context_switches()?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(CpuMeter {
            ticks_per_second,
            start,
        })
    }

    /// What each process used since `start` per unit of `work`, in the order they were given.
    pub fn usage(&self, work: usize) -> anyhow::Result<Vec<Usage>> {
        let work = work.max(1) as f64;
        self.start
            .iter()
            .map(|&(watch, ticks, switches)| {
                let ticks = watch.cpu_ticks()?.saturating_sub(ticks);
                let ms = ticks as f64 * 1000.0 / self.ticks_per_second as f64;
                let switches = watch.context_switches()?.saturating_sub(switches);
                Ok(Usage {
                    cpu_ms_per_1000: ms * 1000.0 / work,
                    switches_per_unit: switches as f64 / work,
                })
            })
            .collect()
    }
}

/// Samples the resident size of some processes every few milliseconds and keeps each peak.
pub struct RssSampler {
    peaks: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `watched` every `every`.
    pub fn start(watched: Vec<Watch>, every: Duration) -> RssSampler {
        let peaks = Arc::new(Mutex::new(vec![0; watched.len()]));
        let shared = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for (i, watch) in watched.iter().enumerate() {
                    if let Ok(kib) = watch.rss_kib() {
                        let mut peaks = shared.lock().expect("rss peaks lock");
                        peaks[i] = peaks[i].max(kib);
                    }
                }
            }
        });
        RssSampler { peaks, task }
    }

    /// Stops sampling and returns each process's peak, in KiB (0 if never read), in the order
    /// they were given.
    pub fn stop(self) -> Vec<u64> {
        self.task.abort();
        self.peaks.lock().expect("rss peaks lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_command_with_spaces_and_parens() {
        let stat = "4242 (squall (a) b) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 5 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_values_are_read_by_key() {
        let status = "Name:\tsquall-worker\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n\
                      voluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t2\n";
        assert_eq!(parse_status_number(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status_number(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_number(status, "VmSwap"), None);
        assert_eq!(
            parse_status_number(status, "voluntary_ctxt_switches"),
            Some(7)
        );
        assert_eq!(
            parse_status_number(status, "nonvoluntary_ctxt_switches"),
            Some(2)
        );
    }

    #[test]
    fn own_process_is_readable() {
        let me = Watch::process(std::process::id());
        assert!(me.rss_kib().unwrap() > 0);
        me.cpu_ticks().unwrap();
        assert!(me.context_switches().unwrap() > 0);
    }

    #[test]
    fn a_tree_includes_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = std::process::id();
        assert!(process_tree(pid).contains(&child.id()));
        let alone = Watch::process(pid).rss_kib().unwrap();
        assert!(Watch::tree(pid).rss_kib().unwrap() > alone);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn stat_parent_pid_is_field_four() {
        assert_eq!(parse_stat_ppid("4242 (a) b) S 17 4242 0"), Some(17));
    }
}
