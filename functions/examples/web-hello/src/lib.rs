//! Example web function: answers 201 with a header and a cookie, echoes its request, checks a
//! webhook signature of its own at `/hook`, and panics at `/panic`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use squall_sdk::http::StatusCode;
use squall_sdk::serde_json::{json, Value};
use squall_sdk::{export_web_function, Context, FnError, WebRequest, WebResponse};

/// The header a webhook caller signs its body in: `sha256=<hex HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let digest = hmac_sha256(secret.as_bytes(), body);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Compares without stopping at the first difference, so timing does not reveal the prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The webhook secret: the secret `webhook_secret` when set, else the config value.
fn webhook_secret(config: &Value) -> Option<&str> {
    config
        .pointer("/secrets/webhook_secret")
        .or_else(|| config.get("webhook_secret"))
        .and_then(Value::as_str)
        .filter(|secret| !secret.is_empty())
}

/// Serves the request.
pub fn web_hello(ctx: &Context, request: WebRequest) -> Result<WebResponse, FnError> {
    match request.path.as_str() {
        "/panic" => panic!("web-hello panicked on purpose: internal detail 4711"),
        "/hook" => {
            let signed = match (
                webhook_secret(ctx.config()),
                request.header(SIGNATURE_HEADER),
            ) {
                (Some(secret), Some(given)) => same(
                    signature(secret, &request.body).as_bytes(),
                    given.as_bytes(),
                ),
                _ => false,
            };
            if !signed {
                ctx.warn("web-hello: a webhook with a bad signature");
                return WebResponse::json(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "bad signature"}),
                );
            }
            WebResponse::json(
                StatusCode::OK,
                &json!({"accepted": true, "bytes": request.body.len()}),
            )
        }
        _ => {
            let mut headers: Vec<&str> = request.headers.keys().map(|n| n.as_str()).collect();
            headers.dedup();
            let echo = json!({
                "method": request.method.as_str(),
                "path": request.path,
                "raw_query": request.raw_query,
                "query": request.query,
                "body": request.text().unwrap_or_default(),
                "headers": headers,
                "remote_addr": request.remote_addr,
            });
            Ok(WebResponse::json(StatusCode::CREATED, &echo)?
                .with_header("x-web-hello", "hello")
                .with_cookie("visit=1; Path=/; HttpOnly"))
        }
    }
}

export_web_function!(web_hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn request(path: &str, signature: Option<&str>, body: &[u8]) -> WebRequest {
        let mut headers = serde_json::Map::new();
        if let Some(signature) = signature {
            headers.insert(SIGNATURE_HEADER.into(), signature.into());
        }
        let event = json!({"source": "web", "method": "POST", "path": path, "headers": headers});
        WebRequest::from_event(&event, body)
    }

    #[test]
    fn a_hook_needs_its_signature() {
        let ctx = Context::new("web-hello", "1").with_config(br#"{"webhook_secret": "s3"}"#);
        let good = signature("s3", b"{}");
        let answer = web_hello(&ctx, request("/hook", Some(&good), b"{}")).unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        for bad in [Some("sha256=00"), None] {
            let answer = web_hello(&ctx, request("/hook", bad, b"{}")).unwrap();
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        }
        let no_secret = Context::new("web-hello", "1");
        let answer = web_hello(&no_secret, request("/hook", Some(&good), b"{}")).unwrap();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn other_paths_echo_with_a_header_and_a_cookie() {
        let answer =
            web_hello(&Context::new("web-hello", "1"), request("/a", None, b"hi")).unwrap();
        assert_eq!(answer.status, StatusCode::CREATED);
        assert_eq!(answer.headers["x-web-hello"], "hello");
        assert_eq!(answer.cookies, ["visit=1; Path=/; HttpOnly"]);
        let echo: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(echo["path"], "/a");
        assert_eq!(echo["body"], "hi");
    }
}
