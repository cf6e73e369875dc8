//! The error shape every failing route answers with: `{"error": {"code", "message", …}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code` to branch on and a `message` for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, such as `invalid_name` or `function_not_found`.
    pub code: String,
    pub message: String,
    /// Extra fields of some errors: `kind` and `invocation_id` of a failed invocation,
    /// `scope` of a refused key, the limit of an oversized body.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ErrorDetail {
    /// A string field of `extra`, such as `kind`.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(serde_json::Value::as_str)
    }
}
