//! Long-lived call threads per function: calls are queued to them, not spawned per call.
//!
//! A function's calls run on at most `max` threads of its own, started on demand and kept
//! alive: each thread drains the queue before it parks, so a busy function pays no thread
//! start or pool hand-off per call. Completion goes back to the async side through whatever
//! the call itself sends (a oneshot), never through another pool.
//!
//! Up to `soft` threads (the machine's cores) start as soon as a call finds none idle: for
//! short calls more threads only add hand-offs. Beyond that a monitor adds a thread when the
//! oldest queued call has waited `STALL` (the threads are busy in slow or blocking calls), up
//! to `max`; such surplus threads leave after `SURPLUS_IDLE` without work.
//!
//! Invariants:
//! - At most `max` threads serve calls, not counting threads abandoned by a timed-out call:
//!   a hung call keeps its thread forever (threads cannot be killed), so it no longer counts
//!   and a replacement may start; the worker recycles its process after such a timeout anyway.
//! - A panic in a call never kills its thread silently: it is caught, the call's completion
//!   is dropped (its receiver sees the sender gone) and the thread serves the next call.
//! - Dropping the executor lets its idle threads exit; a thread in a call exits after it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the oldest queued call may wait before the monitor adds a thread.
const STALL: Duration = Duration::from_millis(2);
/// How long a thread beyond `soft` stays without work before it leaves.
const SURPLUS_IDLE: Duration = Duration::from_millis(200);

/// One queued call.
type Call = Box<dyn FnOnce() + Send + 'static>;

/// A call's state, changed only under the queue lock.
const PENDING: u8 = 0;
/// Its caller gave up on it (it outlived its timeout).
const ABANDONED: u8 = 1;
/// It returned (or was skipped) while its caller still waited.
const FINISHED: u8 = 2;

/// A queued call and its state.
struct Queued {
    call: Call,
    state: Arc<AtomicU8>,
    queued_at: Instant,
}

#[derive(Default)]
struct Queue {
    calls: VecDeque<Queued>,
    /// Threads alive, serving or waiting, including abandoned ones.
    threads: usize,
    /// Threads parked, waiting for a call.
    idle: usize,
    /// Threads stuck in a call whose caller gave up on it.
    abandoned: usize,
    /// Set when the executor is dropped: idle threads exit.
    closed: bool,
    /// Whether the stall monitor thread runs.
    monitored: bool,
}

struct Shared {
    name: String,
    max: usize,
    /// Threads started without waiting: the machine's cores, at most `max`.
    soft: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Wakes the stall monitor.
    watch: Condvar,
}

/// The call threads of one function.
pub struct Executor {
    shared: Arc<Shared>,
}

/// A handle to a submitted call, to mark it abandoned when its caller stops waiting.
pub struct Ticket {
    state: Arc<AtomicU8>,
    shared: Arc<Shared>,
}

impl Ticket {
    /// Says the call will never be waited for (it ran past its timeout): its thread, if it is
    /// in the call, no longer counts against the limit, so another may start in its place.
    pub fn abandon(&self) {
        let mut queue = self.shared.queue.lock().expect("executor lock");
        if self.state.load(Ordering::SeqCst) != PENDING {
            return;
        }
        self.state.store(ABANDONED, Ordering::SeqCst);
        queue.abandoned += 1;
        // A call waiting in the queue may now get a thread of its own.
        if !queue.calls.is_empty() && queue.idle == 0 && serving(&queue) < self.shared.max {
            spawn(&self.shared, &mut queue);
        }
    }
}

/// Threads that count against the limit.
fn serving(queue: &Queue) -> usize {
    queue.threads - queue.abandoned.min(queue.threads)
}

impl Executor {
    /// An executor for `name` with at most `max` call threads (at least one).
    pub fn new(name: &str, max: usize) -> Executor {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Executor::with_soft_limit(name, max, cores)
    }

    /// An executor that starts up to `soft` threads at once and more only on a stall.
    pub fn with_soft_limit(name: &str, max: usize, soft: usize) -> Executor {
        let max = max.max(1);
        Executor {
            shared: Arc::new(Shared {
                name: name.to_string(),
                max,
                soft: soft.clamp(1, max),
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
                watch: Condvar::new(),
            }),
        }
    }

    /// Queues `call` to run on one of the function's threads, starting one if none is idle
    /// and the limit allows; otherwise the call waits for the next free thread.
    pub fn submit(&self, call: impl FnOnce() + Send + 'static) -> Ticket {
        let state = Arc::new(AtomicU8::new(PENDING));
        let mut queue = self.shared.queue.lock().expect("executor lock");
        queue.calls.push_back(Queued {
            call: Box::new(call),
            state: state.clone(),
            queued_at: Instant::now(),
        });
        if queue.idle > 0 {
            self.shared.ready.notify_one();
        } else if serving(&queue) < self.shared.soft {
            spawn(&self.shared, &mut queue);
        } else if serving(&queue) < self.shared.max {
            // Busy threads drain the queue; the monitor steps in if they are stuck.
            if !queue.monitored {
                queue.monitored = true;
                let shared = self.shared.clone();
                let started = std::thread::Builder::new()
                    .name(format!("calls-{}", self.shared.name))
                    .spawn(move || monitor(shared));
                if started.is_err() {
                    queue.monitored = false;
                }
            } else {
                self.shared.watch.notify_one();
            }
        }
        Ticket {
            state,
            shared: self.shared.clone(),
        }
    }

    /// Threads alive now (serving, parked or stuck), for tests and metrics.
    pub fn threads(&self) -> usize {
        self.shared.queue.lock().expect("executor lock").threads
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let mut queue = self.shared.queue.lock().expect("executor lock");
        queue.closed = true;
        drop(queue);
        self.shared.ready.notify_all();
        self.shared.watch.notify_all();
    }
}

/// Starts one more call thread; the caller holds the queue lock.
fn spawn(shared: &Arc<Shared>, queue: &mut Queue) {
    let thread_shared = shared.clone();
    let started = std::thread::Builder::new()
        .name(format!("call-{}", shared.name))
        .spawn(move || serve(thread_shared));
    match started {
        Ok(_) => queue.threads += 1,
        Err(error) => {
            // The queued call waits for a thread that is running; with none at all it would
            // wait forever, so the caller's timeout is what ends it.
            tracing::error!(message = "cannot start a call thread", function = %shared.name, %error)
        }
    }
}

/// A call thread: takes calls until the executor is dropped and the queue is empty (or, for a
/// thread beyond `soft`, until it has had no work for `SURPLUS_IDLE`).
fn serve(shared: Arc<Shared>) {
    // In a sandboxed process, function code runs only inside the sandbox: a thread that cannot
    // enter it ends the process rather than run calls outside it.
    if let Err(error) = crate::sandbox::enter_thread() {
        tracing::error!(message = "a call thread cannot enter the sandbox; exiting", function = %shared.name, %error);
        std::process::exit(70);
    }
    let mut queue = shared.queue.lock().expect("executor lock");
    loop {
        let Some(next) = queue.calls.pop_front() else {
            if queue.closed {
                break;
            }
            let surplus = serving(&queue) > shared.soft;
            queue.idle += 1;
            let timed_out;
            (queue, timed_out) = if surplus {
                let (queue, waited) = shared
                    .ready
                    .wait_timeout(queue, SURPLUS_IDLE)
                    .expect("executor lock");
                (queue, waited.timed_out())
            } else {
                (shared.ready.wait(queue).expect("executor lock"), false)
            };
            queue.idle -= 1;
            if timed_out && queue.calls.is_empty() && serving(&queue) > shared.soft {
                break;
            }
            continue;
        };
        drop(queue);
        if next.state.load(Ordering::SeqCst) == PENDING {
            // A panic drops the call's completion sender: its caller sees the call crash.
            let _ = catch_unwind(AssertUnwindSafe(next.call));
        }
        queue = shared.queue.lock().expect("executor lock");
        if next.state.swap(FINISHED, Ordering::SeqCst) == ABANDONED {
            // This thread outlived its caller's timeout and counts again from now on.
            queue.abandoned = queue.abandoned.saturating_sub(1);
            if serving(&queue) > shared.max {
                break;
            }
        }
    }
    queue.threads -= 1;
}

/// The stall monitor: while calls wait and every thread is busy, adds a thread whenever the
/// oldest call has waited `STALL`, up to `max`.
fn monitor(shared: Arc<Shared>) {
    let mut queue = shared.queue.lock().expect("executor lock");
    loop {
        if queue.closed {
            break;
        }
        let stalled = queue.calls.front().map(|oldest| oldest.queued_at.elapsed());
        match stalled {
            Some(waited) if queue.idle == 0 && serving(&queue) < shared.max => {
                if waited >= STALL {
                    spawn(&shared, &mut queue);
                }
                let (next, _) = shared
                    .watch
                    .wait_timeout(queue, STALL)
                    .expect("executor lock");
                queue = next;
            }
            _ => queue = shared.watch.wait(queue).expect("executor lock"),
        }
    }
    queue.monitored = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn calls_reuse_long_lived_threads() {
        let executor = Executor::with_soft_limit("f", 2, 2);
        let (done, results) = mpsc::channel();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let done = done.clone();
            executor.submit(move || {
                done.send(std::thread::current().id()).unwrap();
            });
            // One call at a time: the same one or two threads serve them all.
            seen.insert(results.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        assert!(seen.len() <= 2, "{} threads served 200 calls", seen.len());
        assert!(executor.threads() <= 2);
    }

    #[test]
    fn a_function_at_its_concurrency_limit_queues_calls() {
        let executor = Executor::new("f", 3);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (done, results) = mpsc::channel();
        for _ in 0..30 {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            executor.submit(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                done.send(()).unwrap();
            });
        }
        for _ in 0..30 {
            results.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert!(executor.threads() <= 3);
    }

    #[test]
    fn short_calls_stay_on_the_soft_limit_of_threads() {
        let executor = Executor::with_soft_limit("f", 64, 2);
        let (done, results) = mpsc::channel();
        for _ in 0..2000 {
            let done = done.clone();
            executor.submit(move || done.send(()).unwrap());
        }
        for _ in 0..2000 {
            results.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        // Far from the 64 allowed: a stall on a loaded machine may add one or two.
        assert!(executor.threads() <= 6, "{} threads", executor.threads());
    }

    #[test]
    fn surplus_threads_leave_when_work_stops() {
        let executor = Executor::with_soft_limit("f", 8, 1);
        let (done, results) = mpsc::channel();
        for _ in 0..8 {
            let done = done.clone();
            executor.submit(move || {
                std::thread::sleep(Duration::from_millis(30));
                done.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            results.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert!(executor.threads() > 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while executor.threads() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(executor.threads(), 1);
    }

    #[test]
    fn a_panicking_call_leaves_its_thread_serving() {
        let executor = Executor::new("f", 1);
        let (done, results) = mpsc::channel::<u32>();
        let dropped = done.clone();
        executor.submit(move || {
            let _keep = dropped;
            panic!("boom");
        });
        executor.submit(move || done.send(7).unwrap());
        assert_eq!(results.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        assert_eq!(executor.threads(), 1);
    }

    #[test]
    fn a_hung_call_abandoned_by_its_caller_gets_a_replacement_thread() {
        let executor = Executor::new("f", 1);
        let (release, hold) = mpsc::channel::<()>();
        let hung = executor.submit(move || {
            let _ = hold.recv();
        });
        let (done, results) = mpsc::channel();
        executor.submit(move || done.send(()).unwrap());
        // At its limit of one thread the second call waits behind the hung one.
        assert!(results.recv_timeout(Duration::from_millis(100)).is_err());
        hung.abandon();
        results.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(executor.threads(), 2);
        // When the hung call returns at last, its thread goes back within the limit.
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while executor.threads() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(executor.threads(), 1);
    }

    #[test]
    fn an_abandoned_call_that_never_started_is_skipped() {
        let executor = Executor::new("f", 1);
        let (release, hold) = mpsc::channel::<()>();
        executor.submit(move || {
            let _ = hold.recv();
        });
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let queued = executor.submit(move || flag.store(true, Ordering::SeqCst));
        queued.abandon();
        // The abandoned call had no thread: it got one, which skipped it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!ran.load(Ordering::SeqCst));
        release.send(()).unwrap();
    }
}
