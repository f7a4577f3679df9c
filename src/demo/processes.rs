//! The demo's child processes: the gateways and the authority as long-running daemons whose
//! JSON logs are copied to files and watched line by line, one-shot commands
//! (`keygen`, `gateways add`, `keys import`, `exposures`), and the stop request that every
//! wait checks.
//!
//! Owns spawning, log pumping (one thread per daemon, ending with its stderr), waiting with a
//! deadline and stopping: SIGTERM first so a daemon flushes and logs its counters, SIGKILL
//! after a grace period. What the log lines mean is the caller's (a watcher callback).

use super::DemoError;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A stop request (the number of the signal that asked for it), shared between the signal
/// watcher and the demo's thread.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicI32>);

impl Stop {
    /// Asks the demo to stop because of signal `signo`.
    pub fn request(&self, signo: i32) {
        self.0.store(signo, Ordering::SeqCst);
    }

    /// The signal that asked for a stop, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signo => Some(signo),
        }
    }

    /// `Err(Interrupted)` once a stop was requested.
    pub fn check(&self) -> Result<(), DemoError> {
        match self.requested() {
            Some(signo) => Err(DemoError::Interrupted(signo)),
            None => Ok(()),
        }
    }
}

/// One line of a daemon's JSON log (`log.format = "json"`): when, what, and its fields.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    /// The event's time, Unix ms.
    pub timestamp_ms: Option<i64>,
    /// The event's message.
    pub message: String,
    /// Its structured fields (the message excluded).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl LogLine {
    /// Parses a `tracing-subscriber` JSON line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        let mut fields = value.get("fields")?.as_object()?.clone();
        let message = fields.remove("message")?.as_str()?.to_owned();
        let timestamp_ms = value
            .get("timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_millisecond());
        Some(Self {
            timestamp_ms,
            message,
            fields,
        })
    }

    /// A numeric field.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.fields.get(name).and_then(serde_json::Value::as_u64)
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(serde_json::Value::as_str)
    }
}

/// A command for one of the venuetrace binaries, without the parts of this process's
/// environment that would change what the demo configured: `VENUETRACE_GATEWAY__*` and
/// `VENUETRACE_AUTHORITY__*` overrides, systemd's `CREDENTIALS_DIRECTORY` (which would move
/// the private keys) and `RUST_LOG` (which could hide the log lines the demo follows).
pub fn venuetrace(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("VENUETRACE_GATEWAY__")
            || text.starts_with("VENUETRACE_AUTHORITY__")
            || text == "CREDENTIALS_DIRECTORY"
            || text == "RUST_LOG"
        {
            command.env_remove(&name);
        }
    }
    command
}

/// A running daemon: its stderr is appended to a log file and handed to a watcher.
pub struct Daemon {
    name: String,
    child: Option<Child>,
    pump: Option<JoinHandle<()>>,
    log: PathBuf,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("name", &self.name)
            .field("log", &self.log)
            .finish()
    }
}

impl Daemon {
    /// Starts `command` (stdin and stdout closed); every stderr line goes to `log` and then
    /// to `watch`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        mut watch: impl FnMut(&str) + Send + 'static,
    ) -> Result<Self, DemoError> {
        let mut file = std::fs::File::create(log).map_err(|source| DemoError::Io {
            what: format!("create {}", log.display()),
            source,
        })?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DemoError::Io {
                what: format!("start {name}"),
                source,
            })?;
        let stderr = child.stderr.take();
        let pump = std::thread::Builder::new()
            .name(format!("log {name}"))
            .spawn(move || {
                let Some(stderr) = stderr else { return };
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // A full disk only loses the log copy; the watcher still sees the line.
                    let _ = writeln!(file, "{line}");
                    watch(&line);
                }
            })
            .map_err(|source| DemoError::Io {
                what: format!("start the log thread of {name}"),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            pump: Some(pump),
            log: log.to_owned(),
        })
    }

    /// Its name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its exit status if it has exited (its log then fully read).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, DemoError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.join_pump();
                Ok(Some(status))
            }
            Ok(None) => Ok(None),
            Err(source) => Err(DemoError::Io {
                what: format!("wait for {}", self.name),
                source,
            }),
        }
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL. Returns its exit status
    /// (`None` if it had to be killed or was already reaped).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // `kill` (procps) rather than a libc binding: one signal, no new dependency.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        self.join_pump();
        status
    }

    fn join_pump(&mut self) {
        if let Some(pump) = self.pump.take() {
            let _ = pump.join();
        }
    }

    /// The last `n` lines of its log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

/// Runs `bin args…` to completion and returns its stdout; a failure is an error with its
/// stderr. Refuses to start once a stop was requested.
pub fn command(bin: &Path, args: &[&str], stop: &Stop) -> Result<String, DemoError> {
    stop.check()?;
    let out = venuetrace(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DemoError::Io {
            what: format!("run {}", bin.display()),
            source,
        })?;
    stop.check()?;
    if !out.status.success() {
        return Err(DemoError::Step {
            step: format!(
                "{} {}",
                bin.file_name().map_or_else(
                    || bin.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                ),
                args.join(" ")
            ),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tracing JSON line gives its time in ms, its message and its fields; other text
    /// gives nothing.
    #[test]
    fn parses_json_log_lines() {
        let line = r#"{"timestamp":"2026-01-02T03:04:05.678901Z","level":"INFO","fields":{"message":"sealed batch","batch_id":"gw-a:7","sightings":12},"span":{"name":"x"}}"#;
        let parsed = LogLine::parse(line).expect("a log line");
        assert_eq!(parsed.message, "sealed batch");
        assert_eq!(parsed.str("batch_id"), Some("gw-a:7"));
        assert_eq!(parsed.u64("sightings"), Some(12));
        assert_eq!(parsed.timestamp_ms, Some(1_767_323_045_678));
        assert_eq!(LogLine::parse("2026-01-02 INFO sealed batch"), None);
    }

    /// A stop request is seen by every check, with its signal.
    #[test]
    fn stop_requests_are_shared() {
        let stop = Stop::default();
        let seen = stop.clone();
        assert!(seen.check().is_ok());
        stop.request(15);
        assert_eq!(seen.requested(), Some(15));
        assert!(matches!(seen.check(), Err(DemoError::Interrupted(15))));
    }
}
