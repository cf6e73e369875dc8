//! Reading HTTP answers as status and JSON or API types, and a blocking GET for monitoring endpoints.

use std::time::Duration;

/// A plain HTTP/1.0 GET of `url` (`http://host:port/path`), for the monitoring endpoints in
/// code that is not async: the status and the body.
pub fn http_get_blocking(url: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Reads a response as status and a decoded `T`, panicking with the body when it does not decode.
pub async fn decode_response<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> (u16, T) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str(&text) {
        Ok(body) => (status, body),
        Err(e) => panic!(
            "HTTP {status} body does not decode as {} ({e}): {text}",
            std::any::type_name::<T>()
        ),
    }
}

/// Reads a response as status and JSON (Null when the body is not JSON).
pub async fn json_response(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}
