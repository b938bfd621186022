//! A RabbitMQ node of the test's own, started from the machine's Debian install with its own node
//! name, port and data directory, so that a test may raise an alarm on it or freeze it without
//! touching the broker every other test shares. Stopped and removed when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A running node.
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    dir: PathBuf,
    /// The node's Erlang VM.
    pid: String,
}

impl RabbitNode {
    /// Starts node `rabbit-<id>@localhost` on a free port and waits until it takes connections.
    pub async fn start(id: &str) -> Self {
        Self::start_with(id, |_| String::new()).await
    }

    /// Starts a node that also listens for TLS on [`RabbitNode::tls_port`], with a server
    /// certificate of `ca` for `localhost` and 127.0.0.1; a client certificate is asked for and
    /// checked against `ca` when one is presented.
    pub async fn start_tls(id: &str, ca: &crate::tls::TestCa) -> Self {
        let (cert, key) = ca.issue_server(&format!("rabbit-{id}"));
        let ca_file = ca.ca_file();
        Self::start_with(id, move |dir| {
            for (from, to) in [
                (&ca_file, "ca.pem"),
                (&cert, "server.pem"),
                (&key, "server.key"),
            ] {
                std::fs::copy(from, dir.join(to)).expect("copy a TLS file");
            }
            let path = |name: &str| dir.join(name).display().to_string();
            format!(
                "listeners.ssl.default = 127.0.0.1:{}\nssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = false\n",
                super::free_port(),
                path("ca.pem"),
                path("server.pem"),
                path("server.key"),
            )
        })
        .await
    }

    /// The TLS listener's port, for a node from [`RabbitNode::start_tls`].
    pub fn tls_port(&self) -> Option<u16> {
        let config = std::fs::read_to_string(self.dir.join("rabbitmq.conf")).ok()?;
        config
            .lines()
            .find_map(|line| line.strip_prefix("listeners.ssl.default = 127.0.0.1:"))
            .and_then(|port| port.trim().parse().ok())
    }

    /// Starts a node whose configuration has the lines `extra` returns (given the node's folder).
    async fn start_with(id: &str, extra: impl FnOnce(&std::path::Path) -> String) -> Self {
        let port = super::free_port();
        let dist_port = super::free_port();
        let name = format!("rabbit-{id}@localhost");
        let dir = std::env::temp_dir().join(format!("rabbit-node-{id}"));
        std::fs::create_dir_all(dir.join("log")).expect("node directory");
        std::fs::write(dir.join("env.conf"), "").expect("env file");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        let extra = extra(&dir);
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n{extra}"),
        )
        .expect("config file");
        // rabbitmq-server drops to the rabbitmq user: its files must be that user's.
        run(
            "chown",
            &["-R", "rabbitmq:rabbitmq", &dir.to_string_lossy()],
        );
        let mut node = Self {
            name,
            port,
            dir,
            pid: String::new(),
        };
        let status = node
            .command("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .status()
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed");
        super::wait_until(
            &format!("node {} to take connections", node.name),
            Duration::from_secs(90),
            || async {
                lapin::Connection::connect(&node.url(), lapin::ConnectionProperties::default())
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        let output = node
            .command("rabbitmqctl")
            .args(["-n", &node.name, "eval", "os:getpid()."])
            .output()
            .expect("run rabbitmqctl");
        node.pid = String::from_utf8_lossy(&output.stdout)
            .trim()
            .trim_matches('"')
            .to_owned();
        assert!(
            node.pid.chars().all(|c| c.is_ascii_digit()) && !node.pid.is_empty(),
            "the node's pid: {:?}",
            node.pid
        );
        node
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// A command run against this node, with its environment.
    fn command(&self, program: &str) -> Command {
        let dir = |name: &str| self.dir.join(name).to_string_lossy().into_owned();
        let mut command = Command::new(program);
        command
            .env("RABBITMQ_CONF_ENV_FILE", dir("env.conf"))
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_CONFIG_FILE", dir("rabbitmq.conf"))
            .env("RABBITMQ_MNESIA_BASE", dir("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir("log"))
            .env("RABBITMQ_PID_FILE", dir("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", dir("plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", dir("feature_flags"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        command
    }

    fn ctl(&self, args: &[&str]) {
        let output = self
            .command("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Raises a memory alarm: the node blocks every publishing connection (`connection.blocked`).
    pub fn block_publishers(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "0"]);
    }

    /// Clears the alarm (RabbitMQ's default watermark).
    pub fn unblock_publishers(&self) {
        self.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    }

    /// Stops the node without closing anything (SIGSTOP): it keeps its sockets and answers
    /// nothing, as a hung or partitioned broker does.
    pub fn freeze(&self) {
        run("kill", &["-STOP", &self.pid]);
    }

    pub fn thaw(&self) {
        run("kill", &["-CONT", &self.pid]);
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|error| panic!("{program}: {error}"));
    assert!(status.success(), "{program} {args:?} failed");
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        // A frozen node cannot stop itself.
        let pid = self.pid.clone();
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let stopped = self
            .command("rabbitmqctl")
            .args(["-n", &self.name, "stop"])
            .output()
            .is_ok_and(|output| output.status.success());
        if !stopped {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
