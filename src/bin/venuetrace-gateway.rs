//! `venuetrace-gateway`: parse the command line, run the command, map errors to sysexits codes.
//! Everything else lives in `venuetrace::gateway`.

use clap::Parser;
use std::process::ExitCode;
use venuetrace::exit::{self, Exit};
use venuetrace::gateway::Cli;

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => match venuetrace::gateway::run(cli) {
            Ok(()) => Exit::Ok.into(),
            Err(e) => {
                eprintln!("venuetrace-gateway: error: {}", exit::describe(&e));
                e.exit().into()
            }
        },
        Err(e) => exit::clap_error(&e).into(),
    }
}
