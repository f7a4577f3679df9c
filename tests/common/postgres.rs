//! A private PostgreSQL cluster for tests: `initdb` in a temporary directory, a server on
//! 127.0.0.1 and a free port (its Unix socket in that directory), stopped when the last test
//! using it drops it — on a panic too. Never the machine's own server on 5432.
//!
//! With `VENUETRACE_TEST_DATABASE_URL` set (a URL or key=value string with rights to create
//! databases), that server is used instead. Either way each test gets a fresh database,
//! dropped after it.
//!
//! `scripts/test` installs the `postgresql` package when missing; missing binaries fail the
//! test with that advice rather than skipping it. `initdb` refuses to run as root, so as root
//! the cluster runs as the `postgres` user (`runuser`).

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A PostgreSQL server for one test: private, or the one `VENUETRACE_TEST_DATABASE_URL` names.
pub struct PgCluster {
    /// Connection string of its maintenance database (`postgres`).
    admin_url: String,
    /// The private server, stopped when its last user drops it; `None` when using the
    /// configured one.
    server: Option<Arc<Server>>,
}

/// A fresh database, dropped with this value.
pub struct TestDb {
    /// Its connection string.
    pub url: String,
    name: String,
    admin_url: String,
}

struct Server {
    admin_url: String,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    // Dropped after the server has stopped (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install the \
             `postgresql` package (scripts/test does), or set VENUETRACE_TEST_DATABASE_URL"
        )
    })
}

/// Runs `program` (from `bin`) with `args`, as the `postgres` user if asked; panics with its
/// output if it fails.
fn run(bin: &Path, as_postgres: bool, program: &str, args: &[&str]) {
    let path = bin.join(program);
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Connects to `url`, retrying for a while (a server just started may not accept yet).
fn connect(url: &str) -> ::postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ::postgres::Client::connect(url, ::postgres::NoTls) {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => panic!("connecting to {url}: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

impl PgCluster {
    /// Starts a private cluster, or uses `VENUETRACE_TEST_DATABASE_URL`'s server.
    ///
    /// Tests of one binary running at the same time share the private cluster (each with its
    /// own databases): `initdb` costs seconds on two cores. It stops when the last of them
    /// drops it, on a panic too; a test starting later starts another.
    pub fn start() -> Self {
        if let Some(url) = std::env::var("VENUETRACE_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Self {
                admin_url: url,
                server: None,
            };
        }
        static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());
        // A test that panicked while holding the lock left nothing half-done in it.
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let server = shared.upgrade().unwrap_or_else(|| {
            let server = Arc::new(Server::start());
            *shared = Arc::downgrade(&server);
            server
        });
        Self {
            admin_url: server.admin_url.clone(),
            server: Some(server),
        }
    }

    /// A fresh, empty database.
    pub fn database(&self) -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "venuetrace_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = connect(&self.admin_url);
        // A leftover of an earlier run of the same pid on a configured server goes first.
        // Two statements: one simple query of several would be a transaction block, where
        // CREATE DATABASE is refused.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        TestDb {
            url: with_dbname(&self.admin_url, &name),
            name,
            admin_url: self.admin_url.clone(),
        }
    }

    /// Connection string of the maintenance database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Restarts the private server (`pg_ctl restart -m fast`: sessions are cut, as in a real
    /// restart), waiting until it accepts connections again. Every database of this cluster
    /// is affected, so a test doing this must not share the cluster with tests running at the
    /// same time. Panics with a configured server (VENUETRACE_TEST_DATABASE_URL), which tests
    /// must not restart.
    pub fn restart(&self) {
        let server = self
            .server
            .as_ref()
            .expect("restarting needs the private cluster: unset VENUETRACE_TEST_DATABASE_URL");
        let data = server.data.to_str().expect("UTF-8 temp path");
        // Logging to the file, as at the start: a server logging to pg_ctl's stdout would
        // hold the pipe `run` reads to the end.
        let log = server.data.with_file_name("server.log");
        run(
            &server.bin,
            server.as_postgres,
            "pg_ctl",
            &[
                "restart",
                "-m",
                "fast",
                "-w",
                "-D",
                data,
                "-l",
                log.to_str().expect("UTF-8 temp path"),
            ],
        );
    }
}

/// `url` naming database `name` instead (URL or key=value form; in the latter the last
/// `dbname` wins).
fn with_dbname(url: &str, name: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let query = tail.find('?').map_or("", |i| &tail[i..]);
            format!("{scheme}://{authority}/{name}{query}")
        }
        None => format!("{url} dbname={name}"),
    }
}

impl TestDb {
    /// Its connection string as a `postgres://` URL: the form `authority.database` and
    /// `--database` take (the private cluster's is key=value).
    pub fn uri(&self) -> String {
        if self.url.contains("://") {
            return self.url.clone();
        }
        let config: ::postgres::Config = self.url.parse().expect("a valid connection string");
        let host = match config.get_hosts() {
            [::postgres::config::Host::Tcp(host)] => host.clone(),
            hosts => panic!(
                "test database {}: expected one TCP host, got {hosts:?}",
                self.url
            ),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        format!("postgres://{user}{password}@{host}:{port}/{}", self.name)
    }

    /// A new connection to it, for inspecting what a store wrote.
    pub fn client(&self) -> ::postgres::Client {
        connect(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a private cluster goes with its directory anyway.
        if let Ok(mut admin) = ::postgres::Client::connect(&self.admin_url, ::postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

impl Server {
    /// `initdb` and `pg_ctl start` in a new temporary directory.
    fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        // The directory is ours: its owner is this process's user.
        let as_postgres = std::fs::metadata(dir.path()).expect("stat tempdir").uid() == 0;
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres {}", dir.path().display());
        }
        let data = dir.path().join("data");
        let data_arg = data.to_str().expect("UTF-8 temp path");
        run(
            &bin,
            as_postgres,
            "initdb",
            &[
                "-D",
                data_arg,
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let port = free_port();
        let options = format!(
            "-k {} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        let admin_url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        // Built before starting, so a failed start still runs the stop in `Drop`.
        let server = Server {
            admin_url: admin_url.clone(),
            bin: bin.clone(),
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        run(
            &bin,
            as_postgres,
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                data_arg,
                "-l",
                log.to_str().expect("UTF-8 temp path"),
                "-o",
                &options,
            ],
        );
        drop(connect(&admin_url));
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Immediate: nothing in a test cluster needs a clean shutdown. Not `run`: a panic
        // inside a drop during unwinding would abort the test binary.
        let path = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}
