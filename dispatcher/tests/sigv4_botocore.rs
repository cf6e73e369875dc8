//! SigV4 cross-checked against botocore: every request in `data/sigv4_botocore.json` was signed
//! by botocore's own signer (`data/sigv4_botocore.py` made it), and Squall's verifier must
//! accept each with the right secret and refuse it with a wrong secret or a tampered body.

use base64::Engine as _;
use serde::Deserialize;
use squall_dispatcher::compat::sigv4::{self, RequestParts, SigError};

#[derive(Deserialize)]
struct Data {
    botocore: String,
    requests: Vec<Signed>,
}

#[derive(Deserialize)]
struct Signed {
    name: String,
    secret: String,
    access_key: String,
    amz_date: String,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body_base64: String,
}

impl Signed {
    fn body(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body_base64)
            .expect("the body is base64")
    }

    fn parts<'a>(&'a self, body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method: &self.method,
            raw_path: &self.path,
            raw_query: &self.query,
            headers: self.headers.clone(),
            body,
        }
    }

    /// What Squall's verifier says of this request with `secret` and `body`, at its signing time.
    fn verify(&self, secret: &str, body: &[u8]) -> Result<(), SigError> {
        let authorization = self
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .map(|(_, value)| value.as_str())
            .expect("a signed request has an Authorization header");
        let credential = sigv4::parse_authorization(authorization)?;
        assert_eq!(credential.access_key, self.access_key, "{}", self.name);
        let now = sigv4::parse_amz_date(&self.amz_date).expect("botocore's X-Amz-Date parses");
        sigv4::verify(&self.parts(body), &credential, &self.amz_date, secret, now)
    }
}

fn data() -> Data {
    let text = include_str!("data/sigv4_botocore.json");
    serde_json::from_str(text).expect("the botocore test data is JSON")
}

#[test]
fn every_request_botocore_signed_is_accepted_with_the_right_secret() {
    let data = data();
    assert!(data.requests.len() >= 8, "botocore {}", data.botocore);
    assert!(data
        .requests
        .iter()
        .any(|r| r.method == "POST" && r.path.ends_with("/invocations")));
    for request in &data.requests {
        assert_eq!(
            request.verify(&request.secret, &request.body()),
            Ok(()),
            "{} (botocore {})",
            request.name,
            data.botocore
        );
    }
}

#[test]
fn a_wrong_secret_is_refused() {
    for request in &data().requests {
        let wrong = format!("{}x", request.secret);
        assert_eq!(
            request.verify(&wrong, &request.body()),
            Err(SigError::Mismatch),
            "{}",
            request.name
        );
    }
}

#[test]
fn a_tampered_body_is_refused() {
    for request in &data().requests {
        let mut body = request.body();
        match body.first_mut() {
            Some(byte) => *byte ^= 0x01,
            None => body.push(b'x'),
        }
        assert_eq!(
            request.verify(&request.secret, &body),
            Err(SigError::Mismatch),
            "{}",
            request.name
        );
    }
}
