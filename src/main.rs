//! The `sslf` binary: parse, run, print errors once, map them to exit codes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sslf::cli::Cli::parse();
    match sslf::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sslf: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
