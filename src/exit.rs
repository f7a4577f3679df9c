//! Process exit codes, from BSD `sysexits.h`, shared by both binaries.
//!
//! Owns the mapping from "what went wrong" to a number that scripts and systemd can act on.
//! Deciding which error is which kind is left to the command that failed.

use std::process::ExitCode;

/// What kind of failure ended a command; each maps to one sysexits code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok,
    /// 64 `EX_USAGE`: the command line was wrong.
    Usage,
    /// 65 `EX_DATAERR`: the input data was malformed, forged or failed verification.
    DataErr,
    /// 66 `EX_NOINPUT`: an input file did not exist or could not be read.
    NoInput,
    /// 69 `EX_UNAVAILABLE`: a service the command needs (broker, bus, adapter) is unavailable.
    Unavailable,
    /// 70 `EX_SOFTWARE`: an internal error (a bug).
    Software,
    /// 73 `EX_CANTCREAT`: an output file could not be created.
    CantCreat,
    /// 74 `EX_IOERR`: an I/O error while reading or writing.
    IoErr,
    /// 75 `EX_TEMPFAIL`: a temporary failure; trying again later may work.
    TempFail,
    /// 77 `EX_NOPERM`: the command is not permitted (e.g. disabled by the configuration).
    NoPerm,
    /// 78 `EX_CONFIG`: the configuration (or key material given as configuration) is invalid.
    Config,
}

impl Exit {
    /// The numeric sysexits code.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::DataErr => 65,
            Exit::NoInput => 66,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::CantCreat => 73,
            Exit::IoErr => 74,
            Exit::TempFail => 75,
            Exit::NoPerm => 77,
            Exit::Config => 78,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// Prints a command-line parsing outcome the way clap does and says how to exit: `--help` and
/// `--version` are successes, anything else is a usage error (64, where clap alone would use 2).
pub fn clap_error(error: &clap::Error) -> Exit {
    // Printing can only fail if stderr/stdout is gone; there is nobody left to tell.
    let _ = error.print();
    if error.use_stderr() {
        Exit::Usage
    } else {
        Exit::Ok
    }
}

/// An error and its chain of causes on one line: "outer: cause: root cause".
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        // Some libraries print their cause in their own message and also return it as the
        // source (e.g. `der`'s errors); say each part once.
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Whether the error comes from writing to a closed pipe (e.g. output piped into `head`):
/// the reader has what it wanted, so this is not a failure.
pub fn is_broken_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are the sysexits.h values that operators look up.
    #[test]
    fn codes_match_sysexits() {
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Usage,
            Exit::DataErr,
            Exit::NoInput,
            Exit::Unavailable,
            Exit::Software,
            Exit::CantCreat,
            Exit::IoErr,
            Exit::TempFail,
            Exit::NoPerm,
            Exit::Config,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 64, 65, 66, 69, 70, 73, 74, 75, 77, 78]);
    }

    /// A cause that repeats the end of the message so far is said once.
    #[test]
    fn describe_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("bad length at byte 2")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("ASN.1 error: bad length at byte 2")]
        struct Middle(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("not a key")]
        struct Outer(#[source] Middle);
        assert_eq!(
            describe(&Outer(Middle(Inner))),
            "not a key: ASN.1 error: bad length at byte 2"
        );
    }
}
