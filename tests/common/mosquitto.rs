//! A private Mosquitto broker for a test: its own config, port and persistence directory in a
//! temporary directory, killed when dropped. Never the machine's shared broker on 1883.
//! The broker itself is the demo's ([`venuetrace::demo::broker`]); this adds the temporary
//! directory and turns failures into panics with their reason.
//!
//! `scripts/test` installs the `mosquitto` package when missing; a missing binary fails the
//! test with that advice rather than skipping it.

#![allow(dead_code)]

use venuetrace::demo::broker::{self, BrokerError};

/// A running private broker.
pub struct Broker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    // Dropped in this order: the broker stops before its directory goes.
    inner: broker::Broker,
    _dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (bound, then released for the broker to take).
pub fn free_port() -> u16 {
    broker::free_port().expect("a free port")
}

impl Broker {
    /// Starts a broker with persistence on (sessions and queued QoS 1 messages survive a
    /// restart, as on a real deployment).
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary =
            broker::find_binary().unwrap_or_else(|| panic!("{}", BrokerError::NotInstalled));
        let inner = broker::Broker::start(&binary, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            port: inner.port(),
            inner,
            _dir: dir,
        }
    }

    /// Stops the broker (SIGTERM: it saves its persistent state) and waits for it.
    pub fn stop(&mut self) {
        self.inner.stop();
    }

    /// Starts it again on the same port with the same state.
    pub fn restart(&mut self) {
        self.inner.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        self.inner.log()
    }
}
