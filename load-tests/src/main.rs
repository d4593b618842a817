//! `passerelle-load`: the mTLS load generator. See the library documentation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use gateway::client::{HttpVersion, MtlsClient};
use load_tests::mix::Mix;
use load_tests::run::{Mode, Settings, run};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Closed,
    Open,
    Handshake,
}

/// Drive a TLS reverse proxy with client certificates and report throughput, latency and CPU
/// per request.
#[derive(Debug, Parser)]
#[command(name = "passerelle-load", version)]
struct Args {
    /// Address of the proxy under test (`127.0.0.1:8443`).
    #[arg(long)]
    target: SocketAddr,
    /// CA bundle that signed the proxy's server certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Client key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The request mix (TOML; see the crate documentation).
    #[arg(long)]
    mix: PathBuf,
    #[arg(long, value_enum, default_value = "closed")]
    mode: ModeArg,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests per second, in total (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// A process whose CPU time is divided by the requests answered (the proxy under test); the
    /// report gives the whole and the part the kernel counted as system time.
    #[arg(long)]
    pid: Option<u32>,
    /// Open loop: wake at most once per this many microseconds and send every call then due
    /// (0: each call at its own time). No call is sent early, and each call's latency counts
    /// from its own schedule, so the wait for the tick is in the figures.
    #[arg(long, default_value_t = 0)]
    tick_us: u64,
    /// Use HTTP/2 instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = Mix::parse(&std::fs::read_to_string(&args.mix).with_context(|| format!("{}", args.mix.display()))?)?;
    let (prepared, slots) = mix.prepare()?;
    let mode = match (args.mode, args.rate) {
        (ModeArg::Closed, _) => Mode::Closed,
        (ModeArg::Open, Some(rate)) if rate > 0.0 => Mode::Open { rate },
        (ModeArg::Open, _) => anyhow::bail!("--mode open needs --rate"),
        (ModeArg::Handshake, _) => Mode::Handshake,
    };
    let (version, alpn): (HttpVersion, &[&[u8]]) =
        if args.http2 { (HttpVersion::Http2, &[b"h2"]) } else { (HttpVersion::Http1, &[b"http/1.1"]) };
    let mut config = gateway::tls::client_config(
        &std::fs::read(&args.ca).context("--ca")?,
        Some((&std::fs::read(&args.cert).context("--cert")?, &std::fs::read(&args.key).context("--key")?)),
        alpn,
    )?;
    // Every new connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    let client = MtlsClient::from_config(args.target, config, version)?;
    let settings = Settings {
        mode,
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        pid: args.pid,
        tick: Duration::from_micros(args.tick_us),
    };
    // Pinned to one CPU (as soak.py and compare.py run it), a current-thread runtime.
    let runtime = gateway::cli::runtime()?;
    let report = runtime.block_on(run(client, prepared, slots, settings))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
