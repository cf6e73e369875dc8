//! The `web-form` example and its Python port `python-web-form` end to end, driven like a
//! browser: form posts, 303 redirects followed by a GET, and the session cookie kept between
//! requests, against a real dispatcher and worker. Each scenario runs against both.

use squall_tests::{built, eventually, Cluster};
use std::collections::BTreeMap;
use std::time::Duration;

/// Which implementation of the web form a scenario drives.
#[derive(Clone, Copy)]
enum Impl {
    /// The Rust library, deployed through the API.
    Rust,
    /// `python-web-form`, deployed from its folder by the CLI.
    Python,
}

impl Impl {
    /// The function's name.
    fn name(self) -> &'static str {
        match self {
            Impl::Rust => "web-form",
            Impl::Python => "py-web-form",
        }
    }

    /// The form's page, which the form actions are under.
    fn page(self) -> String {
        format!("/function/{}", self.name())
    }

    /// How long a session cookie is valid: the Rust test's spec, the Python folder's
    /// squall.toml.
    fn session_ttl_s(self) -> u64 {
        match self {
            Impl::Rust => 3600,
            Impl::Python => 86400,
        }
    }

    /// How a stored password hash starts: salted Argon2id in Rust, salted scrypt in Python.
    fn hash_prefix(self) -> &'static str {
        match self {
            Impl::Rust => "$argon2id$v=19$m=8192,t=2,p=1$",
            Impl::Python => "$scrypt$ln=14,r=8,p=1$",
        }
    }
}

/// One answer, as a browser sees it.
struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// A browser's part that matters here: a cookie jar (name → value, kept from `Set-Cookie` and
/// sent back in `Cookie`; `Max-Age=0` removes one) and redirects it follows itself, so the test
/// sees each 303. A request refused by the function's rate limit (429) is sent again after the
/// `Retry-After` it names.
struct Browser {
    http: reqwest::Client,
    origin: String,
    /// The form's page, which `post` actions are relative to.
    page: String,
    jar: BTreeMap<String, String>,
}

impl Browser {
    fn new(cluster: &Cluster, form: Impl) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            origin: cluster.web_url.clone(),
            page: form.page(),
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
        // The Python port's squall.toml limits the form to 10 requests a second, fewer than a
        // test sends: a refused request is sent again when the limit allows, as a patient user
        // would.
        let response = loop {
            let attempt = request.try_clone().expect("a body that can be sent again");
            let response = attempt.send().await.unwrap();
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS {
                break response;
            }
            let wait_s = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            tokio::time::sleep(Duration::from_secs(wait_s)).await;
        };
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

    /// GETs the form's page.
    async fn open(&mut self) -> Page {
        let page = self.page.clone();
        self.get(&page).await
    }

    /// Posts the form fields `application/x-www-form-urlencoded` to `action` under the page, as
    /// a browser submits a form.
    async fn post(&mut self, action: &str, fields: &[(&str, &str)]) -> Page {
        let request = self
            .http
            .post(format!("{}{}{action}", self.origin, self.page))
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

/// A cluster with the form deployed and its session secret set; returns once a worker serves
/// the page (the secret reaches the workers shortly after it is set).
async fn start(form: Impl) -> Cluster {
    let cluster = Cluster::start().await;
    match form {
        Impl::Rust => {
            let spec = serde_json::json!({"timeout_ms": 10000, "max_attempts": 1,
                "web": {"auth": "none"}, "config": {"session_ttl_s": form.session_ttl_s()}});
            let (status, body) = cluster
                .deploy(form.name(), built().library("web_form"), Some(spec))
                .await;
            assert_eq!(status, 201, "{body}");
        }
        Impl::Python => cluster.deploy_folder("python-web-form").await,
    }
    let secret = format!("{}-test-session-secret-0123", form.name());
    let (status, body) = cluster
        .put_json(
            &format!("/v1/functions/{}/secrets", form.name()),
            serde_json::json!({"SESSION_SECRET": secret}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut browser = Browser::new(&cluster, form);
    eventually(Duration::from_secs(30), "the page to come up", async || {
        let page = browser.open().await;
        match page.status {
            200 => Ok(()),
            status => Err((status, page.body)),
        }
    })
    .await;
    cluster
}

/// Signs up, out and in again with one browser, and finds the password stored only as a
/// salted hash.
async fn signs_up_in_and_out_with_a_session_cookie(form: Impl) {
    let cluster = start(form).await;
    let mut browser = Browser::new(&cluster, form);
    let page_path = form.page();

    // The page shows the forms to a visitor.
    let page = browser.open().await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!(
            "<form method=\"post\" action=\"{page_path}/sign-up\""
        )),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains(&format!("action=\"{page_path}/sign-in\"")));

    // Signing up answers 303 back to the page with the session cookie, valid for the
    // configured `session_ttl_s`.
    let signed_up = browser
        .post(
            "/sign-up",
            &[("username", "Ada"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.body);
    assert_eq!(signed_up.location.as_deref(), Some(page_path.as_str()));
    assert_eq!(signed_up.set_cookies.len(), 1);
    let cookie = &signed_up.set_cookies[0];
    assert!(cookie.starts_with("session=ada."), "{cookie}");
    for attribute in [
        format!("; Path={page_path};"),
        "; HttpOnly".to_string(),
        "; SameSite=Lax".to_string(),
        format!("; Max-Age={}", form.session_ttl_s()),
    ] {
        assert!(cookie.contains(&attribute), "{attribute} in {cookie}");
    }
    let page = browser.follow(signed_up).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("Signed in as <strong>ada</strong>"),
        "{}",
        page.body
    );

    // Signing out clears the cookie; the page shows the forms again.
    let signed_out = browser.post("/sign-out", &[]).await;
    assert!(signed_out.set_cookies[0].starts_with("session=; Max-Age=0; Path=/"));
    let page = browser.follow(signed_out).await;
    assert!(!page.body.contains("Signed in"), "{}", page.body);
    assert!(browser.jar.is_empty());

    // Signing in again (the name in any case) brings the session back.
    let signed_in = browser
        .post(
            "/sign-in",
            &[("username", "ADA"), ("password", "correct horse battery")],
        )
        .await;
    let page = browser.follow(signed_in).await;
    assert!(page.body.contains("Signed in as <strong>ada</strong>"));

    // The password is stored only as a salted hash.
    let stored = cluster.state_entry(form.name(), "user/ada").await;
    let record = String::from_utf8(stored.payload.to_vec()).unwrap();
    assert!(
        record.contains(&format!("\"hash\":\"{}", form.hash_prefix())),
        "{record}"
    );
    assert!(!record.contains("correct horse"), "{record}");
}

/// Refuses a wrong password, an unknown user, a taken name, posts that are not a valid form and
/// tampered cookies, and keeps the genuine session working.
async fn refuses_wrong_passwords_taken_names_bad_posts_and_tampered_cookies(form: Impl) {
    let cluster = start(form).await;
    let mut ada = Browser::new(&cluster, form);
    let signed_up = ada
        .post(
            "/sign-up",
            &[("username", "ada"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.body);
    let session = ada.jar["session"].clone();

    // A wrong password: 401 with the form again, and no cookie; an unknown user gets the same.
    let mut eve = Browser::new(&cluster, form);
    for username in ["ada", "nobody"] {
        let wrong = eve
            .post(
                "/sign-in",
                &[("username", username), ("password", "incorrect horse")],
            )
            .await;
        assert_eq!(wrong.status, 401, "{username}");
        assert!(wrong.body.contains("Wrong user name or password."));
        assert!(wrong.set_cookies.is_empty());
    }

    // Signing up a taken name: 409, no cookie, and the first password still works.
    let duplicate = eve
        .post(
            "/sign-up",
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
            "/sign-in",
            &[("username", "ada"), ("password", "eve's own password")],
        )
        .await;
    assert_eq!(still.status, 401);

    // A form that is not a form, a field missing, a name or password out of bounds.
    let json = eve
        .send(
            eve.http
                .post(format!("{}{}/sign-in", cluster.web_url, form.page()))
                .json(&serde_json::json!({"username": "ada"})),
        )
        .await;
    assert_eq!(json.status, 415);
    for fields in [
        &[("username", "eve")][..],
        &[("username", "e/v"), ("password", "long enough")][..],
        &[("username", "eve"), ("password", "short")][..],
    ] {
        let refused = eve.post("/sign-up", fields).await;
        assert_eq!(refused.status, 400, "{fields:?}: {}", refused.body);
    }

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
        let page = eve.open().await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("Signed in"), "{forged}: {}", page.body);
        assert!(page.set_cookies[0].starts_with("session=; Max-Age=0"));
    }
    // The genuine cookie still works.
    let page = ada.open().await;
    assert!(
        page.body.contains("Signed in as <strong>ada</strong>"),
        "{}: {}",
        page.status,
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_up_signs_in_and_out_with_a_session_cookie() {
    signs_up_in_and_out_with_a_session_cookie(Impl::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_port_signs_a_browser_up_in_and_out_with_a_session_cookie() {
    signs_up_in_and_out_with_a_session_cookie(Impl::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_duplicate_sign_ups_and_tampered_cookies_are_refused() {
    refuses_wrong_passwords_taken_names_bad_posts_and_tampered_cookies(Impl::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_port_refuses_wrong_passwords_taken_names_bad_posts_and_tampered_cookies() {
    refuses_wrong_passwords_taken_names_bad_posts_and_tampered_cookies(Impl::Python).await;
}
