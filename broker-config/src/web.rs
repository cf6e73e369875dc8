//! The web request a job made from `/function/{name}` carries in its `Squall-Web` header.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the function sees of an HTTP request besides its body (the job's payload): the
/// dispatcher writes it, the worker turns it into `ctx.event`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WebRequest {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path below `/function/{name}`, as sent (not percent-decoded); `/` at the root.
    pub path: String,
    /// The query string as sent, without `?`; empty when there is none.
    pub raw_query: String,
    /// The decoded query parameters; a repeated parameter's values joined with `,`.
    pub query: BTreeMap<String, String>,
    /// Request headers by lowercase name; repeated headers' values joined with `,`.
    pub headers: BTreeMap<String, String>,
    /// The client's IP address (the TCP peer's).
    pub remote_addr: String,
}

impl WebRequest {
    /// The `Squall-Web` header value: single-line JSON (serde_json escapes control characters).
    pub fn to_header(&self) -> String {
        serde_json::to_string(self).expect("a WebRequest always serializes")
    }

    /// Reads a `Squall-Web` header value.
    pub fn from_header(value: &str) -> Option<WebRequest> {
        serde_json::from_str(value).ok()
    }

    /// `ctx.event` of the function: `{"source": "web", "method", "path", "raw_query", "query",
    /// "headers", "remote_addr"}`.
    pub fn event(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "web",
            "method": self.method,
            "path": self.path,
            "raw_query": self.raw_query,
            "query": self.query,
            "headers": self.headers,
            "remote_addr": self.remote_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_its_header_and_becomes_the_event() {
        let request = WebRequest {
            method: "POST".into(),
            path: "/a/b".into(),
            raw_query: "x=1&x=2".into(),
            query: [("x".to_string(), "1,2".to_string())].into(),
            headers: [("x-line".to_string(), "one\ttwo".to_string())].into(),
            remote_addr: "127.0.0.1".into(),
        };
        let header = request.to_header();
        assert!(!header.contains('\n') && !header.contains('\r'), "{header}");
        assert_eq!(WebRequest::from_header(&header), Some(request.clone()));
        let event = request.event();
        assert_eq!(event["source"], "web");
        assert_eq!(event["query"]["x"], "1,2");
        assert_eq!(event["headers"]["x-line"], "one\ttwo");
        assert_eq!(event["remote_addr"], "127.0.0.1");
        assert_eq!(WebRequest::from_header("not json"), None);
    }
}
