//! TLS end to end with certificates made by the test: nats-server requires TLS, the dispatcher
//! and the worker reach it with `--nats-ca`, the API is served over HTTPS, and the CLI trusts
//! it with `--ca-cert`.

use squall_tests::{
    built, eventually, eventually_every, free_port, nats_server_binary, workspace_root, Process,
    Text,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Writes `ca.pem`, `server.pem` and `server.key` (for localhost and 127.0.0.1) into `dir`.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Squall test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "squall test server");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn squall(args: &[&str]) -> std::process::Output {
    Command::new(&built().squall)
        .current_dir(workspace_root())
        .env_remove("SQUALL_API_KEY")
        .args(args)
        .output()
        .expect("run squall")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_and_tls_to_nats_work_with_certificates_the_test_made() {
    tokio::task::spawn_blocking(built).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());

    // A nats-server that only speaks TLS.
    let nats_port = free_port();
    let mut command = Command::new(nats_server_binary());
    command
        .arg("-c")
        .arg(workspace_root().join("broker-config/nats/open.conf"))
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &nats_port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(dir.path().join("js"))
        .arg("--tls")
        .arg("--tlscert")
        .arg(&cert)
        .arg("--tlskey")
        .arg(&key);
    let _nats = Process::spawn("nats-server", command, dir.path().join("nats.log")).unwrap();
    let nats_url = format!("nats://127.0.0.1:{nats_port}");

    let http_port = free_port();
    let mut command = Command::new(&built().dispatcher);
    command
        .env("RUST_LOG", "info")
        .args(["--nats-url", &nats_url, "--nats-ca"])
        .arg(&ca)
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .args(["--web-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("dispatcher"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let dispatcher =
        Process::spawn("dispatcher", command, dir.path().join("dispatcher.log")).unwrap();
    let mut command = Command::new(&built().worker);
    command
        .env("RUST_LOG", "info")
        .args(["--nats-url", &nats_url])
        .env("SQUALL_NATS_CA", &ca)
        .arg("--data-dir")
        .arg(dir.path().join("worker"))
        .arg("--function")
        .arg("hello");
    let worker = Process::spawn("worker", command, dir.path().join("worker.log")).unwrap();

    let url = format!("https://127.0.0.1:{http_port}");
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    eventually_every(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "the HTTPS API to be ready",
        async || match trusted.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            answer => Err(Text(format!(
                "{answer:?}\n{}\n{}",
                dispatcher.output(),
                worker.output()
            ))),
        },
    )
    .await;
    // Plain HTTP gets no API answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP must not be served"
    );

    // Deploy and invoke over HTTPS, through workers that reach NATS over TLS.
    let library = built().library("hello");
    let form = reqwest::multipart::Form::new().part(
        "artifact",
        reqwest::multipart::Part::bytes(std::fs::read(library).unwrap()).file_name("lib.so"),
    );
    let deployed = trusted
        .put(format!("{url}/v1/functions/hello"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(deployed.status(), 201);
    let greeting = eventually(Duration::from_secs(30), "a greeting over TLS", async || {
        let response = trusted
            .post(format!("{url}/v1/functions/hello/invocations?wait=5"))
            .body(r#"{"name": "TLS"}"#)
            .send()
            .await
            .unwrap();
        match response.status() {
            reqwest::StatusCode::OK => Ok(response.text().await.unwrap()),
            status => Err(Text(format!("{status}\n{}", worker.output()))),
        }
    })
    .await;
    assert_eq!(greeting, r#"{"greeting":"Hello, TLS!"}"#);

    // The CLI trusts the test CA when told, and refuses the unknown certificate otherwise.
    let ca_text = ca.to_str().unwrap();
    let listed = squall(&["--url", &url, "--ca-cert", ca_text, "ls"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hello"));
    let untrusted = squall(&["--url", &url, "ls"]);
    assert!(!untrusted.status.success(), "{untrusted:?}");
}
