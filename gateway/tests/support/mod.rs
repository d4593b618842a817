//! Shared by the tests that run the real `passerelle` process: a working directory with the dev
//! PKI, the seed bundles and a config on free loopback ports, sandboxes in the test process,
//! and helpers to start, wait for and stop the gateway.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certs::DevPki;
use gateway::client::{HttpVersion, MtlsClient};

pub struct Site {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub pki: DevPki,
    pub data_port: u16,
    pub control_port: u16,
    pub ops_port: u16,
    pub sandboxes: Vec<adapters::sandbox::SandboxServer>,
}

fn free_port() -> u16 {
    testkit::free_port()
}

impl Site {
    /// Sets up a site whose gateway forwards to in-process sandboxes of Sigedis and the
    /// association register.
    pub async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (pki, _) = gateway::demo::init_pki(&d.join("pki"), &[]).unwrap();
        std::fs::create_dir_all(d.join("bundles")).unwrap();
        for (name, text) in policies::seed::BUNDLES {
            std::fs::write(d.join("bundles").join(name), text).unwrap();
        }
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
        let sigedis = adapters::sigedis::sandbox::serve(bind().await).unwrap();
        let assoc = adapters::associations::sandbox::serve(bind().await).unwrap();
        let rn = adapters::rn::sandbox::serve(bind().await).unwrap();
        let (data_port, control_port, ops_port) = (free_port(), free_port(), free_port());
        let config = d.join("passerelle.toml");
        let sources = [("sigedis", sigedis.url()), ("associations", assoc.url()), ("rn", rn.url())];
        std::fs::write(&config, gateway::demo::site_config(data_port, control_port, ops_port, 0, &sources, 100))
            .unwrap();
        Site { dir, config, pki, data_port, control_port, ops_port, sandboxes: vec![sigedis, assoc, rn] }
    }

    /// The public half of the site's audit signing key: the key a verifier pins.
    pub fn audit_key(&self) -> [u8; 32] {
        gateway::audit::trail::signing_public_key(&self.path().join("pki/audit-signing.key"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `passerelle serve` with its log in `log` and waits until both listeners accept.
    pub async fn start(&self, log: &str) -> Child {
        self.start_with(log, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables (config overrides).
    pub async fn start_with(&self, log: &str, env: &[(&str, &str)]) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path().join(log)).unwrap())
            .spawn()
            .unwrap();
        for port in [self.data_port, self.control_port] {
            wait_listening(port, &mut child).await;
        }
        child
    }

    /// A client of the data plane (or the control plane) with the certificate `name`.
    pub fn client(&self, name: &str, control: bool) -> MtlsClient {
        let issued = self.pki.client(name).unwrap();
        let port = if control { self.control_port } else { self.data_port };
        MtlsClient::new(
            ([127, 0, 0, 1], port).into(),
            self.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            HttpVersion::Http1,
        )
        .unwrap()
    }
}

async fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway exited during start: {status}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway did not start listening on {port}");
}

/// SIGKILL, and wait for the process to be gone.
pub fn kill_9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGTERM, and the exit status.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    child.wait().unwrap()
}

/// Runs the `passerelle` binary; returns its exit code, stdout and stderr.
pub fn passerelle(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
