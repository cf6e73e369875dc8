//! Web functions: the HTTP request a web function receives and the response it returns.
//!
//! The host gives a web function its request body as the input and the rest of the request in
//! `ctx.event` (`{"source": "web", "method", "path", "raw_query", "query", "headers",
//! "remote_addr"}`); the function answers with Lambda's function-URL response format,
//! `{"statusCode", "headers", "cookies", "body", "isBase64Encoded"}`. These types are both ends
//! of that envelope, with `http` crate types for the method, status and headers.

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::FnError;

/// An HTTP request to a web function.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRequest {
    pub method: Method,
    /// The path below `/function/{name}`, as sent (not percent-decoded); `/` at the root.
    pub path: String,
    /// The query string as sent, without `?`; empty when there is none.
    pub raw_query: String,
    /// The decoded query parameters; a repeated parameter's values are joined with `,`.
    pub query: BTreeMap<String, String>,
    /// The request headers; without `Authorization` when it carried the caller's Squall key.
    pub headers: HeaderMap,
    /// The client's IP address; empty when the host does not know it.
    pub remote_addr: String,
    pub body: Vec<u8>,
}

impl WebRequest {
    /// The request described by `event` (a web event, see the module documentation) with
    /// `body`. Missing fields read as a `POST` to `/` without query or headers, so that a web
    /// function invoked through the ordinary invoke API still gets a request.
    pub fn from_event(event: &Value, body: &[u8]) -> WebRequest {
        let text = |field: &str| event.get(field).and_then(Value::as_str).unwrap_or_default();
        let strings = |field: &str| {
            event
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
                .collect::<Vec<_>>()
        };
        let mut headers = HeaderMap::new();
        for (name, value) in strings("headers") {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.append(name, value);
            }
        }
        let path = match text("path") {
            "" => "/".to_owned(),
            path => path.to_owned(),
        };
        WebRequest {
            method: Method::from_bytes(text("method").as_bytes()).unwrap_or(Method::POST),
            path,
            raw_query: text("raw_query").to_owned(),
            query: strings("query").into_iter().collect(),
            headers,
            remote_addr: text("remote_addr").to_owned(),
            body: body.to_vec(),
        }
    }

    /// A header's value as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter's (decoded) value.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The body as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The body parsed as JSON; a body that does not parse is a permanent error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FnError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| FnError::permanent(format!("invalid JSON body: {error}")))
    }
}

/// A web function's answer: status, headers, cookies and body.
#[derive(Debug, Clone, PartialEq)]
pub struct WebResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// `Set-Cookie` values, one per cookie.
    pub cookies: Vec<String>,
    pub body: Vec<u8>,
}

impl Default for WebResponse {
    fn default() -> Self {
        WebResponse::new(StatusCode::OK)
    }
}

impl WebResponse {
    /// An empty answer with `status`.
    pub fn new(status: StatusCode) -> WebResponse {
        WebResponse {
            status,
            headers: HeaderMap::new(),
            cookies: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` answer.
    pub fn text(status: StatusCode, body: impl Into<String>) -> WebResponse {
        let mut response = WebResponse::new(status).with_body(body.into());
        response.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }

    /// An `application/json` answer.
    pub fn json<T: Serialize + ?Sized>(
        status: StatusCode,
        value: &T,
    ) -> Result<WebResponse, FnError> {
        let body = serde_json::to_vec(value)
            .map_err(|error| FnError::permanent(format!("invalid JSON answer: {error}")))?;
        let mut response = WebResponse::new(status).with_body(body);
        response
            .headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }

    /// The same answer with `status`.
    pub fn with_status(mut self, status: StatusCode) -> WebResponse {
        self.status = status;
        self
    }

    /// The same answer with one more header value.
    ///
    /// # Panics
    /// When `name` is not a valid header name or `value` not a valid header value (a
    /// panicking web function answers 502). Use `headers` directly to handle that yourself.
    pub fn with_header<K, V>(mut self, name: K, value: V) -> WebResponse
    where
        HeaderName: TryFrom<K>,
        HeaderValue: TryFrom<V>,
    {
        let name = HeaderName::try_from(name)
            .unwrap_or_else(|_| panic!("with_header: invalid header name"));
        let value = HeaderValue::try_from(value)
            .unwrap_or_else(|_| panic!("with_header: invalid value of header {name}"));
        self.headers.append(name, value);
        self
    }

    /// The same answer with one more cookie (a `Set-Cookie` value such as
    /// `"id=7; Path=/; HttpOnly"`).
    pub fn with_cookie(mut self, cookie: impl Into<String>) -> WebResponse {
        self.cookies.push(cookie.into());
        self
    }

    /// The same answer with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> WebResponse {
        self.body = body.into();
        self
    }

    /// The function-URL response the host reads: `{"statusCode", "headers", "cookies",
    /// "body", "isBase64Encoded"}`. A repeated header's values are joined with `,` (except
    /// `Set-Cookie`, whose values join `cookies`); a body that is not UTF-8 goes as base64.
    pub fn to_envelope(&self) -> Value {
        let mut headers = serde_json::Map::new();
        let mut cookies = self.cookies.clone();
        for name in self.headers.keys() {
            let values = self
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            if name == SET_COOKIE {
                cookies.extend(values);
            } else {
                let joined = values.collect::<Vec<_>>().join(",");
                headers.insert(name.as_str().to_owned(), joined.into());
            }
        }
        let (body, base64) = match std::str::from_utf8(&self.body) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (base64(&self.body), true),
        };
        serde_json::json!({
            "statusCode": self.status.as_u16(),
            "headers": headers,
            "cookies": cookies,
            "body": body,
            "isBase64Encoded": base64,
        })
    }
}

/// Standard base64 with padding (RFC 4648), for bodies that are not UTF-8.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |word, (i, &b)| word | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(word >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0, 255]), "AP8=");
    }

    #[test]
    fn a_web_event_becomes_a_request() {
        let event = serde_json::json!({
            "source": "web", "method": "PATCH", "path": "/orders/7", "raw_query": "a=1&a=2",
            "query": {"a": "1,2"}, "headers": {"x-signature": "abc", "content-type": "text/plain"},
            "remote_addr": "10.0.0.1"
        });
        let request = WebRequest::from_event(&event, b"hi");
        assert_eq!(request.method, Method::PATCH);
        assert_eq!(request.path, "/orders/7");
        assert_eq!(request.raw_query, "a=1&a=2");
        assert_eq!(request.query("a"), Some("1,2"));
        assert_eq!(request.header("X-Signature"), Some("abc"));
        assert_eq!(request.remote_addr, "10.0.0.1");
        assert_eq!(request.text(), Some("hi"));
    }

    #[test]
    fn an_event_from_elsewhere_reads_as_a_post_to_the_root() {
        let request = WebRequest::from_event(&serde_json::json!({"source": "http"}), b"");
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/");
        assert!(request.headers.is_empty() && request.query.is_empty());
    }

    #[test]
    fn a_response_becomes_the_function_url_envelope() {
        let response = WebResponse::text(StatusCode::CREATED, "made")
            .with_header("x-id", "7")
            .with_header("x-tag", "a")
            .with_header("x-tag", "b")
            .with_header("set-cookie", "a=1")
            .with_cookie("b=2; HttpOnly");
        assert_eq!(
            response.to_envelope(),
            serde_json::json!({
                "statusCode": 201,
                "headers": {"content-type": "text/plain; charset=utf-8", "x-id": "7", "x-tag": "a,b"},
                "cookies": ["b=2; HttpOnly", "a=1"],
                "body": "made",
                "isBase64Encoded": false,
            })
        );
        let bytes = WebResponse::default().with_body(vec![0, 255]).to_envelope();
        assert_eq!(bytes["body"], "AP8=");
        assert_eq!(bytes["isBase64Encoded"], true);
        assert_eq!(bytes["statusCode"], 200);
    }

    #[test]
    fn json_answers_and_bodies() {
        let response = WebResponse::json(StatusCode::OK, &serde_json::json!({"ok": true})).unwrap();
        assert_eq!(response.body, br#"{"ok":true}"#);
        assert_eq!(response.headers[CONTENT_TYPE], "application/json");
        let request = WebRequest::from_event(&Value::Null, br#"{"n": 2}"#);
        let parsed: serde_json::Value = request.json().unwrap();
        assert_eq!(parsed["n"], 2);
        let bad = WebRequest::from_event(&Value::Null, b"{").json::<Value>();
        assert!(matches!(bad, Err(FnError::Permanent(_))));
    }
}
