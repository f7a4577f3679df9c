//! The authority store a test runs on, chosen by `VENUETRACE_TEST_STORE`: `sqlite` (the
//! default) or `postgres` (a fresh database of the shared private cluster of
//! [`super::postgres`], or of `VENUETRACE_TEST_DATABASE_URL`'s server). `scripts/test` runs the
//! authority tests once with each.

#![allow(dead_code)]

use super::postgres::{PgCluster, TestDb};
use std::path::Path;
use venuetrace::authority::config::Database;
use venuetrace::authority::service::open_store;
use venuetrace::authority::store::DynStore;

/// Which store the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `VENUETRACE_TEST_STORE`: `sqlite` when unset or empty; anything but the two kinds panics.
pub fn kind() -> StoreKind {
    match std::env::var("VENUETRACE_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => StoreKind::Sqlite,
        Ok("postgres") => StoreKind::Postgres,
        Ok(other) => panic!(
            "VENUETRACE_TEST_STORE={other:?}: accepted values are \"sqlite\" (the default) and \
             \"postgres\""
        ),
    }
}

/// One test's own store; a PostgreSQL database is dropped with it.
pub struct TestStore {
    /// What `authority.database` / `--database` take: an SQLite file in the test's directory,
    /// or a `postgres://` URL.
    pub database: String,
    // Dropped in this order: the database, then (if last) the cluster.
    _db: Option<TestDb>,
    _cluster: Option<PgCluster>,
}

impl TestStore {
    /// A new, empty store of the selected kind (the SQLite file is `dir/authority.sqlite`).
    pub fn new(dir: &Path) -> Self {
        match kind() {
            StoreKind::Sqlite => Self::sqlite(dir),
            StoreKind::Postgres => {
                let cluster = PgCluster::start();
                let db = cluster.database();
                Self {
                    database: db.uri(),
                    _db: Some(db),
                    _cluster: Some(cluster),
                }
            }
        }
    }

    /// An SQLite store whatever is selected, for tests about the SQLite file itself.
    pub fn sqlite(dir: &Path) -> Self {
        let path = dir.join("authority.sqlite");
        Self {
            database: path.to_str().expect("UTF-8 temp path").to_owned(),
            _db: None,
            _cluster: None,
        }
    }

    /// Whether it is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self._db.is_some()
    }

    /// Its parsed form, as the authority sees it.
    pub fn config(&self) -> Database {
        Database::parse(&self.database, Path::new("/")).expect("a valid test database")
    }

    /// A new connection to it (migrated on first open).
    pub fn open(&self) -> DynStore {
        open_store(&self.config()).unwrap_or_else(|e| panic!("opening {}: {e}", self.config()))
    }

    /// How the authority shows it in messages (`Display`: the path, or the redacted URL).
    pub fn display(&self) -> String {
        self.config().to_string()
    }
}
