//! The HTTP listener's accept loop, with the limits axum's own `serve` does not set: a deadline
//! for a request's headers, a deadline for a stalled body, and a cap on open connections.
//!
//! Invariant: a client holds at most one of `max_connections` slots per connection, and never
//! for longer than the header deadline without sending a whole request head, nor for longer
//! than the body deadline between two pieces of a body it is sending.

use crate::http::error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use squall_api::ErrorCode;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service as _;

/// The listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Longest a client may take to send a request's head (the request line and headers),
    /// counted from when the connection opens or the previous answer was sent; the connection
    /// is closed past it.
    pub header_timeout: Duration,
    /// Longest a request body may go without a byte arriving; the request is answered 408 and
    /// its connection closed.
    pub body_timeout: Duration,
    /// Most connections open at once; a connection beyond is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Why a body read ended early: no byte arrived within the body deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than {0:?}")]
pub struct BodyStalled(Duration);

/// A request body that fails once no frame has arrived for `timeout`, and says so in `stalled`
/// (the handler's own error answer is then replaced with a 408).
pub struct StallGuard<B> {
    inner: B,
    timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl<B> StallGuard<B> {
    pub fn new(inner: B, timeout: Duration, stalled: Arc<AtomicBool>) -> Self {
        StallGuard {
            inner,
            timeout,
            idle: None,
            stalled,
        }
    }
}

impl<B> HttpBody for StallGuard<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.idle = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.stalled.store(true, Ordering::Relaxed);
                        Poll::Ready(Some(Err(BodyStalled(timeout).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body stalled: 408, and the connection closed.
fn request_timeout(limit: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        format!(
            "the request body stalled: no byte arrived for {} s",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the open connections
/// finish their requests. Every request carries `ConnectInfo(connect_info(peer))`.
pub async fn serve<L, T>(
    mut listener: L,
    app: axum::Router,
    limits: ServerLimits,
    connect_info: impl Fn(SocketAddr) -> T + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    T: Clone + Send + Sync + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(message = "connection refused: the connection limit is reached", %peer,
                max_connections = limits.max_connections);
            drop(io);
            continue;
        };
        let info = ConnectInfo(connect_info(peer));
        let app = app.clone();
        let body_timeout = limits.body_timeout;
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let stalled = Arc::new(AtomicBool::new(false));
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(info.clone());
            let request = Request::from_parts(
                parts,
                axum::body::Body::new(StallGuard::new(body, body_timeout, stalled.clone())),
            );
            let mut app = app.clone();
            async move {
                let response = app.call(request).await?;
                if stalled.load(Ordering::Relaxed) {
                    return Ok::<_, std::convert::Infallible>(request_timeout(body_timeout));
                }
                Ok(response)
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(message = "connection ended with an error", %peer, %error);
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
}
