//! The API's error type and its JSON shape: `{"error": {"code": "...", "message": "..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use squall_api::{ErrorBody, ErrorCode, ErrorDetail};

/// An error answer of the HTTP API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields merged into the `error` object (e.g. `kind`, `invocation_id`).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Seconds a client should wait before trying again (the `Retry-After` header).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: serde_json::Map::new(),
            retry_after: None,
        }
    }

    /// Adds a field to the error object (never `code` or `message`, which are the error's own).
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        debug_assert!(
            key != "code" && key != "message",
            "{key} is not an extra field"
        );
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            message,
        )
    }

    /// The broker could not be reached or refused the operation.
    pub fn broker(context: &str, error: impl std::fmt::Display) -> Self {
        Self::broker_message(format!("{context}: {error}"))
    }

    /// A `503 broker_unavailable` whose message says what failed.
    pub fn broker_message(message: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BrokerUnavailable,
            message,
        )
    }

    /// A job publish the broker did not acknowledge: a 503 with `Retry-After` when trying
    /// again later may work (no quorum, a full queue), a plain 503 otherwise.
    pub fn publish(context: &str, error: squall_broker::publish::PublishError) -> Self {
        use squall_broker::publish::PublishError;
        let retry_after = squall_broker::publish::RETRY_AFTER.as_secs();
        match &error {
            PublishError::Full(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::QueueFull,
                format!("{context}: {error}; it frees up as workers take jobs"),
            )
            .retry_after(retry_after),
            PublishError::SubjectFull(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::FunctionBacklogFull,
                format!("{context}: the function has as many jobs waiting or running as its backlog limit allows; it frees up as workers take jobs"),
            )
            .retry_after(retry_after),
            PublishError::Unacknowledged { .. } => {
                Self::broker(context, &error).retry_after(retry_after)
            }
            PublishError::Refused(_) => Self::broker(context, &error),
        }
    }

    /// Logs a server-side failure once, where it is answered: `internal` is an ERROR an
    /// operator must act on; the broker's (`broker_unavailable`, `queue_full`) a WARN.
    pub fn log(&self) {
        match self.code {
            ErrorCode::Internal => {
                tracing::error!(message = "internal error", status = self.status.as_u16(), error = %self.message)
            }
            ErrorCode::BrokerUnavailable | ErrorCode::QueueFull => {
                tracing::warn!(message = "broker operation failed", code = self.code.as_str(), error = %self.message)
            }
            _ => {}
        }
    }

    /// Sets the `Retry-After` header of the answer.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// An unexpected server-side failure.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        Self::internal_message(format!("{context}: {error}"))
    }

    /// A `500 internal` whose message says what failed.
    pub fn internal_message(message: String) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }
}

impl IntoResponse for ApiError {
    /// Answers the error, and logs it here, at the edge.
    fn into_response(self) -> Response {
        self.log();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
                extra: self.extra,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<crate::core::names::NameError> for ApiError {
    fn from(error: crate::core::names::NameError) -> Self {
        use crate::core::names::NameError;
        let code = match error {
            NameError::Name(_) => ErrorCode::InvalidName,
            NameError::InvocationId(_) => ErrorCode::InvalidInvocationId,
        };
        ApiError::bad_request(code, error.to_string())
    }
}

impl From<crate::core::registry::RegistryError> for ApiError {
    fn from(error: crate::core::registry::RegistryError) -> Self {
        use crate::core::registry::RegistryError;
        match error {
            RegistryError::NotDeployed(_) => {
                ApiError::not_found(ErrorCode::FunctionNotFound, error.to_string())
            }
            RegistryError::Broker(_) => ApiError::broker_message(error.to_string()),
            RegistryError::Corrupt { .. } => ApiError::internal_message(error.to_string()),
        }
    }
}

impl From<crate::core::versions::Refused> for ApiError {
    fn from(refused: crate::core::versions::Refused) -> Self {
        use squall_broker::versions::VersionError;
        let message = refused.to_string();
        match refused.error {
            VersionError::NoSuchVersion(_) => {
                ApiError::not_found(ErrorCode::VersionNotFound, message)
            }
            VersionError::NoSuchAlias(_) => ApiError::not_found(ErrorCode::AliasNotFound, message),
            VersionError::BadQualifier(_) => {
                ApiError::bad_request(ErrorCode::InvalidQualifier, message)
            }
            VersionError::BadWeight(_) | VersionError::WeightsOver => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidWeights,
                message,
            ),
            VersionError::Aliased { .. }
            | VersionError::Latest(_)
            | VersionError::NoPrevious(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::VersionInUse, message)
            }
        }
    }
}

impl From<crate::core::versions::QualifierError> for ApiError {
    fn from(error: crate::core::versions::QualifierError) -> Self {
        use crate::core::versions::QualifierError;
        match error {
            QualifierError::Name(name) => name.into(),
            QualifierError::Disagree { .. } => {
                ApiError::bad_request(ErrorCode::InvalidQualifier, error.to_string())
            }
        }
    }
}

impl From<crate::core::versions::ModifyError> for ApiError {
    fn from(error: crate::core::versions::ModifyError) -> Self {
        use crate::core::versions::ModifyError;
        match error {
            ModifyError::Registry(error) => error.into(),
            ModifyError::Contended(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ConcurrentChange,
                error.to_string(),
            ),
        }
    }
}

impl From<crate::core::submit::SubmitError> for ApiError {
    fn from(error: crate::core::submit::SubmitError) -> Self {
        use crate::core::submit::SubmitError;
        match error {
            SubmitError::InvalidIdempotencyKey => {
                ApiError::bad_request(ErrorCode::InvalidIdempotencyKey, error.to_string())
            }
            SubmitError::Broker { .. } => ApiError::broker_message(error.to_string()),
            SubmitError::Publish(error) => {
                ApiError::publish("the invocation was not accepted", error)
            }
            SubmitError::BacklogFull { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::FunctionBacklogFull,
                error.to_string(),
            )
            .retry_after(squall_broker::publish::RETRY_AFTER.as_secs()),
        }
    }
}

impl From<crate::core::invoke::InvokeError> for ApiError {
    fn from(error: crate::core::invoke::InvokeError) -> Self {
        use crate::core::invoke::InvokeError;
        match error {
            InvokeError::Submit(error) => error.into(),
            InvokeError::Broker(_) => ApiError::broker_message(error.to_string()),
            InvokeError::Corrupt(_) => ApiError::internal_message(error.to_string()),
        }
    }
}

impl From<crate::core::broker::BrokerError> for ApiError {
    fn from(error: crate::core::broker::BrokerError) -> Self {
        ApiError::broker_message(error.to_string())
    }
}

impl From<crate::core::cancel::CancelError> for ApiError {
    fn from(error: crate::core::cancel::CancelError) -> Self {
        use crate::core::cancel::CancelError;
        match error {
            CancelError::Broker(error) => error.into(),
            CancelError::Corrupt(_) => ApiError::internal_message(error.to_string()),
        }
    }
}

impl From<crate::index::service::AskError> for ApiError {
    fn from(error: crate::index::service::AskError) -> Self {
        use crate::index::service::AskError;
        match error {
            AskError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::IndexUnavailable,
                error.to_string(),
            ),
            AskError::Failed(_) => ApiError::internal_message(error.to_string()),
        }
    }
}

impl From<crate::events::triggers::TriggerError> for ApiError {
    fn from(error: crate::events::triggers::TriggerError) -> Self {
        use crate::events::triggers::TriggerError;
        match error {
            TriggerError::Broker(error) => error.into(),
            TriggerError::Corrupt(_) => ApiError::internal_message(error.to_string()),
            TriggerError::NoBucket(_) => {
                ApiError::not_found(ErrorCode::BucketNotFound, error.to_string())
            }
            TriggerError::SubjectInUse(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::SubjectInUse,
                error.to_string(),
            ),
        }
    }
}

impl From<crate::events::destinations::DestinationError> for ApiError {
    fn from(error: crate::events::destinations::DestinationError) -> Self {
        use crate::events::destinations::DestinationError;
        match error {
            DestinationError::Broker(error) => error.into(),
            DestinationError::InvalidSpec(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidSpec,
                message,
            ),
            DestinationError::Publish(error) => {
                ApiError::publish("cannot keep the destination dead letter", error)
            }
            refused @ DestinationError::Refused { .. } => {
                ApiError::bad_request(ErrorCode::InvalidCallbackUrl, refused.to_string())
            }
        }
    }
}
