//! A small client for the dispatcher's HTTP API v1: answers kept as the bytes the server sent,
//! decoded into the `squall_api` types on demand, and errors in the API's `ErrorBody` shape.

use anyhow::{bail, Context as _};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use squall_api::{ErrorBody, ErrorDetail};
use std::fmt;
use std::time::Duration;

/// The most characters of an unexpected body quoted in an error message.
const QUOTED_BODY_CHARS: usize = 2000;

/// An error answer of the API: the `error` object of its `ErrorBody`. An answer in another
/// shape (a proxy's HTML page, say) gets the code `http_<status>` and its text as the message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The `code`, `message` and extra fields such as `kind` and `invocation_id`.
    pub detail: ErrorDetail,
}

impl ApiError {
    /// Builds the error from a status and a response body, JSON or not.
    pub fn from_body(status: u16, body: &[u8]) -> ApiError {
        if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
            return ApiError { detail: error };
        }
        let text = String::from_utf8_lossy(body).trim().to_string();
        ApiError {
            detail: ErrorDetail {
                code: format!("http_{status}"),
                message: if text.is_empty() {
                    format!("the API answered HTTP {status}")
                } else {
                    format!("the API answered HTTP {status}: {text}")
                },
                extra: serde_json::Map::new(),
            },
        }
    }

    /// An integer field of the error's extras, such as a batch error's `line`.
    pub fn extra_u64(&self, key: &str) -> Option<u64> {
        self.detail
            .extra
            .get(key)
            .and_then(serde_json::Value::as_u64)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.detail.message, self.detail.code)?;
        for key in ["kind", "status", "invocation_id"] {
            if let Some(value) = self.detail.extra_str(key) {
                write!(f, ", {key}: {value}")?;
            }
        }
        if let Some(attempts) = self.extra_u64("attempts") {
            write!(f, ", attempts: {attempts}")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for ApiError {}

/// A successful answer as the server sent it: `--json` prints it, the human output decodes it.
#[derive(Debug, Clone)]
pub struct Answer {
    url: Url,
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// An answer of `url` with `status` and `body`.
    pub fn new(url: Url, status: u16, body: Vec<u8>) -> Answer {
        Answer { url, status, body }
    }

    /// The body decoded as the API type `T`; when it is not one, the error quotes the status
    /// and the body.
    pub fn decode<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).map_err(|error| {
            anyhow::anyhow!(
                "the answer of {} (HTTP {}) is not a {}: {error}; the body was: {}",
                self.url,
                self.status,
                type_name::<T>(),
                self.quoted_body()
            )
        })
    }

    /// The body as JSON, every field the server sent.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).map_err(|error| {
            anyhow::anyhow!(
                "the answer of {} (HTTP {}) is not valid JSON ({error}); the body was: {}",
                self.url,
                self.status,
                self.quoted_body()
            )
        })
    }

    /// Prints the server's JSON for scripts, laid out as every `--json` output is.
    pub fn print(&self) -> anyhow::Result<()> {
        crate::commands::print_json(&self.json()?)
    }

    fn quoted_body(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        if text.is_empty() {
            return "(empty)".to_string();
        }
        match text.char_indices().nth(QUOTED_BODY_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        }
    }
}

/// The last segment of a type's path: `squall_api::functions::Function` → `Function`.
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let path = full.split('<').next().unwrap_or(full);
    path.rsplit("::").next().unwrap_or(path)
}

/// The API at one base URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: Url,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8080`), sending `api_key` as a
    /// bearer token when given and trusting the PEM certificate(s) in `ca` for https:// URLs.
    pub fn new(
        base: &str,
        api_key: Option<&str>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<ApiClient> {
        let base = Url::parse(base).with_context(|| format!("invalid API URL {base:?}"))?;
        if base.scheme() != "http" && base.scheme() != "https" {
            bail!("invalid API URL {base}: use an http:// or https:// URL");
        }
        if base.cannot_be_a_base() {
            bail!("invalid API URL {base}");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("the API key has characters an HTTP header cannot carry")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("invalid PEM in {}", ca.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(ApiClient { base, http })
    }

    /// The base URL, as shown in messages.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of the path made of `segments`, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request to the path made of `segments`.
    pub fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http.request(method, self.url(segments))
    }

    /// Sends a request; any HTTP status is returned, only transport failures are errors.
    pub async fn send_raw(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Sends a request and turns a non-2xx answer into an `ApiError`.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = self.send_raw(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response).await.into())
    }

    /// Sends a request and reads a successful answer's body.
    pub async fn answer(&self, request: RequestBuilder) -> anyhow::Result<Answer> {
        let response = self.send(request).await?;
        answer_of(response).await
    }

    fn transport_error(&self, error: reqwest::Error) -> anyhow::Error {
        let cause = root_cause(&error);
        if error.is_connect() {
            anyhow::anyhow!(
                "cannot connect to the Squall API at {} ({cause}); is it running? \
                 Start a local cluster with `squall up`, or point --url (or SQUALL_URL) at a running dispatcher",
                self.base()
            )
        } else if error.is_timeout() {
            anyhow::anyhow!(
                "the Squall API at {} did not answer in time ({cause})",
                self.base()
            )
        } else {
            anyhow::anyhow!(
                "request to the Squall API at {} failed: {cause}",
                self.base()
            )
        }
    }
}

/// Reads a response's body into an `Answer`.
pub async fn answer_of(response: Response) -> anyhow::Result<Answer> {
    let url = response.url().clone();
    let status = response.status().as_u16();
    let body = response
        .bytes()
        .await
        .with_context(|| format!("cannot read the answer of {url}"))?;
    Ok(Answer::new(url, status, body.to_vec()))
}

/// Reads an error answer into an `ApiError`.
pub async fn error_of(response: Response) -> ApiError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    ApiError::from_body(status, &body)
}

/// The innermost cause of an error, which names what actually went wrong.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_shows_message_and_code() {
        let error = ApiError::from_body(
            404,
            br#"{"error": {"code": "function_not_found", "message": "function \"x\" is not deployed"}}"#,
        );
        assert_eq!(
            error.to_string(),
            "function \"x\" is not deployed (function_not_found)"
        );
    }

    #[test]
    fn function_failure_shows_kind_and_invocation() {
        let error = ApiError::from_body(
            500,
            br#"{"error": {"code": "function_failed", "message": "boom", "kind": "error", "status": "failed", "invocation_id": "abc", "attempts": 1}}"#,
        );
        assert_eq!(
            error.to_string(),
            "boom (function_failed, kind: error, status: failed, invocation_id: abc, attempts: 1)"
        );
        assert_eq!(error.detail.extra_str("invocation_id"), Some("abc"));
    }

    #[test]
    fn non_json_error_keeps_the_status_and_text() {
        let error = ApiError::from_body(502, b"bad gateway\n");
        assert_eq!(
            error.to_string(),
            "the API answered HTTP 502: bad gateway (http_502)"
        );
    }

    #[test]
    fn json_error_in_another_shape_keeps_the_status_and_text() {
        let error = ApiError::from_body(404, br#"{"detail": "no such route"}"#);
        assert_eq!(
            error.to_string(),
            r#"the API answered HTTP 404: {"detail": "no such route"} (http_404)"#
        );
    }

    fn answer(body: &str) -> Answer {
        let url = Url::parse("http://127.0.0.1:8080/v1/functions").unwrap();
        Answer::new(url, 200, body.as_bytes().to_vec())
    }

    #[test]
    fn answers_decode_into_the_api_types() {
        let list: squall_api::functions::FunctionList =
            answer(r#"{"functions": []}"#).decode().unwrap();
        assert!(list.functions.is_empty());
    }

    #[test]
    fn json_output_keeps_fields_the_types_do_not_know() {
        let json = answer(r#"{"functions": [], "added_later": {"n": 1}}"#)
            .json()
            .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"functions": [], "added_later": {"n": 1}})
        );
    }

    #[test]
    fn an_answer_of_the_wrong_shape_names_its_status_type_and_body() {
        let error = answer(r#"{"items": []}"#)
            .decode::<squall_api::functions::FunctionList>()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "the answer of http://127.0.0.1:8080/v1/functions (HTTP 200) is not a FunctionList: missing field `functions`"
            ),
            "{error}"
        );
        assert!(error.ends_with(r#"the body was: {"items": []}"#), "{error}");
        let error = answer("").json().unwrap_err().to_string();
        assert!(error.contains("is not valid JSON"), "{error}");
        assert!(error.ends_with("the body was: (empty)"), "{error}");
    }

    #[test]
    fn long_bodies_are_cut_in_messages() {
        let body = format!(r#"{{"pad": "{}"}}"#, "é".repeat(3 * QUOTED_BODY_CHARS));
        let error = answer(&body)
            .decode::<squall_api::functions::FunctionList>()
            .unwrap_err()
            .to_string();
        assert!(error.ends_with('…'), "{error}");
        assert!(error.chars().count() < QUOTED_BODY_CHARS + 200, "{error}");
    }

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let client = ApiClient::new("http://127.0.0.1:8080/", None, None).unwrap();
        assert_eq!(
            client.url(&["v1", "invocations", "a/b"]).as_str(),
            "http://127.0.0.1:8080/v1/invocations/a%2Fb"
        );
        let prefixed = ApiClient::new("http://example.test/squall", None, None).unwrap();
        assert_eq!(
            prefixed.url(&["v1", "functions"]).as_str(),
            "http://example.test/squall/v1/functions"
        );
        assert_eq!(prefixed.base(), "http://example.test/squall");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(ApiClient::new("https://example.test", None, None).is_ok());
        assert!(ApiClient::new("ftp://example.test", None, None).is_err());
        assert!(ApiClient::new("not a url", None, None).is_err());
    }
}
