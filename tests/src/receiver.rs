//! HTTP receivers of destination and callback deliveries on loopback: one that answers 200 and
//! keeps every request, and a blackhole that accepts connections and never answers.

use crate::eventually;
use axum::http::HeaderMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// A plain HTTP server on 127.0.0.1 that answers 200 to every request and keeps what it got.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver on `port` (0: any free port).
    pub async fn start(port: u16) -> Receiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: bytes::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(Received {
                        path: uri.path().to_string(),
                        headers,
                        body,
                    });
                    "ok"
                }
            },
        );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, got, server }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests to `path` so far, oldest first.
    pub fn at(&self, path: &str) -> Vec<Received> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Every request so far, whatever its path.
    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `path` got `n` requests, returning them.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, format_args!("{n} POSTs to {path}"), async || {
            let got = self.at(path);
            match got.len() >= n {
                true => Ok(got),
                false => Err(format!("{} POSTs", got.len())),
            }
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A TCP listener on 127.0.0.1 that accepts every connection and never reads or answers: a
/// receiver that hangs every request until the sender gives up.
pub struct Blackhole {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<usize>>,
    server: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Blackhole {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the blackhole");
        let addr = listener.local_addr().unwrap();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let count = accepted.clone();
        let server = tokio::spawn(async move {
            // Held open, unread, until the task ends.
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
                *count.lock().unwrap() += 1;
            }
        });
        Blackhole {
            addr,
            accepted,
            server,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.server.abort();
    }
}
