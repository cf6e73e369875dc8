//! The dispatcher's router in the test's own process, over a real nats-server, called without a
//! port (tower `oneshot`): for what does not cross processes, such as validation errors,
//! status codes, error shapes and key scopes.

use crate::NatsServer;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use squall_dispatcher::{AppState, DispatcherConfig};
use std::sync::Arc;
use tower::ServiceExt as _;

/// A dispatcher's state and router in this process, with its nats-server.
pub struct App {
    pub state: Arc<AppState>,
    /// The API listener's router.
    pub router: axum::Router,
    /// The web listener's router (web functions only).
    pub web: axum::Router,
    pub nats: NatsServer,
    _dir: tempfile::TempDir,
}

/// An answer of the router.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body decoded as the API type `T`, or a panic naming the status and body.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not the expected type ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error of an error answer.
    pub fn error(&self) -> squall_api::ErrorDetail {
        self.decode::<squall_api::ErrorBody>().error
    }
}

impl App {
    /// A dispatcher with the binary's defaults and no keys.
    pub async fn start() -> App {
        App::start_with(|_| {}).await
    }

    /// A dispatcher whose defaults `edit` changes.
    pub async fn start_with(edit: impl FnOnce(&mut DispatcherConfig)) -> App {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = DispatcherConfig {
            nats_url: nats.url.clone(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("dispatcher"),
            replicas: Some(1),
            topology: Default::default(),
            ..DispatcherConfig::default()
        };
        edit(&mut config);
        let state = squall_dispatcher::connect(config)
            .await
            .expect("the dispatcher connects");
        let router = squall_dispatcher::app(state.clone());
        let web = squall_dispatcher::web_app(state.clone());
        App {
            state,
            router,
            web,
            nats,
            _dir: dir,
        }
    }

    /// Sends `request` through the API's router.
    pub async fn call(&self, request: Request<Body>) -> Answer {
        call(&self.router, request).await
    }

    /// Sends `request` through the web listener's router.
    pub async fn call_web(&self, request: Request<Body>) -> Answer {
        call(&self.web, request).await
    }

    /// `method path` with `body` and `headers` to the web listener.
    pub async fn send_web(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        self.call_web(request(method, path, headers, body)).await
    }

    /// `GET path` on the web listener.
    pub async fn get_web(&self, path: &str) -> Answer {
        self.send_web(Method::GET, path, &[], Body::empty()).await
    }

    /// `method path` with `body` and `headers`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        self.call(request(method, path, headers, body)).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Body::empty()).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        self.send(
            Method::PUT,
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    /// Deploys the compiled library at `artifact` as `name` with `spec` (multipart).
    pub async fn deploy(
        &self,
        name: &str,
        artifact: &[u8],
        spec: Option<&serde_json::Value>,
    ) -> Answer {
        self.deploy_with(name, artifact, spec, &[]).await
    }

    /// `deploy` with more request headers (a key's `authorization`).
    pub async fn deploy_with(
        &self,
        name: &str,
        artifact: &[u8],
        spec: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let boundary = "squall-test-boundary";
        let mut body = Vec::new();
        let mut part = |field: &str, content_type: &str, bytes: &[u8]| {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{field}\"\r\nContent-Type: {content_type}\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        };
        part("artifact", "application/octet-stream", artifact);
        if let Some(spec) = spec {
            part("config", "application/json", spec.to_string().as_bytes());
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let mut headers = headers.to_vec();
        headers.push(("content-type", &content_type));
        self.send(
            Method::PUT,
            &format!("/v1/functions/{name}"),
            &headers,
            body,
        )
        .await
    }
}

/// `method path` with `headers` and `body`.
fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body.into()).unwrap()
}

/// Sends `request` through `router` and reads the whole answer.
async fn call(router: &axum::Router, request: Request<Body>) -> Answer {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a whole body");
    Answer {
        status,
        headers,
        body,
    }
}
