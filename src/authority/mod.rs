//! The `venuetrace-authority` commands: argument definitions ([`cli`]) and what each command
//! does ([`keys`]). The binary parses arguments, calls [`run`] and maps the error to an exit
//! code; everything else is here, so tests and man-page generation see the same definitions.

pub mod cli;
pub mod keys;
pub mod ingest;
pub mod store;

use crate::exit::Exit;
use std::io::Write;

pub use cli::{Cli, Command};

/// A command that failed: what to tell the user, and which exit code that is.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A `keys` command failed.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
}

impl CommandError {
    /// The sysexits code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::Keys(e) => e.exit(),
        }
    }
}

/// Runs one parsed command line, writing results to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CommandError> {
    match cli.command {
        Command::Keys(keys) => keys::run(keys, out)?,
    }
    Ok(())
}
