//! Both services as processes of their own (their binaries, as deployed), sharing one test's
//! broker names, each with its own database: for tests that SIGKILL a service or read what a
//! process writes to stdout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use test_support::Cleanup;
use tokio::process::{Child, Command};

/// Long enough for a cold start of both binaries on a busy machine.
pub const START: Duration = Duration::from_secs(180);

/// A service binary running as a process, killed when dropped.
pub struct Process {
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// Where its stdout goes (appended to across restarts); nowhere if `None`.
    log: Option<PathBuf>,
    child: Child,
}

/// The binary `name` of the services, built from the sources of this test beside its binary: the
/// first call builds them (`cargo build --bins`, nothing to do when `cargo test --workspace` just
/// did), so that `cargo test -p e2e` alone never runs binaries older than the code it tests.
fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let profile_dir = BUILT.get_or_init(|| {
        // target/<profile>/deps/e2e-<hash> -> target/<profile>
        let profile_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap()
            .to_owned();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("{} names no profile", profile_dir.display()),
        };
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let status = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
            .current_dir(workspace)
            .args(["build", "--bins", "--profile", profile, "--target-dir"])
            .arg(target_dir)
            .status()
            .expect("run cargo build --bins");
        assert!(status.success(), "cargo build --bins failed");
        profile_dir
    });
    profile_dir.join(name)
}

impl Process {
    fn start(binary: PathBuf, env: Vec<(String, String)>, log: Option<PathBuf>) -> Self {
        let stdout = match &log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the log file"),
            ),
            None => Stdio::null(),
        };
        let child = Command::new(&binary)
            .envs(env.iter().cloned())
            .stdout(stdout)
            .kill_on_drop(true)
            .spawn()
            .expect("start service");
        Self {
            binary,
            env,
            log,
            child,
        }
    }

    pub async fn kill_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reap");
        *self = Self::start(self.binary.clone(), self.env.clone(), self.log.clone());
    }

    /// SIGTERM, and waits for the process to end (a clean stop exports and flushes what it holds).
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    /// Starts it again (after [`Process::terminate`]) with `extra` variables over its own.
    pub fn start_again_with(&mut self, extra: &[(&str, String)]) {
        let env = overridden(&self.env, extra);
        *self = Self::start(self.binary.clone(), env, self.log.clone());
    }

    /// Runs the service's binary with `args` (a command, not the service) in the service's
    /// environment with `extra` over it, however it ends.
    pub async fn command_output(
        &self,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> std::process::Output {
        Command::new(&self.binary)
            .args(args)
            .envs(overridden(&self.env, extra))
            .output()
            .await
            .expect("run the command")
    }

    /// [`Process::command_output`]: its stdout, once it exited successfully.
    pub async fn command(&self, args: &[&str], extra: &[(&str, String)]) -> String {
        let output = self.command_output(args, extra).await;
        assert!(
            output.status.success(),
            "{} {args:?}: {}\n{}",
            self.binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// SIGTERM, and waits for the process to end.
    pub async fn terminate(&mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exited = tokio::time::timeout(START, self.child.wait())
            .await
            .expect("the service to stop")
            .expect("reap");
        assert!(exited.success(), "stopped with {exited}");
    }
}

/// `env` with each of `extra` set over it (a service's own prefix is not added).
fn overridden(env: &[(String, String)], extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env
        .iter()
        .filter(|(key, _)| !extra.iter().any(|(name, _)| name == key))
        .cloned()
        .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// Both services running as processes.
pub struct Processes {
    pub orders: Process,
    pub processor: Process,
    pub orders_url: String,
    pub processor_url: String,
    pub topology: messaging::topology::Topology,
    _cleanup: Cleanup,
}

/// Starts both binaries with `extra` variables besides their settings, each writing its stdout to
/// `logs/<service>.log` if `logs` is given, and waits until both are ready.
pub async fn start(extra: &[(&str, String)], logs: Option<&std::path::Path>) -> Processes {
    let mut replicas = start_replicas(1, 1, extra, logs).await;
    Processes {
        orders: replicas.orders.remove(0),
        processor: replicas.processors.remove(0),
        orders_url: replicas.orders_urls.remove(0),
        processor_url: replicas.processor_urls.remove(0),
        topology: replicas.topology,
        _cleanup: replicas._cleanup,
    }
}

/// Several instances of each service as processes, sharing one test's broker names and its two
/// databases, as replicas of a deployment do.
pub struct Replicas {
    pub orders: Vec<Process>,
    pub processors: Vec<Process>,
    pub orders_urls: Vec<String>,
    pub processor_urls: Vec<String>,
    pub topology: messaging::topology::Topology,
    /// The databases every instance of a service shares.
    pub orders_database: String,
    pub processor_database: String,
    _cleanup: Cleanup,
}

impl Replicas {
    /// The HTTP address of every instance.
    pub fn urls(&self) -> Vec<&str> {
        self.orders_urls
            .iter()
            .chain(&self.processor_urls)
            .map(String::as_str)
            .collect()
    }
}

/// Starts `orders` order_service and `processors` processor_service processes with `extra`
/// variables besides their settings (stdout to `logs/<service>-<n>.log` if `logs` is given; the
/// first instance's is `logs/<service>.log`), and waits until every one is ready.
pub async fn start_replicas(
    orders: usize,
    processors: usize,
    extra: &[(&str, String)],
    logs: Option<&std::path::Path>,
) -> Replicas {
    let id = test_support::unique_id();
    let amqp = test_support::amqp_settings(&id);
    let orders_db = test_support::database_settings(&format!("orders_{id}"));
    let processor_db = test_support::database_settings(&format!("processor_{id}"));
    let processor_defaults = processor_service::configuration::Settings::default();
    let cleanup = Cleanup {
        databases: vec![
            orders_db.url.expose().into(),
            processor_db.url.expose().into(),
        ],
        topology: Some(amqp.topology.clone()),
        queues: [
            processor_defaults
                .retry
                .redelivery()
                .tiers(&amqp.topology.order_created_queue, amqp.topology.queue_type)
                .queues(),
            service_kit::configuration::RedeliverySettings::default()
                .tiers(
                    &amqp.topology.order_processed_queue,
                    amqp.topology.queue_type,
                )
                .queues(),
        ]
        .concat(),
    };
    let env = |prefix: &str, port: u16, database: &str| {
        let mut env = test_support::service_env(prefix, port, database, &amqp);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let log = |name: &str, n: usize| {
        logs.map(|dir| match n {
            0 => dir.join(format!("{name}.log")),
            n => dir.join(format!("{name}-{}.log", n + 1)),
        })
    };
    let mut replicas = Replicas {
        orders: Vec::new(),
        processors: Vec::new(),
        orders_urls: Vec::new(),
        processor_urls: Vec::new(),
        topology: amqp.topology.clone(),
        orders_database: orders_db.url.expose().to_owned(),
        processor_database: processor_db.url.expose().to_owned(),
        _cleanup: cleanup,
    };
    let client = reqwest::Client::new();
    // The first of each creates and migrates its database; the others start on a migrated one.
    for batch in [0..1, 1..orders.max(processors)] {
        for n in batch.clone() {
            if n < orders {
                let port = test_support::free_port();
                replicas.orders.push(Process::start(
                    binary("order_service"),
                    env("ORDER_SERVICE", port, orders_db.url.expose()),
                    log("order_service", n),
                ));
                replicas
                    .orders_urls
                    .push(format!("http://127.0.0.1:{port}"));
            }
            if n < processors {
                let port = test_support::free_port();
                replicas.processors.push(Process::start(
                    binary("processor_service"),
                    env("PROCESSOR_SERVICE", port, processor_db.url.expose()),
                    log("processor_service", n),
                ));
                replicas
                    .processor_urls
                    .push(format!("http://127.0.0.1:{port}"));
            }
        }
        wait_ready(&client, &replicas.urls()).await;
    }
    replicas
}

pub async fn ready(client: &reqwest::Client, url: &str) -> bool {
    matches!(client.get(format!("{url}/ready")).send().await, Ok(r) if r.status() == 200)
}

pub async fn wait_ready(client: &reqwest::Client, urls: &[&str]) {
    for url in urls {
        test_support::wait_until(&format!("{url} ready"), START, || async {
            ready(client, url).await.then_some(())
        })
        .await;
    }
}
