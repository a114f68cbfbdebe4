//! The `sslf` binary: parse, run, print errors once, map them to exit codes.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = sslf::cli::Cli::parse();
    // Under mpirun (built with the `mpi` feature) this is every rank's MPI world.
    let comm = match sslf::comm::world() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sslf: error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match sslf::cli::run_with(cli, &*comm) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if comm.size() > 1 => {
            // One failed rank ends them all: no rank is left waiting in a collective.
            eprintln!("sslf: error: rank {} of {}: {e}", comm.rank(), comm.size());
            comm.abort(e.exit_code() as i32)
        }
        Err(e) => {
            eprintln!("sslf: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
