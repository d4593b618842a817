//! `passerelle`: parse the command line and hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = gateway::cli::Cli::parse();
    match gateway::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("passerelle: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
