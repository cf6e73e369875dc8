//! The fleet's scaling decisions, as pure functions: how many processes each function's pool
//! needs, how a supervisor's slots are shared fairly among pools, and how the shared allocation
//! changes.
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
    /// Jobs of this function one worker process runs at once.
    pub concurrency: u32,
}

/// One function's pool as a tick sees it: its work and the bounds of its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLoad {
    pub load: Load,
    /// Processes kept even when idle (its `min_instances`, or the supervisor's `--min` when
    /// higher).
    pub min: u32,
    /// Most processes at once (its `max_instances`), if any.
    pub max: Option<u32>,
    /// A job of this function was seen on the wire since the last tick, before its consumer
    /// counted it: it needs a process even at zero backlog.
    pub woken: bool,
}

/// Processes one function's work needs: its backlog and in-flight jobs over its per-process
/// concurrency, at least one when woken, within its floor and ceiling.
pub fn wanted(pool: &PoolLoad) -> u32 {
    let work = pool.load.backlog + pool.load.in_flight;
    let mut need = work
        .div_ceil(u64::from(pool.load.concurrency.max(1)))
        .min(u64::from(u32::MAX)) as u32;
    if pool.woken {
        need = need.max(1);
    }
    let need = need.max(pool.min);
    pool.max.map_or(need, |max| need.min(max))
}

/// A supervisor's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Processes each function served keeps even when idle, below its own `min_instances`.
    pub min: u32,
    /// Processes the whole fleet may run, shared by every supervisor and every function.
    pub max: u32,
    /// How long a pool's work must stay below its running count before it scales down.
    pub idle_ms: u64,
}

/// Shares `room` process slots among pools that want `wanted[i]` each, max-min fairly: every
/// floor first (in order, as far as the room goes), then one slot at a time to the pool holding
/// the fewest among those still wanting more. A flood on one function takes no more than an
/// even share while others want theirs.
pub fn fair_shares(wanted: &[u32], floors: &[u32], room: u32) -> Vec<u32> {
    let mut left = room;
    let mut shares: Vec<u32> = wanted
        .iter()
        .zip(floors)
        .map(|(w, f)| {
            let floor = (*f).min(*w).min(left);
            left -= floor;
            floor
        })
        .collect();
    while left > 0 {
        let mut hungry: Vec<usize> = (0..shares.len())
            .filter(|i| shares[*i] < wanted[*i])
            .collect();
        if hungry.is_empty() {
            break;
        }
        hungry.sort_by_key(|i| (shares[*i], *i));
        let each = (left / hungry.len() as u32).max(1);
        for i in hungry {
            let give = each.min(wanted[i] - shares[i]).min(left);
            shares[i] += give;
            left -= give;
            if left == 0 {
                break;
            }
        }
    }
    shares
}

/// One pool's decision of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Processes this pool should run.
    pub processes: u32,
    /// Since when fewer processes than are running would do (its scale-down timer).
    pub below_since_ms: Option<u64>,
}

/// What each pool runs, from its fair share, what it runs now and its scale-down timer.
/// Scaling up is immediate. A pool above its share keeps its surplus until the surplus has
/// lasted `idle_ms`, but only out of room no other pool's share needs: under pressure it
/// shrinks to its share at once.
pub fn targets(
    shares: &[u32],
    running: &[u32],
    below_since_ms: &[Option<u64>],
    room: u32,
    idle_ms: u64,
    now_ms: u64,
) -> Vec<Target> {
    let mut spare = room.saturating_sub(shares.iter().sum());
    shares
        .iter()
        .zip(running)
        .zip(below_since_ms)
        .map(|((share, running), below)| {
            if share >= running {
                return Target {
                    processes: *share,
                    below_since_ms: None,
                };
            }
            let since = below.unwrap_or(now_ms);
            if now_ms.saturating_sub(since) >= idle_ms {
                return Target {
                    processes: *share,
                    below_since_ms: None,
                };
            }
            let keep = (running - share).min(spare);
            spare -= keep;
            Target {
                processes: share + keep,
                below_since_ms: Some(since),
            }
        })
        .collect()
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

    fn pool(backlog: u64, concurrency: u32, min: u32, max: Option<u32>) -> PoolLoad {
        PoolLoad {
            load: Load {
                backlog,
                in_flight: 0,
                concurrency,
            },
            min,
            max,
            woken: false,
        }
    }

    #[test]
    fn a_pool_wants_its_work_over_its_concurrency_within_its_bounds() {
        assert_eq!(wanted(&pool(0, 4, 0, None)), 0, "idle scales to zero");
        assert_eq!(wanted(&pool(1, 4, 0, None)), 1);
        assert_eq!(wanted(&pool(9, 4, 0, None)), 3);
        assert_eq!(
            wanted(&pool(3, 0, 0, None)),
            3,
            "zero concurrency counts as one"
        );
        assert_eq!(wanted(&pool(0, 4, 2, None)), 2, "the warm floor");
        assert_eq!(wanted(&pool(100, 1, 0, Some(5))), 5, "the ceiling");
        let woken = PoolLoad {
            woken: true,
            ..pool(0, 4, 0, None)
        };
        assert_eq!(wanted(&woken), 1, "a job on the wire wakes a pool at zero");
    }

    #[test]
    fn a_flood_on_one_function_takes_only_an_even_share() {
        // Four slots; one function wants 100, two others one each.
        assert_eq!(fair_shares(&[100, 1, 1], &[0, 0, 0], 4), vec![2, 1, 1]);
        assert_eq!(fair_shares(&[100, 100], &[0, 0], 4), vec![2, 2]);
        assert_eq!(fair_shares(&[100, 1], &[0, 0], 4), vec![3, 1]);
        // Enough room: everyone gets what they want.
        assert_eq!(fair_shares(&[2, 1, 0], &[0, 0, 0], 10), vec![2, 1, 0]);
        // Floors come first.
        assert_eq!(fair_shares(&[100, 1], &[0, 1], 1), vec![0, 1]);
        // No room at all: nothing, not even floors.
        assert_eq!(fair_shares(&[3, 1], &[1, 1], 0), vec![0, 0]);
    }

    #[test]
    fn shares_never_exceed_the_room_or_what_is_wanted() {
        for room in 0..12 {
            let wanted = [5, 0, 3, 1, 7];
            let floors = [1, 0, 2, 0, 0];
            let shares = fair_shares(&wanted, &floors, room);
            assert!(shares.iter().sum::<u32>() <= room);
            assert!(shares.iter().zip(&wanted).all(|(s, w)| s <= w));
            let total: u32 = wanted.iter().sum();
            assert_eq!(
                shares.iter().sum::<u32>(),
                room.min(total),
                "room is not wasted"
            );
        }
    }

    #[test]
    fn scaling_down_waits_for_the_idle_time_then_goes_to_the_floor() {
        let t = targets(&[0], &[4], &[None], 8, 1000, 10_000);
        assert_eq!(
            t[0],
            Target {
                processes: 4,
                below_since_ms: Some(10_000)
            }
        );
        let t = targets(&[0], &[4], &[t[0].below_since_ms], 8, 1000, 10_500);
        assert_eq!(t[0].processes, 4);
        let t = targets(&[1], &[4], &[t[0].below_since_ms], 8, 1000, 11_000);
        assert_eq!(
            t[0],
            Target {
                processes: 1,
                below_since_ms: None
            }
        );
        // Work coming back resets the timer.
        let t = targets(&[4], &[4], &[Some(10_000)], 8, 1000, 10_900);
        assert_eq!(t[0].below_since_ms, None);
    }

    #[test]
    fn an_idle_surplus_gives_way_at_once_to_a_pool_that_needs_the_room() {
        // Pool 0 runs 3 and needs none; pool 1 needs 3; the room is 4.
        let wanted = [0, 3];
        let shares = fair_shares(&wanted, &[0, 0], 4);
        let t = targets(&shares, &[3, 0], &[None, None], 4, 60_000, 1_000);
        assert_eq!(t[1].processes, 3);
        assert_eq!(t[0].processes, 1, "only the room pool 1 leaves is kept");
        assert!(t.iter().map(|t| t.processes).sum::<u32>() <= 4);
    }

    #[test]
    fn scaling_up_is_immediate() {
        let t = targets(&[3], &[1], &[Some(5)], 4, 60_000, 10);
        assert_eq!(
            t[0],
            Target {
                processes: 3,
                below_since_ms: None
            }
        );
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
