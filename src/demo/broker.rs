//! A private Mosquitto broker: its own configuration, port and persistence in a directory the
//! caller owns, listening on 127.0.0.1 only, stopped when dropped. Never the machine's shared
//! broker on 1883. Used by the demo and by the tests (`tests/common/mosquitto.rs`).
//!
//! Owns finding the `mosquitto` binary, picking a free port, starting, waiting until it
//! listens, and stopping. Installing the package is `scripts/demo`'s and `scripts/test`'s job.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and local installs put the broker.
const CANDIDATES: [&str; 4] = [
    "/usr/sbin/mosquitto",
    "/usr/bin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/usr/local/bin/mosquitto",
];

/// How long a starting broker may take to listen.
const LISTEN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No `mosquitto` binary.
    #[error(
        "mosquitto is not installed (looked in {}): ./scripts/demo and ./scripts/test install \
         it, or run apt install mosquitto",
        CANDIDATES.join(", ")
    )]
    NotInstalled,
    /// No free port could be found.
    #[error("cannot find a free TCP port on 127.0.0.1 for the broker")]
    NoPort(#[source] std::io::Error),
    /// The configuration could not be written.
    #[error("cannot write the broker configuration {}", .path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("cannot start {}", .binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It started but did not listen in time (or exited).
    #[error("mosquitto did not listen on 127.0.0.1:{port} within 10 s; its log:\n{log}")]
    NotListening {
        /// The port.
        port: u16,
        /// The broker's log so far.
        log: String,
    },
}

/// The installed `mosquitto` binary, if any.
pub fn find_binary() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the broker to take).
pub fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A running private broker.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts `binary` (see [`find_binary`]) on a free port with its configuration, log and
    /// persistence in `dir` (which must exist). Persistence is on: sessions and queued QoS 1
    /// messages survive [`restart`](Self::restart), as on a real deployment.
    pub fn start(binary: &Path, dir: &Path) -> Result<Self, BrokerError> {
        let mut broker = Self {
            port: free_port().map_err(BrokerError::NoPort)?,
            dir: dir.to_owned(),
            binary: binary.to_owned(),
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), BrokerError> {
        let conf = self.dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {dir}/\nautosave_interval 1\nlog_dest file {dir}/mosquitto.log\n\
             max_queued_messages 100000\n",
            port = self.port,
            dir = self.dir.display()
        );
        std::fs::write(&conf, text).map_err(|source| BrokerError::Config {
            path: conf.clone(),
            source,
        })?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BrokerError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + LISTEN_DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() >= deadline {
                self.kill();
                return Err(BrokerError::NotListening {
                    port: self.port,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the broker (SIGTERM: it saves its persistent state) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `kill` (procps) rather than a libc binding: one signal, no new dependency.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same state.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.stop();
        self.spawn()
    }

    /// The broker's log so far (empty if there is none yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
