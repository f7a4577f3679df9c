//! What the demo reads after the run, from the files the daemons leave: the batches the
//! authority stored and quarantined (its SQLite store, opened read-only), and each gateway's
//! sealed count and unreceipted batches (its outbox).
//!
//! Owns only these reads; the schemas are the authority's ([`crate::authority::store`]) and
//! the gateway's ([`crate::gateway::outbox`]). Run after the daemons have stopped.

use super::DemoError;
use super::report::StoredBatch;
use crate::crypto::INTERVAL_SECONDS;
use crate::gateway::outbox::{Outbox, OutboxOptions};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::Path;

/// The authority's stored batches by gateway id, and how many envelopes it quarantined.
pub fn authority_batches(
    database: &Path,
) -> Result<(HashMap<String, Vec<StoredBatch>>, u64), DemoError> {
    let fail = |source: rusqlite::Error| DemoError::Store {
        what: format!("read the batches in {}", database.display()),
        source,
    };
    let conn =
        Connection::open_with_flags(database, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
    let mut stmt = conn
        .prepare(
            "SELECT gateway_id, sequence, window_start_enin, window_minutes, sightings, \
             received_ms FROM batch",
        )
        .map_err(fail)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                StoredBatch {
                    sequence: r.get::<_, i64>(1)?.max(0) as u64,
                    window_start_unix_s: r.get::<_, i64>(2)? * INTERVAL_SECONDS as i64,
                    window_minutes: r.get::<_, i64>(3)?.clamp(0, i64::from(u32::MAX)) as u32,
                    sightings: r.get::<_, i64>(4)?.max(0) as u64,
                    received_ms: r.get(5)?,
                },
            ))
        })
        .map_err(fail)?;
    let mut by_gateway: HashMap<String, Vec<StoredBatch>> = HashMap::new();
    for row in rows {
        let (gateway, batch) = row.map_err(fail)?;
        by_gateway.entry(gateway).or_default().push(batch);
    }
    let quarantined: i64 = conn
        .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
        .map_err(fail)?;
    Ok((by_gateway, quarantined.max(0) as u64))
}

/// A gateway's outbox: batches it ever sealed (next sequence − 1) and batches still waiting
/// for a receipt.
pub fn outbox_counts(path: &Path) -> Result<(u64, u64), DemoError> {
    let fail = |source| DemoError::Outbox {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let outbox = Outbox::open(path, OutboxOptions::default()).map_err(fail)?;
    let sealed = outbox.next_sequence().map_err(fail)?.saturating_sub(1);
    let left = outbox.depth().map_err(fail)?.batches;
    Ok((sealed, left))
}
