//! JavaScript functions through real workers: ES modules imported relatively, `async handler(event, context)` with the context, console logs, errors, typed retries and host services, timers, deadlines that interrupt a running script, and checks at deploy.

use futures::StreamExt as _;
use squall_api::status::{ErrorKind, InvocationStatus};
use squall_tests::{bundle, check_web_function, Cluster};
use std::time::Duration;

const PROBE: &str = r#"
import { greet } from './lib/greet.mjs';

export async function handler(event, context) {
  switch (event?.op) {
    case 'context':
      return {
        function: context.functionName,
        invocation: context.invocationId,
        attempt: context.attempt,
        remainingOk: context.getRemainingTimeInMillis() > 0,
        greeting: greet(context.config.name),
      };
    case 'log':
      console.log('logged', 'line');
      console.error('an error line');
      return 'ok';
    case 'raise':
      throw new TypeError('bad input ' + event.n);
    case 'retry':
      if (context.attempt === 1) throw new squall.Retry(50);
      return { attempt: context.attempt };
    case 'timer':
      await new Promise((resolve) => setTimeout(resolve, 20));
      return 'waited';
    case 'kv': {
      await context.kv.put('greeting', 'hello', 60000);
      const got = new TextDecoder().decode(await context.kv.get('greeting'));
      await context.kv.delete('greeting');
      return { got, afterDelete: await context.kv.get('greeting') };
    }
    case 'publish':
      await context.publish('events.js.done', JSON.stringify({ from: context.functionName }));
      return 'published';
    case 'spin':
      for (;;) {}
    default:
      if (event instanceof Uint8Array) return event.slice().reverse();
      return { echo: event };
  }
}
"#;

const GREET: &str = "export const greet = (name) => `Hello, ${name}!`;\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_javascript_handler_gets_the_context_logs_errors_retries_timers_and_host_services() {
    let cluster = Cluster::start().await;
    let (status, body) = cluster
        .deploy_bytes(
            "js-probe",
            bundle(
                "javascript",
                "app.handler",
                &[("app.mjs", PROBE), ("lib/greet.mjs", GREET)],
            ),
            Some(serde_json::json!({
                "timeout_ms": 1000, "max_attempts": 3, "config": {"name": "Ada"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    squall_tests::wait_workers_ready(&cluster, "js-probe").await;

    let (status, id, text) = cluster
        .call_json("js-probe", serde_json::json!({"op": "context"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["function"], "js-probe");
    assert_eq!(answer["invocation"], id.as_str());
    assert_eq!(answer["attempt"], 1);
    assert_eq!(answer["remainingOk"], true);
    assert_eq!(answer["greeting"], "Hello, Ada!");

    let (status, id, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "log"}))
        .await;
    assert_eq!(status, 200);
    let logs = cluster.finished(&id).await.logs;
    let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    assert!(text.iter().any(|t| t.contains("logged line")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("an error line")), "{text:?}");

    let (_, id, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "raise", "n": 3}))
        .await;
    let failed = cluster.finished(&id).await;
    let error = failed.error.expect("an error");
    assert_eq!(error.kind, ErrorKind::Error);
    assert_eq!(error.message, "TypeError: bad input 3");
    let stack = failed
        .logs
        .iter()
        .map(|l| l.message.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        stack.contains("app.mjs"),
        "the stack names the file: {stack}"
    );

    let (_, id, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "retry"}))
        .await;
    let retried = cluster.finished(&id).await;
    assert_eq!(retried.status, InvocationStatus::Succeeded);
    assert_eq!(retried.attempts, 2);

    let (status, _, text) = cluster
        .call_json("js-probe", serde_json::json!({"op": "timer"}))
        .await;
    assert_eq!((status, text.as_str()), (200, "waited"));

    let (status, _, text) = cluster
        .call_json("js-probe", serde_json::json!({"op": "kv"}))
        .await;
    assert_eq!(status, 200, "{text}");
    let kv: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(kv, serde_json::json!({"got": "hello", "afterDelete": null}));

    let client = cluster.nats_client().await;
    let mut events = client.subscribe("events.js.done").await.unwrap();
    // The subscription is the server's before the function publishes.
    client.flush().await.unwrap();
    let (status, _, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "publish"}))
        .await;
    assert_eq!(status, 200);
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the publish arrives")
        .unwrap();
    assert_eq!(&event.payload[..], br#"{"from":"js-probe"}"#);

    let response = cluster.invoke("js-probe", vec![0xffu8, 0x00, 0x01]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], &[0x01, 0x00, 0xff]);

    // A script that never yields is interrupted at its deadline, and the process serves on.
    let started = std::time::Instant::now();
    let (_, id, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "spin"}))
        .await;
    let spun = cluster.finished(&id).await;
    assert_eq!(spun.status, InvocationStatus::TimedOut, "{spun:?}");
    assert_eq!(
        spun.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::Timeout)
    );
    assert_eq!(spun.attempts, 3, "a timeout is retried: {spun:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    let (status, _, _) = cluster
        .call_json("js-probe", serde_json::json!({"op": "context"}))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_module_with_a_syntax_error_no_handler_or_node_imports_is_refused_at_deploy() {
    let cluster = Cluster::start().await;
    let cases = [
        (
            bundle(
                "javascript",
                "app.handler",
                &[
                    (
                        "app.mjs",
                        "import { f } from './lib.mjs';\nexport const handler = f;\n",
                    ),
                    ("lib.mjs", "export const f = ;\n"),
                ],
            ),
            "lib.mjs:1",
        ),
        (
            bundle(
                "javascript",
                "app.handler",
                &[("app.mjs", "export function other() {}\n")],
            ),
            "handler",
        ),
        (
            bundle(
                "javascript",
                "app.handler",
                &[(
                    "app.mjs",
                    "\nimport fs from 'fs';\nexport const handler = () => 1;\n",
                )],
            ),
            "app.mjs:2",
        ),
    ];
    for (bytes, names) in cases {
        let (status, body) = cluster.deploy_bytes("js-bad", bytes, None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_artifact", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{names} in {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_javascript_web_function_gets_the_request_and_answers_with_status_headers_and_cookies() {
    let cluster = Cluster::start().await;
    let app = r#"
export function handler(event) {
  return {
    statusCode: 201,
    headers: { 'content-type': 'application/json', 'x-path': event.path },
    cookies: ['seen=1; Path=/'],
    body: JSON.stringify({ method: event.method, query: event.query, body: event.body,
                           agent: event.headers['user-agent'] }),
  };
}
"#;
    check_web_function(
        &cluster,
        "js-web",
        bundle("javascript", "app.handler", &[("app.mjs", app)]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_javascript_heap_stays_within_the_process_memory_limit() {
    let mut cluster = Cluster::start_with(squall_tests::ClusterOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let app = "export function handler(event) {\n  if (!event.hog) return 'fine';\n  \
               const blocks = [];\n  for (;;) blocks.push(new Array(1 << 20).fill(1.5));\n}\n";
    let (status, body) = cluster
        .deploy_bytes(
            "js-hog",
            bundle("javascript", "app.handler", &[("app.mjs", app)]),
            Some(serde_json::json!({"memory_mb": 128, "max_attempts": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cluster.add_function_worker("js-hog", &["--sandbox", "auto"]);
    squall_tests::wait_workers_ready(&cluster, "js-hog").await;
    let (_, id, _) = cluster
        .call_json("js-hog", serde_json::json!({"hog": true}))
        .await;
    let view = cluster.finished(&id).await;
    let error = view.error.expect("an error");
    assert!(
        error.message.contains("out of memory"),
        "{:?}: {}",
        error.kind,
        error.message
    );
    let (status, _, text) = cluster.call_json("js-hog", serde_json::json!({})).await;
    assert_eq!((status, text.as_str()), (200, "fine"));
}
