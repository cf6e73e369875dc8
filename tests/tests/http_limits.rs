//! The HTTP listener's own limits, seen by raw TCP clients: a request head sent too slowly and a
//! body that stalls are cut off, and connections beyond the limit are closed as they arrive.

use squall_tests::{eventually, Cluster, ClusterOptions};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A dispatcher (no worker) with `env` set.
async fn dispatcher(env: &[(&str, &str)]) -> Cluster {
    Cluster::start_with(ClusterOptions {
        workers: 0,
        dispatcher_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

fn address(cluster: &Cluster) -> String {
    cluster.url.trim_start_matches("http://").to_string()
}

/// Everything the server sends until it closes the connection, or `None` when it has not
/// closed it within `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_cut_off_and_a_stalled_body_is_answered_408() {
    let cluster = dispatcher(&[
        ("SQUALL_HEADER_TIMEOUT_SECS", "1"),
        ("SQUALL_BODY_TIMEOUT_SECS", "1"),
    ])
    .await;
    cluster.deploy_example("hello", None).await;

    // Slowloris: a head that never ends. The connection is closed, not held.
    let mut slow = TcpStream::connect(address(&cluster)).await.unwrap();
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: squall\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut slow, Duration::from_secs(10)).await;
    let answer = answer.expect("a head sent too slowly gets its connection closed");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A body that stops arriving: 408, and the connection closed.
    let mut stalled = TcpStream::connect(address(&cluster)).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/functions/hello/invocations?async=true HTTP/1.1\r\nHost: squall\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
        )
        .await
        .unwrap();
    let answer = until_closed(&mut stalled, Duration::from_secs(10))
        .await
        .expect("a stalled body gets an answer and its connection closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");

    // A prompt client is served as before.
    let response = reqwest::get(format!("{}/readyz", cluster.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends one whole request on `stream` and reads its answer's status line; `None` when the
/// server closed the connection instead.
async fn served(stream: &mut TcpStream) -> Option<String> {
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: squall\r\n\r\n")
        .await
        .ok()?;
    let mut buffer = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
    text.starts_with("HTTP/1.1 200").then_some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_until_one_ends() {
    let mut cluster = dispatcher(&[("SQUALL_MAX_CONNECTIONS", "2")]).await;
    // The harness's client keeps a pooled connection to the dispatcher: drop it.
    cluster.http = reqwest::Client::new();
    let addr = address(&cluster);
    let mut first = eventually(
        Duration::from_secs(10),
        "a first connection served",
        async || {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            served(&mut stream).await.map(|_| stream)
        },
    )
    .await;
    // Connections that ended a moment ago (the harness's pool, the first's earlier tries) may
    // still hold a slot until the dispatcher sees them close: try until the second is served.
    let _second = eventually(
        Duration::from_secs(10),
        "a second connection served",
        async || {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            served(&mut stream).await.map(|_| stream)
        },
    )
    .await;

    // Both stay open (keep-alive): a third is closed as it arrives.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let _ = third
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: squall\r\n\r\n")
        .await;
    let answer = until_closed(&mut third, Duration::from_secs(10))
        .await
        .expect("a connection beyond the limit is closed");
    assert!(answer.is_empty(), "{answer}");
    assert!(served(&mut first).await.is_some(), "open ones still work");

    // Once one ends, a new connection is served again.
    drop(first);
    eventually(
        Duration::from_secs(10),
        "a new connection served after one ended",
        async || {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            served(&mut stream).await
        },
    )
    .await;
}
