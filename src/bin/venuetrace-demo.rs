//! `venuetrace-demo`: parse the command line, run the demo, map errors to exit codes.
//! Everything else lives in `venuetrace::demo`; `./scripts/demo` builds and runs this.

use clap::Parser;
use std::process::ExitCode;
use venuetrace::demo::Cli;
use venuetrace::exit::{self, Exit};

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => match venuetrace::demo::run(cli) {
            Ok(()) => Exit::Ok.into(),
            Err(e) => {
                eprintln!("venuetrace-demo: error: {}", exit::describe(&e));
                ExitCode::from(e.exit_code())
            }
        },
        Err(e) => exit::clap_error(&e).into(),
    }
}
