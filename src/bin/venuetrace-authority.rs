//! `venuetrace-authority`: parse the command line, run the command, map errors to sysexits codes.
//! Everything else lives in `venuetrace::authority`.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use venuetrace::authority::{self, Cli};
use venuetrace::exit::{self, Exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(&e).into(),
    };
    let mut stdout = std::io::stdout().lock();
    let result = authority::run(cli, &mut stdout).and_then(|()| {
        stdout
            .flush()
            .map_err(|e| authority::keys::KeysError::Output(e).into())
    });
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) if exit::is_broken_pipe(&e) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("venuetrace-authority: error: {}", exit::describe(&e));
            e.exit().into()
        }
    }
}
