//! The API commands: deploy, invoke, get, ls and rm, with their human and `--json` outputs.

use crate::api_client::{answer_of, error_of, ApiClient};
use crate::args::{CancelArgs, DeployArgs, DlqCommand, GetArgs, InvokeArgs, RmArgs};
use crate::{artifact, bundle, manifest, render};
use anyhow::{bail, Context as _};
use base64::Engine as _;
use reqwest::Method;
use serde::{de::DeserializeOwned, Serialize};
use squall_api::functions::{Function, FunctionList};
use squall_api::invocations::{Accepted, CancelledBacklog, Invocation, InvocationLogs};
use squall_api::operations::{
    DeadLetter, DeadLetterList, ReplayedAll, Schedule, ScheduleRequest, Trigger, TriggerRequest,
};
use squall_api::FunctionSpec;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;

/// The header that carries an invocation's id.
const INVOCATION_ID_HEADER: &str = "squall-invocation-id";

/// Prints a JSON value for scripts: the server's answer, or a record the CLI makes.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).context("cannot write to stdout")?;
    writeln!(out).context("cannot write to stdout")
}

/// What a deploy sends: the name, the artifact (a library or a bundle) and the optional spec.
struct Deployable {
    name: String,
    artifact: Vec<u8>,
    /// The artifact's file name in the upload.
    file_name: String,
    spec: Option<FunctionSpec>,
    /// Schedules, triggers and aliases from `squall.toml`, set after the deploy.
    schedules: Vec<(String, ScheduleRequest)>,
    triggers: Vec<(String, TriggerRequest)>,
    aliases: Vec<(String, Option<u32>)>,
}

/// Reads a built library for upload: its bytes and file name.
fn read_artifact(path: &Path) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact.so".to_string());
    Ok((bytes, file_name))
}

/// Works out what to deploy from a directory (building it) or a library file.
fn prepare_deploy(args: &DeployArgs) -> anyhow::Result<Deployable> {
    let path = &args.path;
    let jar = path.extension().is_some_and(|e| e == "jar");
    if !jar && (args.runtime.is_some() || args.handler.is_some()) {
        bail!(
            "--runtime and --handler are for a jar; a folder names them in {}, a .py, .mjs or .js \
             file's handler is `handler`",
            manifest::MANIFEST_FILE
        );
    }
    // `squall deploy dir/squall.toml` means the directory.
    let dir = if path
        .file_name()
        .is_some_and(|f| f == manifest::MANIFEST_FILE)
    {
        Some(path.parent().unwrap_or(Path::new(".")).to_path_buf())
    } else if path.is_dir() {
        Some(path.clone())
    } else {
        None
    };
    if let Some(dir) = dir {
        let manifest = manifest::load(&dir)?;
        let name = args.name.clone().unwrap_or_else(|| manifest.name.clone());
        squall_broker::validate_function_name(&name).context("--name")?;
        let (artifact, file_name) = match &manifest.source {
            Some(source) => (bundle::pack_dir(&dir, source)?, "bundle.tar.gz".to_string()),
            None => read_artifact(&artifact::build(&dir, &manifest)?)?,
        };
        // Bindings go to the function under the name it is deployed as.
        let mut schedules = manifest.schedules;
        for (_, body) in &mut schedules {
            body.function.clone_from(&name);
        }
        let mut triggers = manifest.triggers;
        for (_, body) in &mut triggers {
            body.function.clone_from(&name);
        }
        return Ok(Deployable {
            schedules,
            triggers,
            aliases: manifest.aliases,
            name,
            artifact,
            file_name,
            spec: Some(manifest.spec),
        });
    }
    if !path.is_file() {
        bail!(
            "{} is neither a function directory (with {}), a library file nor a .py, .mjs, .js \
             or .jar file",
            path.display(),
            manifest::MANIFEST_FILE
        );
    }
    let (artifact, file_name) = match squall_bundle::Runtime::of_source_file(path) {
        Some(_) => (
            bundle::pack_file(path, args.handler.as_deref())?,
            "bundle.tar.gz".to_string(),
        ),
        None => read_artifact(path)?,
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => manifest::name_from_library(path).with_context(|| {
            format!(
                "cannot derive a function name from {}; pass --name",
                path.display()
            )
        })?,
    };
    squall_broker::validate_function_name(&name).with_context(|| {
        if args.name.is_some() {
            "--name".to_string()
        } else {
            format!(
                "the name {name:?} derived from {}; pass --name",
                path.display()
            )
        }
    })?;
    Ok(Deployable {
        name,
        artifact,
        file_name,
        spec: None,
        schedules: Vec::new(),
        triggers: Vec::new(),
        aliases: Vec::new(),
    })
}

/// `squall deploy`: builds if needed, uploads, prints `deployed <name> <version>`.
pub async fn deploy(client: &ApiClient, json: bool, args: &DeployArgs) -> anyhow::Result<()> {
    let deployable = tokio::task::spawn_blocking({
        let args = args.clone();
        move || prepare_deploy(&args)
    })
    .await
    .context("the build task failed")??;
    let mut form = reqwest::multipart::Form::new().part(
        "artifact",
        reqwest::multipart::Part::bytes(deployable.artifact)
            .file_name(deployable.file_name)
            .mime_str("application/octet-stream")?,
    );
    if let Some(spec) = &deployable.spec {
        let spec = serde_json::to_string(spec).context("cannot encode the function's spec")?;
        form = form.part(
            "config",
            reqwest::multipart::Part::text(spec).mime_str("application/json")?,
        );
    }
    let request = client
        .request(Method::PUT, &["v1", "functions", &deployable.name])
        .multipart(form);
    let answer = client.answer(request).await?;
    let deployed_version = answer.json()?["version_number"].as_u64().unwrap_or(0) as u32;
    // With `--json`, the deploy's answer as sent, with the answers of the bindings set after it.
    let mut record = if json {
        Some(answer.json()?)
    } else {
        let function: Function = answer.decode()?;
        println!("deployed {} {}", function.name, function.version);
        for warning in &function.warnings {
            eprintln!("warning: {warning}");
        }
        // The key receivers verify the Standard Webhooks signature (`webhook-signature`) with;
        // `--json` always carries it.
        if let (Some(_), Some(secret)) =
            (&function.config.destinations, &function.destination_secret)
        {
            println!("destination secret {secret}");
        }
        None
    };
    let schedules =
        set_bindings::<_, Schedule>(client, json, "schedule", "schedules", &deployable.schedules)
            .await?;
    let triggers =
        set_bindings::<_, Trigger>(client, json, "trigger", "triggers", &deployable.triggers)
            .await?;
    let mut aliases = Vec::new();
    for (alias, version) in &deployable.aliases {
        let version = version.unwrap_or(deployed_version);
        let answer = client
            .answer(
                client
                    .request(
                        Method::PUT,
                        &["v1", "functions", &deployable.name, "aliases", alias],
                    )
                    .json(&serde_json::json!({ "version": version })),
            )
            .await
            .with_context(|| format!("cannot set alias {alias} of squall.toml"))?;
        if json {
            aliases.push(answer.json()?);
        } else {
            println!("alias {}:{alias} -> {version}", deployable.name);
        }
    }
    if let Some(record) = &mut record {
        if let Some(fields) = record.as_object_mut() {
            for (path, views) in [
                ("schedules", schedules),
                ("triggers", triggers),
                ("aliases", aliases),
            ] {
                if !views.is_empty() {
                    fields.insert(path.to_string(), views.into());
                }
            }
        }
        return print_json(record);
    }
    Ok(())
}

/// Sets the schedules or triggers of `squall.toml` after a deploy, printing a line for each;
/// with `--json`, returns the server's answers instead.
async fn set_bindings<B: Serialize, V: DeserializeOwned>(
    client: &ApiClient,
    json: bool,
    kind: &str,
    path: &str,
    entries: &[(String, B)],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut views = Vec::new();
    for (name, body) in entries {
        let answer = client
            .answer(client.request(Method::PUT, &["v1", path, name]).json(body))
            .await
            .with_context(|| format!("deployed, but {kind} {name} from squall.toml was refused"))?;
        if json {
            views.push(answer.json()?);
        } else {
            answer.decode::<V>()?;
            println!("{kind} {name} set");
        }
    }
    Ok(views)
}

/// Reads the invocation input from `--data`, `--file` or nothing.
fn read_input(args: &InvokeArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(data) = &args.data {
        return Ok(data.clone().into_bytes());
    }
    match &args.file {
        None => Ok(Vec::new()),
        Some(path) if path.as_os_str() == "-" => {
            let mut input = Vec::new();
            std::io::stdin()
                .read_to_end(&mut input)
                .context("cannot read the input from standard input")?;
            Ok(input)
        }
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read input file {}", path.display())),
    }
}

/// The `--json` record of a finished synchronous invocation.
pub fn invocation_record(id: &str, output: &[u8]) -> serde_json::Value {
    let (text, encoded) = match std::str::from_utf8(output) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(output)),
        ),
    };
    serde_json::json!({
        "invocation_id": id,
        "status": "succeeded",
        "output": text,
        "output_base64": encoded,
        "error": null,
    })
}

/// `squall invoke`: prints the output, or where to find the invocation when it is not done.
/// The invocation id an invoke's answer names (empty when it names none).
fn invocation_id_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Writes a streamed output to stdout chunk by chunk as it arrives; a stream cut short (the
/// invocation failed after it began) is an error naming the invocation.
async fn print_stream(mut response: reqwest::Response) -> anyhow::Result<()> {
    let id = invocation_id_of(&response);
    let mut stdout = std::io::stdout();
    let mut last = b'\n';
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let mut out = stdout.lock();
                out.write_all(&chunk).context("cannot write to stdout")?;
                out.flush().context("cannot write to stdout")?;
                last = chunk.last().copied().unwrap_or(last);
            }
            Ok(None) => break,
            Err(error) => bail!(
                "the stream of invocation {id} was cut short ({error}): it failed after it began; see: squall get {id}"
            ),
        }
    }
    if stdout.is_terminal() && last != b'\n' {
        writeln!(stdout).context("cannot write to stdout")?;
    }
    Ok(())
}

pub async fn invoke(client: &ApiClient, json: bool, args: &InvokeArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.batch {
        let key = args.idempotency_key.as_deref();
        return crate::batch::invoke_batch(client, json, &args.name, path, args.batch_size, key)
            .await;
    }
    let input = read_input(args)?;
    let mut request = client
        .request(
            Method::POST,
            &["v1", "functions", &args.name, "invocations"],
        )
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(input);
    if args.respond_async {
        request = request.query(&[("async", "true")]);
    }
    if let Some(key) = &args.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    if args.stream {
        request = request.header("squall-stream", "true");
    }
    if let Some(wait) = args.wait {
        if !wait.is_finite() || wait < 0.0 {
            bail!("--wait must be a number of seconds of at least 0, got {wait}");
        }
        request = request.query(&[("wait", wait.to_string())]);
    }
    let response = client.send_raw(request).await?;
    let status = response.status().as_u16();
    match status {
        200 if args.stream && !json => print_stream(response).await,
        200 => {
            let id = invocation_id_of(&response);
            let output = response
                .bytes()
                .await
                .context("cannot read the invocation's output")?;
            if json {
                return print_json(&invocation_record(&id, &output));
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&output)
                .context("cannot write to stdout")?;
            if stdout.is_terminal() && !output.ends_with(b"\n") {
                writeln!(stdout).context("cannot write to stdout")?;
            }
            stdout.flush().context("cannot write to stdout")
        }
        202 => {
            let answer = answer_of(response).await?;
            if json {
                return answer.print();
            }
            let accepted: Accepted = answer.decode()?;
            let id = &accepted.invocation_id;
            let status = accepted.status.as_str();
            println!("invocation {id} is {status}; see: squall get {id}");
            Ok(())
        }
        _ => {
            let error = error_of(response).await;
            if json {
                // A terminal failure is still an invocation record, so scripts get one shape.
                let detail = &error.detail;
                if let Some(id) = detail.extra_str("invocation_id") {
                    print_json(&serde_json::json!({
                        "invocation_id": id,
                        "status": detail.extra_str("status").unwrap_or("failed"),
                        "output": null,
                        "output_base64": null,
                        "error": {
                            "kind": detail.extra_str("kind").unwrap_or("error"),
                            "message": detail.message,
                        },
                    }))?;
                }
            }
            Err(error.into())
        }
    }
}

/// `squall get <id>`.
pub async fn get(client: &ApiClient, json: bool, args: &GetArgs) -> anyhow::Result<()> {
    let answer = client
        .answer(client.request(Method::GET, &["v1", "invocations", &args.id]))
        .await?;
    if json {
        return answer.print();
    }
    print!(
        "{}",
        render::invocation_details(&answer.decode::<Invocation>()?)
    );
    Ok(())
}

/// `squall cancel <id>` / `squall cancel --queued <function>`.
pub async fn cancel(client: &ApiClient, json: bool, args: &CancelArgs) -> anyhow::Result<()> {
    if let Some(function) = &args.queued {
        let request = client
            .request(
                Method::DELETE,
                &["v1", "functions", function, "invocations"],
            )
            .query(&[("status", "queued")]);
        let answer = client.answer(request).await?;
        if json {
            return answer.print();
        }
        let done: CancelledBacklog = answer.decode()?;
        println!(
            "cancelled {} queued invocation(s) of {} ({} had already finished)",
            done.cancelled, done.function, done.already_finished
        );
        return Ok(());
    }
    let id = args.id.as_deref().unwrap_or_default();
    let answer = client
        .answer(client.request(Method::DELETE, &["v1", "invocations", id]))
        .await?;
    if json {
        return answer.print();
    }
    let view: Invocation = answer.decode()?;
    println!("cancelled {} ({})", view.invocation_id, view.function);
    Ok(())
}

/// `squall logs <id>`: one line per log line, `LEVEL message`.
pub async fn logs(client: &ApiClient, json: bool, args: &GetArgs) -> anyhow::Result<()> {
    let answer = client
        .answer(client.request(Method::GET, &["v1", "invocations", &args.id, "logs"]))
        .await?;
    if json {
        return answer.print();
    }
    let view: InvocationLogs = answer.decode()?;
    for line in &view.logs {
        println!("{:<5} {}", line.level.as_str().to_uppercase(), line.message);
    }
    Ok(())
}

/// `squall ls`.
pub async fn ls(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let answer = client
        .answer(client.request(Method::GET, &["v1", "functions"]))
        .await?;
    if json {
        return answer.print();
    }
    print!(
        "{}",
        render::function_table(&answer.decode::<FunctionList>()?)
    );
    Ok(())
}

/// `squall rm <name>`.
pub async fn rm(client: &ApiClient, json: bool, args: &RmArgs) -> anyhow::Result<()> {
    client
        .send(client.request(Method::DELETE, &["v1", "functions", &args.name]))
        .await?;
    if json {
        return print_json(&serde_json::json!({ "deleted": args.name }));
    }
    println!("deleted {}", args.name);
    Ok(())
}

/// `squall dlq ls|show|replay|rm`.
pub async fn dlq(client: &ApiClient, json: bool, command: &DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Ls { function } => {
            let mut request = client.request(Method::GET, &["v1", "dlq"]);
            if let Some(function) = function {
                request = request.query(&[("function", function)]);
            }
            let answer = client.answer(request).await?;
            if json {
                return answer.print();
            }
            print!(
                "{}",
                render::dead_letter_table(&answer.decode::<DeadLetterList>()?)
            );
        }
        DlqCommand::Show { id } => {
            let answer = client
                .answer(client.request(Method::GET, &["v1", "dlq", id]))
                .await?;
            if json {
                return answer.print();
            }
            print!(
                "{}",
                render::dead_letter_details(&answer.decode::<DeadLetter>()?)
            );
        }
        DlqCommand::Replay { id: Some(id), .. } => {
            let answer = client
                .answer(client.request(Method::POST, &["v1", "dlq", id, "replay"]))
                .await?;
            if json {
                return answer.print();
            }
            let replay: Accepted = answer.decode()?;
            println!("replayed {id} as invocation {}", replay.invocation_id);
        }
        DlqCommand::Replay { id: None, function } => {
            let function = function.as_deref().unwrap_or_default();
            let answer = client
                .answer(
                    client
                        .request(Method::POST, &["v1", "dlq", "replay"])
                        .query(&[("function", function)]),
                )
                .await?;
            if json {
                return answer.print();
            }
            let ReplayedAll { replayed } = answer.decode()?;
            for item in &replayed {
                println!(
                    "replayed {} as invocation {}",
                    item.replay_of, item.invocation_id
                );
            }
            println!("{} dead letters of {function} replayed", replayed.len());
        }
        DlqCommand::Rm { id } => {
            client
                .send(client.request(Method::DELETE, &["v1", "dlq", id]))
                .await?;
            if json {
                return print_json(&serde_json::json!({ "deleted": id }));
            }
            println!("deleted dead letter {id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn invocation_record_keeps_text_or_base64() {
        let text = invocation_record("id", b"hi");
        assert_eq!(text["output"], "hi");
        assert_eq!(text["output_base64"], serde_json::Value::Null);
        let binary = invocation_record("id", &[0xff, 0x00]);
        assert_eq!(binary["output"], serde_json::Value::Null);
        assert_eq!(binary["output_base64"], "/wA=");
        assert_eq!(binary["status"], "succeeded");
    }

    #[test]
    fn a_library_file_is_deployed_under_its_derived_name() {
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libword_count.so");
        std::fs::write(&library, b"not really elf").unwrap();
        let args = DeployArgs {
            path: library.clone(),
            name: None,
            runtime: None,
            handler: None,
        };
        let deployable = prepare_deploy(&args).unwrap();
        assert_eq!(deployable.name, "word_count");
        assert_eq!(deployable.artifact, b"not really elf");
        assert_eq!(deployable.file_name, "libword_count.so");
        assert!(deployable.spec.is_none());
    }

    #[test]
    fn a_python_file_is_deployed_as_a_bundle_under_its_stem() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("handler.py");
        std::fs::write(&source, "def handler(event, context):\n    return event\n").unwrap();
        let deployable = prepare_deploy(&DeployArgs {
            path: source,
            name: None,
            runtime: None,
            handler: None,
        })
        .unwrap();
        assert_eq!(deployable.name, "handler");
        assert!(squall_bundle::is_bundle(&deployable.artifact));
        let manifest = squall_bundle::read_manifest(&deployable.artifact).unwrap();
        assert_eq!(manifest.handler, "handler.handler");
    }

    #[test]
    fn a_missing_path_is_named() {
        let args = DeployArgs {
            path: PathBuf::from("no/such/thing"),
            name: None,
            runtime: None,
            handler: None,
        };
        let message = format!("{:#}", prepare_deploy(&args).err().unwrap());
        assert!(message.contains("no/such/thing"), "{message}");
    }
}
