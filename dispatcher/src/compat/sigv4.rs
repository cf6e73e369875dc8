//! AWS Signature Version 4, verified: the canonical request, the string to sign, the signing
//! key and the signature, as the Lambda-compatible API checks them. Pure functions over the
//! request's parts; HMAC-SHA256 is the `hmac` crate's. `tests/sigv4_botocore.rs` checks it
//! against requests botocore's own signer signed.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's `X-Amz-Date` may be from the dispatcher's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    #[error("the Authorization header is not an AWS4-HMAC-SHA256 signature")]
    NotSigV4,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    #[error("X-Amz-Date is missing or not of the form YYYYMMDDTHHMMSSZ")]
    BadDate,
    #[error("the credential scope's date does not match X-Amz-Date")]
    ScopeDate,
    #[error("the credential scope names service {0:?}, not lambda")]
    Service(String),
    #[error("signature expired: X-Amz-Date is more than 15 minutes from the server's time")]
    Expired,
    #[error("the request signature we calculated does not match the signature you provided")]
    Mismatch,
}

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lowercase, as listed (sorted by the signer).
    pub signed_headers: Vec<String>,
    /// Lowercase hex.
    pub signature: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=…`.
pub fn parse_authorization(value: &str) -> Result<Credential, SigError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or(SigError::NotSigV4)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SigError::Malformed("a part without '='"));
        };
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let credential = credential.ok_or(SigError::Malformed("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(SigError::Malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    let signed_headers: Vec<String> = signed
        .ok_or(SigError::Malformed("no SignedHeaders"))?
        .split(';')
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::Malformed("SignedHeaders must include host"));
    }
    Ok(Credential {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: signature
            .ok_or(SigError::Malformed("no Signature"))?
            .to_ascii_lowercase(),
    })
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// SigV4's URI encoding: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX` (uppercase), and `/`
/// too unless `keep_slash`.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space in a query); invalid escapes stay as they are.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical query string: each name and value decoded, then encoded, sorted.
pub fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k, true), false),
                uri_encode(&percent_decode(v, true), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request parts a signature covers.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as it arrived (still percent-encoded).
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    /// Header name (any case) → values.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
}

/// The canonical request for `parts` over `signed_headers`. The path is encoded once more, as
/// every service but S3 expects (botocore sends `name:alias` as `%3A`, signed as `%253A`).
pub fn canonical_request(parts: &RequestParts<'_>, signed_headers: &[String]) -> String {
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if parts.raw_path.is_empty() {
        "/"
    } else {
        parts.raw_path
    };
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{}",
        parts.method,
        uri_encode(path, true),
        canonical_query(parts.raw_query),
        signed_headers.join(";"),
        hex::encode(Sha256::digest(parts.body)),
    )
}

/// The string to sign for a request made at `amz_date` under `credential`'s scope.
pub fn string_to_sign(amz_date: &str, credential: &Credential, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        credential.date,
        credential.region,
        credential.service,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// The hex signature of `to_sign` with `secret` under `credential`'s scope.
pub fn signature(secret: &str, credential: &Credential, to_sign: &str) -> String {
    let k_date = hmac_sha256(
        format!("AWS4{secret}").as_bytes(),
        credential.date.as_bytes(),
    );
    let k_region = hmac_sha256(&k_date, credential.region.as_bytes());
    let k_service = hmac_sha256(&k_region, credential.service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    hex::encode(hmac_sha256(&k_signing, to_sign.as_bytes()))
}

/// Unix seconds of an `X-Amz-Date` (`20150830T123600Z`).
pub fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(4..6)?, num(6..8)?)?;
    let at = date.and_hms_opt(num(9..11)?, num(11..13)?, num(13..15)?)?;
    Some(at.and_utc().timestamp())
}

/// Checks what a request's headers say before its body is read: `amz_date` is well formed,
/// matches the credential scope's date, names the lambda service and is within the skew of
/// `now_secs`. Answers `amz_date` in Unix seconds.
pub fn check_date(credential: &Credential, amz_date: &str, now_secs: i64) -> Result<i64, SigError> {
    let at = parse_amz_date(amz_date).ok_or(SigError::BadDate)?;
    if !amz_date.starts_with(&credential.date) {
        return Err(SigError::ScopeDate);
    }
    if credential.service != "lambda" {
        return Err(SigError::Service(credential.service.clone()));
    }
    if (at - now_secs).abs() > MAX_SKEW_SECS {
        return Err(SigError::Expired);
    }
    Ok(at)
}

/// Checks that `credential` signed `parts` at `amz_date` with `secret`, within the skew of
/// `now_secs`.
pub fn verify(
    parts: &RequestParts<'_>,
    credential: &Credential,
    amz_date: &str,
    secret: &str,
    now_secs: i64,
) -> Result<(), SigError> {
    check_date(credential, amz_date, now_secs)?;
    let canonical = canonical_request(parts, &credential.signed_headers);
    let expected = signature(
        secret,
        credential,
        &string_to_sign(amz_date, credential, &canonical),
    );
    if bool::from(expected.as_bytes().ct_eq(credential.signature.as_bytes())) {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

/// The signatures a dispatcher accepted, each until it expires (its `X-Amz-Date` plus the
/// skew), so that a captured request cannot be sent again while its signature is valid. Held in
/// this dispatcher's memory only: a request replayed to another dispatcher is not caught there
/// (the idempotency key of a botocore call still maps it to the same invocation for its
/// window). At most `capacity` signatures are held; past that the one expiring first is
/// forgotten early.
pub struct ReplayCache {
    capacity: usize,
    seen: std::sync::Mutex<SeenSignatures>,
}

/// The signatures held, by signature and by expiry.
#[derive(Default)]
struct SeenSignatures {
    by_signature: std::collections::HashMap<String, i64>,
    by_expiry: std::collections::BTreeSet<(i64, String)>,
}

/// A signature that was already used within its validity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this request's signature was already used; sign every request anew")]
pub struct Replayed;

/// How many signatures a dispatcher holds by default: over 100 signed requests a second for
/// the half hour a signature stays valid, in some tens of MB.
pub const DEFAULT_REPLAY_CAPACITY: usize = 200_000;

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            capacity: capacity.max(1),
            seen: Default::default(),
        }
    }

    /// Records `signature`, valid until `expires_secs`, or refuses it when it was seen before
    /// and has not expired at `now_secs`.
    pub fn check(&self, signature: &str, expires_secs: i64, now_secs: i64) -> Result<(), Replayed> {
        let mut seen = self.seen.lock().expect("replay cache lock");
        while let Some(first) = seen.by_expiry.first().cloned() {
            if first.0 >= now_secs {
                break;
            }
            seen.by_signature.remove(&first.1);
            seen.by_expiry.remove(&first);
        }
        if seen.by_signature.contains_key(signature) {
            return Err(Replayed);
        }
        if seen.by_signature.len() >= self.capacity {
            // Full: the signature that would expire first is forgotten early.
            if let Some(first) = seen.by_expiry.pop_first() {
                seen.by_signature.remove(&first.1);
            }
        }
        seen.by_signature
            .insert(signature.to_string(), expires_secs);
        seen.by_expiry.insert((expires_secs, signature.to_string()));
        Ok(())
    }

    /// How many signatures are held.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .expect("replay cache lock")
            .by_signature
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::new(DEFAULT_REPLAY_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231 test case 6).
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn parts(body: &'static [u8]) -> RequestParts<'static> {
        RequestParts {
            method: "POST",
            raw_path: "/2015-03-31/functions/hello%3Alive/invocations",
            raw_query: "",
            headers: vec![
                ("Host".into(), "127.0.0.1:8080".into()),
                ("X-Amz-Date".into(), "20261201T120000Z".into()),
                ("X-Amz-Invocation-Type".into(), "  RequestResponse ".into()),
            ],
            body,
        }
    }

    #[test]
    fn the_canonical_request_encodes_the_path_again_and_trims_values() {
        let signed = vec![
            "host".to_string(),
            "x-amz-date".to_string(),
            "x-amz-invocation-type".to_string(),
        ];
        let canonical = canonical_request(&parts(b"{}"), &signed);
        let expected = "POST\n/2015-03-31/functions/hello%253Alive/invocations\n\n\
            host:127.0.0.1:8080\nx-amz-date:20261201T120000Z\nx-amz-invocation-type:RequestResponse\n\n\
            host;x-amz-date;x-amz-invocation-type\n\
            44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(canonical, expected);
        assert_eq!(
            canonical_query("b=2&a=x%3Ay&Qualifier=%24LATEST"),
            "Qualifier=%24LATEST&a=x%3Ay&b=2"
        );
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let header = "AWS4-HMAC-SHA256 Credential=admin/20261201/eu-west-1/lambda/aws4_request, \
            SignedHeaders=host;x-amz-date;x-amz-invocation-type, Signature=";
        let unsigned = parse_authorization(&format!("{header}00")).unwrap();
        assert_eq!(unsigned.access_key, "admin");
        assert_eq!(unsigned.region, "eu-west-1");
        let canonical = canonical_request(&parts(b"{}"), &unsigned.signed_headers);
        let sig = signature(
            "secret",
            &unsigned,
            &string_to_sign("20261201T120000Z", &unsigned, &canonical),
        );
        let credential = parse_authorization(&format!("{header}{sig}")).unwrap();
        let now = parse_amz_date("20261201T120500Z").unwrap();
        assert_eq!(
            verify(
                &parts(b"{}"),
                &credential,
                "20261201T120000Z",
                "secret",
                now
            ),
            Ok(())
        );
        assert_eq!(
            verify(&parts(b"{}"), &credential, "20261201T120000Z", "wrong", now),
            Err(SigError::Mismatch)
        );
        assert_eq!(
            verify(
                &parts(b"{\"a\":1}"),
                &credential,
                "20261201T120000Z",
                "secret",
                now
            ),
            Err(SigError::Mismatch)
        );
        let late = parse_amz_date("20261201T121600Z").unwrap();
        assert_eq!(
            verify(
                &parts(b"{}"),
                &credential,
                "20261201T120000Z",
                "secret",
                late
            ),
            Err(SigError::Expired)
        );
        assert_eq!(parse_authorization("Bearer x"), Err(SigError::NotSigV4));
    }

    #[test]
    fn a_signature_is_accepted_once_until_it_expires_and_the_cache_stays_bounded() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.check("a", 100, 10), Ok(()));
        assert_eq!(cache.check("a", 100, 50), Err(Replayed));
        assert_eq!(cache.check("b", 200, 50), Ok(()));
        // Expired: forgotten, so a new use is a new request as far as the cache knows (the
        // date check refuses it anyway).
        assert_eq!(cache.check("a", 300, 101), Ok(()));
        assert_eq!(cache.len(), 2);
        // Full: the signature expiring first (b, at 200) makes room.
        assert_eq!(cache.check("c", 400, 102), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.check("a", 300, 103), Err(Replayed));
        assert_eq!(cache.check("c", 400, 103), Err(Replayed));
    }

    #[test]
    fn the_date_is_checked_before_any_signature() {
        let credential = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=k/20261201/eu-west-1/lambda/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
        )
        .unwrap();
        let now = parse_amz_date("20261201T120000Z").unwrap();
        assert_eq!(check_date(&credential, "20261201T120000Z", now), Ok(now));
        assert_eq!(
            check_date(&credential, "20261202T120000Z", now),
            Err(SigError::ScopeDate)
        );
        assert_eq!(
            check_date(&credential, "20261201T123000Z", now),
            Err(SigError::Expired)
        );
        assert_eq!(check_date(&credential, "soon", now), Err(SigError::BadDate));
    }

    #[test]
    fn amz_dates_are_parsed_as_utc() {
        assert_eq!(parse_amz_date("19700101T000100Z"), Some(60));
        assert_eq!(parse_amz_date("20261301T000000Z"), None);
        assert_eq!(parse_amz_date("2026-12-01"), None);
    }
}
