//! `squall.toml`: a function's deploy settings, parsed and validated before anything is built.

use anyhow::{bail, Context as _};
use serde::Deserialize;
use squall_api::operations::{ScheduleRequest, TriggerRequest};
use squall_api::FunctionSpec;
use std::path::{Path, PathBuf};

/// The manifest's file name inside a function directory.
pub const MANIFEST_FILE: &str = "squall.toml";

/// A parsed and locally validated `squall.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The function name from `[function] name`.
    pub name: String,
    /// The `[function]` table without `name`: the deploy's `config` part.
    pub spec: FunctionSpec,
    /// How to build the artifact; `None` means `cargo build --release` (or a bundle, with
    /// `source`).
    pub build: Option<BuildSection>,
    /// `[function] runtime` and `handler`: a Python or JavaScript function, deployed as a
    /// bundle of the folder.
    pub source: Option<crate::bundle::Source>,
    /// `[function] runtime = "go"`: a Go module built with the Go toolchain into a native
    /// library (no handler: the one its package registers).
    pub go: bool,
    /// `[[schedules]]`: (name, body of `PUT /v1/schedules/{name}`), set after the deploy.
    pub schedules: Vec<(String, ScheduleRequest)>,
    /// `[[triggers]]`: (name, body of `PUT /v1/triggers/{name}`), set after the deploy.
    pub triggers: Vec<(String, TriggerRequest)>,
    /// `[aliases]`: name → the version it is pointed at after the deploy (`None`: the one just
    /// deployed, written `"latest"`).
    pub aliases: Vec<(String, Option<u32>)>,
}

/// One `[[schedules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    name: String,
    cron: String,
    timezone: Option<String>,
    payload: Option<toml::Value>,
}

/// One `[[triggers]]` entry: `subject`, or `bucket` and an optional `key`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerSection {
    name: String,
    subject: Option<String>,
    bucket: Option<String>,
    key: Option<String>,
}

/// The optional `[build]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// The build command as an argv, run in the function's directory.
    pub command: Vec<String>,
    /// The built library, relative to the function's directory.
    pub artifact: PathBuf,
}

/// The file as written, before `[function]` is checked against the spec.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    function: toml::Table,
    build: Option<BuildSection>,
    #[serde(default)]
    schedules: Vec<ScheduleSection>,
    #[serde(default)]
    triggers: Vec<TriggerSection>,
    #[serde(default)]
    aliases: toml::Table,
}

/// Reads and validates `<dir>/squall.toml`.
pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid {}", path.display()))
}

/// Parses the text of a `squall.toml`.
///
/// TOML syntax errors keep the `toml` crate's message, which names the line and column.
pub fn parse(text: &str) -> anyhow::Result<Manifest> {
    let raw: RawManifest = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut function = raw.function;
    let name = match function.remove("name") {
        Some(toml::Value::String(name)) => name,
        Some(other) => bail!(
            "[function] name must be a string, got a {}",
            other.type_str()
        ),
        None => bail!("[function] has no name; add `name = \"my-function\"`"),
    };
    squall_broker::validate_function_name(&name).context("[function] name")?;
    let (source, go) = source_of(&mut function)?;
    if (source.is_some() || go) && raw.build.is_some() {
        bail!("[build] is for native libraries; a function with a runtime is deployed as it is");
    }
    let spec = table_to_json(function)
        .and_then(check_spec)
        .context("[function]")?;
    if let Some(build) = &raw.build {
        if build.command.is_empty() {
            bail!("[build] command is empty; give an argv such as [\"make\", \"-s\"]");
        }
    }
    let mut schedules = Vec::new();
    for s in raw.schedules {
        squall_broker::validate_function_name(&s.name)
            .with_context(|| format!("[[schedules]] name {:?}", s.name))?;
        let payload = s
            .payload
            .map(toml_to_json)
            .transpose()
            .with_context(|| format!("[[schedules]] {} payload", s.name))?;
        let body = ScheduleRequest {
            function: name.clone(),
            cron: s.cron,
            timezone: s.timezone,
            payload,
        };
        schedules.push((s.name, body));
    }
    let mut triggers = Vec::new();
    for t in raw.triggers {
        squall_broker::validate_function_name(&t.name)
            .with_context(|| format!("[[triggers]] name {:?}", t.name))?;
        let binds_one = match (&t.subject, &t.bucket) {
            (Some(_), None) => t.key.is_none(),
            (None, Some(_)) => true,
            _ => false,
        };
        if !binds_one {
            bail!(
                "[[triggers]] {}: give either subject, or bucket (and optionally key)",
                t.name
            );
        }
        let body = TriggerRequest {
            function: name.clone(),
            subject: t.subject,
            bucket: t.bucket,
            key: t.key,
        };
        triggers.push((t.name, body));
    }
    let mut aliases = Vec::new();
    for (alias, value) in raw.aliases {
        if !squall_api::versions::valid_alias_name(&alias) {
            bail!("[aliases] {alias:?}: an alias is 1 to 64 letters, digits, '-' or '_', not only digits");
        }
        let version = match value {
            toml::Value::String(text) if text == "latest" => None,
            toml::Value::Integer(n) if n >= 1 && n <= i64::from(u32::MAX) => Some(n as u32),
            other => bail!("[aliases] {alias} must be a version number or \"latest\", got {other}"),
        };
        aliases.push((alias, version));
    }
    Ok(Manifest {
        aliases,
        name,
        spec,
        build: raw.build,
        source,
        go,
        schedules,
        triggers,
    })
}

/// Takes `runtime` and `handler` out of `[function]`: both or neither for a bundle, `runtime =
/// "go"` alone for a Go function (the second value).
fn source_of(function: &mut toml::Table) -> anyhow::Result<(Option<crate::bundle::Source>, bool)> {
    let text = |key: &str, function: &mut toml::Table| match function.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(value)) => Ok(Some(value)),
        Some(other) => bail!(
            "[function] {key} must be a string, got a {}",
            other.type_str()
        ),
    };
    let runtime = text("runtime", function)?;
    let handler = text("handler", function)?;
    match (runtime, handler) {
        (None, None) => Ok((None, false)),
        (Some(runtime), None) if runtime == GO_RUNTIME => Ok((None, true)),
        (Some(runtime), Some(_)) if runtime == GO_RUNTIME => bail!(
            "[function] handler is not for Go: a Go function's handler is the one its package \
             main registers with squall.Handle; remove handler"
        ),
        (Some(runtime), Some(handler)) => {
            let runtime = squall_bundle::Runtime::from_id(&runtime)
                .map_err(|e| anyhow::anyhow!("{e}, go"))
                .context("[function] runtime")?;
            squall_bundle::check_handler(&handler).context("[function] handler")?;
            Ok((Some(crate::bundle::Source { runtime, handler }), false))
        }
        (Some(runtime), None) => bail!(
            "[function] runtime = {runtime:?} needs handler = \"MODULE.FUNCTION\" (for example \"app.handler\")"
        ),
        (None, Some(_)) => bail!(
            "[function] handler needs runtime = \"python3.11\", \"javascript\" or \"java17\""
        ),
    }
}

/// `[function] runtime` of a Go function.
pub const GO_RUNTIME: &str = "go";

/// Reads and validates a deploy spec exactly as the dispatcher will, so mistakes are caught
/// before a build.
fn check_spec(spec: serde_json::Value) -> anyhow::Result<FunctionSpec> {
    let parsed: FunctionSpec = serde_json::from_value(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    parsed.validate()?;
    Ok(parsed)
}

/// Converts a TOML table to JSON; dates become RFC 3339 strings.
fn table_to_json(table: toml::Table) -> anyhow::Result<serde_json::Value> {
    let mut map = serde_json::Map::new();
    for (key, value) in table {
        let value = toml_to_json(value).with_context(|| format!("field `{key}`"))?;
        map.insert(key, value);
    }
    Ok(serde_json::Value::Object(map))
}

fn toml_to_json(value: toml::Value) -> anyhow::Result<serde_json::Value> {
    Ok(match value {
        toml::Value::String(s) => serde_json::Value::String(s),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .with_context(|| format!("{f} cannot be represented in JSON"))?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(toml_to_json)
                .collect::<anyhow::Result<_>>()?,
        ),
        toml::Value::Table(table) => table_to_json(table)?,
    })
}

/// The function name for a bare library: `libfoo_bar.so` → `foo_bar`.
pub fn name_from_library(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    // `libfoo.so.1` is a versioned library: the name ends at the first `.so`.
    let stem = match file.find(".so") {
        Some(end) => &file[..end],
        None => path.file_stem()?.to_str()?,
    };
    let stem = match stem.strip_prefix("lib") {
        Some(rest) if !rest.is_empty() => rest,
        _ => stem,
    };
    (!stem.is_empty()).then(|| stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_function_names_its_runtime_alone_and_a_handler_is_refused() {
        let go = parse("[function]\nname = \"g\"\nruntime = \"go\"\n").unwrap();
        assert!(go.go && go.source.is_none());
        let error = parse("[function]\nname = \"g\"\nruntime = \"go\"\nhandler = \"a.b\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("handler is not for Go"), "{error}");
        let error = parse("[function]\nname = \"g\"\nruntime = \"cobol\"\nhandler = \"a.b\"\n");
        let error = format!("{:#}", error.unwrap_err());
        assert!(error.contains("java17") && error.contains("go"), "{error}");
    }

    #[test]
    fn aliases_name_a_version_or_latest() {
        let manifest =
            parse("[function]\nname = \"hello\"\n[aliases]\nlive = \"latest\"\nstable = 3\n")
                .unwrap();
        assert_eq!(
            manifest.aliases,
            vec![("live".to_string(), None), ("stable".to_string(), Some(3))]
        );
        let bad = parse("[function]\nname = \"hello\"\n[aliases]\nlive = \"newest\"\n");
        assert!(format!("{:#}", bad.unwrap_err()).contains("latest"));
        assert!(parse("[function]\nname = \"hello\"\n[aliases]\n7 = 1\n").is_err());
    }

    #[test]
    fn good_manifest_keeps_spec_fields_and_build() {
        let manifest = parse(
            r#"
            [function]
            name = "c-hello"
            timeout_ms = 5000
            max_attempts = 3

            [function.backoff]
            multiplier = 1.5

            [function.config]
            greeting = "Hello"
            limits = [1, 2]

            [build]
            command = ["make", "-s"]
            artifact = "target/libc_hello.so"
            "#,
        )
        .unwrap();
        assert_eq!(manifest.name, "c-hello");
        let spec = &manifest.spec;
        assert_eq!((spec.timeout_ms, spec.max_attempts), (5000, 3));
        assert_eq!(spec.backoff.multiplier, 1.5);
        assert_eq!(
            spec.backoff.initial_ms,
            FunctionSpec::default().backoff.initial_ms
        );
        assert_eq!(
            serde_json::Value::Object(spec.config.clone()),
            serde_json::json!({"greeting": "Hello", "limits": [1, 2]})
        );
        let build = manifest.build.unwrap();
        assert_eq!(build.command, ["make", "-s"]);
        assert_eq!(build.artifact, Path::new("target/libc_hello.so"));
    }

    #[test]
    fn schedules_and_triggers_become_api_bodies() {
        let manifest = parse(
            r#"
            [function]
            name = "report"

            [[schedules]]
            name = "nightly"
            cron = "0 3 * * *"
            timezone = "Europe/Paris"
            payload = { kind = "daily" }

            [[triggers]]
            name = "orders"
            subject = "events.orders.>"

            [[triggers]]
            name = "settings"
            bucket = "config"
            key = "app.*"
            "#,
        )
        .unwrap();
        assert_eq!(
            manifest.schedules,
            vec![(
                "nightly".to_string(),
                ScheduleRequest {
                    function: "report".to_string(),
                    cron: "0 3 * * *".to_string(),
                    timezone: Some("Europe/Paris".to_string()),
                    payload: Some(serde_json::json!({"kind": "daily"})),
                }
            )]
        );
        let orders = &manifest.triggers[0].1;
        assert_eq!(orders.subject.as_deref(), Some("events.orders.>"));
        assert_eq!(
            (orders.bucket.as_deref(), orders.key.as_deref()),
            (None, None)
        );
        let settings = &manifest.triggers[1].1;
        assert_eq!(settings.bucket.as_deref(), Some("config"));
        assert_eq!(settings.key.as_deref(), Some("app.*"));
        assert_eq!(settings.subject, None);
        let err = parse("[function]\nname = \"f\"\n[[triggers]]\nname = \"t\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("either subject"), "{err:#}");
    }

    #[test]
    fn a_web_table_makes_a_web_function() {
        let manifest =
            parse("[function]\nname = \"hook\"\n[function.web]\nauth = \"none\"\nrate_per_s = 5\n")
                .unwrap();
        let web = manifest.spec.web.expect("a web function");
        assert_eq!(web.auth, squall_api::WebAuth::None);
        assert_eq!(web.rate_per_s, Some(5.0));
        let keyed = parse("[function]\nname = \"f\"\n[function.web]\n").unwrap();
        assert_eq!(keyed.spec.web.unwrap().auth, squall_api::WebAuth::Key);
        let err = parse("[function]\nname = \"f\"\n[function.web]\nrate_per_s = 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("web.rate_per_s"), "{err:#}");
    }

    #[test]
    fn name_alone_means_default_spec_and_cargo_build() {
        let manifest = parse("[function]\nname = \"hello\"\n").unwrap();
        assert_eq!(manifest.spec, FunctionSpec::default());
        assert_eq!(manifest.build, None);
    }

    #[test]
    fn examples_in_the_repository_parse() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/examples");
        for name in [
            "hello",
            "wordcount",
            "fail",
            "panic",
            "c-hello",
            "web-hello",
            "chatbot",
            "web-form",
        ] {
            let manifest = load(&examples.join(name)).unwrap();
            assert_eq!(manifest.name, name);
        }
    }

    #[test]
    fn the_ml_and_etl_examples_parse_with_their_triggers_and_builds() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/examples");
        let ml = load(&examples.join("ml-inference")).unwrap();
        assert_eq!(ml.name, "ml-inference");
        let extract = load(&examples.join("etl")).unwrap();
        assert_eq!(extract.name, "etl-extract");
        assert_eq!(extract.spec.config["stage"], "extract");
        let transform = load(&examples.join("etl/transform")).unwrap();
        assert_eq!(transform.name, "etl-transform");
        let subjects = |m: &Manifest| -> Vec<Option<String>> {
            m.triggers.iter().map(|(_, t)| t.subject.clone()).collect()
        };
        assert_eq!(
            subjects(&transform),
            [Some("events.etl.extracted".to_string())]
        );
        let load_stage = load(&examples.join("etl/load")).unwrap();
        assert_eq!(load_stage.name, "etl-load");
        assert_eq!(
            (load_stage.spec.concurrency, load_stage.spec.max_concurrency),
            (1, Some(1))
        );
        assert_eq!(load_stage.triggers.len(), 2);
        for stage in [&transform, &load_stage] {
            let build = stage.build.as_ref().expect("a [build] table");
            assert_eq!(
                build.artifact,
                Path::new("../../../../target/release/libetl.so")
            );
        }
    }

    #[test]
    fn memory_mb_is_read_and_checked_before_the_deploy() {
        let manifest = parse("[function]\nname = \"hog\"\nmemory_mb = 128\n").unwrap();
        assert_eq!(manifest.spec.memory_mb, 128);
        let err = parse("[function]\nname = \"hog\"\nmemory_mb = 32\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("memory_mb must be between 64 and 10240, got 32"),
            "{message}"
        );
    }

    #[test]
    fn unknown_function_field_is_refused_by_name() {
        let err = parse("[function]\nname = \"hello\"\ntimeout = 5\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("unknown field `timeout`"), "{message}");
        assert!(message.contains("[function]"), "{message}");
    }

    #[test]
    fn unknown_backoff_field_is_refused_by_name() {
        let err =
            parse("[function]\nname = \"hello\"\n[function.backoff]\ninitial = 5\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `initial`"),
            "{err:#}"
        );
    }

    #[test]
    fn out_of_range_value_is_refused() {
        let err = parse("[function]\nname = \"hello\"\ntimeout_ms = 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("timeout_ms"), "{err:#}");
    }

    #[test]
    fn unknown_top_level_table_is_refused() {
        let err = parse("[function]\nname = \"hello\"\n[deploy]\nx = 1\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `deploy`"),
            "{err:#}"
        );
    }

    #[test]
    fn missing_name_is_refused() {
        let err = parse("[function]\ntimeout_ms = 5000\n").unwrap_err();
        assert!(format!("{err:#}").contains("has no name"), "{err:#}");
    }

    #[test]
    fn invalid_name_is_refused() {
        let err = parse("[function]\nname = \"a.b\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("'.'"), "{err:#}");
    }

    #[test]
    fn missing_function_table_is_refused() {
        let err = parse("[build]\ncommand = [\"make\"]\nartifact = \"x.so\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("missing field `function`"),
            "{err:#}"
        );
    }

    #[test]
    fn malformed_toml_names_the_line() {
        let err = parse("[function]\nname = \"hello\"\ntimeout_ms = = 5\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), "[function\n").unwrap();
        let message = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(message.contains("squall.toml"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn library_names_drop_lib_prefix_and_extension() {
        let name = |p: &str| name_from_library(Path::new(p));
        assert_eq!(
            name("target/release/libfoo_bar.so").as_deref(),
            Some("foo_bar")
        );
        assert_eq!(name("hello.so").as_deref(), Some("hello"));
        assert_eq!(name("/tmp/libc_hello.so.1").as_deref(), Some("c_hello"));
        assert_eq!(name("lib.so").as_deref(), Some("lib"));
    }
}
