//! How both daemons run as Linux processes: logging to stderr (journald under systemd) and
//! the signals that stop them. Shared by `venuetrace-gateway run` and
//! `venuetrace-authority run`; what each daemon does on shutdown is its own business.

use crate::config_schema::LogFormat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::{EnvFilter, Registry};

/// The logging set up by [`init_logging`]: lets a configuration reload change the level.
pub struct Logging {
    handle: Option<tracing_subscriber::reload::Handle<EnvFilter, Registry>>,
    env_override: bool,
    /// Where records go: `journal` or `stderr`.
    pub sink: &'static str,
}

impl Logging {
    /// Applies a new `log.level`. Returns false (and changes nothing) when `RUST_LOG`
    /// overrides the configured level or logging was set up elsewhere.
    pub fn set_level(&self, level: &str) -> bool {
        match &self.handle {
            Some(handle) if !self.env_override => handle.reload(EnvFilter::new(level)).is_ok(),
            _ => false,
        }
    }
}

/// The filter for a configured level. Below `trace`, bluer is held to errors: its warnings
/// print D-Bus property values it could not decode, which can be a phone's service data.
fn level_filter(level: &str) -> EnvFilter {
    if level == "trace" {
        EnvFilter::new(level)
    } else {
        EnvFilter::new(format!("{level},bluer=error"))
    }
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` is
/// `DEVICE:INODE` of it, systemd.exec(5)); a redirected stderr is not.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Sets up logging. Under systemd (stderr is the journal stream) records go to the journal
/// natively, with priorities and structured fields (`tracing-journald`); otherwise, or when
/// the journal socket is not there, to stderr as text or JSON. `RUST_LOG`, when set, overrides
/// the configured level (for a one-off debugging run).
pub fn init_logging(level: &str, format: LogFormat) -> Logging {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env_override = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| level_filter(level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let journal = if stderr_is_journal() {
        tracing_journald::layer().ok()
    } else {
        None
    };
    let (output, sink): (Box<dyn Layer<_> + Send + Sync>, _) = match (journal, format) {
        (Some(journal), _) => (journal.boxed(), "journal"),
        (None, LogFormat::Json) => (
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false)
                .json()
                .boxed(),
            "stderr",
        ),
        (None, LogFormat::Text) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false);
            // Under systemd without a journal socket, journald stamps each line itself.
            if std::env::var_os("JOURNAL_STREAM").is_some() {
                (layer.without_time().boxed(), "stderr")
            } else {
                (layer.boxed(), "stderr")
            }
        }
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    // Already initialised (tests calling in twice): keep the first.
    Logging {
        handle: installed.then_some(handle),
        env_override,
        sink,
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT. SIGHUP — whose default action would kill the
/// process — is sent on `reload` when the daemon reloads its configuration; without one it is
/// acknowledged and logged (the service must be restarted to apply changes).
pub async fn watch_signals(shutdown: CancellationToken, reload: Option<mpsc::UnboundedSender<()>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { info!(signal = "SIGINT", "shutting down"); break; }
            _ = hup.recv() => match &reload {
                Some(tx) => {
                    info!(signal = "SIGHUP", "reloading the configuration");
                    let _ = tx.send(());
                }
                None => warn!("SIGHUP: configuration reload is not supported; restart the service to apply changes"),
            },
        }
    }
    shutdown.cancel();
}
