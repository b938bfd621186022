//! Reading what a service exposes at `/metrics`, checking it with `promtool` (Debian's
//! `prometheus` package), and a real Prometheus server of the test's own that scrapes services.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The value of the sample `name{labels...}` in a text exposition: every given label must match
/// (others may be present). `None` if there is no such sample.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let present: Vec<(&str, &str)> = label_text
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key, value.trim_end_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|wanted| present.contains(wanted))
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// `promtool check metrics` on an exposition: `Err` with what it found.
pub fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run promtool (Debian package prometheus): {error}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(exposition.as_bytes())
        .map_err(|error| error.to_string())?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A Prometheus server scraping the given targets every second, with its own port and data
/// directory; stopped (and its directory removed) when dropped.
pub struct PrometheusServer {
    child: Child,
    dir: PathBuf,
    pub address: String,
    client: reqwest::Client,
}

impl PrometheusServer {
    /// Starts `prometheus` scraping `targets` (job name, `host:port`); `rule_files` are loaded
    /// too. Returns once it answers.
    pub async fn start(targets: &[(&str, String)], rule_files: &[PathBuf]) -> Self {
        let dir = std::env::temp_dir().join(format!("prometheus-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir).expect("prometheus directory");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        if !rule_files.is_empty() {
            config.push_str("rule_files:\n");
            for file in rule_files {
                config.push_str(&format!("  - '{}'\n", file.display()));
            }
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let port = crate::free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("start prometheus (Debian package prometheus)");
        let server = Self {
            child,
            dir,
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
        };
        crate::wait_until(
            "Prometheus to be ready",
            Duration::from_secs(30),
            || async {
                let response = server
                    .client
                    .get(format!("{}/-/ready", server.address))
                    .send()
                    .await
                    .ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
        server
    }

    /// The result of an instant PromQL query: each series' labels and value.
    pub async fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let body: serde_json::Value = self
            .client
            .get(format!("{}/api/v1/query", self.address))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{promql}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|series| {
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some((series["metric"].clone(), value))
            })
            .collect())
    }

    /// The single value of `promql`, if it has exactly one series.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        match self.query(promql).await.ok()?.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }

    /// The alerts the server has, as its API gives them.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let body: Option<serde_json::Value> = async {
            self.client
                .get(format!("{}/api/v1/alerts", self.address))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        body.and_then(|body| body["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
