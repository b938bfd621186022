//! Another host on this machine: a network namespace joined to the test's own by a veth pair
//! (Debian's iproute2; needs root), so that a test can call a service from an address that is
//! not loopback. Removed when dropped.

use std::net::Ipv4Addr;
use std::process::{Command, Output};

/// A namespace `name` whose end of the pair is [`RemoteHost::address`]; this host's end is
/// [`RemoteHost::gateway`].
pub struct RemoteHost {
    name: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ip (Debian package iproute2): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl RemoteHost {
    /// Creates the namespace and the pair, in a /30 of 10.201.0.0/16 picked from the process id
    /// and a counter (two tests, or two runs, do not collide).
    pub fn create() -> Result<Self, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = (std::process::id() * 7
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
            % 16_000;
        let name = format!("op{serial}");
        let base = 4 * serial;
        let [_, _, third, fourth] = ((10u32 << 24) | (201 << 16) | base).to_be_bytes();
        let gateway = Ipv4Addr::new(10, 201, third, fourth + 1);
        let address = Ipv4Addr::new(10, 201, third, fourth + 2);
        let (outside, inside) = (format!("{name}h"), format!("{name}n"));
        // Left over from a run that was killed.
        let _ = ip(&["netns", "del", &name]);
        let _ = ip(&["link", "del", &outside]);
        let host = Self {
            name: name.clone(),
            address,
            gateway,
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &name])?;
        ip(&["addr", "add", &format!("{gateway}/30"), "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&[
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            &inside,
        ])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", &inside, "up"])?;
        ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Runs `program args` inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("run a command in the namespace")
    }

    /// `curl`'s status code for `GET url` from the namespace, with `headers`.
    pub fn http_status(&self, url: &str, headers: &[&str]) -> u16 {
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(url);
        let output = self.run("curl", &args);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for RemoteHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = ip(&["netns", "del", &self.name]);
    }
}
