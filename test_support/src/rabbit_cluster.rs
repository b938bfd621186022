//! A three-node RabbitMQ cluster of the test's own, started and stopped by
//! `scripts/rabbit-cluster.sh` (the script an operator uses on this machine), on ports no other
//! test uses. Stopped and removed when dropped.

/// The script, from the workspace.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/rabbit-cluster.sh");

/// A running cluster of three nodes.
pub struct RabbitCluster {
    name: String,
    port: u16,
    urls: String,
}

impl RabbitCluster {
    /// Starts the nodes `rabbit-<id>-1..3@localhost` and waits until they form one cluster.
    pub async fn start(id: &str) -> Self {
        let port = free_base();
        let mut cluster = Self {
            name: id.to_owned(),
            port,
            urls: String::new(),
        };
        cluster.urls = cluster.script(&["start"]).await.trim().to_owned();
        assert_eq!(cluster.urls.split(',').count(), 3, "{}", cluster.urls);
        cluster
    }

    /// The brokers, as `AMQP__URLS` takes them.
    pub fn urls(&self) -> &str {
        &self.urls
    }

    /// Node `n` (1-based) stops cleanly: it closes its connections first.
    pub async fn stop_node(&self, n: u8) {
        self.script(&["stop-node", &n.to_string()]).await;
    }

    /// Node `n`'s Erlang VM is SIGKILLed: its sockets just go.
    pub async fn kill_node(&self, n: u8) {
        self.script(&["kill-node", &n.to_string()]).await;
    }

    /// Starts node `n` again and waits until the three run as one cluster.
    pub async fn start_node(&self, n: u8) {
        self.script(&["start-node", &n.to_string()]).await;
    }

    /// `rabbitmqctl` against node 1; its stdout.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        self.script(&all).await
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("bash");
        command
            .arg(SCRIPT)
            .args(args)
            .env("CLUSTER_NAME", &self.name)
            .env("CLUSTER_PORT", self.port.to_string());
        command
    }

    /// Runs the script without holding the test's runtime: the services in it keep running.
    async fn script(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::from(self.command(args))
            .output()
            .await
            .expect("run rabbit-cluster.sh");
        assert!(
            output.status.success(),
            "rabbit-cluster.sh {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// A port p such that p, p + 1, p + 2 and p + 20000.. p + 20002 are free (the nodes' AMQP and
/// distribution ports).
fn free_base() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let seed = std::process::id() as u16;
    (0..200)
        .map(|i| 10_000 + (seed.wrapping_add(i * 37) % 20_000))
        .find(|&base| (0..3).all(|n| free(base + n) && free(base + 20_000 + n)))
        .expect("three free ports")
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let _ = self.command(&["stop"]).output();
    }
}
