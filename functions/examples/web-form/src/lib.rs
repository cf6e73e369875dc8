//! Example web function: a small web application backend — sign-up, sign-in and sign-out over
//! HTML form posts, Argon2id password hashes in the function's state, signed session cookies.
//!
//! Routes below `/function/<name>`: `GET /` (the forms, or "signed in as X"), `POST /sign-up`,
//! `POST /sign-in`, `POST /sign-out`. A post that succeeds answers 303 See Other back to the
//! page (post/redirect/get); one that fails shows the form again with a 4xx status.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use squall_sdk::http::{HeaderMap, Method, StatusCode};
use squall_sdk::serde_json::Value;
use squall_sdk::{export_web_function, Context, FnError, WebRequest, WebResponse};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The function's secret that keys the session cookies' signatures.
pub const SECRET_NAME: &str = "SESSION_SECRET";
/// The session cookie's name.
pub const COOKIE: &str = "session";
/// How long a session lasts unless the config's `session_ttl_s` says.
const DEFAULT_SESSION_TTL_S: u64 = 24 * 60 * 60;
/// Argon2id's cost, chosen for a small shared machine: 8 MiB and 2 passes on one lane (OWASP's
/// minimum is 19 MiB and 2 passes). Raise it where hashing can take longer; the parameters are
/// stored in each hash, so older hashes keep verifying.
const ARGON2_M_COST_KIB: u32 = 8 * 1024;
const ARGON2_T_COST: u32 = 2;
const ARGON2_P_COST: u32 = 1;
/// Passwords are bounded so a huge one cannot make hashing expensive.
const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=128;
const USERNAME_LEN: std::ops::RangeInclusive<usize> = 3..=32;

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference, so timing does not reveal the prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Decodes an `application/x-www-form-urlencoded` body: `+` is a space, `%XX` a byte; a
/// repeated field keeps its first value.
pub fn form_decode(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |part: &[u8]| {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let digits = std::str::from_utf8(&part[i + 1..i + 3]).ok();
                    match digits.and_then(|d| u8::from_str_radix(d, 16).ok()) {
                        Some(byte) => {
                            out.push(byte);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut fields = BTreeMap::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[..0]),
        };
        fields.entry(decode(name)).or_insert_with(|| decode(value));
    }
    fields
}

/// A user name is 3 to 32 of `a-z`, `0-9`, `_` and `-` (so it is a valid state key and never
/// needs escaping in a cookie).
pub fn valid_username(name: &str) -> bool {
    USERNAME_LEN.contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The session cookie's value for `user` until `expires` (Unix seconds):
/// `<user>.<expires>.<hex HMAC-SHA256(secret, "session:v1:<user>:<expires>")>`.
pub fn session_value(secret: &str, user: &str, expires: u64) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("session:v1:{user}:{expires}").as_bytes(),
    );
    format!("{user}.{expires}.{}", hex(&mac))
}

/// The user a session cookie's value names, when it is signed with `secret` and not expired.
pub fn verify_session(secret: &str, value: &str, now_s: u64) -> Option<String> {
    let mut parts = value.split('.');
    let (user, expires, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !valid_username(user) {
        return None;
    }
    let expires: u64 = expires.parse().ok()?;
    let expected = session_value(secret, user, expires);
    (same(expected.as_bytes(), value.as_bytes()) && now_s < expires).then(|| user.to_string())
}

/// The value of cookie `name` in the request's `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the session: HttpOnly (no script reads it), SameSite=Lax (not sent
/// with other sites' posts, which stops cross-site request forgery of the forms).
fn set_session(value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

/// What a user record holds, under `user/<name>`.
#[derive(Serialize, Deserialize)]
struct User {
    /// The PHC string: `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`.
    hash: String,
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .expect("the Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` with a fresh random salt into a PHC string.
pub fn hash_password(password: &str) -> Result<String, FnError> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| FnError::permanent(format!("cannot hash the password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (with the parameters stored in it).
pub fn check_password(password: &str, hash: &str) -> bool {
    hasher().verify_password(password.as_bytes(), hash).is_ok()
}

/// A hash to check a sign-in for an unknown user against, so that it takes as long as one
/// for a known user and the timing does not tell which names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("no user has this password").unwrap_or_default())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html(status: StatusCode, title: &str, body: &str) -> WebResponse {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head>\n<body>\n<h1>{title}</h1>\n{body}</body></html>\n"
    );
    WebResponse::new(status)
        .with_body(page)
        .with_header("content-type", "text/html; charset=utf-8")
        .with_header("cache-control", "no-store")
}

/// The sign-up and sign-in forms, with `message` above them.
fn forms(status: StatusCode, base: &str, message: Option<&str>) -> WebResponse {
    let message = message
        .map(|m| format!("<p role=\"alert\">{}</p>\n", escape(m)))
        .unwrap_or_default();
    let form = |action: &str, label: &str, autocomplete: &str| {
        format!(
            "<form method=\"post\" action=\"{base}/{action}\">\n<h2>{label}</h2>\n\
             <label>User name <input name=\"username\" required></label>\n\
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"{autocomplete}\" required></label>\n\
             <button>{label}</button>\n</form>\n"
        )
    };
    let body = format!(
        "{message}{}{}",
        form("sign-in", "Sign in", "current-password"),
        form("sign-up", "Sign up", "new-password")
    );
    html(status, "Welcome", &body)
}

fn signed_in(base: &str, user: &str) -> WebResponse {
    let body = format!(
        "<p>Signed in as <strong>{}</strong>.</p>\n\
         <form method=\"post\" action=\"{base}/sign-out\"><button>Sign out</button></form>\n",
        escape(user)
    );
    html(StatusCode::OK, "Welcome back", &body)
}

/// 303 See Other back to the page: the browser follows it with a GET, so reloading the page
/// does not post the form again.
fn see_page(base: &str) -> WebResponse {
    WebResponse::new(StatusCode::SEE_OTHER).with_header("location", base)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The function's settings, read from its config and secrets.
struct Settings<'a> {
    /// Where the function is served: `/function/<name>` unless the config's `base_path` says.
    base: String,
    secret: &'a str,
    session_ttl_s: u64,
    secure: bool,
}

/// Serves the pages and the form posts.
pub fn web_form(ctx: &Context, request: WebRequest) -> Result<WebResponse, FnError> {
    let config = ctx.config();
    let base = config["base_path"]
        .as_str()
        .map(|b| b.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("/function/{}", ctx.function()));
    let Some(secret) = config
        .pointer(&format!("/secrets/{SECRET_NAME}"))
        .and_then(Value::as_str)
        .filter(|s| s.len() >= 16)
    else {
        ctx.error(&format!(
            "web-form: the secret {SECRET_NAME} is not set (16 characters at least)"
        ));
        return Ok(html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not configured",
            "<p>This site is not configured yet.</p>\n",
        ));
    };
    let settings = Settings {
        base,
        secret,
        session_ttl_s: config["session_ttl_s"]
            .as_u64()
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_SESSION_TTL_S),
        secure: config["secure_cookies"].as_bool().unwrap_or(false),
    };
    let base = settings.base.as_str();
    match (&request.method, request.path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => {
            let given = cookie(&request.headers, COOKIE);
            match given.and_then(|v| verify_session(secret, v, now_s())) {
                Some(user) => Ok(signed_in(base, &user)),
                // A cookie that does not verify (tampered, expired, another key's) is cleared.
                None if given.is_some() => Ok(forms(StatusCode::OK, base, None)
                    .with_cookie(set_session("", 0, settings.secure))),
                None => Ok(forms(StatusCode::OK, base, None)),
            }
        }
        (&Method::POST, "/sign-up" | "/sign-in") => {
            let is_form = request.header("content-type").is_some_and(|t| {
                t.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
            if !is_form {
                return Ok(forms(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    base,
                    Some("Please send the form."),
                ));
            }
            let fields = form_decode(&request.body);
            let username = fields.get("username").map(|u| u.trim().to_lowercase());
            let password = fields.get("password");
            let (Some(username), Some(password)) = (username, password) else {
                return Ok(forms(
                    StatusCode::BAD_REQUEST,
                    base,
                    Some("Both fields are needed."),
                ));
            };
            if request.path == "/sign-up" {
                sign_up(ctx, &settings, &username, password)
            } else {
                sign_in(ctx, &settings, &username, password)
            }
        }
        (&Method::POST, "/sign-out") => {
            Ok(see_page(base).with_cookie(set_session("", 0, settings.secure)))
        }
        (_, "/" | "/sign-up" | "/sign-in" | "/sign-out") => {
            Ok(
                html(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "").with_header(
                    "allow",
                    if request.path == "/" {
                        "GET, HEAD"
                    } else {
                        "POST"
                    },
                ),
            )
        }
        _ => Ok(html(StatusCode::NOT_FOUND, "Not found", "")),
    }
}

/// The answer that signs `user` in: back to the page with a fresh session cookie.
fn start_session(settings: &Settings, user: &str) -> WebResponse {
    let expires = now_s() + settings.session_ttl_s;
    let value = session_value(settings.secret, user, expires);
    see_page(&settings.base).with_cookie(set_session(
        &value,
        settings.session_ttl_s,
        settings.secure,
    ))
}

fn sign_up(
    ctx: &Context,
    settings: &Settings,
    username: &str,
    password: &str,
) -> Result<WebResponse, FnError> {
    let base = settings.base.as_str();
    if !valid_username(username) {
        let message = "A user name is 3 to 32 letters, digits, _ or -.";
        return Ok(forms(StatusCode::BAD_REQUEST, base, Some(message)));
    }
    if !PASSWORD_LEN.contains(&password.chars().count()) {
        let message = "A password is 8 to 128 characters.";
        return Ok(forms(StatusCode::BAD_REQUEST, base, Some(message)));
    }
    let kv = ctx.kv();
    let key = format!("user/{username}");
    // Not a transaction: two sign-ups of one new name at the same instant can both pass this
    // check, and the later write wins (see the README).
    if kv.get(&key)?.is_some() {
        let message = "That user name is already taken.";
        return Ok(forms(StatusCode::CONFLICT, base, Some(message)));
    }
    let user = User {
        hash: hash_password(password)?,
    };
    kv.put_json(&key, &user)?;
    ctx.info(&format!("web-form: {username} signed up"));
    Ok(start_session(settings, username))
}

fn sign_in(
    ctx: &Context,
    settings: &Settings,
    username: &str,
    password: &str,
) -> Result<WebResponse, FnError> {
    let user = match valid_username(username) {
        true => ctx.kv().get_json::<User>(&format!("user/{username}"))?,
        false => None,
    };
    let matches = match &user {
        Some(user) => check_password(password, &user.hash),
        None => {
            check_password(password, decoy_hash());
            false
        }
    };
    if !matches {
        let message = "Wrong user name or password.";
        return Ok(forms(
            StatusCode::UNAUTHORIZED,
            &settings.base,
            Some(message),
        ));
    }
    Ok(start_session(settings, username))
}

export_web_function!(web_form);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_plus_and_percent_escapes() {
        let fields = form_decode(b"username=ada&password=p%40ss+word%21&x=%zz&empty=&username=b");
        assert_eq!(fields["username"], "ada");
        assert_eq!(fields["password"], "p@ss word!");
        assert_eq!(fields["x"], "%zz");
        assert_eq!(fields["empty"], "");
        assert_eq!(form_decode(b"a=%4")["a"], "%4");
        assert_eq!(form_decode(b"a=%")["a"], "%");
        assert_eq!(form_decode(b"caf%C3%A9=1")["café"], "1");
    }

    #[test]
    fn a_session_verifies_only_unchanged_unexpired_and_under_its_key() {
        let value = session_value("k", "ada", 100);
        assert_eq!(verify_session("k", &value, 99), Some("ada".into()));
        assert_eq!(verify_session("k", &value, 100), None);
        assert_eq!(verify_session("other", &value, 99), None);
        let forged = value.replacen("ada", "bob", 1);
        assert_eq!(verify_session("k", &forged, 99), None);
        let extended = value.replacen(".100.", ".999.", 1);
        assert_eq!(verify_session("k", &extended, 99), None);
        assert_eq!(verify_session("k", "ada.100", 99), None);
        assert_eq!(verify_session("k", &format!("{value}.x"), 99), None);
    }

    #[test]
    fn a_password_hash_is_salted_argon2id_and_checks() {
        let first = hash_password("correct horse").unwrap();
        let second = hash_password("correct horse").unwrap();
        assert!(
            first.starts_with("$argon2id$v=19$m=8192,t=2,p=1$"),
            "{first}"
        );
        assert_ne!(first, second, "each hash has its own salt");
        assert!(check_password("correct horse", &first));
        assert!(!check_password("wrong horse", &first));
        assert!(!check_password("correct horse", "not a hash"));
    }

    #[test]
    fn user_names_are_lowercase_words() {
        assert!(valid_username("ada_l-1"));
        for bad in ["ab", "Ada", "a.b", "a/b", "ada lovelace", &"a".repeat(33)] {
            assert!(!valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn the_page_shows_the_forms_without_a_valid_session() {
        let ctx = Context::new("web-form", "1")
            .with_config(br#"{"secrets": {"SESSION_SECRET": "0123456789abcdef"}}"#);
        let get = |cookie: Option<String>| {
            let mut headers = squall_sdk::serde_json::Map::new();
            if let Some(cookie) = cookie {
                headers.insert("cookie".into(), cookie.into());
            }
            let event = squall_sdk::serde_json::json!(
                {"source": "web", "method": "GET", "path": "/", "headers": headers});
            web_form(&ctx, WebRequest::from_event(&event, b"")).unwrap()
        };
        let page = get(None);
        assert_eq!(page.status, StatusCode::OK);
        let text = String::from_utf8(page.body).unwrap();
        assert!(
            text.contains("action=\"/function/web-form/sign-up\""),
            "{text}"
        );
        let value = session_value("0123456789abcdef", "ada", now_s() + 60);
        let page = get(Some(format!("theme=dark; session={value}")));
        assert!(String::from_utf8(page.body)
            .unwrap()
            .contains("Signed in as <strong>ada"));
        let page = get(Some(format!("session={}", value.replacen("ada", "eve", 1))));
        assert!(String::from_utf8(page.body).unwrap().contains("Sign up"));
        assert_eq!(page.cookies.len(), 1, "the bad cookie is cleared");
        assert!(page.cookies[0].starts_with("session=; Max-Age=0;"));
    }
}
