//! The command line: `serve`, `demo`, `certs init`, `policy check`, `sandbox`.

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
        /// Data-plane port (0 picks a free one).
        #[arg(long, default_value_t = 8443)]
        port: u16,
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
    /// Run one sandbox source on its own.
    Sandbox {
        /// The source: sigedis, associations.
        source: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18001")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load and validate bundle files (or directories of them) together; print every problem
    /// with its file and key. Exits 0 only if there is none.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a dev PKI: CA, server certificate for localhost, organisation and admin client
    /// certificates, and a CRL revoking one of them.
    Init {
        #[arg(long, default_value = "var/pki")]
        dir: PathBuf,
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

/// Runs a parsed command line. Returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => {
                let cfg = Config::load(&config, std::env::vars())?;
                init_tracing(cfg.log.format, &cfg.log.filter);
                let gw = server::start(&cfg).await?;
                let stop = gw.shutdown_handle();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    let _ = stop.send(true);
                });
                gw.wait().await;
                Ok(0)
            }
            Command::Demo { dir, port, smoke } => {
                init_tracing(LogFormat::Text, "warn");
                let port = if smoke && port == 8443 { 0 } else { port };
                let demo = Demo::start(DemoOptions::new(dir, port)).await?;
                if smoke {
                    let checks = demo.smoke().await?;
                    let ok = demo::print_report(&checks);
                    demo.gateway.shutdown().await;
                    return Ok(if ok { 0 } else { 1 });
                }
                println!("Passerelle demo: data plane on https://localhost:{}", demo.gateway.data_addr.port());
                println!("Working directory: {}", demo.dir.display());
                for (name, s) in &demo.sandboxes {
                    println!("Sandbox {name}: {}", s.url());
                }
                println!("\nTry:\n");
                for c in demo.curl_commands() {
                    println!("{c}\n");
                }
                println!("Ctrl-C stops the demo.");
                wait_for_signal().await;
                demo.gateway.shutdown().await;
                Ok(0)
            }
            Command::Certs { command: CertsCommand::Init { dir } } => {
                let (_, paths) = demo::init_pki(&dir, &[])?;
                println!("dev PKI written to {}", paths.dir.display());
                Ok(0)
            }
            Command::Policy { command: PolicyCommand::Check { files } } => {
                let files = crate::policy::bundle_files(&files)?;
                match policies::bundle::load_files(&files) {
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
            Command::Sandbox { source, listen } => {
                init_tracing(LogFormat::Text, "info");
                let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
                let server = match source.as_str() {
                    "sigedis" => adapters::sigedis::sandbox::serve(listener)?,
                    "associations" => adapters::associations::sandbox::serve(listener)?,
                    other => anyhow::bail!("unknown source '{other}'; known: sigedis, associations"),
                };
                println!("sandbox {source} on {}", server.url());
                wait_for_signal().await;
                Ok(0)
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
