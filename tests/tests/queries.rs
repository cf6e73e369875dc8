//! The query index against a real cluster: listing with stable pages, stats, usage, the CLI,
//! and an index that survives a restart and can be rebuilt from RESULTS.

use serde::de::DeserializeOwned;
use squall_api::queries::{FunctionStats, InvocationPage, UsageReport};
use squall_api::{ErrorKind, InvocationStatus};
use squall_tests::{built, eventually, workspace_root, Cluster};
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

/// Polls `path` until `done` accepts its decoded body.
async fn poll<T: DeserializeOwned + std::fmt::Debug>(
    cluster: &Cluster,
    path: &str,
    done: impl Fn(&T) -> bool,
) -> T {
    eventually(
        Duration::from_secs(20),
        format_args!("{path} to match"),
        async || {
            let (status, body) = cluster.get_as::<T>(path).await;
            assert_eq!(status, 200, "{path}: {body:?}");
            match done(&body) {
                true => Ok(body),
                false => Err(body),
            }
        },
    )
    .await
}

/// Every invocation id of the listing, page by page with `limit`.
async fn all_pages(cluster: &Cluster, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/invocations?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = cluster.get_as::<InvocationPage>(&path).await;
        assert_eq!(status, 200, "{page:?}");
        assert!(page.items.len() <= limit);
        ids.extend(page.items.into_iter().map(|i| i.invocation_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
}

async fn applied_since_start(cluster: &Cluster) -> f64 {
    let text = cluster
        .http
        .get(format!("{}/metrics", cluster.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("squall_dispatcher_index_applied_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn squall(url: &str, args: &[&str]) -> String {
    let output = Command::new(&built().squall)
        .current_dir(workspace_root())
        .arg("--url")
        .arg(url)
        .args(args)
        .output()
        .expect("run squall");
    assert!(output.status.success(), "squall {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_listed_paged_counted_and_metered_and_survive_a_restart() {
    let mut cluster = Cluster::start().await;
    cluster.deploy_example("hello", None).await;
    cluster.deploy_example("fail", None).await;
    let mut hello_ids = Vec::new();
    for i in 0..7 {
        let response = cluster
            .invoke("hello", format!("{{\"name\":\"n{i}\"}}"))
            .await;
        assert_eq!(response.status(), 200);
        hello_ids.push(
            response.headers()["squall-invocation-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    for _ in 0..3 {
        let response = cluster.invoke("fail", "x").await;
        assert_eq!(response.status(), 500, "fail answers with its error");
    }

    // The index follows RESULTS asynchronously.
    poll(
        &cluster,
        "/v1/invocations?limit=1000",
        |b: &InvocationPage| b.items.len() == 10,
    )
    .await;

    // Newest first, and pages of 3 cover every invocation exactly once.
    let ids = all_pages(&cluster, "", 3).await;
    assert_eq!(ids.len(), 10);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        10,
        "no repeats across pages"
    );
    let hello_listed = all_pages(&cluster, "&function=hello", 2).await;
    let mut expected = hello_ids.clone();
    expected.reverse();
    assert_eq!(hello_listed, expected, "newest first by creation time");
    let (_, failed) = cluster
        .get_as::<InvocationPage>("/v1/invocations?status=failed")
        .await;
    let failed = &failed.items;
    assert_eq!(failed.len(), 3);
    assert!(failed
        .iter()
        .all(|i| i.function == "fail" && i.error_kind == Some(ErrorKind::Error)));
    let (_, page) = cluster
        .get_as::<InvocationPage>("/v1/invocations?function=hello&limit=1")
        .await;
    let item = &page.items[0];
    assert_eq!(item.status, InvocationStatus::Succeeded);
    assert!(item.cpu_ms > 0.0, "{item:?}");
    // A time window in the future is empty; one covering now is not.
    let (_, future) = cluster
        .get_as::<InvocationPage>("/v1/invocations?since=2999-01-01T00:00:00Z")
        .await;
    assert!(future.items.is_empty());
    let (_, past) = cluster
        .get_as::<InvocationPage>(
            "/v1/invocations?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&limit=1000",
        )
        .await;
    assert_eq!(past.items.len(), 10);

    // Stats over the default window.
    let (status, hello) = cluster
        .get_as::<FunctionStats>("/v1/functions/hello/stats")
        .await;
    assert_eq!(status, 200, "{hello:?}");
    assert_eq!(hello.count, 7);
    assert_eq!(hello.error_rate, 0.0);
    let p50 = hello.p50_ms.unwrap();
    let p99 = hello.p99_ms.unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{hello:?}");
    let (_, fail) = cluster
        .get_as::<FunctionStats>("/v1/functions/fail/stats?window=600")
        .await;
    assert_eq!((fail.count, fail.errors), (3, 3));
    assert_eq!(fail.error_rate, 1.0);

    // Usage by function and by hour agree on the totals.
    let (_, by_fn) = cluster
        .get_as::<UsageReport>("/v1/usage?group_by=function")
        .await;
    let hello_usage = &by_fn
        .groups
        .iter()
        .find(|g| g.function.as_deref() == Some("hello"))
        .unwrap()
        .usage;
    assert_eq!(hello_usage.invocations, 7);
    assert!(hello_usage.cpu_ms > 0.0);
    assert!(hello_usage.wall_ms >= hello_usage.cpu_ms * 0.5);
    assert_eq!(by_fn.total.invocations, 10);
    let (_, by_hour) = cluster
        .get_as::<UsageReport>("/v1/usage?group_by=hour")
        .await;
    assert_eq!(by_hour.total.invocations, 10);
    assert!(by_hour.groups[0]
        .hour
        .as_deref()
        .unwrap()
        .ends_with(":00:00Z"));

    // The CLI shows the same.
    let listed = squall(&cluster.url, &["invocations", "--function", "fail"]);
    assert_eq!(listed.matches("failed").count(), 3, "{listed}");
    let stats = squall(&cluster.url, &["stats", "hello"]);
    assert!(stats.contains("7 (7 succeeded, 0 errors"), "{stats}");
    let usage: serde_json::Value = serde_json::from_str(&squall(
        &cluster.url,
        &["usage", "--json", "--group-by", "hour"],
    ))
    .unwrap();
    assert_eq!(usage["total"]["invocations"], 10);

    // What the incrementally built index answers, to compare with the rebuilt one below.
    let (_, hello_before) = cluster
        .get_as::<FunctionStats>("/v1/functions/hello/stats?since=2000-01-01T00:00:00Z")
        .await;
    assert!(!hello_before.catching_up, "{hello_before:?}");
    assert!(hello_before.applied_sequence >= 10, "{hello_before:?}");
    let (_, usage_before) = cluster
        .get_as::<UsageReport>("/v1/usage?group_by=function")
        .await;

    // After a restart the index is still there and is not re-read from RESULTS.
    cluster.restart_dispatcher(&[]).await;
    assert_eq!(all_pages(&cluster, "", 4).await, ids);
    // Once the feed has looked at RESULTS (answers stop saying `catching_up`), a re-read would
    // have been applied: none was.
    poll(
        &cluster,
        "/v1/functions/hello/stats?since=2000-01-01T00:00:00Z",
        |s: &FunctionStats| !s.catching_up && s.applied_sequence >= hello_before.applied_sequence,
    )
    .await;
    assert_eq!(
        applied_since_start(&cluster).await,
        0.0,
        "the index resumed where it stopped"
    );

    // Rebuilt from RESULTS, it lists the same invocations.
    cluster.restart_dispatcher(&["--rebuild-index"]).await;
    poll(
        &cluster,
        "/v1/invocations?limit=1000",
        |b: &InvocationPage| b.items.len() == 10,
    )
    .await;
    assert_eq!(all_pages(&cluster, "", 4).await, ids);
    assert!(applied_since_start(&cluster).await >= 10.0);
    // The rebuilt index answers stats and usage exactly as the incremental one did.
    let hello_after = poll(
        &cluster,
        "/v1/functions/hello/stats?since=2000-01-01T00:00:00Z",
        |s: &FunctionStats| !s.catching_up && s.count == 7,
    )
    .await;
    let comparable = |s: &FunctionStats| FunctionStats {
        until: String::new(),
        ..s.clone()
    };
    assert_eq!(comparable(&hello_after), comparable(&hello_before));
    let (_, usage_after) = cluster
        .get_as::<UsageReport>("/v1/usage?group_by=function")
        .await;
    assert_eq!(usage_after.groups, usage_before.groups);
    assert_eq!(usage_after.total, usage_before.total);
}
