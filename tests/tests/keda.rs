//! The Kubernetes manifests in deploy/kubernetes/: a function's lag read the way KEDA's
//! nats-jetstream scaler reads it, on a real three-node cluster, the broker their config makes
//! (its users, the Secret its passwords come from), and cheap checks that the manifests are well
//! formed and name what Squall really creates.

use squall_broker::names::{consumer_name, JOBS_STREAM};
use squall_tests::{
    assert_login_refused, eventually, eventually_every, free_port, nats_server_binary,
    wait_workers_ready, workspace_root, Cluster, ClusterOptions, Process, Text,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A reader for the manifests: just enough YAML for these files, without a YAML library.

/// One YAML document of a manifest file, flattened to (path, scalar) pairs such as
/// `spec.triggers[0].metadata.stream` = `JOBS`. Block maps and lists, plain and quoted scalars
/// and flow lists of scalars are read; a `|` block is kept whole under its key, and a `>` block
/// folded into one line (its lines joined by spaces).
#[derive(Debug, Clone)]
struct Doc {
    file: String,
    entries: Vec<(String, String)>,
}

impl Doc {
    /// The value at `path`, where `[*]` stands for any list index.
    fn get(&self, path: &str) -> Option<&str> {
        self.all(path).into_iter().next()
    }

    /// Every value at `path` (`[*]` for any list index), in file order.
    fn all(&self, path: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(p, _)| wildcard(p) == path || p == path)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The entries under `prefix.` (an exact path, indices included), with the prefix removed.
    fn under(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|(p, v)| {
                p.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .map(|rest| (rest, v.as_str()))
            })
            .collect()
    }

    /// The exact paths (indices included) whose wildcard form is `path`.
    fn paths(&self, path: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(p, _)| wildcard(p) == path)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    fn kind(&self) -> &str {
        self.get("kind").unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.get("metadata.name").unwrap_or_default()
    }

    /// The labels at `prefix` (a map of scalars) as `key=value` strings.
    fn labels(&self, prefix: &str) -> BTreeSet<String> {
        self.under(prefix)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    /// `field` of the item of the list at `list` (`[*]` allowed) whose `name` is `name`, as
    /// in `env` and `ports` lists.
    fn item_field(&self, list: &str, name: &str, field: &str) -> Option<&str> {
        self.paths(&format!("{list}[*].name"))
            .into_iter()
            .filter(|p| self.get(p) == Some(name))
            .find_map(|p| self.get(&format!("{}.{field}", p.strip_suffix(".name")?)))
    }
}

/// `a.b[3].c[0]` → `a.b[*].c[*]`.
fn wildcard(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// A scalar without its quotes or trailing comment.
fn scalar(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(rest) = raw.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or_default().to_string();
        }
    }
    raw.split(" #")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `key: value` or `key:` → (key, value); anything else (a plain scalar) → None.
fn split_key(text: &str) -> Option<(&str, &str)> {
    if text.starts_with(['"', '\'', '[', '{']) {
        return None;
    }
    if let Some(key) = text.strip_suffix(':') {
        return Some((key, ""));
    }
    text.split_once(": ").map(|(k, v)| (k, v.trim()))
}

/// Flattens one YAML document (see `Doc`).
fn flatten(text: &str) -> Vec<(String, String)> {
    // Open keys and list items: (indent, path up to and including this level).
    let mut stack: Vec<(usize, String)> = Vec::new();
    // The next index of each open list, by the list's path.
    let mut next_index: std::collections::HashMap<String, usize> = Default::default();
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        while stack.last().is_some_and(|(open, _)| *open >= indent) {
            stack.pop();
        }
        let mut parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let mut rest = trimmed;
        if let Some(item) = rest.strip_prefix("- ").or((rest == "-").then_some("")) {
            let n = next_index.entry(parent.clone()).or_insert(0);
            let path = format!("{parent}[{n}]");
            *n += 1;
            stack.push((indent, path.clone()));
            parent = path;
            indent += 2 + (item.len() - item.trim_start().len());
            rest = item.trim_start();
            if rest.is_empty() {
                continue;
            }
        }
        let Some((key, value)) = split_key(rest) else {
            out.push((parent, scalar(rest)));
            continue;
        };
        let path = match parent.is_empty() {
            true => key.to_string(),
            false => format!("{parent}.{key}"),
        };
        // A new map or list under this key starts over.
        next_index.remove(&path);
        if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                let depth = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && depth <= indent {
                    break;
                }
                block.push(next);
                i += 1;
            }
            let cut = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
            let separator = if value.starts_with('>') { " " } else { "\n" };
            out.push((path, text.join(separator)));
            continue;
        }
        if let Some(list) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            for (n, item) in list.split(',').filter(|s| !s.trim().is_empty()).enumerate() {
                out.push((format!("{path}[{n}]"), scalar(item)));
            }
        } else if !value.is_empty() {
            out.push((path.clone(), scalar(value)));
        }
        stack.push((indent, path));
    }
    out
}

/// The folder of the manifests.
fn manifest_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// Every `.yaml` file of the manifest folder, by file name.
fn manifest_files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(manifest_dir())
        .expect("deploy/kubernetes exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("read manifest");
            (name, text)
        })
        .collect();
    files.sort();
    files
}

/// The documents of one file, split at `---` lines (empty ones dropped).
fn documents(file: &str, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let entries = flatten(&current);
            if !entries.is_empty() {
                docs.push(Doc {
                    file: file.to_string(),
                    entries,
                });
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// Every Kubernetes object of the manifests (the kustomization is not one).
fn objects() -> Vec<Doc> {
    manifest_files()
        .iter()
        .filter(|(name, _)| name != "kustomization.yaml")
        .flat_map(|(name, text)| documents(name, text))
        .collect()
}

fn kustomization() -> Doc {
    let text = std::fs::read_to_string(manifest_dir().join("kustomization.yaml"))
        .expect("deploy/kubernetes/kustomization.yaml");
    documents("kustomization.yaml", &text).remove(0)
}

/// The object of `kind` named `name`.
fn object<'a>(objects: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    objects
        .iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

/// The label on ScaledObjects and worker Deployments naming the function they serve.
const FUNCTION_LABEL: &str = "squall-function";

/// What a ScaledObject's nats-jetstream trigger tells KEDA to read.
#[derive(Debug, Clone)]
struct Trigger {
    endpoint: String,
    account: String,
    stream: String,
    consumer: String,
}

fn trigger(scaled: &Doc) -> Trigger {
    let types = scaled.all("spec.triggers[*].type");
    assert_eq!(types, ["nats-jetstream"], "{}: one trigger", scaled.file);
    let field = |name: &str| {
        scaled
            .get(&format!("spec.triggers[*].metadata.{name}"))
            .unwrap_or_else(|| panic!("{}: the trigger has no {name}", scaled.file))
            .to_string()
    };
    Trigger {
        endpoint: field("natsServerMonitoringEndpoint"),
        account: field("account"),
        stream: field("stream"),
        consumer: field("consumer"),
    }
}

/// The ScaledObject of `function`.
fn scaled_object_of(objects: &[Doc], function: &str) -> Doc {
    let label = format!("metadata.labels.{FUNCTION_LABEL}");
    objects
        .iter()
        .find(|d| d.kind() == "ScaledObject" && d.get(&label) == Some(function))
        .unwrap_or_else(|| panic!("no ScaledObject labelled {FUNCTION_LABEL}: {function}"))
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Checks of the manifests themselves.

#[test]
fn the_manifest_reader_flattens_maps_lists_and_quoted_scalars() {
    let text = "\
a:
  b: \"x # not a comment\"   # a comment
  list:
    - name: one
      value: '1'
    - name: two
  flow: [\"--function\", hello]
  conf: |
    port: 4222
    cluster {
      name: squall
    }
  folded: >-
    [\"a\",
    \"b\"]
  after: yes
";
    let doc = Doc {
        file: "t".into(),
        entries: flatten(text),
    };
    assert_eq!(doc.get("a.b"), Some("x # not a comment"));
    assert_eq!(doc.get("a.list[0].name"), Some("one"));
    assert_eq!(doc.get("a.list[0].value"), Some("1"));
    assert_eq!(doc.get("a.list[1].name"), Some("two"));
    assert_eq!(doc.all("a.list[*].name"), ["one", "two"]);
    assert_eq!(doc.all("a.flow[*]"), ["--function", "hello"]);
    assert_eq!(
        doc.get("a.conf"),
        Some("port: 4222\ncluster {\n  name: squall\n}")
    );
    assert_eq!(doc.get("a.folded"), Some("[\"a\", \"b\"]"));
    assert_eq!(doc.get("a.after"), Some("yes"));
    assert_eq!(doc.get("a.conf.port"), None, "a block is not parsed");
}

#[test]
fn every_manifest_document_has_an_api_version_a_kind_and_a_name() {
    let files = manifest_files();
    assert!(files.len() >= 4, "deploy/kubernetes has its manifests");
    for (name, text) in &files {
        assert!(
            text.starts_with('#'),
            "{name} opens with a comment saying what it is for"
        );
        assert!(
            !text.contains('\t'),
            "{name}: YAML indents with spaces only"
        );
        let docs = documents(name, text);
        assert!(!docs.is_empty(), "{name} holds no document");
        for doc in &docs {
            let api = doc.get("apiVersion").unwrap_or_default();
            assert!(!api.is_empty(), "{name}: a document without apiVersion");
            assert!(!doc.kind().is_empty(), "{name}: a document without kind");
            if doc.kind() != "Kustomization" {
                assert!(
                    !doc.name().is_empty(),
                    "{name}: a {} without metadata.name",
                    doc.kind()
                );
            }
        }
    }
    let mut seen = BTreeSet::new();
    for doc in objects() {
        assert!(
            seen.insert((doc.kind().to_string(), doc.name().to_string())),
            "{} {} is defined twice",
            doc.kind(),
            doc.name()
        );
    }
}

#[test]
fn the_kustomization_lists_every_manifest_file() {
    let listed: BTreeSet<String> = kustomization()
        .all("resources[*]")
        .into_iter()
        .map(str::to_string)
        .collect();
    let present: BTreeSet<String> = manifest_files()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml resources");
}

#[test]
fn every_selector_matches_the_labels_of_a_pod_template() {
    let objects = objects();
    let workloads: Vec<&Doc> = objects
        .iter()
        .filter(|d| ["Deployment", "StatefulSet"].contains(&d.kind()))
        .collect();
    assert!(workloads.len() >= 3, "the broker, the dispatcher, a worker");
    for workload in &workloads {
        let selector = workload.labels("spec.selector.matchLabels");
        let labels = workload.labels("spec.template.metadata.labels");
        assert!(!selector.is_empty(), "{} selects nothing", workload.name());
        assert!(
            selector.is_subset(&labels),
            "{}: selector {selector:?} is not within its pod labels {labels:?}",
            workload.name()
        );
    }
    let selects_a_pod = |selector: &BTreeSet<String>| {
        workloads
            .iter()
            .any(|w| selector.is_subset(&w.labels("spec.template.metadata.labels")))
    };
    for service in objects.iter().filter(|d| d.kind() == "Service") {
        let selector = service.labels("spec.selector");
        assert!(
            !selector.is_empty() && selects_a_pod(&selector),
            "Service {} selects no pod template",
            service.name()
        );
        // A named target port must be a port of the selected containers.
        for target in service.all("spec.ports[*].targetPort") {
            let named = workloads
                .iter()
                .filter(|w| selector.is_subset(&w.labels("spec.template.metadata.labels")))
                .flat_map(|w| w.all("spec.template.spec.containers[*].ports[*].name"))
                .any(|port| port == target);
            assert!(
                target.parse::<u16>().is_ok() || named,
                "Service {}: no container port named {target}",
                service.name()
            );
        }
    }
    for pdb in objects.iter().filter(|d| d.kind() == "PodDisruptionBudget") {
        assert!(
            selects_a_pod(&pdb.labels("spec.selector.matchLabels")),
            "PodDisruptionBudget {} selects no pod template",
            pdb.name()
        );
    }
}

/// The broker's ConfigMap and the file the broker is started with (`nats.conf`).
fn broker_config_map(objects: &[Doc]) -> (&Doc, &str) {
    let statefulset = object(objects, "StatefulSet", "squall-nats");
    let map = statefulset
        .get("spec.template.spec.volumes[*].configMap.name")
        .expect("the broker mounts a ConfigMap");
    assert_eq!(
        statefulset.item_field(
            "spec.template.spec.containers[*].volumeMounts",
            "config",
            "mountPath"
        ),
        Some("/etc/nats"),
        "the ConfigMap's files are in /etc/nats"
    );
    let args = statefulset.all("spec.template.spec.containers[*].args[*]");
    let file = args
        .iter()
        .find_map(|a| a.strip_prefix("/etc/nats/"))
        .expect("the broker is started with a config under /etc/nats");
    (object(objects, "ConfigMap", map), file)
}

/// The nats-server configuration in the broker's ConfigMap.
fn broker_config(objects: &[Doc]) -> String {
    let (map, file) = broker_config_map(objects);
    map.get(&format!("data.{file}"))
        .unwrap_or_else(|| panic!("ConfigMap {} has no {file}", map.name()))
        .to_string()
}

/// Writes every file of the broker's ConfigMap into `dir`, as the pod mounts them in /etc/nats;
/// returns the path of the one the broker is started with.
fn write_broker_config(objects: &[Doc], dir: &Path) -> PathBuf {
    let (map, file) = broker_config_map(objects);
    for (name, text) in map.under("data") {
        std::fs::write(dir.join(name), text).expect("write a ConfigMap file");
    }
    dir.join(file)
}

/// Secret name → key → value.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

/// The Secrets `scripts/kubernetes-credentials --print` makes (fresh values on every call).
fn printed_secrets() -> Secrets {
    let script = workspace_root().join("scripts/kubernetes-credentials");
    let output = std::process::Command::new(&script)
        .arg("--print")
        .output()
        .expect("run scripts/kubernetes-credentials --print");
    assert!(
        output.status.success(),
        "scripts/kubernetes-credentials --print: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    documents("kubernetes-credentials", &text)
        .iter()
        .map(|doc| {
            assert_eq!(doc.kind(), "Secret", "{text}");
            assert_eq!(
                doc.get("metadata.namespace"),
                kustomization().get("namespace")
            );
            let keys = doc
                .under("stringData")
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (doc.name().to_string(), keys)
        })
        .collect()
}

/// The environment Kubernetes gives the container of `workload` in pod `pod`: plain values, in
/// which `$(NAME)` of a variable defined above is expanded, the pod's name for `metadata.name`,
/// and each `secretKeyRef` read from `secrets`. A reference to a Secret or key that `secrets`
/// lacks fails, as it fails the pod.
fn container_env(workload: &Doc, pod: &str, secrets: &Secrets) -> Vec<(String, String)> {
    let list = "spec.template.spec.containers[*].env";
    let mut env: Vec<(String, String)> = Vec::new();
    for name in workload.all(&format!("{list}[*].name")) {
        let field = |path: &str| workload.item_field(list, name, path);
        let value = if let Some(value) = field("value") {
            env.iter().fold(value.to_string(), |value, (earlier, v)| {
                value.replace(&format!("$({earlier})"), v)
            })
        } else if let Some(path) = field("valueFrom.fieldRef.fieldPath") {
            assert_eq!(path, "metadata.name", "{}: {name}", workload.name());
            pod.to_string()
        } else {
            let secret = field("valueFrom.secretKeyRef.name")
                .unwrap_or_else(|| panic!("{}: {name} has no value", workload.name()));
            let key = field("valueFrom.secretKeyRef.key").expect("secretKeyRef.key");
            assert_ne!(
                field("valueFrom.secretKeyRef.optional"),
                Some("true"),
                "{}: {name} may not start without its Secret",
                workload.name()
            );
            secrets
                .get(secret)
                .and_then(|keys| keys.get(key))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: {name} reads key {key} of Secret {secret}, which \
                         scripts/kubernetes-credentials does not make",
                        workload.name()
                    )
                })
                .clone()
        };
        env.push((name.to_string(), value));
    }
    env
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_broker_config_map_holds_the_cluster_profile_and_nats_server_accepts_it() {
    let objects = objects();
    let config = broker_config(&objects);
    let lines: BTreeSet<&str> = config.lines().map(str::trim).collect();
    // Every setting of the cluster profile is here too. Its include of the users is the
    // ConfigMap's own users.conf, beside nats.conf in /etc/nats.
    for profile in ["common.conf", "jetstream.conf"] {
        let path = workspace_root()
            .join("broker-config/nats/cluster")
            .join(profile);
        let text = std::fs::read_to_string(&path).expect("read the cluster profile");
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = match line {
                "include \"../users.conf\"" => "include \"users.conf\"",
                line => line,
            };
            assert!(
                lines.contains(line),
                "the broker ConfigMap lacks `{line}` of broker-config/nats/cluster/{profile}"
            );
        }
    }
    // The server name is the pod's name, which the StatefulSet puts in POD_NAME.
    assert!(lines.contains("server_name: $POD_NAME"));
    let statefulset = object(&objects, "StatefulSet", "squall-nats");
    assert_eq!(
        statefulset.item_field(
            "spec.template.spec.containers[*].env",
            "POD_NAME",
            "valueFrom.fieldRef.fieldPath"
        ),
        Some("metadata.name"),
        "the broker container's POD_NAME is the pod's name"
    );

    // nats-server itself accepts the files in the environment the pod gets (`-t` parses them
    // and exits; an unknown or misspelled setting, an unset variable or a malformed route list
    // fails it).
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write_broker_config(&objects, dir.path());
    let env = container_env(statefulset, "squall-nats-0", &printed_secrets());
    let output = std::process::Command::new(nats_server_binary())
        .envs(env)
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run nats-server -t");
    assert!(
        output.status.success(),
        "nats-server refuses the ConfigMap's config: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_broker_config_map_holds_users_conf_word_for_word() {
    let objects = objects();
    let (map, _) = broker_config_map(&objects);
    let copy = map
        .get("data.users.conf")
        .unwrap_or_else(|| panic!("ConfigMap {} has no users.conf", map.name()));
    let users = std::fs::read_to_string(workspace_root().join("broker-config/nats/users.conf"))
        .expect("read broker-config/nats/users.conf");
    assert!(
        copy.trim_end() == users.trim_end(),
        "the users.conf of ConfigMap {} in deploy/kubernetes/nats.yaml differs from \
         broker-config/nats/users.conf: copy the file into it (indented by four spaces)",
        map.name()
    );
    assert!(
        broker_config(&objects)
            .lines()
            .any(|l| l.trim() == "include \"users.conf\""),
        "the broker's config includes users.conf"
    );
}

#[test]
fn the_broker_and_every_squall_process_log_in_with_the_secrets_the_script_makes() {
    let objects = objects();
    let secrets = printed_secrets();
    // Fresh, distinct values of 256 bits, which nats-server takes as plain tokens.
    let values: Vec<&String> = secrets.values().flat_map(|keys| keys.values()).collect();
    assert_eq!(
        values.iter().collect::<BTreeSet<_>>().len(),
        values.len(),
        "{secrets:?}"
    );
    // The callout issuer is an nkey pair (scripts/callout-issuer): the seed's public key.
    let broker_secret = &secrets["squall-broker"];
    let issuer = squall_broker::callout::Issuer::from_seed(&broker_secret["callout-seed"])
        .expect("callout-seed is an account seed");
    assert_eq!(issuer.public_key(), broker_secret["callout-issuer"]);
    let passwords = secrets.values().flat_map(|keys| {
        keys.iter()
            .filter(|(key, _)| !key.starts_with("callout-"))
            .map(|(_, value)| value)
    });
    for value in passwords {
        assert!(
            value.len() >= 66
                && value.starts_with(|c: char| c.is_ascii_alphabetic())
                && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{value}"
        );
    }
    assert_ne!(printed_secrets(), secrets, "every run makes new values");

    let statefulset = object(&objects, "StatefulSet", "squall-nats");
    let broker = container_env(statefulset, "squall-nats-0", &secrets);
    // Every variable the broker's config reads is set in its container.
    let (map, _) = broker_config_map(&objects);
    for (file, text) in map.under("data") {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
            if let Some(variable) = word.strip_prefix('$').filter(|v| v.starts_with("SQUALL_")) {
                assert!(
                    env_value(&broker, variable).is_some_and(|v| !v.is_empty()),
                    "{file} reads {variable}, which the broker container does not set"
                );
            }
        }
    }

    // Each Squall process logs in as its role, with the password the broker checks for that
    // role, and reads replies on the role's own inbox prefix.
    let deployments: Vec<&Doc> = objects
        .iter()
        .filter(|d| d.kind() == "Deployment")
        .collect();
    assert!(deployments.len() >= 2, "the dispatcher and a worker");
    for deployment in deployments {
        let role = match deployment.get("spec.template.spec.containers[*].command[*]") {
            Some("squall-dispatcher") => "dispatcher",
            Some("squall-worker") => "worker",
            other => panic!("{}: an unknown command {other:?}", deployment.name()),
        };
        let env = container_env(deployment, "pod", &secrets);
        let password = format!("SQUALL_{}_PASSWORD", role.to_uppercase());
        assert_eq!(
            env_value(&env, "SQUALL_NATS_USER"),
            Some(role),
            "{}",
            deployment.name()
        );
        assert_eq!(
            env_value(&env, "SQUALL_NATS_PASSWORD"),
            env_value(&broker, &password),
            "{}: the password the broker checks for {role}",
            deployment.name()
        );
        assert_eq!(
            env_value(&env, "SQUALL_NATS_INBOX_PREFIX"),
            Some(format!("_INBOX_{role}").as_str()),
            "{}",
            deployment.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_started_from_the_manifests_refuses_a_connection_without_credentials() {
    let objects = objects();
    let secrets = printed_secrets();
    let statefulset = object(&objects, "StatefulSet", "squall-nats");
    let env = container_env(statefulset, "squall-nats-0", &secrets);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_broker_config(&objects, dir.path());
    // The pod's files and environment; only the ports, the store and the pid file move to this
    // machine's loopback and temp dir. The routes name the other pods, which do not resolve
    // here: the node runs alone, which is enough to log in.
    let text = std::fs::read_to_string(&config).expect("read the config");
    let moved = [
        ("store_dir: /data", "store_dir: store"),
        ("pid_file: /var/run/nats/nats.pid", "pid_file: nats.pid"),
    ]
    .iter()
    .fold(text, |text, (pod, here)| {
        assert!(text.contains(pod), "the broker's config has `{pod}`");
        text.replace(pod, here)
    });
    std::fs::write(&config, moved).expect("write the config");
    let port = free_port();
    let mut command = std::process::Command::new(nats_server_binary());
    command
        .current_dir(dir.path())
        .envs(env.clone())
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &free_port().to_string()])
        .args(["--cluster", &format!("nats://127.0.0.1:{}", free_port())]);
    let server = Process::spawn("nats-server", command, dir.path().join("nats.log"))
        .expect("start nats-server");
    let url = format!("nats://127.0.0.1:{port}");
    let login = |user: &str, password: &str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .custom_inbox_prefix(format!("_INBOX_{user}"))
            .connect(url.clone())
    };
    let password = |key: &str| secrets["squall-broker"][key].clone();
    // The client role, with its password from the Secret, logs in and publishes.
    let client = eventually(
        Duration::from_secs(15),
        "the broker to accept the client role",
        async || match login("client", &password("client-password")).await {
            Ok(client) => Ok(client),
            Err(error) => Err((error.to_string(), Text(server.output()))),
        },
    )
    .await;
    client
        .publish("orders.created", "{}".into())
        .await
        .expect("publish");
    client
        .flush()
        .await
        .expect("the broker takes the client's publish");

    assert_login_refused(
        async_nats::ConnectOptions::new(),
        &url,
        "a connection without credentials",
    )
    .await;
    assert_login_refused(
        async_nats::ConnectOptions::with_user_and_password(
            "client".into(),
            password("worker-password"),
        ),
        &url,
        "the client with the worker's password",
    )
    .await;
    for (user, key) in [
        ("dispatcher", "dispatcher-password"),
        ("worker", "worker-password"),
    ] {
        let role = login(user, &password(key)).await;
        assert!(role.is_ok(), "{user}: {:?}", role.err());
    }
}

/// The broker pods' client URLs, from the StatefulSet and its headless Service.
fn broker_pod_urls(objects: &[Doc]) -> Vec<String> {
    let statefulset = object(objects, "StatefulSet", "squall-nats");
    let service = statefulset.get("spec.serviceName").expect("serviceName");
    let headless = object(objects, "Service", service);
    assert_eq!(headless.get("spec.clusterIP"), Some("None"), "{service}");
    let replicas: usize = statefulset
        .get("spec.replicas")
        .and_then(|r| r.parse().ok())
        .expect("replicas");
    (0..replicas)
        .map(|i| format!("nats://{}-{i}.{service}:4222", statefulset.name()))
        .collect()
}

#[test]
fn every_squall_process_lists_every_broker_pod() {
    let objects = objects();
    let pods = broker_pod_urls(&objects);
    assert_eq!(pods.len(), 3);
    // The routes (`routes: $SQUALL_ROUTES`) go to every pod, logged in as `route` with the
    // password the pods check (SQUALL_ROUTE_PASSWORD, defined above SQUALL_ROUTES so that
    // Kubernetes expands it there).
    let config = broker_config(&objects);
    assert!(config.lines().any(|l| l.trim() == "routes: $SQUALL_ROUTES"));
    let secrets = printed_secrets();
    let statefulset = object(&objects, "StatefulSet", "squall-nats");
    let env = container_env(statefulset, "squall-nats-0", &secrets);
    let route_password = &secrets["squall-broker"]["route-password"];
    assert_eq!(
        env_value(&env, "SQUALL_ROUTE_PASSWORD"),
        Some(route_password.as_str())
    );
    let routes: Vec<String> = pods
        .iter()
        .map(|pod| {
            let host = pod.trim_start_matches("nats://").replace(":4222", ":6222");
            format!("\"nats-route://route:{route_password}@{host}\"")
        })
        .collect();
    assert_eq!(
        env_value(&env, "SQUALL_ROUTES"),
        Some(format!("[{}]", routes.join(", ")).as_str()),
        "the broker's SQUALL_ROUTES"
    );
    let squall: Vec<&Doc> = objects
        .iter()
        .filter(|d| d.kind() == "Deployment")
        .collect();
    assert!(squall.len() >= 2, "the dispatcher and a worker");
    for deployment in squall {
        let url = deployment
            .item_field(
                "spec.template.spec.containers[*].env",
                "SQUALL_NATS_URL",
                "value",
            )
            .unwrap_or_else(|| panic!("{} sets no SQUALL_NATS_URL", deployment.name()));
        let listed: Vec<&str> = url.split(',').collect();
        assert_eq!(listed, pods, "{}: SQUALL_NATS_URL", deployment.name());
    }
}

#[test]
fn every_scaled_object_reads_the_jobs_consumer_of_the_function_its_workers_serve() {
    let objects = objects();
    let namespace = kustomization()
        .get("namespace")
        .expect("the kustomization sets a namespace")
        .to_string();
    let headless = object(&objects, "StatefulSet", "squall-nats")
        .get("spec.serviceName")
        .expect("serviceName")
        .to_string();
    let monitor_port = object(&objects, "Service", &headless)
        .item_field("spec.ports", "monitor", "port")
        .expect("the headless Service has a monitor port")
        .to_string();
    let scaled: Vec<&Doc> = objects
        .iter()
        .filter(|d| d.kind() == "ScaledObject")
        .collect();
    assert!(!scaled.is_empty(), "a ScaledObject for hello at least");
    let mut functions = BTreeSet::new();
    for so in scaled {
        let function = so
            .get(&format!("metadata.labels.{FUNCTION_LABEL}"))
            .unwrap_or_else(|| panic!("{}: no {FUNCTION_LABEL} label", so.file));
        squall_broker::validate_function_name(function).expect("a valid function name");
        assert!(functions.insert(function.to_string()), "{function} twice");
        assert_eq!(so.get("apiVersion"), Some("keda.sh/v1alpha1"));
        let t = trigger(so);
        assert_eq!(t.stream, JOBS_STREAM, "{}", so.file);
        assert_eq!(t.consumer, consumer_name(function), "{}", so.file);
        assert_eq!(t.account, "$G", "{}: the broker has no accounts", so.file);
        assert_eq!(
            t.endpoint,
            format!("{headless}.{namespace}.svc.cluster.local:{monitor_port}"),
            "{}: the headless Service, so KEDA reaches each node by its pod name",
            so.file
        );
        assert_eq!(so.get("spec.triggers[*].metadata.useHttps"), Some("false"));
        for number in ["lagThreshold", "activationLagThreshold"] {
            let value = so
                .get(&format!("spec.triggers[*].metadata.{number}"))
                .unwrap_or_else(|| panic!("{}: no {number}", so.file));
            assert!(
                value.parse::<u64>().is_ok(),
                "{}: {number} {value}",
                so.file
            );
        }
        for count in ["minReplicaCount", "maxReplicaCount", "cooldownPeriod"] {
            let value = so.get(&format!("spec.{count}")).unwrap_or_default();
            assert!(
                value.parse::<u32>().is_ok(),
                "{}: {count} {value:?}",
                so.file
            );
        }
        // It scales a Deployment whose workers serve this function only, and nothing else
        // sets that Deployment's size.
        let target = so.get("spec.scaleTargetRef.name").expect("scaleTargetRef");
        let workers = object(&objects, "Deployment", target);
        assert_eq!(
            workers.all("spec.template.spec.containers[*].args[*]"),
            ["--function", function],
            "Deployment {target}"
        );
        assert_eq!(
            workers.get("spec.template.spec.containers[*].command[*]"),
            Some("squall-worker")
        );
        assert_eq!(
            workers.get("spec.replicas"),
            None,
            "Deployment {target}: KEDA owns the replica count"
        );
    }
    assert!(functions.contains("hello"));
}

// ---------------------------------------------------------------------------------------------
// The lag KEDA sees, on a real cluster.

/// What one reading of KEDA's scaler found.
#[derive(Debug, Clone)]
struct LagReading {
    num_pending: u64,
    num_ack_pending: u64,
    /// The consumer's leader, as the servers report it.
    leader: String,
    /// The nodes asked, in order: the entry node, then the leader when it was another one.
    asked: Vec<String>,
}

impl LagReading {
    /// KEDA's lag: pending plus unacknowledged jobs.
    fn lag(&self) -> u64 {
        self.num_pending + self.num_ack_pending
    }
}

/// Percent-encodes a query value (`$G` → `%24G`).
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One node's `/jsz` answer for the trigger's consumer: the consumer's details and the size of
/// the cluster as the node reports it, or None when the node does not list the consumer.
async fn jsz_consumer(
    http: &reqwest::Client,
    monitoring_url: &str,
    trigger: &Trigger,
) -> Option<(serde_json::Value, u64)> {
    // The request KEDA's scaler sends, word for word.
    let url = format!(
        "{monitoring_url}/jsz?acc={}&consumers=true&config=true",
        query_value(&trigger.account)
    );
    let body: serde_json::Value = http.get(&url).send().await.ok()?.json().await.ok()?;
    let cluster_size = body["meta_cluster"]["cluster_size"].as_u64().unwrap_or(1);
    let consumer = body["account_details"]
        .as_array()?
        .iter()
        .filter(|a| a["name"] == trigger.account.as_str())
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["name"] == trigger.stream.as_str())
        .flat_map(|s| s["consumer_detail"].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == trigger.consumer.as_str())?;
    Some((consumer, cluster_size))
}

/// Reads the trigger's lag as KEDA does, entering at `nodes[entry]` (name, monitoring URL):
/// when that node says another one leads the consumer, it asks the leader, whose numbers are
/// current (in Kubernetes KEDA reaches it as `<server name>.<the headless Service>`).
async fn keda_lag(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    entry: usize,
    trigger: &Trigger,
) -> Option<LagReading> {
    let (name, url) = &nodes[entry];
    let mut asked = vec![name.clone()];
    let (mut consumer, cluster_size) = jsz_consumer(http, url, trigger).await?;
    let leader = consumer["cluster"]["leader"].as_str()?.to_string();
    if cluster_size > 1 && leader != *name {
        let (_, leader_url) = nodes.iter().find(|(n, _)| *n == leader)?;
        asked.push(leader.clone());
        (consumer, _) = jsz_consumer(http, leader_url, trigger).await?;
        // The leader must say it is the leader; during an election, read again later.
        if consumer["cluster"]["leader"].as_str() != Some(leader.as_str()) {
            return None;
        }
    }
    Some(LagReading {
        num_pending: consumer["num_pending"].as_u64()?,
        num_ack_pending: consumer["num_ack_pending"].as_u64()?,
        leader,
        asked,
    })
}

/// Polls `keda_lag` from every entry node until each reading satisfies `done`, for at most
/// `timeout`; returns the last reading of each entry node and every lag seen on the way.
async fn wait_for_lag(
    http: &reqwest::Client,
    nodes: &[(String, String)],
    trigger: &Trigger,
    timeout: Duration,
    done: impl Fn(&LagReading) -> bool,
) -> (Vec<LagReading>, Vec<u64>) {
    let mut seen = Vec::new();
    let readings = eventually_every(
        timeout,
        Duration::from_millis(100),
        "the lag KEDA reads to settle",
        async || {
            let mut readings = Vec::new();
            for entry in 0..nodes.len() {
                if let Some(reading) = keda_lag(http, nodes, entry, trigger).await {
                    if seen.last() != Some(&reading.lag()) {
                        seen.push(reading.lag());
                    }
                    readings.push(reading);
                }
            }
            match readings.len() == nodes.len() && readings.iter().all(&done) {
                true => Ok(readings),
                false => Err(format!("lags seen {seen:?}, last readings {readings:?}")),
            }
        },
    )
    .await;
    (readings, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keda_lag_of_a_function_rises_with_its_backlog_and_falls_as_workers_drain_it() {
    let started = Instant::now();
    // What the manifests tell KEDA to read for hello.
    let trigger = trigger(&scaled_object_of(&objects(), "hello"));
    let mut cluster = Cluster::start_with(ClusterOptions {
        nats_nodes: 3,
        workers: 0,
        ..Default::default()
    })
    .await;
    // Each node's server name and monitoring endpoint: the loopback stand-in for KEDA's
    // `<server name>.squall-nats-headless...:8222`.
    let nodes: Vec<(String, String)> = cluster
        .nats_nodes()
        .iter()
        .map(|node| {
            let name = node
                .args
                .iter()
                .skip_while(|a| *a != "--name")
                .nth(1)
                .expect("a cluster node has a name")
                .clone();
            (name, node.monitoring_url())
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");

    // Deployed with no worker running: the consumer exists, with nothing to do.
    cluster.deploy_example("hello", None).await;
    let (idle, _) = wait_for_lag(&http, &nodes, &trigger, Duration::from_secs(20), |r| {
        r.lag() == 0
    })
    .await;
    let leader = idle[0].leader.clone();
    for (reading, (name, _)) in idle.iter().zip(&nodes) {
        assert_eq!(reading.leader, leader, "every node names the same leader");
        // Entering at a follower, the reading comes from the leader, as KEDA's does.
        let expected = match *name == leader {
            true => vec![leader.clone()],
            false => vec![name.clone(), leader.clone()],
        };
        assert_eq!(reading.asked, expected);
    }

    // A backlog of 40 jobs and nobody to run them: KEDA's lag is 40, all of it pending.
    let ids = cluster
        .submit_async("hello", r#"{"name": "keda"}"#, 40)
        .await;
    let (backlog, rising) = wait_for_lag(&http, &nodes, &trigger, Duration::from_secs(20), |r| {
        r.lag() == 40
    })
    .await;
    assert!(rising.iter().all(|&lag| lag <= 40), "lags {rising:?}");
    for reading in &backlog {
        assert_eq!((reading.num_pending, reading.num_ack_pending), (40, 0));
    }

    // A worker starts, as the one KEDA would activate, and drains the backlog to zero.
    cluster.add_worker();
    wait_workers_ready(&cluster, "hello").await;
    let (_, falling) = wait_for_lag(&http, &nodes, &trigger, Duration::from_secs(60), |r| {
        r.lag() == 0
    })
    .await;
    assert!(falling.iter().all(|&lag| lag <= 40), "lags {falling:?}");
    for id in &ids {
        let result = cluster.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(
            result.status,
            squall_api::InvocationStatus::Succeeded,
            "{result:?}"
        );
    }
    println!(
        "consumer {} led by {leader}; lags seen while the backlog built: {rising:?}, while it \
         drained: {falling:?}; {:.1?} in all",
        trigger.consumer,
        started.elapsed()
    );
}
