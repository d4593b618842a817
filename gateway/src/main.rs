//! `passerelle`: parse the command line and hand over to the library.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the per-call allocations (headers, records, JSON
/// values) cost about 9% of the gateway's CPU under glibc in the load comparison's profile,
/// largely in `_int_malloc`/`_int_free`/`malloc_consolidate`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
