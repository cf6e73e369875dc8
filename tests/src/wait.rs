//! The one way tests wait: poll a probe until it observes what was awaited or a deadline passes.

use std::fmt::{self, Debug, Display};
use std::time::{Duration, Instant};

/// How often a probe is asked again. Probes are cheap reads (an endpoint, a consumer's info, a
/// process table), so a short pause keeps tests fast without loading the machine.
const POLL: Duration = Duration::from_millis(50);

/// What a probe returns: the awaited value, or what it saw instead (`None` says nothing more).
pub trait Observation {
    type Value;
    /// The awaited value, or a description of the last thing seen.
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Observation for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_string())
    }
}

impl<T, E: Debug> Observation for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:#?}"))
    }
}

/// Text shown as it is in a timeout's message (a log, a command's output), not quoted and
/// escaped as `Debug` would show a `String`.
pub struct Text(pub String);

impl Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn timed_out(within: Duration, what: &dyn Display, last: &str) -> ! {
    panic!("timed out after {within:?} waiting for {what}; last observation:\n{last}")
}

/// Asks `probe` until it returns `Some`/`Ok` and returns that value; after `within`, fails
/// naming `what` was awaited and the probe's last observation.
pub async fn eventually<O: Observation>(
    within: Duration,
    what: impl Display,
    probe: impl AsyncFnMut() -> O,
) -> O::Value {
    eventually_every(within, POLL, what, probe).await
}

/// `eventually` asking `probe` every `every` rather than every 50 ms: for a probe that does
/// real work each time (an invocation), so the test keeps the pace it means.
pub async fn eventually_every<O: Observation>(
    within: Duration,
    every: Duration,
    what: impl Display,
    probe: impl AsyncFnMut() -> O,
) -> O::Value {
    poll_every(within, every, probe)
        .await
        .unwrap_or_else(|last| timed_out(within, &what, &last))
}

/// `eventually` for code that is not async (process supervision, nats-server start-up).
pub fn eventually_blocking<O: Observation>(
    within: Duration,
    what: impl Display,
    probe: impl FnMut() -> O,
) -> O::Value {
    poll_blocking(within, probe).unwrap_or_else(|last| timed_out(within, &what, &last))
}

/// Asks `probe` until it returns `Some`/`Ok`, for at most `within`; the error is the last
/// observation. For a bounded wait whose timeout is not a failure (a graceful stop before a kill).
pub async fn poll<O: Observation>(
    within: Duration,
    probe: impl AsyncFnMut() -> O,
) -> Result<O::Value, String> {
    poll_every(within, POLL, probe).await
}

/// `poll` asking `probe` every `every`.
pub async fn poll_every<O: Observation>(
    within: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> O,
) -> Result<O::Value, String> {
    let deadline = Instant::now() + within;
    loop {
        match probe().await.into_result() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// `poll` for code that is not async.
pub fn poll_blocking<O: Observation>(
    within: Duration,
    mut probe: impl FnMut() -> O,
) -> Result<O::Value, String> {
    let deadline = Instant::now() + within;
    loop {
        match probe().into_result() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}
