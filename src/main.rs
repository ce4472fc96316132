//! The `tollgate` binary: parses the command line and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tollgate::cli::run(tollgate::cli::Cli::parse())
}
