//! Runs schemathesis (PyPI) against a running service's OpenAPI document: every operation but
//! event streams, every check, a fixed seed and a bounded number of examples per operation, so
//! that a CI run is reproducible and bounded. `scripts/ensure-schemathesis.sh` installs it into a virtual
//! environment outside the clone; `SCHEMATHESIS` names another executable.

use std::path::PathBuf;
use std::process::Command;

/// Where `scripts/ensure-schemathesis.sh` installs it.
pub const DEFAULT_EXECUTABLE: &str = "/var/tmp/order-pipeline-venv/bin/schemathesis";

/// The seed of every run (`SCHEMATHESIS_SEED` overrides it).
pub const SEED: &str = "20261202";

/// What a run did.
#[derive(Debug)]
pub struct Report {
    /// Requests generated and sent, as schemathesis counts them.
    pub generated: u64,
    pub passed: bool,
    pub output: String,
}

/// The executable, or `None` when it is not installed and this is not CI (where its absence is a
/// failure: `.ci/run` installs it).
pub fn executable() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("SCHEMATHESIS").unwrap_or_else(|_| DEFAULT_EXECUTABLE.to_owned()),
    );
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "schemathesis is not installed at {}: run scripts/ensure-schemathesis.sh",
        path.display()
    );
    eprintln!(
        "skipped: schemathesis is not installed at {} (scripts/ensure-schemathesis.sh installs it)",
        path.display()
    );
    None
}

/// Runs every check on every operation (but event streams) of the document at `base_url/api-docs/openapi.json`, with
/// `examples` examples per operation, sending `token` as the bearer token.
pub fn run(executable: &PathBuf, base_url: &str, token: &str, examples: u32) -> Report {
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let output = Command::new(executable)
        .args(["run", &format!("{base_url}/api-docs/openapi.json")])
        .args(["--checks", "all"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed])
        // One worker: the same seed generates the same requests in the same order.
        .args(["--workers", "1"])
        // No examples carried over from earlier runs (nor written into the checkout): a seed
        // alone reproduces a run.
        .args(["--generation-database", "none"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Event streams stay open by design: each request would wait out its timeout. Their
        // answers to bad input are tested by the services' own tests.
        .args(["--exclude-path-regex", "/events$"])
        .arg("--no-color")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // "Test cases:\n  1205 generated, 1205 passed, 4 skipped"
    let generated = text
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("generated").then(|| count.parse().ok())?
        })
        .unwrap_or(0);
    Report {
        generated,
        passed: output.status.success(),
        output: format!("seed {seed}\n{text}"),
    }
}

/// The bearer token [`fuzz_service`] sends; the service under test must be configured with it
/// ([`admin_settings`]).
pub const TOKEN: &str = "schemathesis-token-0123456789abcdef";

/// Operator settings for a service under schemathesis: its token, and a rate limit no single
/// fuzzing client reaches.
pub fn admin_settings() -> service_kit::configuration::AdminSettings {
    service_kit::configuration::AdminSettings {
        token: Some(service_kit::configuration::Secret::new(TOKEN)),
        requests_per_second: 10_000,
        burst: 10_000,
    }
}

/// Runs schemathesis against the service at `base_url` (100 examples per operation) and asserts
/// that it found nothing and sent at least `min_requests`; does nothing, but say so, when it is
/// not installed outside CI ([`executable`]).
pub async fn fuzz_service(base_url: &str, min_requests: u64) {
    let Some(executable) = executable() else {
        return;
    };
    let base_url = base_url.to_owned();
    let report = tokio::task::spawn_blocking(move || run(&executable, &base_url, TOKEN, 100))
        .await
        .expect("the schemathesis run");
    eprintln!("schemathesis sent {} requests", report.generated);
    assert!(report.passed, "{}", report.output);
    assert!(report.generated >= min_requests, "{}", report.output);
}
