//! The `iot` example end to end: 50 devices publish over MQTT (paho-mqtt, a real client) to
//! nats-server's MQTT listener; a subject trigger feeds iot-ingest, whose per-device windows
//! match what was sent, exactly once, although a worker is killed mid-stream; iot-rollup's
//! schedule summarises the fleet.

use squall_tests::{
    built, eventually, eventually_every, free_port, Cluster, ClusterOptions, AUTH_CLIENT,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const DEVICES: u64 = 50;
const READINGS: u64 = 30;
/// Readings 3 s apart from a minute's start: two minutes of windows per device.
const STEP_MS: u64 = 3_000;
const BASE_MS: u64 = 1_767_225_600_000;

/// What device `d` sends as reading `seq` (the Python publisher computes the same).
fn value(d: u64, seq: u64) -> f64 {
    ((d * 7 + seq * 13) % 100) as f64 / 4.0
}

const PUBLISHER: &str = r#"
import json, sys, time
import paho.mqtt.client as mqtt

port, devices, readings, step, base, rate = (int(a) for a in sys.argv[1:7])
user, password = sys.argv[7:9]
clients = []
for d in range(devices):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{d}", clean_session=False)
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    clients.append(c)
pending = []
started = time.monotonic()
sent = 0
for seq in range(1, readings + 1):
    for d, c in enumerate(clients):
        body = {"seq": seq, "value": ((d * 7 + seq * 13) % 100) / 4.0, "ts_ms": base + seq * step}
        pending.append(c.publish(f"devices/d{d}/telemetry", json.dumps(body), qos=1))
        sent += 1
        # A bounded rate: never ahead of `rate` messages per second.
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
for info in pending:
    info.wait_for_publish(30)
    assert info.is_published()
for c in clients:
    c.loop_stop()
    c.disconnect()
print(json.dumps({"sent": sent, "seconds": time.monotonic() - started}))
"#;

/// Connects without a user and prints whether the broker refused it.
const ANONYMOUS_DEVICE: &str = r#"
import sys, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anonymous")
try:
    c.connect("127.0.0.1", int(sys.argv[1]))
    for _ in range(50):
        c.loop(timeout=0.1)
        if c.is_connected():
            break
    print("connected" if c.is_connected() else "refused")
except Exception:
    print("refused")
"#;

fn mqtt_python() -> String {
    std::env::var("SQUALL_MQTT_PYTHON").unwrap_or_else(|_| {
        let script = squall_tests::workspace_root().join("scripts/install-mqtt-client");
        let out = std::process::Command::new(script)
            .output()
            .expect("run scripts/install-mqtt-client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string()
    })
}

async fn put(cluster: &Cluster, path: &str, body: serde_json::Value) {
    let (status, answer) = cluster.put_json(path, body).await;
    assert!(
        status == 200 || status == 201,
        "PUT {path}: {status} {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_windows_match_what_was_sent_over_mqtt_across_a_worker_kill() {
    let mqtt_port = free_port();
    let mut cluster = Cluster::start_with(
        ClusterOptions {
            profile: "mqtt",
            nats_env: vec![("SQUALL_MQTT_PORT".into(), mqtt_port.to_string())],
            ..ClusterOptions::default()
        }
        .with_auth(),
    )
    .await;
    let python = mqtt_python();
    // A device without the client role's login is refused by the broker's MQTT listener.
    let anonymous = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(ANONYMOUS_DEVICE)
        .arg(mqtt_port.to_string())
        .output()
        .await
        .expect("run the anonymous device");
    assert_eq!(
        String::from_utf8_lossy(&anonymous.stdout).trim(),
        "refused",
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    let spec = serde_json::json!({
        "concurrency": 1, "max_concurrency": 1, "max_attempts": 5,
        "backoff": {"initial_ms": 50, "max_ms": 500}
    });
    for (name, library) in [("iot-ingest", "iot_ingest"), ("iot-rollup", "iot_rollup")] {
        let (status, body) = cluster
            .deploy(name, built().library(library), Some(spec.clone()))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let trigger = |function: &str, subject: &str| serde_json::json!({"function": function, "subject": subject});
    put(
        &cluster,
        "/v1/triggers/iot-telemetry",
        trigger("iot-ingest", "devices.*.telemetry"),
    )
    .await;
    put(
        &cluster,
        "/v1/triggers/iot-windows",
        trigger("iot-rollup", "events.iot.window"),
    )
    .await;
    squall_tests::wait_workers_ready(&cluster, "iot-ingest").await;

    // 1,500 readings at 300 a second; the worker is killed a second in and replaced.
    let mut publisher = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(PUBLISHER)
        .args([mqtt_port, DEVICES as u16, READINGS as u16].map(|n| n.to_string()))
        .args([STEP_MS.to_string(), BASE_MS.to_string(), "300".to_string()])
        // Devices log in as the broker's client role.
        .args([AUTH_CLIENT.user, AUTH_CLIENT.password])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the MQTT publisher");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.workers[0].kill();
    cluster.add_worker();
    let out = tokio::time::timeout(Duration::from_secs(60), async {
        let mut stdout = publisher.stdout.take().unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .unwrap();
        assert!(
            publisher.wait().await.unwrap().success(),
            "publisher failed"
        );
        text
    })
    .await
    .expect("the publisher finished");
    let sent: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(sent["sent"], DEVICES * READINGS);

    // Expected windows: device → minute → (count, min, max, mean).
    let mut expected: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for d in 0..DEVICES {
        for seq in 1..=READINGS {
            let ts = BASE_MS + seq * STEP_MS;
            expected
                .entry(format!("d{d}"))
                .or_default()
                .entry(ts - ts % 60_000)
                .or_default()
                .push(value(d, seq));
        }
    }
    let started = Instant::now();
    for (device, minutes) in &expected {
        // One time budget for every device together.
        let (windows, body) = eventually_every(
            Duration::from_secs(90).saturating_sub(started.elapsed()),
            Duration::from_millis(250),
            format_args!("{device} to have all {READINGS} readings"),
            async || {
                let response = cluster
                    .invoke(
                        "iot-ingest",
                        serde_json::json!({"device": device}).to_string(),
                    )
                    .await;
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                let windows = body["windows"].as_array().cloned().unwrap_or_default();
                let counts: u64 = windows.iter().map(|w| w["count"].as_u64().unwrap()).sum();
                assert!(
                    counts <= READINGS,
                    "{device} counted {counts} readings: {body}"
                );
                (counts == READINGS)
                    .then(|| (windows, body.clone()))
                    .ok_or_else(|| format!("{counts} readings: {body}"))
            },
        )
        .await;
        assert_eq!(windows.len(), minutes.len(), "{device}: {body}");
        for (window, (minute, values)) in windows.iter().zip(minutes) {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(window["minute_ms"].as_u64(), Some(*minute));
            assert_eq!(window["count"].as_u64(), Some(values.len() as u64));
            assert_eq!(window["min"].as_f64(), Some(min), "{device}");
            assert_eq!(window["max"].as_f64(), Some(max), "{device}");
            assert!((window["mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        }
    }
    eprintln!(
        "iot: {} readings published in {:.1} s, all ingested {:.1} s later",
        DEVICES * READINGS,
        sent["seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );

    // The rollup's schedule summarises the fleet: both minutes, every device, every reading.
    put(
        &cluster,
        "/v1/schedules/iot-rollup-tick",
        serde_json::json!({"function": "iot-rollup", "cron": "*/2 * * * * *", "payload": {"summarize": true}}),
    )
    .await;
    let (minutes, body) = eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(500),
        "the rollup to see every reading",
        async || {
            let response = cluster.invoke("iot-rollup", r#"{"summarize": true}"#).await;
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            let minutes = body["minutes"].as_array().cloned().unwrap_or_default();
            let readings: u64 = minutes
                .iter()
                .map(|m| m["readings"].as_u64().unwrap())
                .sum();
            (readings == DEVICES * READINGS)
                .then(|| (minutes, body.clone()))
                .ok_or_else(|| format!("rollup saw {readings} readings: {body}"))
        },
    )
    .await;
    assert_eq!(minutes.len(), 2, "{body}");
    assert!(minutes.iter().all(|m| m["devices"] == DEVICES), "{body}");
    // And it keeps firing: every 2 s, each a summarising invocation of its own.
    let count = || async {
        let (_, stats) = cluster.get_json("/v1/functions/iot-rollup/stats").await;
        stats["count"].as_u64().unwrap_or(0)
    };
    let before = count().await;
    eventually(
        Duration::from_secs(20),
        "the schedule to fire twice",
        async || {
            let count = count().await;
            (count >= before + 2).then_some(()).ok_or(count)
        },
    )
    .await;

    // Throughput, for BENCHMARKS.md (printed, not asserted): a burst of later readings as fast
    // as the devices can send them, until iot-ingest has run once for each.
    let ingested = || async {
        let (_, stats) = cluster.get_json("/v1/functions/iot-ingest/stats").await;
        stats["count"].as_u64().unwrap_or(0)
    };
    let before = ingested().await;
    let burst_started = Instant::now();
    let burst = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(PUBLISHER)
        .args([mqtt_port, DEVICES as u16, 20].map(|n| n.to_string()))
        .args([
            STEP_MS.to_string(),
            (BASE_MS + 3_600_000).to_string(),
            "100000".to_string(),
        ])
        .args([AUTH_CLIENT.user, AUTH_CLIENT.password])
        .output()
        .await
        .expect("run the burst");
    assert!(
        burst.status.success(),
        "{}",
        String::from_utf8_lossy(&burst.stderr)
    );
    eventually(
        Duration::from_secs(120),
        "the burst to be ingested",
        async || {
            let ingested = ingested().await;
            (ingested >= before + DEVICES * 20)
                .then_some(())
                .ok_or(ingested)
        },
    )
    .await;
    eprintln!(
        "iot: a burst of {} readings ingested at {:.0} messages/s (publish to the last result)",
        DEVICES * 20,
        (DEVICES * 20) as f64 / burst_started.elapsed().as_secs_f64()
    );
}
