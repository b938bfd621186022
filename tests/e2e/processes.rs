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

/// The binary `name`, built beside this test binary.
fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let path = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` first",
        path.display()
    );
    path
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
    /// environment with `extra` over it; its stdout, once it exited successfully.
    pub async fn command(&self, args: &[&str], extra: &[(&str, String)]) -> String {
        let output = Command::new(&self.binary)
            .args(args)
            .envs(overridden(&self.env, extra))
            .output()
            .await
            .expect("run the command");
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
    let (orders_port, processor_port) = (test_support::free_port(), test_support::free_port());
    let env = |prefix: &str, port: u16, database: &str| {
        let mut env = test_support::service_env(prefix, port, database, &amqp);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    };
    let log = |name: &str| logs.map(|dir| dir.join(format!("{name}.log")));
    let orders = Process::start(
        binary("order_service"),
        env("ORDER_SERVICE", orders_port, orders_db.url.expose()),
        log("order_service"),
    );
    let processor = Process::start(
        binary("processor_service"),
        env(
            "PROCESSOR_SERVICE",
            processor_port,
            processor_db.url.expose(),
        ),
        log("processor_service"),
    );
    let processes = Processes {
        orders,
        processor,
        orders_url: format!("http://127.0.0.1:{orders_port}"),
        processor_url: format!("http://127.0.0.1:{processor_port}"),
        topology: amqp.topology.clone(),
        _cleanup: cleanup,
    };
    let client = reqwest::Client::new();
    wait_ready(&client, &[&processes.orders_url, &processes.processor_url]).await;
    processes
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
