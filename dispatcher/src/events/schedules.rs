//! Schedules: `/v1/schedules`, fired by the broker itself (NATS message schedules), and the
//! task that turns each tick into an invocation.
//!
//! A schedule is the last message on `schedules.<name>` in the SCHEDULES stream, carrying the
//! `Nats-Schedule` headers; the stream's leader publishes each tick to `cron.<name>` (so a
//! cluster fires exactly one tick each time, and any JetStream consumer can read the ticks).
//! One durable consumer, shared by every dispatcher, turns each tick into one invocation.

use crate::core::registry::Registry;
use crate::core::submit::Submitter;
use crate::core::submit::{new_traceparent, Job};
use crate::core::versions::{job_version, resolve, Qualified};
use futures::StreamExt;
use squall_broker::headers as h;
use squall_broker::names::tick_subject;
use squall_broker::topology::cron_dispatch_consumer;
use std::str::FromStr as _;
use std::time::Duration;

/// How long an unprocessed tick is kept (the broker's per-message TTL on ticks).
pub const TICK_TTL: &str = "24h";
/// How many upcoming fire times a schedule view shows.
pub const PREVIEW: usize = 5;

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Expression { expr: String, reason: String },
    #[error("time zone {0:?} is not an IANA time zone name (such as UTC or Europe/Paris)")]
    TimeZone(String),
}

const ALIASES: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

/// A validated schedule expression: the 6-field form the broker fires and croner's parse of it.
pub struct CronSpec {
    /// Seconds, minutes, hours, day of month, month, day of week.
    pub expression: String,
    pub timezone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl CronSpec {
    /// Validates `expr` (5 fields, 6 with seconds, or an `@` alias) in `timezone`.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<CronSpec, CronError> {
        let bad = |reason: &str| CronError::Expression {
            expr: expr.to_string(),
            reason: reason.to_string(),
        };
        let tz_name = timezone.unwrap_or("UTC");
        let timezone = chrono_tz::Tz::from_str(tz_name)
            .map_err(|_| CronError::TimeZone(tz_name.to_string()))?;
        let trimmed = expr.trim();
        let expression = match ALIASES
            .iter()
            .find(|(alias, _)| trimmed.eq_ignore_ascii_case(alias))
        {
            Some((_, six)) => six.to_string(),
            None => {
                let fields: Vec<&str> = trimmed.split_whitespace().collect();
                match fields.len() {
                    5 => format!("0 {}", fields.join(" ")),
                    6 => fields.join(" "),
                    n => {
                        return Err(bad(&format!(
                            "it has {n} fields; give 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
                        )))
                    }
                }
            }
        };
        // What croner accepts beyond classic cron, the broker does not fire: refuse it here.
        let fields: Vec<&str> = expression.split(' ').collect();
        for (i, field) in fields.iter().enumerate() {
            if field.contains('#') || field.contains('?') {
                return Err(bad("'#' and '?' are not supported"));
            }
            let day_field = i == 3 || i == 5;
            if day_field
                && field.split(',').any(|part| {
                    let p = part.trim_start_matches(|c: char| c.is_ascii_digit());
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c == 'L' || c == 'W' || c == 'l' || c == 'w')
                })
            {
                return Err(bad("'L' and 'W' are not supported"));
            }
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&expression)
            .map_err(|e| bad(&e.to_string()))?;
        Ok(CronSpec {
            expression,
            timezone,
            cron,
        })
    }

    /// The next `n` fire times after `after_ms`, in Unix ms.
    pub fn next_fires(&self, after_ms: u64, n: usize) -> Vec<u64> {
        use chrono::TimeZone as _;
        let Some(start) = self.timezone.timestamp_millis_opt(after_ms as i64).single() else {
            return Vec::new();
        };
        self.cron
            .iter_after(start)
            .take(n)
            .map(|t| t.timestamp_millis() as u64)
            .collect()
    }
}

/// Turns ticks into invocations, forever; restarts after broker errors.
pub async fn run_ticks(registry: Registry, submitter: Submitter) {
    loop {
        if let Err(error) = dispatch_ticks(&registry, &submitter).await {
            tracing::warn!(message = "cron tick dispatcher failed; restarting", error = %error);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn dispatch_ticks(registry: &Registry, submitter: &Submitter) -> anyhow::Result<()> {
    let consumer = cron_dispatch_consumer(&submitter.broker.topology.schedules).await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("tick without stream info: {e}"))?;
        let (sequence, published_ms) = (
            info.stream_sequence,
            (info.published.unix_timestamp_nanos() / 1_000_000) as u64,
        );
        let name = message
            .subject
            .as_str()
            .strip_prefix("cron.")
            .unwrap_or_default()
            .to_string();
        let function = message
            .headers
            .as_ref()
            .and_then(|hs| hs.get(h::FUNCTION))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let id = squall_broker::record::event_invocation_id(
            published_ms,
            &tick_subject(&name),
            sequence,
        );
        let loaded = match Qualified::parse(&function, None) {
            Ok(target) => match registry.load(&target.name).await {
                Ok(record) => resolve(&record, target.qualifier.as_deref(), &id)
                    .map(|version| (target.name.into_string(), job_version(&version)))
                    .map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        let (function, version) = match loaded {
            Ok(found) => found,
            Err(error) => {
                // A tick of a function that is gone has nothing to run.
                tracing::warn!(message = "dropping a tick: its function is not deployed",
                    schedule = %name, function = %function, %error);
                let _ = message.ack().await;
                continue;
            }
        };
        let traceparent = new_traceparent();
        let job = Job {
            function: &function,
            version: &version,
            id: &id,
            created_at_ms: published_ms,
            traceparent: &traceparent,
            source: "cron",
            extra_headers: vec![(h::SCHEDULE.to_string(), name.clone())],
            reply_to: None,
        };
        match submitter.submit(job, message.payload.clone()).await {
            Ok(()) => {
                let _ = message.ack().await;
            }
            Err(error) => {
                tracing::warn!(message = "cannot submit a tick's invocation; it will be retried",
                    schedule = %name, %error);
                let _ = message
                    .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                        Duration::from_secs(1),
                    )))
                    .await;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::rfc3339;

    #[test]
    fn five_fields_gain_a_zero_second_and_aliases_expand() {
        assert_eq!(
            CronSpec::parse("*/5 * * * *", None).unwrap().expression,
            "0 */5 * * * *"
        );
        assert_eq!(
            CronSpec::parse("* * * * * *", None).unwrap().expression,
            "* * * * * *"
        );
        assert_eq!(
            CronSpec::parse("@hourly", None).unwrap().expression,
            "0 0 * * * *"
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let e = CronSpec::parse("61 * * * *", None).err().unwrap();
        assert!(matches!(e, CronError::Expression { .. }), "{e}");
        assert!(e.to_string().contains("61 * * * *"));
        let e = CronSpec::parse("* * *", None).err().unwrap();
        assert!(e.to_string().contains("3 fields"), "{e}");
        let e = CronSpec::parse("0 0 L * *", None).err().unwrap();
        assert!(e.to_string().contains("'L'"), "{e}");
        let e = CronSpec::parse("* * * * *", Some("Mars/Olympus"))
            .err()
            .unwrap();
        assert_eq!(e, CronError::TimeZone("Mars/Olympus".into()));
    }

    #[test]
    fn next_fires_follow_the_time_zone() {
        // 09:00 every day in Paris is 08:00 UTC in winter.
        let spec = CronSpec::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        let jan_1_2026 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let next = spec.next_fires(jan_1_2026, 2);
        assert_eq!(rfc3339(next[0]), "2026-01-01T08:00:00Z");
        assert_eq!(rfc3339(next[1]), "2026-01-02T08:00:00Z");
        let every_second = CronSpec::parse("* * * * * *", None).unwrap();
        let fires = every_second.next_fires(1000, 5);
        assert_eq!(fires, vec![2000, 3000, 4000, 5000, 6000]);
    }
}
