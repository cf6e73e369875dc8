//! Numbered versions, aliases, qualifiers, retention, rollback and weighted routing, through a
//! real cluster (and the dispatcher in-process where no worker is needed).

use reqwest::StatusCode;
use squall_api::functions::Function;
use squall_api::queries::{FunctionStats, InvocationPage};
use squall_api::versions::{Alias, VersionList};
use squall_api::ErrorBody;
use squall_tests::in_process::App;
use squall_tests::{built, compile_c, decode_response, eventually_every, Cluster, ClusterOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A C function that answers `"<tag>"`, so each build is a distinct version.
pub fn tagged(dir: &Path, tag: &str) -> PathBuf {
    compile_c(
        dir,
        &format!("tag_{tag}"),
        &format!(
            "#include <squall.h>\n#include <stdlib.h>\n#include <string.h>\n\
             const uint32_t squall_abi_version = 1;\n\
             int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {{\n\
               (void)c; (void)i;\n\
               const char *text = \"\\\"{tag}\\\"\";\n\
               size_t n = strlen(text);\n\
               uint8_t *p = malloc(n); memcpy(p, text, n);\n\
               o->body.ptr = p; o->body.len = n; o->body.cap = n; o->retry_after_ms = 0;\n\
               return 0;\n\
             }}\n\
             void squall_free(squall_buf b) {{ free(b.ptr); }}\n"
        ),
    )
}

async fn output(cluster: &Cluster, target: &str) -> (u16, String) {
    let response = cluster.invoke(target, "{}").await;
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_numbered_and_qualifiers_and_aliases_pick_them() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (tagged(dir.path(), "one"), tagged(dir.path(), "two"));
    let deployed: Function =
        serde_json::from_value(cluster.deploy("tagged", &one, None).await.1).unwrap();
    assert_eq!(deployed.version_number, 1);
    let again: Function =
        serde_json::from_value(cluster.deploy("tagged", &one, None).await.1).unwrap();
    assert_eq!(
        again.version_number, 1,
        "identical content creates no version"
    );
    let (status, body) = cluster.deploy("tagged", &two, None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version_number"], 2);

    let (status, list) = cluster
        .get_as::<VersionList>("/v1/functions/tagged/versions")
        .await;
    assert_eq!(status, 200);
    let numbers: Vec<(u32, bool)> = list
        .versions
        .iter()
        .map(|v| (v.version, v.latest))
        .collect();
    assert_eq!(numbers, vec![(1, false), (2, true)]);

    assert_eq!(output(&cluster, "tagged").await, (200, "\"two\"".into()));
    assert_eq!(output(&cluster, "tagged:1").await, (200, "\"one\"".into()));
    assert_eq!(
        output(&cluster, "tagged:$LATEST").await,
        (200, "\"two\"".into())
    );
    let response = cluster
        .http
        .post(format!(
            "{}/v1/functions/tagged/invocations?qualifier=1",
            cluster.url
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "\"one\"");

    let (status, alias) = cluster
        .put_as::<Alias>(
            "/v1/functions/tagged/aliases/live",
            serde_json::json!({"version": 1}),
        )
        .await;
    assert_eq!((status, alias.version), (200, 1));
    assert_eq!(output(&cluster, "tagged:live").await.1, "\"one\"");
    // A trigger-free path that also takes `name:alias`: the batch route.
    let response = cluster
        .http
        .post(format!("{}/v1/functions/tagged:live/batch", cluster.url))
        .body("{}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let ids: serde_json::Value = response.json().await.unwrap();
    let id = ids["invocation_ids"][0].as_str().unwrap();
    let done = cluster.wait_terminal(id, Duration::from_secs(20)).await;
    assert_eq!(done.output.as_deref(), Some("\"one\""));
    assert_eq!(done.version_number, Some(1));

    // Unknown qualifiers are 404s that say what is missing.
    let response = cluster.invoke("tagged:beta", "{}").await;
    let (status, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!((status, body.error.code.as_str()), (404, "alias_not_found"));
    let response = cluster.invoke("tagged:7", "{}").await;
    let (status, body) = decode_response::<ErrorBody>(response).await;
    assert_eq!(
        (status, body.error.code.as_str()),
        (404, "version_not_found")
    );

    // The aliased version and $LATEST cannot be deleted.
    let delete = |path: &'static str| {
        let (http, url) = (cluster.http.clone(), cluster.url.clone());
        async move {
            http.delete(format!("{url}{path}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        delete("/v1/functions/tagged/versions/1").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        delete("/v1/functions/tagged/versions/2").await,
        StatusCode::CONFLICT
    );

    // Rollback through the CLI: set live to 2, roll back to 1.
    let squall = |args: &[&str]| {
        let out = std::process::Command::new(&built().squall)
            .args(["--url", &cluster.url])
            .args(args)
            .output()
            .expect("run squall");
        assert!(
            out.status.success(),
            "squall {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(squall(&["alias", "set", "tagged", "live", "2"]).contains("tagged:live -> 2"));
    assert_eq!(output(&cluster, "tagged:live").await.1, "\"two\"");
    let listed = squall(&["versions", "tagged"]);
    assert!(
        listed.contains("2 *") && listed.contains("live"),
        "{listed}"
    );
    assert!(squall(&["rollback", "tagged", "live"]).contains("tagged:live -> 1"));
    assert_eq!(output(&cluster, "tagged:live").await.1, "\"one\"");
    let (_, alias) = cluster
        .get_as::<Alias>("/v1/functions/tagged/aliases/live")
        .await;
    assert_eq!(alias.previous.map(|p| p.version), Some(2));
    // A trigger that names the alias runs the alias's version; an unknown alias is refused.
    let (status, body) = cluster
        .put_json(
            "/v1/triggers/tagged-live",
            serde_json::json!({"function": "tagged:live", "subject": "events.tagged"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .put_json(
            "/v1/triggers/tagged-beta",
            serde_json::json!({"function": "tagged:beta", "subject": "events.other"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let listed = |cluster: &Cluster| {
        let (http, url) = (cluster.http.clone(), cluster.url.clone());
        async move {
            let page: InvocationPage = http
                .get(format!("{url}/v1/invocations?function=tagged&limit=1000"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page.items
        }
    };
    let before: Vec<String> = listed(&cluster)
        .await
        .into_iter()
        .map(|i| i.invocation_id)
        .collect();
    let client = cluster.nats_client().await;
    client.publish("events.tagged", "{}".into()).await.unwrap();
    client.flush().await.unwrap();
    let fired = eventually_every(
        Duration::from_secs(20),
        Duration::from_millis(100),
        "the trigger's invocation to finish",
        async || {
            listed(&cluster)
                .await
                .into_iter()
                .find(|i| !before.contains(&i.invocation_id) && i.status.is_terminal())
        },
    )
    .await;
    assert_eq!(fired.version_number, Some(1), "{fired:?}");
    assert_eq!(
        delete("/v1/triggers/tagged-live").await,
        StatusCode::NO_CONTENT
    );
    // With the alias gone, version 1 may be deleted; it no longer answers.
    assert_eq!(
        delete("/v1/functions/tagged/aliases/live").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete("/v1/functions/tagged/versions/1").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(output(&cluster, "tagged:1").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_alias_follows_its_weights_over_ten_thousand_invocations() {
    let cluster = Cluster::start_with(ClusterOptions {
        workers: 2,
        ..ClusterOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let spec = Some(serde_json::json!({"concurrency": 32}));
    let one = cluster
        .deploy("canary", &tagged(dir.path(), "one"), spec.clone())
        .await;
    let two = cluster
        .deploy("canary", &tagged(dir.path(), "two"), spec)
        .await;
    assert_eq!((one.0, two.0), (201, 201));
    let (status, body) = cluster
        .put_json(
            "/v1/functions/canary/aliases/live",
            serde_json::json!({"version": 1, "weights": {"2": 0.3}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let total = 10_000;
    let lines = "{}\n".repeat(total);
    let response = cluster
        .http
        .post(format!("{}/v1/functions/canary:live/batch", cluster.url))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());

    // Wait for every one to finish (the stats are one cheap query), then count the finished
    // invocations by the version that ran, from the query index.
    eventually_every(
        Duration::from_secs(120),
        Duration::from_secs(1),
        format_args!("all {total} to finish"),
        async || {
            let (_, stats) = cluster
                .get_as::<FunctionStats>("/v1/functions/canary/stats")
                .await;
            (stats.succeeded >= total as u64)
                .then_some(())
                .ok_or_else(|| format!("only {} finished", stats.succeeded))
        },
    )
    .await;
    let mut counts: HashMap<u32, usize> = HashMap::new();
    let mut cursor = None::<String>;
    loop {
        let mut path = "/v1/invocations?function=canary&status=succeeded&limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = cluster.get_as::<InvocationPage>(&path).await;
        assert_eq!(status, 200);
        for item in &page.items {
            *counts.entry(item.version_number.unwrap_or(0)).or_default() += 1;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let share = counts.get(&2).copied().unwrap_or(0) as f64 / total as f64;
    assert_eq!(
        counts.get(&1).copied().unwrap_or(0) + counts.get(&2).copied().unwrap_or(0),
        total,
        "{counts:?}"
    );
    assert!(
        (share - 0.3).abs() <= 0.02,
        "version 2 got {share} of the calls: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_versions_beyond_the_retention_go_unless_an_alias_holds_them() {
    let app = App::start_with(|config| config.keep_versions = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let libs: Vec<Vec<u8>> = ["a", "b", "c", "d"]
        .iter()
        .map(|t| std::fs::read(tagged(dir.path(), t)).unwrap())
        .collect();
    assert_eq!(app.deploy("kept", &libs[0], None).await.status, 201);
    let answer = app
        .put_json(
            "/v1/functions/kept/aliases/stable",
            &serde_json::json!({"version": 1}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    for lib in &libs[1..] {
        assert_eq!(app.deploy("kept", lib, None).await.status, 201);
    }
    let list: VersionList = app.get("/v1/functions/kept/versions").await.decode();
    let numbers: Vec<u32> = list.versions.iter().map(|v| v.version).collect();
    // Two newest, plus version 1 that the alias holds.
    assert_eq!(numbers, vec![1, 3, 4]);
    assert_eq!(list.latest, 4);
    assert_eq!(list.versions[0].aliases, vec!["stable".to_string()]);
    let answer = app
        .put_json(
            "/v1/functions/kept/aliases/stable",
            &serde_json::json!({"version": 3, "weights": {"2": 0.5}}),
        )
        .await;
    assert_eq!(answer.status, 404, "version 2 was dropped");
    let answer = app
        .put_json(
            "/v1/functions/kept/aliases/stable",
            &serde_json::json!({"version": 3, "weights": {"4": 1.5}}),
        )
        .await;
    assert_eq!(answer.status, 422);
}
