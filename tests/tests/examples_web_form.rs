//! The `web-form` example end to end, driven like a browser: form posts, 303 redirects followed
//! by a GET, and the session cookie kept between requests, against a real dispatcher and worker.

use squall_tests::{built, eventually, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;

const SESSION_SECRET: &str = "web-form-test-session-secret-0123";
const PAGE: &str = "/function/web-form";

/// One answer, as a browser sees it.
struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// A browser's part that matters here: a cookie jar (name → value, kept from `Set-Cookie` and
/// sent back in `Cookie`; `Max-Age=0` removes one) and redirects it follows itself, so the test
/// sees each 303.
struct Browser {
    http: reqwest::Client,
    origin: String,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new(cluster: &Cluster) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            origin: cluster.url.clone(),
            jar: BTreeMap::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookies = self
            .jar
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = match cookies.is_empty() {
            true => request,
            false => request.header("cookie", cookies),
        };
        let response = request.send().await.unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let location = header("location").pop();
        let set_cookies = header("set-cookie");
        for cookie in &set_cookies {
            let (pair, attributes) = cookie.split_once(';').unwrap_or((cookie, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: response.status().as_u16(),
            location,
            set_cookies,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.origin));
        self.send(request).await
    }

    /// Posts the form fields `application/x-www-form-urlencoded`, as a browser submits a form.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(format!("{}{path}", self.origin))
            .form(fields);
        self.send(request).await
    }

    /// Follows a 303 See Other with a GET of its `Location`, as a browser does.
    async fn follow(&mut self, page: Page) -> Page {
        assert_eq!(page.status, 303, "{}", page.body);
        let location = page.location.expect("a 303 has a Location");
        self.get(&location).await
    }
}

/// A cluster with the example deployed and its session secret set; returns once a worker
/// serves the page (the secret reaches the workers shortly after it is set).
async fn start() -> Cluster {
    let cluster = Cluster::start().await;
    let spec = serde_json::json!({"timeout_ms": 10000, "max_attempts": 1,
        "web": {"auth": "none"}, "config": {"session_ttl_s": 3600}});
    let (status, body) = cluster
        .deploy("web-form", built().library("web_form"), Some(spec))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = cluster
        .put_json(
            "/v1/functions/web-form/secrets",
            serde_json::json!({"SESSION_SECRET": SESSION_SECRET}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut browser = Browser::new(&cluster);
    eventually(Duration::from_secs(20), "the page to come up", async || {
        let page = browser.get(PAGE).await;
        match page.status {
            200 => Ok(()),
            status => Err((status, page.body)),
        }
    })
    .await;
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_up_signs_in_and_out_with_a_session_cookie() {
    let cluster = start().await;
    let mut browser = Browser::new(&cluster);

    // The page shows the forms to a visitor.
    let page = browser.get(PAGE).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .contains("<form method=\"post\" action=\"/function/web-form/sign-up\""));
    assert!(page.body.contains("action=\"/function/web-form/sign-in\""));

    // Signing up answers 303 back to the page with the session cookie.
    let signed_up = browser
        .post(
            "/function/web-form/sign-up",
            &[("username", "Ada"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.body);
    assert_eq!(signed_up.location.as_deref(), Some("/function/web-form"));
    assert_eq!(signed_up.set_cookies.len(), 1);
    let cookie = &signed_up.set_cookies[0];
    assert!(cookie.starts_with("session=ada."), "{cookie}");
    for attribute in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let page = browser.follow(signed_up).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Signed in as <strong>ada</strong>"),
        "{}",
        page.body
    );

    // Signing out clears the cookie; the page shows the forms again.
    let signed_out = browser.post("/function/web-form/sign-out", &[]).await;
    assert!(signed_out.set_cookies[0].starts_with("session=; Max-Age=0; Path=/"));
    let page = browser.follow(signed_out).await;
    assert!(!page.body.contains("Signed in"), "{}", page.body);
    assert!(browser.jar.is_empty());

    // Signing in again (the name in any case) brings the session back.
    let signed_in = browser
        .post(
            "/function/web-form/sign-in",
            &[("username", "ADA"), ("password", "correct horse battery")],
        )
        .await;
    let page = browser.follow(signed_in).await;
    assert!(page.body.contains("Signed in as <strong>ada</strong>"));

    // The password is stored only as a salted Argon2id hash.
    let jetstream = async_nats::jetstream::new(cluster.nats_client().await);
    let stream = jetstream.get_stream("KV_squall_state").await.unwrap();
    let stored = stream
        .direct_get_last_for_subject("$KV.squall_state.web-form.user/ada")
        .await
        .unwrap();
    let record = String::from_utf8(stored.payload.to_vec()).unwrap();
    assert!(
        record.contains("\"hash\":\"$argon2id$v=19$m=8192,t=2,p=1$"),
        "{record}"
    );
    assert!(!record.contains("correct horse"), "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_duplicate_sign_ups_and_tampered_cookies_are_refused() {
    let cluster = start().await;
    let mut ada = Browser::new(&cluster);
    let signed_up = ada
        .post(
            "/function/web-form/sign-up",
            &[("username", "ada"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.body);
    let session = ada.jar["session"].clone();

    // A wrong password: 401 with the form again, and no cookie.
    let mut eve = Browser::new(&cluster);
    let wrong = eve
        .post(
            "/function/web-form/sign-in",
            &[("username", "ada"), ("password", "incorrect horse")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong user name or password."));
    assert!(wrong.set_cookies.is_empty());
    // An unknown user gets the same answer.
    let unknown = eve
        .post(
            "/function/web-form/sign-in",
            &[("username", "nobody"), ("password", "incorrect horse")],
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.body.contains("Wrong user name or password."));

    // Signing up a taken name: 409, no cookie, and the first password still works.
    let duplicate = eve
        .post(
            "/function/web-form/sign-up",
            &[("username", "ada"), ("password", "eve's own password")],
        )
        .await;
    assert_eq!(duplicate.status, 409);
    assert!(
        duplicate.body.contains("already taken"),
        "{}",
        duplicate.body
    );
    assert!(duplicate.set_cookies.is_empty());
    let still = eve
        .post(
            "/function/web-form/sign-in",
            &[("username", "ada"), ("password", "eve's own password")],
        )
        .await;
    assert_eq!(still.status, 401);

    // A form that is not a form, and a field missing.
    let json = eve
        .send(
            eve.http
                .post(format!("{}/function/web-form/sign-in", cluster.url))
                .json(&serde_json::json!({"username": "ada"})),
        )
        .await;
    assert_eq!(json.status, 415);
    let missing = eve
        .post("/function/web-form/sign-up", &[("username", "eve")])
        .await;
    assert_eq!(missing.status, 400);

    // Tampered cookies are refused (and cleared): another user's name, a later expiry, a
    // signature made with another key.
    let (user, rest) = session.split_once('.').unwrap();
    let (expires, signature) = rest.split_once('.').unwrap();
    assert_eq!(user, "ada");
    let later: u64 = expires.parse::<u64>().unwrap() + 86400;
    for forged in [
        format!("eve.{expires}.{signature}"),
        format!("ada.{later}.{signature}"),
        format!("ada.{expires}.{}", "0".repeat(64)),
    ] {
        eve.jar.insert("session".into(), forged.clone());
        let page = eve.get(PAGE).await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("Signed in"), "{forged}: {}", page.body);
        assert!(page.set_cookies[0].starts_with("session=; Max-Age=0"));
    }
    // The genuine cookie still works.
    let page = ada.get(PAGE).await;
    assert!(page.body.contains("Signed in as <strong>ada</strong>"));
}
