//! TLS servers of a test's own: a certificate authority generated per test (`rcgen`) that issues
//! server certificates for `localhost` and 127.0.0.1, and a PostgreSQL instance (Debian's server
//! binaries, run as the `postgres` user) that takes TLS connections only. The shared servers stay
//! as they are.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate authority and the folder its files are written to.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub folder: PathBuf,
}

impl TestCa {
    /// A new CA writing into a new folder under the temporary directory (readable by the
    /// `postgres` user, which runs the test's PostgreSQL).
    pub fn new(name: &str) -> Self {
        let folder = std::env::temp_dir().join(format!("{name}-{}", crate::unique_id()));
        std::fs::create_dir_all(&folder).expect("the CA's folder");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("the CA certificate");
        let ca = Self { issuer, folder };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write the CA");
        ca
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.folder.join("ca.pem")
    }

    /// Issues a server certificate for `localhost` and 127.0.0.1; returns (certificate, key) files.
    pub fn issue_server(&self, name: &str) -> (PathBuf, PathBuf) {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server params");
        let key = KeyPair::generate().expect("a server key");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_file, key_file) = (
            self.folder.join(format!("{name}.pem")),
            self.folder.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, certificate.pem()).expect("write the certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write the key");
        (cert_file, key_file)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn postgres_bin(program: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(root)
        .expect("Debian's PostgreSQL server under /usr/lib/postgresql")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .max_by_key(|version| version.parse::<u32>().unwrap_or(0))
        .expect("a PostgreSQL version");
    root.join(version).join("bin").join(program)
}

fn as_postgres(command: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(command)
        .output()
        .expect("run as postgres (runuser)");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PostgreSQL instance on a free port of 127.0.0.1 that refuses connections without TLS (trust
/// authentication over TLS); stopped and removed when dropped.
pub struct TlsPostgres {
    pub port: u16,
    data: PathBuf,
    folder: PathBuf,
}

impl TlsPostgres {
    pub fn start(ca: &TestCa) -> Self {
        let (cert, key) = ca.issue_server("postgres");
        let folder = std::env::temp_dir().join(format!("pg-tls-{}", crate::unique_id()));
        let data = folder.join("data");
        std::fs::create_dir_all(&folder).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free port");
        // The server reads its key only if the key is its own and private.
        let (server_cert, server_key) = (folder.join("server.pem"), folder.join("server.key"));
        std::fs::copy(cert, &server_cert).unwrap();
        std::fs::copy(key, &server_key).unwrap();
        for path in [&folder, &server_cert, &server_key] {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let data_text = data.display().to_string();
        as_postgres(&[
            postgres_bin("initdb").to_str().unwrap(),
            "-D",
            &data_text,
            "-U",
            "postgres",
            "--auth=trust",
        ]);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} -c fsync=off",
            folder.display(),
            server_cert.display(),
            server_key.display()
        );
        let log = folder.join("postgres.log").display().to_string();
        as_postgres(&[
            postgres_bin("pg_ctl").to_str().unwrap(),
            "-D",
            &data_text,
            "-l",
            &log,
            "-o",
            &options,
            "-w",
            "start",
        ]);
        Self { port, data, folder }
    }

    /// The URL of database `name` on this server, with `query` (`sslmode=...`).
    pub fn url(&self, name: &str, query: &str) -> String {
        format!("postgres://postgres@localhost:{}/{name}?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(postgres_bin("pg_ctl"))
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}
