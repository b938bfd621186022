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
    let folder = std::env::temp_dir().join(format!("compose-{}", test_support::unique_id()));
    std::fs::create_dir_all(&folder).unwrap();
    let env_file = folder.join(".env");
    let generated = Command::new(root().join("scripts/new-env.sh"))
        .arg(&env_file)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");
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
