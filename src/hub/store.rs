//! The alert store: every transition and the active set in an embedded SQLite database
//! (`DATA_DIR/alerts.db`, via rusqlite).
//!
//! Tables:
//! - `transitions(seq, id, state, domain, severity, cell, ts, alert)`: one row per published
//!   transition, `seq` being the hub's sequence number and `ts` the transition's event time;
//!   `alert` is the JSON object. Rows older than the configured history are pruned, and rows
//!   of a personal domain (`health`) older than that domain's retention, overwritten on disk.
//! - `active(id, alert, pending_clear)`: the active set as the hub holds it, rewritten in the same
//!   transaction as the transitions that changed it, so a restart resumes exactly.
//! - `meta(key, value)`: the city clock at the last write.
//!
//! The database runs in WAL mode with `synchronous = NORMAL`: a transaction per batch of
//! transitions, durable across a process crash (an OS crash may lose the last batch).

use super::lifecycle::Entry;
use crate::alerts::{Alert, AlertState};
use citybrain_dataflows::Ms;
use rusqlite::{Connection, OptionalExtension, params, types::Value as SqlValue};
use std::path::Path;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("alert store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored alert is not valid JSON (a corrupted or foreign database).
    #[error("alert store: a stored alert cannot be read: {0}")]
    Json(#[from] serde_json::Error),
    /// The store's writer thread could not be started.
    #[error("alert store: cannot start its thread: {0}")]
    Thread(String),
}

/// A history query (§8 filters plus paging).
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only transitions into this state.
    pub state: Option<AlertState>,
    /// Only these domains.
    pub domains: Option<Vec<String>>,
    /// Only these severities.
    pub severities: Option<Vec<String>>,
    /// Only these cells (`None`: any cell, also none).
    pub cells: Option<Vec<String>>,
    /// Transitions at or after this event time, epoch ms.
    pub since: Option<Ms>,
    /// Transitions before this event time, epoch ms.
    pub until: Option<Ms>,
    /// Only transitions with a sequence number above this (the paging cursor).
    pub after: Option<u64>,
    /// At most this many rows.
    pub limit: usize,
}

/// One stored transition.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StoredTransition {
    /// The hub's sequence number (the paging cursor).
    pub seq: u64,
    /// The transition's event time, epoch ms.
    pub ts: Ms,
    /// The alert object after the transition.
    #[serde(flatten)]
    pub alert: Alert,
}

/// The open database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        // A writer holding the database (a backup, another process) fails a commit after a
        // second; the hub retries it.
        conn.busy_timeout(std::time::Duration::from_secs(1))?;
        Self::init(conn)
    }

    /// An in-memory database (tests, and `replay`-like uses without a data dir).
    pub fn in_memory() -> Result<Store, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Deleted rows (personal data past its retention) are overwritten, not just unlinked.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS transitions (
                seq INTEGER PRIMARY KEY,
                id TEXT NOT NULL,
                state TEXT NOT NULL,
                domain TEXT NOT NULL,
                severity TEXT NOT NULL,
                cell TEXT,
                ts INTEGER NOT NULL,
                alert TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS transitions_ts ON transitions (ts);
            CREATE TABLE IF NOT EXISTS active (
                id TEXT PRIMARY KEY,
                alert TEXT NOT NULL,
                pending_clear INTEGER
            );
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        Ok(Store { conn })
    }

    /// The stored active set, the clock and the last sequence number.
    pub fn load(&self) -> Result<(Vec<Entry>, Ms, u64), StoreError> {
        let mut stmt = self.conn.prepare("SELECT alert, pending_clear FROM active ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?.map(|v| v.max(0) as Ms)))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (json, pending_clear) = row?;
            entries.push(Entry { alert: serde_json::from_str(&json)?, pending_clear, unconfirmed: true });
        }
        let clock = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| r.get::<_, i64>(0))
            .optional()?
            .map_or(0, |v| v.max(0) as Ms);
        let seq = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM transitions", [], |r| r.get::<_, i64>(0))?;
        Ok((entries, clock, seq.max(0) as u64))
    }

    /// Writes, in one transaction, the published transitions `(seq, time, alert)`, the new state
    /// of the entries that changed (`Some`) or went (`None`), and the clock.
    pub fn commit(
        &mut self,
        transitions: &[(u64, Ms, &Alert)],
        changed: &[(String, Option<&Entry>)],
        clock: Ms,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO transitions (seq, id, state, domain, severity, cell, ts, alert)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (seq, ts, a) in transitions {
                insert.execute(params![
                    *seq as i64,
                    a.id,
                    a.state.as_str(),
                    a.domain,
                    a.severity.as_str(),
                    a.cell,
                    *ts as i64,
                    serde_json::to_string(a)?
                ])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO active (id, alert, pending_clear) VALUES (?1, ?2, ?3)",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM active WHERE id = ?1")?;
            for (id, entry) in changed {
                match entry {
                    Some(e) => upsert.execute(params![
                        id,
                        serde_json::to_string(&e.alert)?,
                        e.pending_clear.map(|c| c as i64)
                    ])?,
                    None => delete.execute(params![id])?,
                };
            }
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('clock', ?1)",
                params![clock as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes transitions older than `before` (event time), and those of each listed domain
    /// older than its own time; returns how many. When a listed (personal) domain lost rows, the
    /// write-ahead log is checkpointed and truncated: with `secure_delete` on, the deleted rows
    /// are then overwritten in the database file and no old copy is left in the log.
    pub fn prune(&self, before: Ms, by_domain: &[(String, Ms)]) -> Result<usize, StoreError> {
        let mut n = self.conn.execute("DELETE FROM transitions WHERE ts < ?1", params![before as i64])?;
        let mut personal = 0;
        for (domain, before) in by_domain {
            personal += self.conn.execute(
                "DELETE FROM transitions WHERE domain = ?1 AND ts < ?2",
                params![domain, *before as i64],
            )?;
        }
        if personal > 0 {
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        n += personal;
        Ok(n)
    }

    /// The transitions matching `q`, in sequence order.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredTransition>, StoreError> {
        let mut sql = String::from("SELECT seq, ts, alert FROM transitions WHERE seq > ?");
        let mut args: Vec<SqlValue> = vec![SqlValue::Integer(q.after.unwrap_or(0) as i64)];
        let mut add = |clause: &str, v: SqlValue| {
            sql.push_str(clause);
            args.push(v);
        };
        if let Some(s) = q.state {
            add(" AND state = ?", SqlValue::Text(s.as_str().into()));
        }
        if let Some(t) = q.since {
            add(" AND ts >= ?", SqlValue::Integer(t as i64));
        }
        if let Some(t) = q.until {
            add(" AND ts < ?", SqlValue::Integer(t as i64));
        }
        for (column, list) in [("domain", &q.domains), ("severity", &q.severities), ("cell", &q.cells)] {
            if let Some(values) = list {
                sql.push_str(&format!(" AND {column} IN ("));
                for (i, v) in values.iter().enumerate() {
                    sql.push_str(if i == 0 { "?" } else { ", ?" });
                    args.push(SqlValue::Text(v.clone()));
                }
                sql.push(')');
            }
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push(SqlValue::Integer(q.limit as i64));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, ts, json) = row?;
            out.push(StoredTransition {
                seq: seq as u64,
                ts: ts.max(0) as Ms,
                alert: serde_json::from_str(&json)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;

    fn alert(id: &str, domain: &str, subject: serde_json::Value, ts: Ms) -> Alert {
        Alert {
            id: id.into(),
            rule: format!("{domain}.x"),
            severity: Severity::Warning,
            state: AlertState::Raised,
            domain: domain.into(),
            subject,
            cell: Some("c1".into()),
            district: Some("d1".into()),
            raised_ts: ts,
            cleared_ts: None,
            acked_by: None,
            acked_ts: None,
            message: "m".into(),
            ack_note: None,
            escalated: false,
        }
    }

    /// The bytes of the database and its write-ahead log, as text (lossy).
    fn on_disk(path: &Path) -> String {
        let mut text = String::new();
        for p in [path.to_path_buf(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&p) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }

    #[test]
    fn personal_transitions_past_their_retention_are_gone_from_the_disk() -> Result<(), StoreError> {
        let dir = std::env::temp_dir().join(format!("cb-store-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::Thread(e.to_string()))?;
        let path = dir.join("alerts.db");
        let day: Ms = 86_400_000;
        let t0: Ms = 1_767_225_600_000;
        let marker = "PSEUDONYM0123456789abcdef";
        let mut store = Store::open(&path)?;
        let contact = alert("health.contact:x", "health", serde_json::json!({"person": marker}), t0);
        let later =
            alert("health.contact:y", "health", serde_json::json!({"person": "LATER-ONE"}), t0 + 2 * day);
        let road = alert("traffic.incident:s1", "traffic", serde_json::json!({"segment": "ROAD-S1"}), t0);
        store.commit(&[(1, t0, &contact), (2, t0, &road), (3, t0 + 2 * day, &later)], &[], t0 + 2 * day)?;
        assert!(on_disk(&path).contains(marker));

        // Health keeps a day here, everything else a year: only the first contact goes.
        let gone = store.prune(t0 - 365 * day, &[("health".into(), t0 + day)])?;
        assert_eq!(gone, 1);
        let left: Vec<u64> =
            store.history(&HistoryQuery { limit: 10, ..Default::default() })?.iter().map(|t| t.seq).collect();
        assert_eq!(left, [2, 3]);
        let text = on_disk(&path);
        assert!(!text.contains(marker), "the pruned contact is still in the database file or its log");
        assert!(text.contains("ROAD-S1") && text.contains("LATER-ONE"));
        drop(store);
        assert!(!on_disk(&path).contains(marker));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
