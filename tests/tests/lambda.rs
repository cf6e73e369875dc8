//! The Lambda-compatible API driven by the real clients: boto3 and the AWS CLI (v1) against a
//! cluster with keys, so every request is signed with SigV4 and checked.

use squall_api::operations::CreatedKey;
use squall_tests::{built, compile_c, Cluster, ClusterOptions};
use std::path::Path;
use std::process::Command;

const ADMIN: &str = "lambda-admin-key-0123456789abcdef";

pub(crate) fn aws_python() -> String {
    std::env::var("SQUALL_AWS_PYTHON").unwrap_or_else(|_| {
        let script = squall_tests::workspace_root().join("scripts/install-aws-clients");
        let out = Command::new(script)
            .output()
            .expect("run scripts/install-aws-clients");
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

/// A C function that logs a line and answers its input.
fn logger(dir: &Path) -> std::path::PathBuf {
    compile_c(
        dir,
        "logger",
        "#include <squall.h>\n#include <stdlib.h>\n#include <string.h>\n\
         const uint32_t squall_abi_version = 1;\n\
         int32_t squall_invoke(const squall_ctx *c, squall_bytes i, squall_output *o) {\n\
           squall_log(c, SQUALL_LOG_INFO, \"logger: invoked\");\n\
           uint8_t *p = malloc(i.len ? i.len : 1); memcpy(p, i.ptr, i.len);\n\
           o->body.ptr = p; o->body.len = i.len; o->body.cap = i.len ? i.len : 1; o->retry_after_ms = 0;\n\
           return 0;\n\
         }\n\
         void squall_free(squall_buf b) { free(b.ptr); }\n",
    )
}

/// The environment of a client process: credentials and region explicitly, no files, no
/// instance metadata, no retries.
pub(crate) fn aws_env(cluster: &Cluster, key_id: &str, secret: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", key_id),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_MAX_ATTEMPTS", "1"),
        ("AWS_RETRY_MODE", "standard"),
        ("AWS_PAGER", ""),
        ("SQUALL_ENDPOINT", cluster.url.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub(crate) fn run_python(env: &[(String, String)], script: &str) -> String {
    let out = Command::new(aws_python())
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const CLIENT: &str = r#"
import base64, json, os, boto3, botocore.config
from botocore.exceptions import ClientError
cfg = botocore.config.Config(retries={"max_attempts": 0, "mode": "standard"}, read_timeout=60)
lam = boto3.client("lambda", endpoint_url=os.environ["SQUALL_ENDPOINT"], config=cfg)
def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("no error")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_aws_cli_invoke_and_read_functions_through_sigv4() {
    let options = ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(options).await;
    let dir = tempfile::tempdir().unwrap();
    let one = cluster.deploy("logger", &logger(dir.path()), None).await;
    assert_eq!(one.0, 201, "{}", one.1);
    let two = cluster
        .deploy("logger", built().library("echo"), None)
        .await;
    assert_eq!(two.0, 201, "{}", two.1);
    let (status, body) = cluster
        .put_json(
            "/v1/functions/logger/aliases/live",
            serde_json::json!({"version": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fail = cluster
        .deploy(
            "fails",
            built().library("fail"),
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    assert_eq!(fail.0, 201, "{}", fail.1);
    let panics = cluster
        .deploy(
            "panics",
            built().library("panic"),
            Some(serde_json::json!({"max_attempts": 1})),
        )
        .await;
    assert_eq!(panics.0, 201, "{}", panics.1);
    let created: CreatedKey = cluster
        .http
        .post(format!("{}/v1/keys", cluster.url))
        .json(&serde_json::json!({"name": "caller", "scopes": ["invoke"], "sigv4": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let script = format!(
        r#"{CLIENT}
# RequestResponse: the payload, the executed version, the log tail; $LATEST is the echo build.
r = lam.invoke(FunctionName="logger", Payload=b'{{"n": 1}}', LogType="Tail",
               ClientContext=base64.b64encode(json.dumps({{"custom": {{"who": "boto3"}}}}).encode()).decode())
assert r["StatusCode"] == 200, r
out = json.loads(r["Payload"].read())
assert out["input"] == '{{"n": 1}}', out
assert "X-Amz-Client-Context" in out["event"]["headers"], out
assert r["ExecutedVersion"] == "2", r
# An alias qualifier runs version 1, which logs; the tail carries its line.
r = lam.invoke(FunctionName="logger", Qualifier="live", Payload=b'{{"n": 2}}', LogType="Tail")
assert r["ExecutedVersion"] == "1", r
assert json.loads(r["Payload"].read()) == {{"n": 2}}
assert "logger: invoked" in base64.b64decode(r["LogResult"]).decode(), r
r = lam.invoke(FunctionName="logger:1", Payload=b'{{}}')
assert r["ExecutedVersion"] == "1", r
# Event and DryRun.
r = lam.invoke(FunctionName="logger", InvocationType="Event", Payload=b'{{}}')
assert r["StatusCode"] == 202, r
r = lam.invoke(FunctionName="logger", InvocationType="DryRun")
assert r["StatusCode"] == 204, r
# A function's own error is Handled, with Lambda's body.
r = lam.invoke(FunctionName="fails", Payload=b'{{}}')
assert r["FunctionError"] == "Handled", r
err = json.loads(r["Payload"].read())
assert "always fails" in err["errorMessage"], err
# A panic is Unhandled.
r = lam.invoke(FunctionName="panics", Payload=b'{{}}')
assert r["FunctionError"] == "Unhandled", r
assert json.loads(r["Payload"].read())["errorType"] == "Squall.panic"
# Reads.
names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
assert names == ["fails", "logger", "panics"], names
page = lam.list_functions(MaxItems=1)
assert [f["FunctionName"] for f in page["Functions"]] == ["fails"] and page["NextMarker"], page
page = lam.list_functions(Marker=page["NextMarker"], MaxItems=1)
assert [f["FunctionName"] for f in page["Functions"]] == ["logger"] and page["NextMarker"], page
f = lam.get_function(FunctionName="logger")
assert f["Configuration"]["Version"] == "$LATEST" and f["Configuration"]["FunctionArn"].startswith("arn:aws:lambda:eu-west-1:"), f
c = lam.get_function_configuration(FunctionName="logger", Qualifier="1")
assert c["Version"] == "1", c
versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="logger")["Versions"]]
assert versions == ["$LATEST", "1", "2"], versions
aliases = lam.list_aliases(FunctionName="logger")["Aliases"]
assert [(a["Name"], a["FunctionVersion"]) for a in aliases] == [("live", "1")], aliases
# Errors in Lambda's shape.
assert error_code(lambda: lam.invoke(FunctionName="nope", Payload=b"{{}}")) == "ResourceNotFoundException"
assert error_code(lambda: lam.invoke(FunctionName="logger:beta", Payload=b"{{}}")) == "ResourceNotFoundException"
assert error_code(lambda: lam.invoke(FunctionName="logger", Payload=b"not json")) == "InvalidRequestContentException"
# A resend of one call (botocore keeps amz-sdk-invocation-id across its retries) is the same
# invocation, not a second run.
import urllib.request
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
# Each try is signed anew and says which try it is (amz-sdk-request, as botocore's retries do),
# so its signature differs: a signature seen before is refused as a replay.
def send(attempt):
    url = os.environ["SQUALL_ENDPOINT"] + "/2015-03-31/functions/logger/invocations"
    req = AWSRequest(method="POST", url=url, data=b'{{"resend": 1}}',
                     headers={{"amz-sdk-invocation-id": "6a1f3b2c-0000-4000-8000-000000000001",
                              "amz-sdk-request": "attempt=%d; max=3" % attempt}})
    SigV4Auth(boto3.Session().get_credentials(), "lambda", "eu-west-1").add_auth(req)
    prepared = req.prepare()
    with urllib.request.urlopen(urllib.request.Request(url, data=prepared.body, headers=dict(prepared.headers), method="POST")) as resp:
        return resp.headers["x-amzn-RequestId"]
first, second = send(1), send(2)
assert first and first == second, (first, second)
print("ok")
"#
    );
    let admin = aws_env(&cluster, "admin", ADMIN);
    assert_eq!(run_python(&admin, &script).trim(), "ok");

    // Unsigned requests are refused while the native API needs keys.
    let unsigned = reqwest::Client::new()
        .post(format!(
            "{}/2015-03-31/functions/logger/invocations",
            cluster.url
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    assert_eq!(
        unsigned.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );

    // A wrong secret is a signature error; an invoke-only key may invoke but not list.
    let wrong = aws_env(&cluster, "admin", "not-the-admin-key");
    let script = format!("{CLIENT}\nprint(error_code(lambda: lam.list_functions()))\n");
    assert_eq!(
        run_python(&wrong, &script).trim(),
        "InvalidSignatureException"
    );
    let caller = aws_env(&cluster, "caller", &created.key);
    let script = format!(
        "{CLIENT}\nr = lam.invoke(FunctionName='logger:live', Payload=b'7')\nassert r['StatusCode'] == 200\nprint(error_code(lambda: lam.list_functions()))\n"
    );
    assert_eq!(run_python(&caller, &script).trim(), "AccessDeniedException");

    // A key limited to some functions reaches only those, for invoking and for reading.
    let limited: CreatedKey = cluster
        .http
        .post(format!("{}/v1/keys", cluster.url))
        .json(
            &serde_json::json!({"name": "loggers", "scopes": ["invoke", "read"],
            "sigv4": true, "functions": ["log*"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loggers = aws_env(&cluster, "loggers", &limited.key);
    let script = format!(
        r#"{CLIENT}
r = lam.invoke(FunctionName="logger", Payload=b'{{}}')
assert r["StatusCode"] == 200, r
names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
assert names == ["logger"], names
arn = "arn:aws:lambda:eu-west-1:000000000000:function:fails"
print(error_code(lambda: lam.invoke(FunctionName="fails", Payload=b"{{}}")),
      error_code(lambda: lam.invoke(FunctionName=arn, Payload=b"{{}}")),
      error_code(lambda: lam.get_function(FunctionName="panics")),
      error_code(lambda: lam.invoke(FunctionName="nothing", Payload=b"{{}}")))
"#
    );
    assert_eq!(
        run_python(&loggers, &script).trim(),
        "AccessDeniedException AccessDeniedException AccessDeniedException AccessDeniedException"
    );

    // The AWS CLI writes the payload to its out-file.
    let out_file = dir.path().join("out.json");
    let aws = Path::new(&aws_python()).with_file_name("aws");
    let output = Command::new(&aws)
        .args([
            "lambda",
            "invoke",
            "--function-name",
            "logger:live",
            "--endpoint-url",
        ])
        .arg(&cluster.url)
        .args(["--payload", "{\"cli\": true}"])
        .arg(&out_file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(admin.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run aws");
    assert!(
        output.status.success(),
        "aws lambda invoke: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["StatusCode"], 200, "{printed}");
    assert_eq!(printed["ExecutedVersion"], "1", "{printed}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "{\"cli\": true}"
    );
}

/// Signs one Invoke with botocore's signer (the key id and secret of the environment), sends
/// it `TIMES` times and prints each answer as JSON: status, error
/// type and body.
const SEND_SIGNED: &str = r#"
import json, os, urllib.request, urllib.error
import botocore.credentials
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
url = os.environ["SQUALL_ENDPOINT"] + "/2015-03-31/functions/logger/invocations"
req = AWSRequest(method="POST", url=url, data=b'{"n": 1}')
creds = botocore.credentials.Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
signer = SigV4Auth(creds, "lambda", "eu-west-1")
signer.add_auth(req)
prepared = req.prepare()
answers = []
for _ in range(int(os.environ.get("TIMES", "1"))):
    r = urllib.request.Request(url, data=prepared.body, headers=dict(prepared.headers), method="POST")
    try:
        with urllib.request.urlopen(r) as resp:
            answers.append({"status": resp.status, "type": None, "body": resp.read().decode()})
    except urllib.error.HTTPError as e:
        answers.append({"status": e.code, "type": e.headers.get("x-amzn-ErrorType"), "body": e.read().decode()})
print(json.dumps(answers))
"#;

fn send_signed(
    cluster: &Cluster,
    key_id: &str,
    secret: &str,
    extra: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let mut env = aws_env(cluster, key_id, secret);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    serde_json::from_str(run_python(&env, SEND_SIGNED).trim()).expect("the answers as JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_answers_alike_for_unknown_keys_and_wrong_signatures_and_refuses_replays() {
    let options = ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(options).await;
    let dir = tempfile::tempdir().unwrap();
    let deployed = cluster.deploy("logger", &logger(dir.path()), None).await;
    assert_eq!(deployed.0, 201, "{}", deployed.1);

    // One answer, whether the key id is unknown or the signature is wrong.
    let unknown = send_signed(&cluster, "nobody", "whatever", &[]);
    let wrong = send_signed(&cluster, "admin", "not-the-admin-key", &[]);
    assert_eq!(unknown[0]["status"], 403, "{unknown:?}");
    assert_eq!(unknown, wrong);

    // A signed request is taken once; the same bytes again are refused.
    let twice = send_signed(&cluster, "admin", ADMIN, &[("TIMES", "2")]);
    assert_eq!(twice[0]["status"], 200, "{twice:?}");
    assert_eq!(twice[1]["status"], 403, "{twice:?}");
    assert_eq!(twice[1]["type"], "InvalidSignatureException");
    assert!(
        twice[1]["body"].as_str().unwrap().contains("already used"),
        "{twice:?}"
    );
}

/// Sends the head of a signed Invoke announcing a body it never sends, and answers what the
/// dispatcher said before the connection closed or 10 s passed.
async fn head_only(cluster: &Cluster, authorization: &str, amz_date: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = cluster.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /2015-03-31/functions/logger/invocations HTTP/1.1\r\nHost: {address}\r\n\
         X-Amz-Date: {amz_date}\r\nAuthorization: {authorization}\r\n\
         Content-Length: 1000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("an answer before the body was sent")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_api_checks_the_key_id_and_date_before_reading_a_body() {
    let options = ClusterOptions {
        dispatcher_env: vec![("SQUALL_ADMIN_KEY".into(), ADMIN.into())],
        workers: 0,
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start_with(options).await;
    let now = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let day = &now[..8];
    let unknown = format!(
        "AWS4-HMAC-SHA256 Credential=nobody/{day}/eu-west-1/lambda/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}",
        "0".repeat(64)
    );
    let answer = head_only(&cluster, &unknown, &now).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("InvalidSignatureException"), "{answer}");

    // A known key id with a date an hour old: refused on the date, body unread.
    let stale = "20200101T000000Z";
    let old = format!(
        "AWS4-HMAC-SHA256 Credential=admin/20200101/eu-west-1/lambda/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}",
        "0".repeat(64)
    );
    let answer = head_only(&cluster, &old, stale).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("expired"), "{answer}");
}
