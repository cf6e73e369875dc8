//! Request extractors that answer in the API's error shape: typed query strings that refuse
//! unknown fields, size-bounded JSON bodies, and path names and ids validated once.

pub use crate::core::names::{
    FunctionName, InvocationId, Name, NameKind, OfFunction, OfKey, OfSchedule, OfTrigger,
};
use crate::http::error::ApiError;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use squall_api::ErrorCode;

/// The largest JSON body of the API's small documents (keys, schedules, triggers, secrets),
/// on top of the invocation payload limit a schedule's payload may reach.
const JSON_SLACK: usize = 64 * 1024;

/// A query string decoded into `T`, whose `deny_unknown_fields` refuses unknown parameters.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                rejection
                    .body_text()
                    .replace("Failed to deserialize query string: ", "invalid query: "),
            )),
        }
    }
}

/// A request body type: the error code and expected shape its parse errors name.
pub trait JsonBody: DeserializeOwned {
    const INVALID: ErrorCode;
    const SHAPE: &'static str;
}

impl JsonBody for squall_api::operations::ScheduleRequest {
    const INVALID: ErrorCode = ErrorCode::InvalidSchedule;
    const SHAPE: &'static str = "schedule body must be JSON {function, cron, timezone?, payload?}";
}

impl JsonBody for squall_api::operations::TriggerRequest {
    const INVALID: ErrorCode = ErrorCode::InvalidTrigger;
    const SHAPE: &'static str =
        "trigger body must be JSON {function, subject} or {function, bucket, key}";
}

impl JsonBody for squall_api::operations::NewKey {
    const INVALID: ErrorCode = ErrorCode::InvalidKey;
    const SHAPE: &'static str = "key body must be JSON {name, scopes}";
}

impl JsonBody for squall_api::versions::AliasBody {
    const INVALID: ErrorCode = ErrorCode::InvalidAlias;
    const SHAPE: &'static str = "alias body must be JSON {version, weights?: {\"4\": 0.1}}";
}

impl JsonBody for squall_api::functions::SecretValues {
    const INVALID: ErrorCode = ErrorCode::InvalidSecrets;
    const SHAPE: &'static str = "secrets must be a JSON object of name → string";
}

/// A JSON body of at most the payload limit plus `JSON_SLACK` bytes, whatever its
/// `Content-Type`; too large is a 413, malformed a 400 with the type's code.
pub struct ApiJson<T>(pub T);

/// The largest invocation payload, as the state gives it to extractors.
#[derive(Debug, Clone, Copy)]
pub struct PayloadLimit(pub usize);

impl<T: JsonBody, S: Send + Sync> FromRequest<S> for ApiJson<T>
where
    PayloadLimit: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = PayloadLimit::from_ref(state).0 + JSON_SLACK;
        let bytes = crate::http::limits::read_limited(request.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::too_large(format!("the body is larger than {limit} bytes"))
                    .with("limit", limit)
            })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(T::INVALID, format!("{}: {e}", T::SHAPE)))
    }
}

async fn single_path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(value)| value)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidPath, e.body_text()))
}

impl<K: NameKind, S: Send + Sync> FromRequestParts<S> for Name<K> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Name::parse(single_path_param(parts, state).await?)?)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for InvocationId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(InvocationId::parse(single_path_param(parts, state).await?)?)
    }
}

/// The `{name}` parameter of a function route.
pub(crate) const NAME: &str = "Function name: 1 to 64 ASCII letters, digits, '-' or '_'.";

/// The `{name}` parameter of a route that takes a qualifier.
pub(crate) const QUALIFIED_NAME: &str =
    "Function name, optionally with `:qualifier` (a version number, `$LATEST` or an alias).";
