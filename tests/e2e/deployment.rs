//! The compose stack holds no default secret: `docker-compose config` (Debian's docker-compose)
//! resolves it from a `.env` that `scripts/new-env.sh` generates, refuses to without one, and
//! publishes only the APIs and the UIs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose(env_file: &Path, args: &[&str]) -> Output {
    Command::new("docker-compose")
        .current_dir(root())
        .arg("--env-file")
        .arg(env_file)
        .args(["-f", "docker-compose.yml"])
        .args(args)
        .output()
        .expect("run docker-compose (Debian package docker-compose)")
}

/// A folder of its own holding a `.env` that `scripts/new-env.sh` generated.
fn generated_env() -> (PathBuf, PathBuf) {
    let folder = std::env::temp_dir().join(format!("compose-{}", test_support::unique_id()));
    std::fs::create_dir_all(&folder).unwrap();
    let env_file = folder.join(".env");
    let generated = Command::new(root().join("scripts/new-env.sh"))
        .arg(&env_file)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
    (folder, env_file)
}

/// The host ports of a resolved compose file.
fn published(config: &str) -> BTreeSet<u16> {
    config
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            line.strip_prefix("- ")
                .unwrap_or(line)
                .strip_prefix("published:")
        })
        .map(|port| port.trim().trim_matches('"').parse().unwrap())
        .collect()
}

#[test]
fn the_compose_stack_takes_its_secrets_from_env_and_publishes_only_apis_and_uis() {
    let (folder, env_file) = generated_env();
    let again = Command::new(root().join("scripts/new-env.sh"))
        .arg(&env_file)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing .env is never overwritten"
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    let value = |key: &str| {
        env.lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} in .env"))
            .to_owned()
    };
    // Every key of .env.example's compose section is generated.
    let example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let section = example
        .split("# --- docker-compose.yml's secrets ---")
        .nth(1)
        .and_then(|rest| {
            rest.split("# --- end of docker-compose.yml's secrets ---")
                .next()
        })
        .expect("the compose section of .env.example");
    for line in section
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains('='))
    {
        let key = line.split('=').next().unwrap();
        value(key);
    }
    assert!(value("AUTH_HS256_SECRET").len() >= 64);
    assert!(value("OPERATOR_TOKEN").len() >= 32);

    let output = compose(&env_file, &["config"]);
    assert!(output.status.success(), "{output:?}");
    let config = String::from_utf8(output.stdout).unwrap();
    for secret in [
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "AUTH_HS256_SECRET",
        "OPERATOR_TOKEN",
    ] {
        assert!(
            config.contains(&value(secret)),
            "{secret} reaches the stack"
        );
    }
    for default in ["guest", "trust"] {
        assert!(
            !config.contains(default),
            "no {default} in the resolved stack"
        );
    }
    // The APIs, the RabbitMQ UI, and the UIs of the observability profile (Grafana,
    // Prometheus, Jaeger); never PostgreSQL, AMQP or an OTLP receiver.
    let output = compose(&env_file, &["--profile", "observability", "config"]);
    assert!(output.status.success(), "{output:?}");
    let config = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        published(&config),
        BTreeSet::from([3000, 8000, 8001, 9090, 15672, 16686])
    );

    // Without the secrets, the stack does not resolve, and says how to get them.
    let empty = folder.join("empty.env");
    std::fs::write(&empty, "").unwrap();
    let output = compose(&empty, &["config"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("scripts/new-env.sh"),
        "{output:?}"
    );
    let _ = std::fs::remove_dir_all(&folder);
}

/// The Python that scripts/ensure-kubernetes-validate.sh installed kubernetes-validate (and
/// PyYAML) into.
fn python() -> PathBuf {
    let venv = std::env::var("KUBERNETES_VALIDATE_VENV")
        .unwrap_or_else(|_| "/var/tmp/order-pipeline-k8s-venv".into());
    Path::new(&venv).join("bin/python")
}

/// A YAML document as JSON (PyYAML reads it).
fn yaml_to_json(yaml: &[u8]) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run Python");
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

fn validator(directory: &Path) -> Output {
    Command::new(python())
        .arg(root().join("scripts/validate-manifests.py"))
        .arg(directory)
        .output()
        .expect("run scripts/validate-manifests.py (scripts/ensure-kubernetes-validate.sh first)")
}

#[test]
fn every_kubernetes_manifest_is_valid_against_its_schema_and_none_is_skipped() {
    let manifests = root().join("deploy/kubernetes");
    let output = validator(&manifests);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for kind in [
        "Deployment order-service",
        "Deployment processor-service",
        "PodDisruptionBudget order-service",
        "PodDisruptionBudget processor-service",
        "ScaledObject processor-service",
        "RabbitmqCluster broker",
        "Cluster db",
        "ServiceMonitor order-pipeline",
        "PrometheusRule order-pipeline",
    ] {
        assert!(
            stdout
                .lines()
                .any(|line| line.starts_with("ok") && line.ends_with(kind)),
            "{kind} checked: {stdout}"
        );
    }

    // A misspelt field, a wrong type and a missing probe are each refused.
    let broken = std::env::temp_dir().join(format!("manifests-{}", test_support::unique_id()));
    std::fs::create_dir_all(&broken).unwrap();
    for entry in std::fs::read_dir(&manifests).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let status = Command::new("cp")
                .arg("-r")
                .arg(&path)
                .arg(&broken)
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            std::fs::copy(&path, broken.join(path.file_name().unwrap())).unwrap();
        }
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = broken.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from} in {file}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    };
    edit("rabbitmq.yaml", "  replicas: 3", "  replicaz: 3");
    edit("postgres.yaml", "  instances: 2", "  instances: two");
    edit("order-service.yaml", "readinessProbe:", "readinessProbes:");
    let output = validator(&broken);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for expected in [
        "'replicaz' was unexpected",
        "spec/instances: 'two' is not of type 'integer'",
        "'readinessProbes' was unexpected",
        "readinessProbe must GET /ready",
    ] {
        assert!(stderr.contains(expected), "{expected} in {stderr}");
    }
    let _ = std::fs::remove_dir_all(&broken);
}

#[test]
fn the_cluster_profile_adds_two_rabbitmq_nodes_and_a_second_replica_of_each_service() {
    let (folder, env_file) = generated_env();
    let output = compose(&env_file, &["--profile", "cluster", "config"]);
    assert!(output.status.success(), "{output:?}");
    let config = yaml_to_json(&output.stdout);
    let services = &config["services"];
    for (name, hostname) in [
        ("rabbitmq", "rabbitmq"),
        ("rabbitmq-2", "rabbitmq-2"),
        ("rabbitmq-3", "rabbitmq-3"),
    ] {
        let node = &services[name];
        assert_eq!(node["hostname"].as_str(), Some(hostname), "{name}");
        let volumes = node["volumes"].to_string();
        assert!(volumes.contains("20-cluster.conf"), "{name}: {volumes}");
        assert!(
            node["environment"]["RABBITMQ_ERLANG_COOKIE"]
                .as_str()
                .is_some_and(|cookie| cookie.len() >= 32),
            "{name} shares the generated cookie"
        );
    }
    // The peer discovery list names the three nodes.
    let discovery = std::fs::read_to_string(root().join("deploy/rabbitmq/cluster.conf")).unwrap();
    for node in ["rabbit@rabbitmq", "rabbit@rabbitmq-2", "rabbit@rabbitmq-3"] {
        assert!(discovery.contains(node), "{node}");
    }
    for (first, second, prefix) in [
        ("order_service", "order_service_2", "ORDER_SERVICE"),
        (
            "processor_service",
            "processor_service_2",
            "PROCESSOR_SERVICE",
        ),
    ] {
        let urls_of = |service: &str| {
            services[service]["environment"][format!("{prefix}__AMQP__URLS").as_str()]
                .as_str()
                .unwrap_or_else(|| panic!("{service} takes AMQP__URLS"))
                .to_owned()
        };
        let urls = urls_of(first);
        assert_eq!(urls.split(',').count(), 3, "{urls}");
        for host in ["@rabbitmq:", "@rabbitmq-2:", "@rabbitmq-3:"] {
            assert!(urls.contains(host), "{host} in {urls}");
        }
        assert_eq!(urls_of(second), urls, "{second} is a replica of {first}");
        assert_eq!(
            services[second]["environment"][format!("{prefix}__DATABASE__URL").as_str()],
            services[first]["environment"][format!("{prefix}__DATABASE__URL").as_str()],
        );
        assert_eq!(services[second]["profiles"][0].as_str(), Some("cluster"));
    }
    // The replicas and the extra nodes publish nothing more (docker-compose 1.29 resolves the
    // services of every profile: the observability UIs are in the list).
    let config = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        published(&config),
        BTreeSet::from([3000, 8000, 8001, 9090, 15672, 16686])
    );
    let _ = std::fs::remove_dir_all(&folder);
}
