//! How both daemons run as Linux processes: logging to stderr (journald under systemd) and
//! the signals that stop them. Shared by `venuetrace-gateway run` and
//! `venuetrace-authority run`; what each daemon does on shutdown is its own business.

use crate::config_schema::LogFormat;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Sets up logging to stderr (journald takes it from there under systemd). `RUST_LOG`, when
/// set, overrides the configured level (for a one-off debugging run).
pub fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Under systemd, journald stamps each line itself: leave the time out.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match (format, under_journald) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // Already initialised (tests calling in twice): keep the first.
    let _ = result;
}

/// Cancels `shutdown` on SIGTERM or SIGINT. SIGHUP — whose default action would kill the
/// process — is acknowledged and logged: reloading the configuration at run time is not
/// supported yet, so the service must be restarted to apply changes.
pub async fn watch_signals(shutdown: CancellationToken) {
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
            _ = hup.recv() => warn!("SIGHUP: configuration reload is not supported yet; restart the service to apply changes"),
        }
    }
    shutdown.cancel();
}
