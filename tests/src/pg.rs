//! A throw-away PostgreSQL cluster for the scale-out tests: Debian's server binaries
//! (`postgresql` package; `scripts/test` installs it), a data directory in a temp dir, a free port
//! on 127.0.0.1, trust authentication. Run as the `postgres` user when the tests run as root
//! (`initdb` refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// Set (to anything) to make a missing PostgreSQL a failure rather than a skip (CI sets it).
pub const REQUIRE_ENV: &str = "PASSERELLE_REQUIRE_POSTGRES";

/// A running cluster; stopped (immediately) and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    /// TLS on (server certificate and key in the data directory), plain TCP refused.
    tls: bool,
}

/// The newest `…/postgresql/<version>/bin` holding `initdb` and `pg_ctl`, or `PG_BIN`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return dir.join("pg_ctl").exists().then_some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

impl PgCluster {
    /// Starts a cluster, or returns `None` (after saying so on stderr) when no server binaries
    /// are installed and [`REQUIRE_ENV`] is not set.
    pub fn start(test: &str) -> anyhow::Result<Option<Self>> {
        Self::start_inner(test, None)
    }

    /// Like [`PgCluster::start`], with TLS: the server presents `cert_pem` (with `key_pem`) and
    /// refuses connections over TCP without TLS.
    pub fn start_tls(test: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<Option<Self>> {
        Self::start_inner(test, Some((cert_pem, key_pem)))
    }

    fn start_inner(test: &str, tls: Option<(&str, &str)>) -> anyhow::Result<Option<Self>> {
        let Some(bin) = find_bin() else {
            anyhow::ensure!(
                std::env::var_os(REQUIRE_ENV).is_none(),
                "{REQUIRE_ENV} is set but no PostgreSQL server binaries were found (/usr/lib/postgresql/*/bin)"
            );
            eprintln!(
                "\n*** SKIPPED {test}: no PostgreSQL server binaries (install Debian's `postgresql`; scripts/test does) ***\n"
            );
            return Ok(None);
        };
        let dir = tempfile::Builder::new().prefix("passerelle-pg-").tempdir()?;
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?.success();
            anyhow::ensure!(ok, "cannot give {} to the postgres user", dir.path().display());
        }
        let port = testkit::free_port();
        let c = PgCluster { bin, dir, port, as_postgres, tls: tls.is_some() };
        c.run("initdb", &["-D", &c.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])?;
        if let Some((cert, key)) = tls {
            let data = c.dir.path().join("data");
            std::fs::write(data.join("server.crt"), cert)?;
            std::fs::write(data.join("server.key"), key)?;
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )?;
            if c.as_postgres {
                let ok = Command::new("chown").args(["postgres:postgres"]).arg(data.join("server.key")).status()?;
                anyhow::ensure!(ok.success(), "cannot give the server key to postgres");
            }
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        }
        c.start_again()?;
        Ok(Some(c))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// One of the server's programs, run as the postgres user when we are root.
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self.command(tool).args(args).output().with_context(|| format!("cannot run {tool}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts the server (again, after [`PgCluster::kill`]) and waits until it accepts.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let mut opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        if self.tls {
            opts.push_str(" -c ssl=on");
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
    }

    /// Stops the server the hard way (`immediate`: every backend quits at once, no
    /// checkpoint; recovery replays the WAL at the next start), as a crash would.
    pub fn kill(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"])
    }

    /// Runs `sql` through `psql` on the cluster's Unix socket; returns what it printed (unaligned,
    /// tuples only).
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = self
            .command("psql")
            .args(["-h", &self.dir.path().display().to_string(), "-p", &self.port.to_string(), "-U", "postgres"])
            .args(["-At", "-c", sql])
            .output()?;
        anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The URL a gateway connects with.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The overrides that put a harness gateway on `pg` as replica `name`.
pub fn overrides(pg: &PgCluster, name: &str) -> Vec<(String, String)> {
    vec![
        ("PASSERELLE__STORE__KIND".into(), "postgres".into()),
        ("PASSERELLE__STORE__URL".into(), pg.url()),
        ("PASSERELLE__STORE__REPLICA".into(), name.into()),
    ]
}

/// Another replica beside a harness's gateway: the same certificates, sources, bundles and
/// database; its own name, listeners (free ports) and audit chain.
#[derive(Debug)]
pub struct Replica {
    pub gateway: gateway::server::RunningGateway,
    pub config: gateway::config::Config,
}

impl Replica {
    pub async fn start(h: &crate::Harness, name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, h.demo.config.clone()).await
    }

    /// Starts replica `name` from `config` (a harness's, edited).
    pub async fn start_with(name: &str, mut config: gateway::config::Config) -> anyhow::Result<Self> {
        let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        config.data.listen = any;
        config.control.listen = Some(any);
        config.ops.listen = Some(any);
        config.public.listen = Some(any);
        config.store.replica = Some(name.to_owned());
        let chains = config.audit.dir.parent().context("the replica's chain has a parent directory")?.to_owned();
        config.audit.dir = chains.join(format!("replica-{name}"));
        let gateway = gateway::server::start(&config).await?;
        Ok(Replica { gateway, config })
    }

    fn client_at(h: &crate::Harness, addr: std::net::SocketAddr, who: &str) -> gateway::client::MtlsClient {
        let issued = h.demo.pki.client(who).unwrap_or_else(|| panic!("no client certificate {who}"));
        gateway::client::MtlsClient::new(
            addr,
            h.demo.pki.ca.cert_pem().as_bytes(),
            Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
            gateway::client::HttpVersion::Http1,
        )
        .unwrap_or_else(|e| panic!("client {who}: {e:#}"))
    }

    /// A data-plane client of this replica presenting the certificate `who`.
    pub fn client(&self, h: &crate::Harness, who: &str) -> gateway::client::MtlsClient {
        Self::client_at(h, self.gateway.data_addr, who)
    }

    /// A control-plane client of this replica presenting the certificate `who`.
    pub fn control_client(&self, h: &crate::Harness, who: &str) -> gateway::client::MtlsClient {
        let addr = self.gateway.control_addr.unwrap_or_else(|| panic!("the control plane is off"));
        Self::client_at(h, addr, who)
    }
}
