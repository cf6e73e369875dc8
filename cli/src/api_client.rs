//! A small client for the dispatcher's HTTP API v1 and its JSON error shape.

use anyhow::{bail, Context as _};
use reqwest::{Method, RequestBuilder, Response, Url};
use std::fmt;
use std::time::Duration;

/// An error answer of the API: `{"error": {"code": "...", "message": "...", ...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    /// The whole `error` object, with extra fields such as `kind` and `invocation_id`.
    pub error: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// Builds the error from a status and a response body, JSON or not.
    pub fn from_body(status: u16, body: &[u8]) -> ApiError {
        let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
        match parsed.as_ref().and_then(|v| v["error"].as_object()) {
            Some(error) => ApiError {
                code: error["code"].as_str().unwrap_or("unknown").to_string(),
                message: error
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("(no message)")
                    .to_string(),
                error: error.clone(),
            },
            None => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                ApiError {
                    code: format!("http_{status}"),
                    message: if text.is_empty() {
                        format!("the API answered HTTP {status}")
                    } else {
                        format!("the API answered HTTP {status}: {text}")
                    },
                    error: serde_json::Map::new(),
                }
            }
        }
    }

    /// A string field of the error object, such as `invocation_id` or `kind`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.error.get(key).and_then(|v| v.as_str())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.message, self.code)?;
        for key in ["kind", "status", "invocation_id"] {
            if let Some(value) = self.field(key) {
                write!(f, ", {key}: {value}")?;
            }
        }
        if let Some(attempts) = self.error.get("attempts").and_then(|v| v.as_u64()) {
            write!(f, ", attempts: {attempts}")?;
        }
        write!(f, ")")
    }
}

impl std::error::Error for ApiError {}

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

    /// Sends a request and reads a JSON answer.
    pub async fn json(&self, request: RequestBuilder) -> anyhow::Result<serde_json::Value> {
        let response = self.send(request).await?;
        let url = response.url().clone();
        response
            .json()
            .await
            .with_context(|| format!("the answer of {url} is not valid JSON"))
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
        assert_eq!(error.field("invocation_id"), Some("abc"));
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
