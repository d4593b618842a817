//! The command line: `serve`, `demo`, `certs init`, `policy check`, `consent give|revoke|import|list`,
//! `audit verify|export|prune`, `sandbox`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::demo::{self, Demo, DemoOptions};
use crate::server;

#[derive(Debug, Parser)]
#[command(name = "passerelle", version, about = "Secure data-exchange gateway for Belgian public data flows")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway from a config file.
    Serve {
        /// The TOML config file (see passerelle.example.toml).
        #[arg(long, env = "PASSERELLE_CONFIG")]
        config: PathBuf,
    },
    /// Run a complete demo on loopback: dev PKI, embedded store, sandbox sources, gateway.
    Demo {
        /// Working directory for the PKI, the store and the generated config.
        #[arg(long, default_value = "var/demo")]
        dir: PathBuf,
        /// Data-plane port (0 picks a free one for every listener not given a port).
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// Control-plane port [default: 9443]
        #[arg(long)]
        control_port: Option<u16>,
        /// Operations listener port (/healthz, /readyz, /metrics) [default: 9464]
        #[arg(long)]
        ops_port: Option<u16>,
        /// Public listener port [default: 8444]
        #[arg(long)]
        public_port: Option<u16>,
        /// Run the demo calls, print a report and exit: 0 only if every outcome was as expected.
        #[arg(long)]
        smoke: bool,
    },
    /// Development certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Policy bundles.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Consents: give, revoke, list — directly on a stopped gateway's store (`--config`), or
    /// through a running gateway's control plane (`--control` with a client certificate).
    Consent {
        #[command(subcommand)]
        command: Box<ConsentCommand>,
        #[command(flatten)]
        target: Box<ConsentTarget>,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run one sandbox source on its own.
    Sandbox {
        /// The source: div, sigedis, associations, accounts, contacts, rn.
        source: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18001")]
        listen: SocketAddr,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConsentTarget {
    /// Work directly on the store and policy of this (stopped) gateway's config.
    #[arg(long, global = true, conflicts_with = "control")]
    config: Option<PathBuf>,
    /// With --config: the enterprise number the change is recorded for — a citizen access point,
    /// or an administrator (integrator) recording a consent given through an instance.
    #[arg(long, global = true)]
    actor: Option<String>,
    /// Work through a running gateway's control plane at this address.
    #[arg(long, global = true)]
    control: Option<SocketAddr>,
    /// With --control: the CA bundle (PEM) that signed the gateway's server certificate.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// With --control: the client certificate (PEM) to present — a citizen access point's, or
    /// the integrator's (the demo's is pki/clients/admin.pem).
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// With --control: the private key (PEM) of --cert.
    #[arg(long, global = true)]
    key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Record a consent.
    Give {
        /// The data subject's NISS or BIS number.
        #[arg(long)]
        subject: String,
        /// The recipient organisation's enterprise number…
        #[arg(long, conflicts_with = "recipient_kind")]
        recipient_org: Option<String>,
        /// …or a kind of organisation (e.g. flemish-instance).
        #[arg(long)]
        recipient_kind: Option<String>,
        /// The service the consent is for (`source.service`, e.g. sigedis.pensions).
        #[arg(long)]
        service: String,
        /// The purpose the consent is for, as the instrument names it.
        #[arg(long)]
        purpose: String,
        /// RFC 3339 time or a YYYY-MM-DD date (valid through that day).
        #[arg(long)]
        valid_until: String,
        /// Where the consent was given and how it can be shown (a portal session, a form).
        #[arg(long)]
        evidence: String,
        /// The instance through which the citizen gave it (administrators only).
        #[arg(long)]
        instance: Option<String>,
        /// Public services the value may be used for (repeatable).
        #[arg(long)]
        scope: Vec<String>,
    },
    /// Revoke a consent by its id.
    Revoke {
        /// The consent's id (c- and 32 hex digits).
        id: String,
    },
    /// Import consents in bulk into a stopped gateway's store (--config): a file of JSON
    /// lines, each a consent as `POST /consents` takes it, checked as that endpoint checks it
    /// and given now, by --actor. A batch is written durably, all of it or none, before its
    /// line is printed (`{"batch":…,"through_line":N,…}`): after a stop, `--from-line N+1`
    /// resumes. A consent's id is derived from the actor, the line's number and its text, so
    /// a line imported before is not imported again (nor written over what happened to it
    /// since). A refused line is named on stderr and skipped; the exit code is then 1.
    Import {
        /// The file of JSON lines (`-` for standard input).
        file: PathBuf,
        /// Consents per durable batch.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=200_000))]
        batch: u32,
        /// The first line to import (1-based), to resume after the last acknowledged batch.
        #[arg(long, default_value_t = 1)]
        from_line: u64,
    },
    /// List a subject's consents with their history.
    List {
        /// The data subject's NISS or BIS number.
        #[arg(long)]
        subject: String,
    },
}

/// Runs a consent command; returns the exit code.
async fn consent_command(command: ConsentCommand, target: ConsentTarget) -> anyhow::Result<i32> {
    use crate::consent::NewConsent;
    let new = |command: &ConsentCommand| -> anyhow::Result<serde_json::Value> {
        let ConsentCommand::Give {
            subject,
            recipient_org,
            recipient_kind,
            service,
            purpose,
            valid_until,
            evidence,
            instance,
            scope,
        } = command
        else {
            anyhow::bail!("not a give command");
        };
        let recipient = match (recipient_org, recipient_kind) {
            (Some(o), None) => serde_json::json!({ "org": o }),
            (None, Some(k)) => serde_json::json!({ "kind": k }),
            _ => anyhow::bail!("give exactly one of --recipient-org and --recipient-kind"),
        };
        Ok(serde_json::json!({
            "subject": subject, "recipient": recipient, "service": service, "purpose": purpose,
            "scope": scope, "valid_until": valid_until, "evidence": evidence, "instance": instance,
        }))
    };
    if let Some(addr) = target.control {
        let (Some(ca), Some(cert), Some(key)) = (&target.ca, &target.cert, &target.key) else {
            anyhow::bail!("--control needs --ca, --cert and --key");
        };
        let client = crate::client::MtlsClient::new(
            addr,
            &std::fs::read(ca)?,
            Some((&std::fs::read(cert)?, &std::fs::read(key)?)),
            crate::client::HttpVersion::Http1,
        )?;
        let (method, path, headers, body) = match &command {
            ConsentCommand::Give { .. } => {
                (http::Method::POST, "/consents".to_owned(), vec![], new(&command)?.to_string())
            }
            ConsentCommand::Revoke { id } => {
                (http::Method::POST, format!("/consents/{id}/revoke"), vec![], String::new())
            }
            ConsentCommand::List { subject } => {
                (http::Method::GET, "/consents".to_owned(), vec![("x-subject", subject.as_str())], String::new())
            }
            ConsentCommand::Import { .. } => {
                anyhow::bail!("import works on a stopped gateway's store: use --config, not --control")
            }
        };
        let answer = client.send(crate::client::request(method, &path, &headers, bytes::Bytes::from(body))?).await?;
        println!("{}", answer.text());
        return Ok(if answer.status.is_success() { 0 } else { 1 });
    }
    let config = target.config.context("give --config (a stopped gateway) or --control (a running one)")?;
    let cfg = Config::load(&config, std::env::vars())?;
    let (store, _, registry, _) = crate::server::open_store(&cfg)
        .context("cannot open the store (is the gateway running? then use --control)")?;
    // The policy in the store is the one in force; a store never started holds none yet.
    let policy = match crate::policy::PolicyHandle::from_store(store.as_ref())? {
        p if p.version() > 0 => p,
        _ => crate::policy::PolicyHandle::load(&cfg.policy)?,
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000;
    let actor = || -> anyhow::Result<(policies::ids::Kbo, bool)> {
        let a = target.actor.as_deref().context("--actor is required with --config")?;
        let kbo = policies::ids::Kbo::parse(a).map_err(|e| anyhow::anyhow!("--actor: {e}"))?;
        match policy.current().organisation(kbo).map(|o| o.kind) {
            Some(policies::model::OrgKind::CitizenAccessPoint) => Ok((kbo, true)),
            Some(policies::model::OrgKind::Integrator) => Ok((kbo, false)),
            _ => anyhow::bail!("--actor must be a citizen access point or an administrator (integrator)"),
        }
    };
    let mut d = [0u8; 10];
    match &command {
        ConsentCommand::Give { .. } => {
            let (kbo, portal) = actor()?;
            let asked: NewConsent = serde_json::from_value(new(&command)?)?;
            let consent =
                asked.validate(&policy.current(), kbo, portal, now).map_err(|e| anyhow::anyhow!("refused: {e}"))?;
            registry.give(&consent, kbo.digits(&mut d))?;
            println!("{}", serde_json::to_string_pretty(&consent)?);
        }
        ConsentCommand::Revoke { id } => {
            let (kbo, _) = actor()?;
            let c = registry.revoke(id, now, kbo.digits(&mut d))?;
            println!("{}", serde_json::to_string_pretty(&c)?);
        }
        ConsentCommand::Import { file, batch, from_line } => {
            let (kbo, portal) = actor()?;
            let input: Box<dyn std::io::BufRead + Send> = if file.as_os_str() == "-" {
                Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
            } else {
                let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            let snapshot = policy.current();
            let actor = kbo.digits(&mut d).to_owned();
            let started = std::time::Instant::now();
            let (mut pending, mut batches, mut imported, mut refused) = (Vec::new(), 0u64, 0u64, 0u64);
            let mut write = |pending: &mut Vec<crate::consent::Consent>, through: u64| -> anyhow::Result<()> {
                if pending.is_empty() {
                    return Ok(());
                }
                // Lines a stopped import already wrote (durable, not yet acknowledged) have the
                // same ids: the registry does not write them again.
                let written = registry.import(pending, &actor)?;
                batches += 1;
                imported += written as u64;
                let ack = serde_json::json!({
                    "batch": batches, "through_line": through, "imported": written,
                    "already_there": pending.len() - written, "durable": true,
                });
                println!("{ack}");
                std::io::Write::flush(&mut std::io::stdout())?;
                pending.clear();
                Ok(())
            };
            let mut last = 0;
            for (i, line) in std::io::BufRead::lines(input).enumerate() {
                let n = i as u64 + 1;
                let line = line.with_context(|| format!("line {n}: cannot be read"))?;
                last = n;
                if n < *from_line || line.trim().is_empty() {
                    continue;
                }
                let checked = serde_json::from_str::<NewConsent>(&line)
                    .map_err(|e| format!("not a consent ({e})"))
                    .and_then(|asked| asked.validate(&snapshot, kbo, portal, now).map_err(|e| e.to_string()));
                match checked {
                    Ok(mut c) => {
                        c.id = crate::consent::import_id(&actor, n, &line).to_text();
                        pending.push(c);
                    }
                    Err(why) => {
                        refused += 1;
                        eprintln!("line {n}: refused: {why}");
                    }
                }
                if pending.len() >= *batch as usize {
                    write(&mut pending, n)?;
                }
            }
            write(&mut pending, last)?;
            let took = started.elapsed().as_secs_f64();
            eprintln!(
                "{imported} consent(s) imported in {batches} batch(es), {took:.1} s ({:.0}/s); {refused} line(s) refused",
                imported as f64 / took.max(1e-9)
            );
            return Ok(if refused > 0 { 1 } else { 0 });
        }
        ConsentCommand::List { subject } => {
            let niss = policies::ids::Niss::parse(subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
            let mut b = [0u8; 11];
            let list = registry.of_subject(niss.digits(&mut b))?;
            for c in &list {
                let history = registry.store().history(&c.id)?;
                println!("{}", serde_json::json!({ "consent": c, "history": history }));
            }
            eprintln!("{} consent(s)", list.len());
        }
    }
    Ok(0)
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a trail directory: segment headers and continuity, every record's checksum,
    /// sequence and hash chain, every byte of checkpoints.log, the checkpoint chain and each
    /// checkpoint's signature and hash. Reports the first problem, naming its place, and exits
    /// 1; exits 0 when the trail verifies. Records after the last checkpoint are reported as
    /// unsealed.
    Verify {
        /// The trail's directory.
        dir: PathBuf,
        /// The checkpoint signing key's public half, pinned: 64 hex digits or a file holding
        /// them (e.g. `audit-signing.pub`). A key named inside the trail is never trusted.
        #[arg(long)]
        public_key: Option<String>,
        /// Or the gateway's configuration: the public half of its `audit.signing_key`.
        #[arg(long, conflicts_with = "public_key")]
        config: Option<PathBuf>,
        /// Records that no checkpoint seals yet are a failure, not a note.
        #[arg(long)]
        require_sealed: bool,
    },
    /// Write a range of records that proves itself (docs/audit-format.md §8): the records, with
    /// their hashes, between a signed anchor checkpoint and a signed seal, for archiving and
    /// for verification outside the gateway (`audit verify-export`).
    Export {
        /// The trail's directory (`audit.dir`).
        dir: PathBuf,
        /// From this record (sequence number).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        from_seq: Option<u64>,
        /// Up to this record (sequence number; the last sealed one by default).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        to_seq: Option<u64>,
        /// From this time, inclusive (RFC 3339, or a date `YYYY-MM-DD` meaning its start, UTC):
        /// translated to the smallest and largest sequence numbers of records in the time range.
        #[arg(long)]
        from: Option<String>,
        /// Up to this time, inclusive (RFC 3339, or a date meaning its end, UTC).
        #[arg(long)]
        to: Option<String>,
        /// Output format; `jsonl` is the only one.
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
    /// Check an export from its lines alone against a pinned key: the anchor and seal
    /// signatures and every record's hash and link. Exits 0 when it verifies, 1 otherwise.
    VerifyExport {
        /// The export (JSON lines) written by `audit export`.
        file: PathBuf,
        /// The checkpoint signing key's public half: 64 hex digits or a file holding them.
        #[arg(long)]
        public_key: String,
    },
    /// Write a synthetic trail of N data calls through the real writer (chain, signed
    /// checkpoints, group commit) and its index, for measuring queries at ten years of
    /// traffic. DIR is laid out as the demo's working directory (`audit/`, `store/`,
    /// `pki/audit-signing.key`), so `passerelle demo --dir DIR` serves it. Record `i` is a
    /// pure function of the arguments (`gateway::audit::generate::Plan`).
    Generate {
        /// A directory without a trail yet.
        dir: PathBuf,
        /// How many records.
        #[arg(long)]
        records: u64,
        /// Their times span this many years…
        #[arg(long, default_value_t = 10)]
        years: u32,
        /// …up to this time (RFC 3339, or a date meaning its end, UTC); now by default.
        #[arg(long)]
        until: Option<String>,
        /// Distinct persons they are about.
        #[arg(long, default_value_t = 1_000_000)]
        subjects: u64,
        /// Distinct calling organisations.
        #[arg(long, default_value_t = 100)]
        organisations: u64,
        /// Records handed to the writer at once (it commits them in groups).
        #[arg(long, default_value_t = 4_096)]
        in_flight: usize,
        /// Records that may wait for the indexer before writing waits for it: memory stays
        /// bounded (about 0.4 KB a record waiting). A large value lets the trail be written at
        /// the disk's pace while the index follows later, holding what waits in memory.
        #[arg(long, default_value_t = crate::audit::generate::INDEX_BACKLOG)]
        index_backlog: u64,
    },
    /// Remove whole segments whose records are all older than the retention period, oldest
    /// first; the chain stays verifiable from the oldest segment kept.
    /// A running gateway prunes on its own, daily, after `audit.retention_days` and never
    /// before the longest retention a source declares; this is for a stopped one.
    Prune {
        /// The trail's directory (`audit.dir`).
        dir: PathBuf,
        /// Retention in days (10 years by default); refused when shorter than a source's
        /// declared minimum (`audit_retention_days`).
        #[arg(long, default_value_t = 3653)]
        retention_days: u32,
        /// The gateway's configuration: its store holds the policy, whose sources declare
        /// their minimum retention.
        #[arg(long)]
        config: PathBuf,
    },
}

/// `audit generate`: the plan's records into `dir`'s trail and index, with what it took.
async fn generate_trail(
    dir: &std::path::Path,
    plan: crate::audit::generate::Plan,
    in_flight: usize,
    index_backlog: u64,
) -> anyhow::Result<()> {
    use crate::audit::generate::{dir_bytes, generate};
    let cfg = crate::config::AuditConfig {
        dir: dir.join("audit"),
        signing_key: dir.join("pki").join("audit-signing.key"),
        ..Default::default()
    };
    if std::fs::read_dir(&cfg.dir).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!("{} already holds a trail: generate into a new directory", cfg.dir.display());
    }
    std::fs::create_dir_all(dir.join("pki"))?;
    crate::audit::trail::load_or_create_key(&cfg.signing_key).map_err(anyhow::Error::msg)?;
    let store = std::sync::Arc::new(crate::store::SledStore::open(&dir.join("store"))?);
    let (trail, _) = crate::audit::open(&cfg, store.clone())?;
    let trail = std::sync::Arc::new(trail);
    let total = plan.records;
    let progress = move |n| eprintln!("{n} of {total} records written");
    let done = generate(trail.clone(), plan, in_flight, index_backlog, progress).await?;
    // Everything indexed and the index durable before the numbers are reported.
    let started_index = std::time::Instant::now();
    let indexed = tokio::task::spawn_blocking({
        let (trail, store) = (trail.clone(), store.clone());
        move || trail.wait_indexed(store.as_ref(), std::time::Duration::from_secs(3_600))
    })
    .await?;
    trail.close();
    crate::audit::index::AuditIndex::audit_flush(store.as_ref())?;
    // And merged as the gateway's upkeep would have done it meanwhile, so that the index a
    // measurement queries is the one a gateway that had written these records would hold.
    let settled = tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.audit_settle(std::time::Duration::from_secs(3_600))
    })
    .await?;
    let seconds_indexed = done.seconds + started_index.elapsed().as_secs_f64();
    let seconds = done.seconds;
    let trail_bytes = dir_bytes(&cfg.dir);
    let index_bytes = dir_bytes(&dir.join("store").join("audit-index"));
    println!(
        "{} records in {seconds:.1} s ({:.0} records/s, {:.1} MB/s of trail), indexed and merged after {seconds_indexed:.1} s; trail {} bytes ({:.0} a record), index {} bytes ({:.0} a record) in {} runs{}",
        done.records,
        done.records as f64 / seconds,
        trail_bytes as f64 / seconds / 1e6,
        trail_bytes,
        trail_bytes as f64 / done.records as f64,
        index_bytes,
        index_bytes as f64 / done.records as f64,
        store.audit_runs(),
        if indexed && settled {
            ""
        } else {
            "; the index had not caught up after an hour (the next start finishes it)"
        }
    );
    Ok(())
}

fn parse_time_ms(s: &str, end_of_day: bool) -> anyhow::Result<u64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as u64);
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .with_context(|| format!("'{s}' is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let start = d.midnight().assume_utc().unix_timestamp() as u64 * 1000;
    Ok(if end_of_day { start + 86_400_000 - 1 } else { start })
}

fn parse_public_key(s: &str) -> anyhow::Result<[u8; 32]> {
    let text = if std::path::Path::new(s).exists() { std::fs::read_to_string(s)? } else { s.to_owned() };
    crate::audit::format::unhex(text.trim())
        .and_then(|v| v.try_into().ok())
        .context("the public key must be 64 hex digits (32 bytes)")
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load and validate bundle files (or directories of them) together; print every problem
    /// with its file and key. Exits 0 only if there is none.
    Check {
        /// Bundle files, or directories whose `*.toml` files are read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replace the policy in the store of a stopped gateway by bundle files: validated,
    /// versioned and recorded in the audit trail like every change. (A running gateway takes
    /// `POST /policy/import` on the control plane, or SIGHUP after its bundles were edited.)
    Import {
        /// The stopped gateway's config file.
        #[arg(long, env = "PASSERELLE_CONFIG")]
        config: PathBuf,
        /// Bundle files, or directories whose `*.toml` files are read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the policy in the store of a stopped gateway as one TOML bundle (re-importable).
    Export {
        /// The stopped gateway's config file.
        #[arg(long, env = "PASSERELLE_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a dev PKI: CA, server certificate for localhost, organisation and admin client
    /// certificates, and a CRL revoking one of them.
    Init {
        /// Where to write it (keys with mode 0600).
        #[arg(long, default_value = "var/pki")]
        dir: PathBuf,
    },
    /// Write a new key and a certificate signing request (PKCS#10) for an organisation's client
    /// certificate, as the gateway reads one: `<file>.csr.pem` and `<file>.key.pem` (mode 0600)
    /// in `--out`. The request goes to whoever signs the organisation's certificates.
    Csr {
        /// The organisation's enterprise number (10 digits).
        #[arg(long)]
        enterprise_number: String,
        /// The certificate's common name: the organisation or the calling application.
        #[arg(long)]
        name: String,
        /// The environment the certificate is for: PRD, ACC or INT (test).
        #[arg(long)]
        environment: Option<String>,
        /// Where to write the two files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// The files' name.
        #[arg(long, default_value = "client")]
        file: String,
    },
    /// Sign an organisation's request with a CA you hold (the dev PKI's `ca.pem` and
    /// `ca.key`): the request's signature, its subject and the enterprise number it must
    /// carry are checked; the certificate (client authentication, valid from now for `--days`)
    /// is printed.
    Sign {
        /// The CA's certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// The CA's private key (PEM).
        #[arg(long)]
        ca_key: PathBuf,
        /// The request (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// The enterprise number the request must carry: the organisation's, as registered.
        #[arg(long)]
        enterprise_number: String,
        /// Validity in days, 1 to 825.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The policy writer of a stopped gateway: its store, its audit trail (to record the change).
fn offline_policy(cfg: &Config) -> anyhow::Result<(crate::policy::Changes, std::sync::Arc<crate::audit::AuditTrail>)> {
    use std::sync::Arc;
    let (store, index, _, _) = crate::server::open_store(cfg)
        .context("cannot open the store (is the gateway running? then POST /policy/import)")?;
    let (trail, _) = crate::audit::open(&cfg.audit, index).context("audit trail")?;
    let audit = Arc::new(trail);
    let handle = Arc::new(crate::policy::PolicyHandle::from_store(store.as_ref())?);
    let changes = crate::policy::Changes::new(handle, store, audit.clone());
    // The registrations are checked as a running gateway checks them: a store the gateway
    // would then refuse to start on is never written.
    let cfg = cfg.clone();
    changes.on_check(move |p| crate::registered::check(&cfg, p));
    Ok((changes, audit))
}

/// The runtime, sized for the CPUs this process may use: on one (a one-CPU machine or
/// container, or a process pinned to one CPU), a current-thread runtime. The multi-thread
/// scheduler buys nothing there and costs its cross-thread machinery on every task switch
/// (injection queue, work-stealing checks, and the main thread polling `block_on`'s future
/// beside the one worker). The load generator builds its runtime here too.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
}

/// Runs a parsed command line. Returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let runtime = runtime()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => {
                let cfg = Config::load(&config, std::env::vars())?;
                init_tracing(cfg.log.format, &cfg.log.filter);
                let signal = shutdown_signal();
                // Registered before the listeners open: a SIGHUP during the start must not kill
                // the process (its default action).
                #[cfg(unix)]
                let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
                let gw = server::start(&cfg).await?;
                let stop = gw.shutdown_handle();
                tokio::spawn(async move {
                    signal.await;
                    tracing::info!("shutting down");
                    let _ = stop.send(true);
                });
                #[cfg(unix)]
                {
                    let reloader = gw.reloader.clone();
                    tokio::spawn(async move {
                        while hangup.recv().await.is_some() {
                            tracing::info!("SIGHUP: reloading");
                            // The outcome is logged and counted by the reloader.
                            let _ = reloader.reload().await;
                        }
                    });
                }
                gw.wait().await;
                Ok(0)
            }
            Command::Demo { dir, port, control_port, ops_port, public_port, smoke } => {
                init_tracing(LogFormat::Text, "warn");
                let port = if smoke && port == 8443 { 0 } else { port };
                let mut opts = DemoOptions::new(dir, port);
                (opts.control_port, opts.ops_port, opts.public_port) = (control_port, ops_port, public_port);
                // The same `PASSERELLE__…` overrides as `serve`.
                opts.overrides = std::env::vars().collect();
                let demo = Demo::start(opts).await?;
                if smoke {
                    let checks = demo.smoke().await?;
                    let ok = demo::print_report(&checks);
                    demo.gateway.shutdown().await;
                    return Ok(if ok { 0 } else { 1 });
                }
                let signal = shutdown_signal();
                println!("Passerelle demo: data plane on https://localhost:{}", demo.gateway.data_addr.port());
                if let Some(a) = demo.gateway.public_addr {
                    println!("Public listener (no certificate) on https://localhost:{}", a.port());
                }
                if let Some(a) = demo.gateway.control_addr {
                    println!("Control plane (the integrator's certificate is pki/clients/admin.pem) on https://localhost:{}", a.port());
                }
                if let Some(a) = demo.gateway.ops_addr {
                    println!("Operations (/healthz, /readyz, /metrics) on http://{a}");
                }
                println!("Working directory: {}", demo.dir.display());
                for (name, s) in &demo.sandboxes {
                    println!("Sandbox {name}: {}", s.url());
                }
                println!("\nTry:\n");
                for c in demo.curl_commands() {
                    println!("{c}\n");
                }
                if let Some(control) = demo.gateway.control_addr {
                    let (cert, key) = (demo.paths.client_cert("div"), demo.paths.client_key("div"));
                    println!(
                        "The web console (docs/console/): import an organisation's certificate into a browser, e.g. DIV's\n\
                         (openssl pkcs12 -export -in {} -inkey {} -out div.p12), trust {},\n\
                         then open https://localhost:{}/console\n",
                        cert.display(),
                        key.display(),
                        demo.paths.ca_cert().display(),
                        control.port()
                    );
                }
                println!("Ctrl-C stops the demo.");
                signal.await;
                demo.gateway.shutdown().await;
                Ok(0)
            }
            Command::Certs { command: CertsCommand::Init { dir } } => {
                let (_, paths) = demo::init_pki(&dir, &[])?;
                println!("dev PKI written to {}", paths.dir.display());
                Ok(0)
            }
            Command::Certs { command: CertsCommand::Csr { enterprise_number, name, environment, out, file } } => {
                let kbo = policies::ids::Kbo::parse(&enterprise_number)
                    .map_err(|e| anyhow::anyhow!("--enterprise-number: {e}"))?;
                let mut spec = certs::ClientSpec::org(&name, kbo);
                spec.environment = environment
                    .as_deref()
                    .map(|e| certs::Environment::from_ou(e).ok_or_else(|| anyhow::anyhow!("--environment: PRD, ACC or INT")))
                    .transpose()?;
                let (request, key) = certs::csr(&spec)?;
                let (csr_path, key_path) = (out.join(format!("{file}.csr.pem")), out.join(format!("{file}.key.pem")));
                certs::write_file(&key_path, &key, true)?;
                certs::write_file(&csr_path, &request, false)?;
                println!("request written to {} (its key: {})", csr_path.display(), key_path.display());
                Ok(0)
            }
            Command::Certs { command: CertsCommand::Sign { ca_cert, ca_key, csr, enterprise_number, days } } => {
                let kbo = policies::ids::Kbo::parse(&enterprise_number)
                    .map_err(|e| anyhow::anyhow!("--enterprise-number: {e}"))?;
                if !(1..=825).contains(&days) {
                    anyhow::bail!("--days: 1 to 825");
                }
                let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
                let signer = certs::CsrSigner::from_pem(&read(&ca_cert)?, &read(&ca_key)?)?;
                match signer.sign(&read(&csr)?, kbo, days, time::OffsetDateTime::now_utc()) {
                    Ok(signed) => {
                        print!("{}", signed.cert_pem);
                        Ok(0)
                    }
                    Err(e) => {
                        eprintln!("not signed: {e}");
                        Ok(1)
                    }
                }
            }
            Command::Policy { command: PolicyCommand::Check { files } } => {
                let files = crate::policy::bundle_files(&files)?;
                // The registered services' layouts and catalogues, as far as they can be checked
                // without a gateway's configuration (their upstreams need one).
                let layouts = |p: &policies::model::Policy| -> Result<(), String> {
                    adapters::registered::check_paths(&p.services)?;
                    (p.services.iter().filter(|s| s.exposure.is_some()))
                        .try_for_each(|s| adapters::registered::compile(s).map(|_| ()).map_err(|e| format!("service {}: {e}", s.id)))
                };
                match policies::bundle::load_files(&files) {
                    Ok(policy) if let Err(why) = layouts(&policy) => {
                        eprintln!("{why}");
                        Ok(1)
                    }
                    Ok(policy) => {
                        let snap = policies::Snapshot::compile(&policy, 1);
                        println!(
                            "{} file(s) OK: {} organisations, {} services, {} instruments, {} grants",
                            files.len(),
                            policy.organisations.len(),
                            policy.services.len(),
                            policy.instruments.len(),
                            snap.grant_count()
                        );
                        Ok(0)
                    }
                    Err(errors) => {
                        for e in &errors.0 {
                            eprintln!("{e}");
                        }
                        eprintln!("{} problem(s) found", errors.0.len());
                        Ok(1)
                    }
                }
            }
            Command::Policy { command: PolicyCommand::Import { config, files } } => {
                let cfg = Config::load(&config, std::env::vars())?;
                let (changes, audit) = offline_policy(&cfg)?;
                let files = crate::policy::bundle_files(&files)?;
                let result = match policies::bundle::load_files(&files) {
                    Ok(policy) if let Err(why) = crate::policy::import_guard(&policy, None) => Err(why),
                    Ok(policy) => {
                        let what = format!("imported {} bundle file(s) with passerelle policy import", files.len());
                        let op = "passerelle policy import";
                        changes
                            .import(&crate::policy::Actor::OPERATOR, op, policy, what)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(errors) => Err(errors.to_string()),
                };
                audit.close();
                match result {
                    Ok(change) => {
                        println!("policy version {} in the store ({})", change.version, change.summary);
                        Ok(0)
                    }
                    Err(why) => {
                        eprintln!("nothing imported:\n{why}");
                        Ok(1)
                    }
                }
            }
            Command::Policy { command: PolicyCommand::Export { config } } => {
                let cfg = Config::load(&config, std::env::vars())?;
                let (store, ..) = crate::server::open_store(&cfg)
                    .context("cannot open the store (is the gateway running? then GET /policy/export)")?;
                let handle = crate::policy::PolicyHandle::from_store(store.as_ref())?;
                if handle.version() == 0 {
                    anyhow::bail!("the store holds no policy yet (the gateway imports its bundles at first start)");
                }
                print!("{}", crate::admin::flows::export_toml(&handle.model(), handle.version())?);
                Ok(0)
            }
            Command::Consent { command, target } => consent_command(*command, *target).await,
            Command::Audit { command: AuditCommand::Verify { dir, public_key, config, require_sealed } } => {
                let key = match (public_key, config) {
                    (Some(k), _) => parse_public_key(&k)?,
                    (None, Some(config)) => {
                        let cfg = Config::load(&config, std::env::vars())?;
                        crate::audit::trail::signing_public_key(&cfg.audit.signing_key).map_err(anyhow::Error::msg)?
                    }
                    (None, None) => anyhow::bail!(
                        "verification needs the pinned public key: --public-key HEX|FILE (audit-signing.pub) or --config FILE"
                    ),
                };
                // One chain, or one per replica of a shared store: each verified on its own.
                let mut code = 0;
                for (replica, chain) in crate::audit::verify::chains(&dir).map_err(anyhow::Error::msg)? {
                    let r = crate::audit::verify::verify_dir(&chain, &key).map_err(anyhow::Error::msg)?;
                    let which = replica.map(|n| format!(" (replica {n})")).unwrap_or_default();
                    let summary = format!(
                        "{} segment(s), records {}..{} ({} records), {} checkpoint(s), sealed up to record {}, {} unsealed",
                        r.segments, r.first_seq, r.last_seq, r.records, r.checkpoints, r.sealed_to, r.unsealed
                    );
                    match r.problem {
                        None if require_sealed && r.unsealed > 0 => {
                            println!(
                                "audit trail{which} does NOT verify: records {}..{} are sealed by no checkpoint (--require-sealed)",
                                r.last_seq - r.unsealed + 1,
                                r.last_seq
                            );
                            code = 1;
                        }
                        None => println!("audit trail{which} verifies: {summary}"),
                        Some(p) => {
                            println!("audit trail{which} does NOT verify: {p}");
                            println!("read before the problem: {summary}");
                            code = 1;
                        }
                    }
                }
                Ok(code)
            }
            Command::Audit { command: AuditCommand::Export { dir, from_seq, to_seq, from, to, format } } => {
                if format != "jsonl" {
                    anyhow::bail!("unknown format '{format}': only jsonl");
                }
                let selection = if from.is_some() || to.is_some() {
                    let from_ms = from.as_deref().map(|s| parse_time_ms(s, false)).transpose()?.unwrap_or(0);
                    let to_ms = to.as_deref().map(|s| parse_time_ms(s, true)).transpose()?.unwrap_or(u64::MAX);
                    crate::audit::verify::Selection::Time { from_ms, to_ms }
                } else {
                    crate::audit::verify::Selection::Seq { from: from_seq.unwrap_or(1), to: to_seq }
                };
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let mut n = 0;
                for (replica, chain) in crate::audit::verify::chains(&dir).map_err(anyhow::Error::msg)? {
                    if let Some(name) = &replica {
                        // Each replica's chain verifies on its own: a line names the chain
                        // whose records and checkpoints follow.
                        let line = serde_json::json!({ "type": "chain", "replica": name });
                        std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes())?;
                    }
                    n += crate::audit::verify::export(&chain, selection, &mut out).map_err(anyhow::Error::msg)?;
                }
                std::io::Write::flush(&mut out)?;
                eprintln!("{n} record(s) exported");
                Ok(0)
            }
            Command::Audit { command: AuditCommand::VerifyExport { file, public_key } } => {
                let key = parse_public_key(&public_key)?;
                let text =
                    std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
                match crate::audit::verify::verify_export(&text, &key) {
                    Ok(reports) => {
                        for r in reports {
                            let which = r.replica.map(|n| format!(" (replica {n})")).unwrap_or_default();
                            if r.from_seq == 0 {
                                println!("export{which} verifies: no records selected");
                                continue;
                            }
                            let anchor = r.anchor.map_or("the start of the trail".to_owned(), |a| format!("checkpoint {a}"));
                            println!(
                                "export{which} verifies: records {}..{}, anchored at {anchor}, sealed at checkpoint {} ({} context record(s))",
                                r.from_seq, r.to_seq, r.seal, r.context
                            );
                        }
                        Ok(0)
                    }
                    Err(problem) => {
                        println!("export does NOT verify: {problem}");
                        Ok(1)
                    }
                }
            }
            Command::Audit {
                command:
                    AuditCommand::Generate { dir, records, years, until, subjects, organisations, in_flight, index_backlog },
            } => {
                let end_ms = match until {
                    Some(t) => parse_time_ms(&t, true)?,
                    None => time::OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000,
                };
                let plan = crate::audit::generate::Plan { records, years, subjects, organisations, end_ms };
                plan.check().map_err(anyhow::Error::msg)?;
                generate_trail(&dir, plan, in_flight, index_backlog).await?;
                Ok(0)
            }
            Command::Audit { command: AuditCommand::Prune { dir, retention_days, config } } => {
                let cfg = Config::load(&config, std::env::vars())?;
                let (store, ..) = crate::server::open_store(&cfg).context(
                    "cannot open the store to read the sources' minimum retention (a running gateway prunes on its own)",
                )?;
                let handle = crate::policy::PolicyHandle::from_store(store.as_ref())?;
                if let Some((floor, source)) = handle.model().audit_retention_floor()
                    && retention_days < floor
                {
                    eprintln!(
                        "refused: source '{source}' requires its audit records to be kept {floor} days; --retention-days {retention_days} is shorter"
                    );
                    return Ok(2);
                }
                let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64 * 1000;
                let cutoff = now.saturating_sub(u64::from(retention_days) * 86_400_000);
                let removed = crate::audit::verify::prune(&dir, cutoff).map_err(anyhow::Error::msg)?;
                for p in &removed {
                    println!("removed {}", p.display());
                }
                println!("{} segment(s) removed", removed.len());
                Ok(0)
            }
            Command::Sandbox { source, listen } => {
                init_tracing(LogFormat::Text, "info");
                let signal = shutdown_signal();
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
                let Some((_, serve)) = demo::SANDBOXES.iter().find(|(name, _)| *name == source) else {
                    let known: Vec<&str> = demo::SANDBOXES.iter().map(|(n, _)| *n).collect();
                    anyhow::bail!("unknown source '{source}'; known: {}", known.join(", "));
                };
                let server = serve(listener)?;
                println!("sandbox {source} on {}", server.url());
                // An association to ask for (not personal data), for load tests and curl.
                if source == "associations"
                    && let Some(v) = demo::association()
                {
                    println!("example vCode: {v}");
                }
                signal.await;
                Ok(0)
            }
        }
    })
}

/// Registers the SIGTERM and SIGINT handlers now — a signal that arrives from here on is
/// caught, even before anything awaits it — and returns the future that resolves on the first.
/// Called before the listeners are bound: once a port accepts, SIGTERM means a graceful stop.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        if let (Ok(mut term), Ok(mut int)) = handlers {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// `--help` explains every flag and argument of every command.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "passerelle", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
