//! The function spec: the deploy-time settings shared by the deploy `config` part and `squall.toml`.

use serde::{Deserialize, Serialize};

/// The longest accepted timeout: one hour.
pub const MAX_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// The most attempts a function may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// The highest per-function concurrency.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// Retry backoff between attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_ms: u64,
    pub multiplier: f64,
    pub max_ms: u64,
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1000,
            multiplier: 2.0,
            max_ms: 60_000,
            jitter: true,
        }
    }
}

/// A function's deploy-time settings. Unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionSpec {
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub concurrency: u32,
    /// Most attempts running at once across the whole fleet (the consumer's `max_ack_pending`);
    /// unlimited when absent.
    pub max_concurrency: Option<u32>,
    /// Values passed to the function as `ctx.config`.
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl Default for FunctionSpec {
    fn default() -> Self {
        FunctionSpec {
            timeout_ms: 30_000,
            max_attempts: 3,
            backoff: Backoff::default(),
            concurrency: 64,
            max_concurrency: None,
            config: serde_json::Map::new(),
        }
    }
}

/// Why a spec was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid spec: {0}")]
    Parse(String),
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {0}")]
    Timeout(u64),
    #[error("max_attempts must be between 1 and {MAX_ATTEMPTS}, got {0}")]
    Attempts(u32),
    #[error("concurrency must be between 1 and {MAX_CONCURRENCY}, got {0}")]
    Concurrency(u32),
    #[error("max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {0}")]
    MaxConcurrency(u32),
    #[error("backoff.multiplier must be a finite number of at least 1.0, got {0}")]
    Multiplier(f64),
    #[error("backoff.max_ms ({max}) must be at least backoff.initial_ms ({initial})")]
    BackoffRange { initial: u64, max: u64 },
}

impl FunctionSpec {
    /// Parses and validates a JSON spec; an empty document means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<FunctionSpec, SpecError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(FunctionSpec::default());
        }
        let spec: FunctionSpec =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every value is within its documented range.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(SpecError::Timeout(self.timeout_ms));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(SpecError::Attempts(self.max_attempts));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(SpecError::Concurrency(self.concurrency));
        }
        if let Some(max) = self.max_concurrency {
            if max == 0 || max > MAX_CONCURRENCY {
                return Err(SpecError::MaxConcurrency(max));
            }
        }
        let m = self.backoff.multiplier;
        if !m.is_finite() || m < 1.0 {
            return Err(SpecError::Multiplier(m));
        }
        if self.backoff.max_ms < self.backoff.initial_ms {
            return Err(SpecError::BackoffRange {
                initial: self.backoff.initial_ms,
                max: self.backoff.max_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_means_defaults() {
        assert_eq!(
            FunctionSpec::from_json(b"").unwrap(),
            FunctionSpec::default()
        );
        assert_eq!(
            FunctionSpec::from_json(b"{}").unwrap(),
            FunctionSpec::default()
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = FunctionSpec::from_json(br#"{"timeout": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
    }

    #[test]
    fn zero_timeout_is_refused() {
        let err = FunctionSpec::from_json(br#"{"timeout_ms": 0}"#).unwrap_err();
        assert_eq!(err, SpecError::Timeout(0));
    }

    #[test]
    fn partial_backoff_keeps_other_defaults() {
        let spec = FunctionSpec::from_json(br#"{"backoff": {"initial_ms": 5}}"#).unwrap();
        assert_eq!(spec.backoff.initial_ms, 5);
        assert_eq!(spec.backoff.max_ms, 60_000);
    }

    #[test]
    fn config_must_be_an_object() {
        assert!(FunctionSpec::from_json(br#"{"config": [1]}"#).is_err());
    }
}
