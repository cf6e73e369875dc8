//! The fleet's scaling decisions, as pure functions: how many workers the work needs, how many
//! this supervisor should run, and how the shared allocation changes.
//!
//! Invariant: `regrant` never makes the granted total exceed the fleet's maximum, whatever the
//! other supervisors hold; supervisors change the allocation only by compare-and-set.

use squall_broker::fleet::Allocation;
use std::collections::HashSet;

/// One function's work, read from its JetStream consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Jobs waiting for a worker (consumer pending).
    pub backlog: u64,
    /// Jobs delivered and not yet acknowledged.
    pub in_flight: u64,
    /// Jobs of this function one worker runs at once.
    pub concurrency: u32,
}

/// Workers the whole fleet needs so that every function's work runs at once: a worker runs
/// up to `concurrency` jobs of each function, so the busiest function decides.
pub fn needed(loads: &[Load]) -> u32 {
    loads
        .iter()
        .map(|l| {
            let work = l.backlog + l.in_flight;
            work.div_ceil(u64::from(l.concurrency.max(1)))
        })
        .max()
        .unwrap_or(0)
        .min(u64::from(u32::MAX)) as u32
}

/// A supervisor's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Workers this supervisor keeps even when idle.
    pub min: u32,
    /// Workers the whole fleet may run, shared by every supervisor.
    pub max: u32,
    /// How long the work must stay below the running count before scaling down.
    pub idle_ms: u64,
}

/// The decision of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Workers this supervisor should run.
    pub workers: u32,
    /// Since when fewer workers than are running would do (scale-down timer).
    pub below_since_ms: Option<u64>,
}

/// How many workers this supervisor should run, given the fleet's need, what the others are
/// granted, what it runs now, and how long it has had more than needed. Scaling up is
/// immediate; scaling down waits until the surplus lasted `idle_ms`.
pub fn target(
    needed: u32,
    others: u32,
    running: u32,
    policy: Policy,
    below_since_ms: Option<u64>,
    now_ms: u64,
) -> Target {
    let room = policy.max.saturating_sub(others);
    let want = needed.saturating_sub(others).max(policy.min).min(room);
    if want >= running {
        return Target {
            workers: want,
            below_since_ms: None,
        };
    }
    let since = below_since_ms.unwrap_or(now_ms);
    if now_ms.saturating_sub(since) >= policy.idle_ms {
        Target {
            workers: want,
            below_since_ms: None,
        }
    } else {
        Target {
            workers: running,
            below_since_ms: Some(since),
        }
    }
}

/// The allocation after supervisor `me` asks for `want` slots: supervisors not in `alive` lose
/// their grants, and `me` gets what fits under `max`.
pub fn regrant(
    current: &Allocation,
    me: &str,
    want: u32,
    max: u32,
    alive: &HashSet<String>,
) -> Allocation {
    let mut next = current.clone();
    next.granted
        .retain(|id, _| id.as_str() == me || alive.contains(id));
    let others = next.others(me);
    let grant = want.min(max.saturating_sub(others));
    if grant == 0 {
        next.granted.remove(me);
    } else {
        next.granted.insert(me.to_string(), grant);
    }
    next.max = max;
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min: 1,
        max: 4,
        idle_ms: 1000,
    };

    fn load(backlog: u64, in_flight: u64, concurrency: u32) -> Load {
        Load {
            backlog,
            in_flight,
            concurrency,
        }
    }

    #[test]
    fn the_busiest_function_decides_what_is_needed() {
        assert_eq!(needed(&[]), 0);
        assert_eq!(needed(&[load(0, 0, 4)]), 0);
        assert_eq!(needed(&[load(1, 0, 4)]), 1);
        assert_eq!(needed(&[load(5, 4, 4), load(2, 0, 1)]), 3);
        assert_eq!(
            needed(&[load(3, 0, 0)]),
            3,
            "zero concurrency counts as one"
        );
    }

    #[test]
    fn scaling_up_is_immediate_and_capped_by_the_fleet_max() {
        let t = target(10, 0, 1, POLICY, None, 0);
        assert_eq!(t.workers, 4);
        let t = target(10, 3, 0, POLICY, None, 0);
        assert_eq!(t.workers, 1, "only the room the others leave");
        let t = target(10, 4, 0, POLICY, None, 0);
        assert_eq!(t.workers, 0, "no room at all: not even min");
    }

    #[test]
    fn scaling_down_waits_for_the_idle_time_then_goes_to_min() {
        let t = target(0, 0, 4, POLICY, None, 10_000);
        assert_eq!(
            t,
            Target {
                workers: 4,
                below_since_ms: Some(10_000)
            }
        );
        let t = target(0, 0, 4, POLICY, t.below_since_ms, 10_500);
        assert_eq!(t.workers, 4);
        let t = target(0, 0, 4, POLICY, t.below_since_ms, 11_000);
        assert_eq!(
            t,
            Target {
                workers: 1,
                below_since_ms: None
            }
        );
        // Work coming back resets the timer.
        let t = target(4, 0, 4, POLICY, Some(10_000), 10_900);
        assert_eq!(
            t,
            Target {
                workers: 4,
                below_since_ms: None
            }
        );
    }

    #[test]
    fn min_zero_scales_to_zero_and_back() {
        let policy = Policy { min: 0, ..POLICY };
        assert_eq!(target(0, 0, 1, policy, Some(0), 5_000).workers, 0);
        assert_eq!(target(1, 0, 0, policy, None, 5_000).workers, 1);
    }

    #[test]
    fn grants_never_exceed_the_max_and_dead_supervisors_lose_theirs() {
        let alive: HashSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let mut alloc = Allocation::default();
        alloc = regrant(&alloc, "a", 3, 4, &alive);
        alloc = regrant(&alloc, "b", 3, 4, &alive);
        assert_eq!(alloc.granted["a"], 3);
        assert_eq!(alloc.granted["b"], 1);
        assert_eq!(alloc.total(), 4);
        // b asks for less: a can grow into the freed room.
        alloc = regrant(&alloc, "b", 0, 4, &alive);
        assert!(!alloc.granted.contains_key("b"));
        alloc = regrant(&alloc, "a", 4, 4, &alive);
        assert_eq!(alloc.total(), 4);
        // A supervisor that stopped heartbeating loses its grant.
        alloc.granted.insert("gone".into(), 2);
        let alloc = regrant(&alloc, "b", 2, 6, &alive);
        assert!(!alloc.granted.contains_key("gone"));
        assert_eq!(alloc.granted["b"], 2);
        assert!(alloc.total() <= 6);
    }
}
