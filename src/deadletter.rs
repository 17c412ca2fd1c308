//! The dead-letter store of the live service (CONTRACT §2).
//!
//! A message element that fails to decode or validate is never dropped silently: it is counted
//! by reason, logged once per reason (then at most once a minute per reason, with the number of
//! dead letters not logged in between), and appended to a bounded, rotated store of JSON Lines
//! files `dead-letters-NNNNNN.jsonl`, one object per rejected element:
//!
//! ```json
//! {"received_ms": 1767225600000, "topic": "city/grid/sensor/s-1", "reason": "invalid_payload",
//!  "detail": "missing field `kind`", "raw": "{\"sensor\":\"s-1\",\"ts\":1767225600000}"}
//! ```
//!
//! `raw` is the payload as text when it is valid UTF-8, otherwise `"base64:"` followed by its
//! standard base64 encoding (never a lossy conversion).
//!
//! **Privacy (CONTRACT §1).** Personal identifiers are never stored or logged in clear. A
//! payload of a personal topic (`health/case`, `health/trip`, `health/checkin`), and any other
//! payload whose bytes contain `person`, is parsed as JSON and every value of a `person` key, at
//! any depth, is replaced by its pseudonym before it is stored; if it does not parse (or is not
//! UTF-8) `raw` is `"<redacted: N bytes of an unparsable personal payload>"`. Clear ids found
//! this way are also replaced by their pseudonyms in the detail and the topic, and the topic id
//! of `health/case/{id}` and `health/trip/{id}` (which a publisher may have set to the person)
//! is always stored as its pseudonym. Logs never carry raw bytes.
//!
//! Dead letters of such payloads go to their own files, `personal-YYYYMMDD-NNNNNN.jsonl` by day
//! of receipt, deleted once past the health records' retention (CONTRACT §1: public-health
//! records are deleted after it, rejected ones too).
//!
//! Writes are buffered: call [`DeadLetterStore::flush`] on the service's tick and at shutdown. A
//! flush that fails keeps the dead letters for the next one (up to one file's size; beyond that
//! they are counted as not kept, [`DeadLetterStore::unstored`]).

use crate::sink::files::{DailyFiles, RotatingFile};
use anyhow::Result;
use citybrain_dataflows::event::{Rejected, TopicKind};
use citybrain_dataflows::pseudonym::Pseudonymizer;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// How long personal dead letters are kept unless told otherwise: 15 days (the health records'
/// default retention, 14 days + 1 day of grace).
pub const DEFAULT_PERSONAL_RETENTION_MS: u64 = 15 * 86_400_000;

/// The topic of a rejected input as it may be stored or logged, when it is a `health/case` or
/// `health/trip` topic: its id (which a publisher may have set to the person's clear id) replaced
/// by its pseudonym. `None` for any other topic. Shared by this store and by the dead letters and
/// log lines of `citybrain replay` (CONTRACT §1: no clear identifier is logged or dead-lettered).
pub fn personal_topic(prefix: &str, topic: &str, pseudonyms: &Pseudonymizer) -> Option<String> {
    match TopicKind::parse(prefix, topic) {
        Some((TopicKind::HealthCase | TopicKind::Trip, id)) => {
            let head = &topic[..topic.len() - id.len()];
            Some(format!("{head}{}", pseudonyms.pseudonym(id)))
        }
        _ => None,
    }
}

/// At most one log line per reason per this many wall-clock milliseconds (after the first).
const LOG_INTERVAL_MS: u64 = 60_000;

/// The bounded, rotated store of rejected message elements.
#[derive(Debug)]
pub struct DeadLetterStore {
    /// The `dead-letters-NNNNNN.jsonl` files.
    file: RotatingFile,
    /// The dead letters of personal payloads, `personal-YYYYMMDD-NNNNNN.jsonl` by day of
    /// receipt, deleted after `personal_retention_ms`.
    personal: DailyFiles,
    /// How long personal dead letters are kept, ms of wall-clock time.
    personal_retention_ms: u64,
    /// Wall-clock ms of the last expiry of personal dead letters.
    expired_at: u64,
    /// Pseudonyms for personal ids found in raw payloads.
    pseudonyms: Pseudonymizer,
    /// The topic prefix (`city/`).
    prefix: String,
    /// Dead letters by reason since the store was opened.
    counts: BTreeMap<&'static str, u64>,
    /// Rate limiting of the log, by reason.
    log: BTreeMap<&'static str, LogState>,
    /// Unwritten dead letters kept in memory up to this many bytes.
    max_pending: u64,
    /// Dead letters not kept (the bound was reached while the store could not be written).
    unstored: u64,
}

/// When a reason was last logged and how many of its dead letters went unlogged since.
#[derive(Debug, Clone, Copy)]
struct LogState {
    /// Wall-clock ms of the last log line for this reason.
    last_ms: u64,
    /// Dead letters of this reason not logged since then.
    suppressed: u64,
}

/// One line of the store.
#[derive(Serialize)]
struct Line<'a> {
    received_ms: u64,
    topic: &'a str,
    reason: &'static str,
    detail: &'a str,
    raw: &'a str,
}

impl DeadLetterStore {
    /// Opens the store in `dir` (created if missing), continuing after the files already there.
    /// A file is rotated at `max_file_bytes`; at most `max_files` files are kept (the oldest are
    /// deleted), and at most `max_files` personal files a day. `pseudonyms` replaces personal
    /// ids; `prefix` is the topic prefix (`city/`).
    pub fn open(
        dir: &Path,
        max_file_bytes: u64,
        max_files: usize,
        pseudonyms: Pseudonymizer,
        prefix: &str,
    ) -> Result<DeadLetterStore> {
        let file = RotatingFile::open(dir, "dead-letters", "jsonl", max_file_bytes, Some(max_files))?;
        let personal = DailyFiles::open(dir, "personal", "jsonl", max_file_bytes, Some(max_files))?;
        Ok(DeadLetterStore {
            file,
            personal,
            personal_retention_ms: DEFAULT_PERSONAL_RETENTION_MS,
            expired_at: 0,
            pseudonyms,
            prefix: prefix.to_string(),
            counts: BTreeMap::new(),
            log: BTreeMap::new(),
            max_pending: max_file_bytes.max(1 << 16),
            unstored: 0,
        })
    }

    /// Keeps personal dead letters for `ms` (wall-clock time from their receipt) instead of
    /// [`DEFAULT_PERSONAL_RETENTION_MS`]: the service passes the health records' retention.
    pub fn with_personal_retention(mut self, ms: u64) -> DeadLetterStore {
        self.personal_retention_ms = ms;
        self
    }

    /// Records one rejected message element received on `topic` with payload `raw`, at
    /// wall-clock time `wall_ms` (epoch ms). It is counted and logged (rate-limited) even if
    /// storing it fails; the error is returned.
    pub fn record(&mut self, topic: &str, raw: &[u8], rejected: &Rejected, wall_ms: u64) -> Result<()> {
        let reason = rejected.reason.as_str();
        *self.counts.entry(reason).or_insert(0) += 1;

        let mut clear_ids = Vec::new();
        let personal = self.personal(topic, raw);
        let raw_text = self.sanitize_raw(topic, raw, &mut clear_ids);
        let topic = self.sanitize_topic(topic, &clear_ids);
        let detail = self.scrub(&rejected.detail, &clear_ids);
        self.log(reason, &topic, &detail, wall_ms);

        let line = Line { received_ms: wall_ms, topic: &topic, reason, detail: &detail, raw: &raw_text };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        if self.file.pending_bytes() + self.personal.pending_bytes() >= self.max_pending {
            // The store has been failing for a while (see `flush`): bounded memory wins, and
            // what is not kept is still counted.
            self.unstored += 1;
            anyhow::bail!(
                "dead-letter store {} not writable; dead letter not kept",
                self.file.dir().display()
            );
        }
        if personal {
            self.personal.write(wall_ms, &bytes)?;
        } else {
            self.file.write(&bytes);
        }
        Ok(())
    }

    /// Whether a payload may hold personal data: a personal topic's, or any that names `person`.
    fn personal(&self, topic: &str, raw: &[u8]) -> bool {
        TopicKind::parse(&self.prefix, topic).is_some_and(|(k, _)| k.personal())
            || memchr::memmem::find(raw, b"person").is_some()
    }

    /// Dead letters counted but not kept because the store could not be written for so long
    /// that the unwritten ones reached the bound (one file's size).
    pub fn unstored(&self) -> u64 {
        self.unstored
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        self.file.dir()
    }

    /// Dead letters recorded since the store was opened, by reason (only reasons that occurred).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.clone()
    }

    /// Writes the buffered dead letters; on an error they stay buffered (up to one file's size)
    /// for the next flush.
    pub fn flush(&mut self) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let flushed = self.file.flush().and_then(|()| self.personal.flush());
        if let Err(e) = self.expire(now) {
            tracing::warn!(error = %format!("{e:#}"), "cannot delete personal dead letters past their retention; tried again in an hour");
        }
        flushed
    }

    /// Deletes the personal dead letters past their retention at wall-clock `now_ms` (checked
    /// at most once an hour); returns how many files went.
    pub fn expire(&mut self, now_ms: u64) -> Result<usize> {
        if now_ms < self.expired_at + 3_600_000 && self.expired_at != 0 {
            return Ok(0);
        }
        self.expired_at = now_ms;
        self.personal.expire(now_ms.saturating_sub(self.personal_retention_ms))
    }

    /// The `raw` field: the payload as text, pseudonymized or redacted when it may be personal,
    /// base64 when it is not UTF-8. Clear ids replaced are pushed to `clear_ids`.
    fn sanitize_raw(&self, topic: &str, raw: &[u8], clear_ids: &mut Vec<String>) -> String {
        if self.personal(topic, raw) {
            match serde_json::from_slice::<Value>(raw) {
                Ok(mut v) => {
                    self.pseudonymize(&mut v, false, clear_ids);
                    v.to_string()
                }
                Err(_) => format!("<redacted: {} bytes of an unparsable personal payload>", raw.len()),
            }
        } else {
            match std::str::from_utf8(raw) {
                Ok(s) => s.to_string(),
                Err(_) => format!("base64:{}", base64(raw)),
            }
        }
    }

    /// Replaces, at any depth, every string or number under a `person` key (`inside` = already
    /// under one) by its pseudonym, collecting the clear values.
    fn pseudonymize(&self, v: &mut Value, inside: bool, clear_ids: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    self.pseudonymize(child, inside || k == "person", clear_ids);
                }
            }
            Value::Array(items) => {
                for child in items {
                    self.pseudonymize(child, inside, clear_ids);
                }
            }
            Value::String(s) if inside => {
                let clear = std::mem::take(s);
                *s = self.pseudonyms.pseudonym(&clear);
                clear_ids.push(clear);
            }
            Value::Number(n) if inside => {
                let clear = n.to_string();
                *v = Value::String(self.pseudonyms.pseudonym(&clear));
                clear_ids.push(clear);
            }
            _ => {}
        }
    }

    /// The topic as stored and logged: clear ids replaced, and the id of a `health/case` or
    /// `health/trip` topic (which may be the person) replaced by its pseudonym.
    fn sanitize_topic(&self, topic: &str, clear_ids: &[String]) -> String {
        match personal_topic(&self.prefix, topic, &self.pseudonyms) {
            Some(t) => t,
            None => self.scrub(topic, clear_ids),
        }
    }

    /// `text` with every occurrence of a clear id (trimmed, non-empty) replaced by its pseudonym.
    fn scrub(&self, text: &str, clear_ids: &[String]) -> String {
        let mut out = text.to_string();
        for id in clear_ids {
            let id = id.trim();
            if !id.is_empty() && out.contains(id) {
                out = out.replace(id, &self.pseudonyms.pseudonym(id));
            }
        }
        out
    }

    /// Logs the dead letter if its reason is new or was last logged a minute ago or more.
    fn log(&mut self, reason: &'static str, topic: &str, detail: &str, wall_ms: u64) {
        match self.log.get_mut(reason) {
            None => {
                self.log.insert(reason, LogState { last_ms: wall_ms, suppressed: 0 });
                tracing::warn!(
                    reason,
                    topic,
                    detail,
                    "dead letter (first of this reason; then at most one log a minute)"
                );
            }
            // abs_diff: a wall clock stepped back by a minute or more also lets a line through.
            Some(st) if wall_ms.abs_diff(st.last_ms) >= LOG_INTERVAL_MS => {
                let suppressed = st.suppressed;
                *st = LogState { last_ms: wall_ms, suppressed: 0 };
                tracing::warn!(
                    reason,
                    topic,
                    detail,
                    suppressed,
                    "dead letter ({suppressed} more of this reason not logged)"
                );
            }
            Some(st) => st.suppressed += 1,
        }
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use citybrain_dataflows::event::Reason;
    use std::path::PathBuf;

    /// A fresh, empty directory for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cb-deadletter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn pseudonyms() -> Pseudonymizer {
        Pseudonymizer::new(b"test-key".to_vec())
    }

    /// A store whose personal dead letters never expire (the tests receive them in 1970).
    fn store(dir: &Path) -> DeadLetterStore {
        DeadLetterStore::open(dir, 1 << 20, 4, pseudonyms(), "city/")
            .unwrap()
            .with_personal_retention(u64::MAX)
    }

    /// Every stored line, parsed, in file order.
    fn lines(dir: &Path) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        names
            .iter()
            .flat_map(|p| std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }

    /// All stored text, concatenated.
    fn all_text(dir: &Path) -> String {
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
    }

    #[test]
    fn records_are_written_and_readable() {
        let dir = temp_dir("records");
        let mut s = store(&dir);
        let raw = br#"{"sensor":"s-1","ts":1767225600000}"#;
        s.record(
            "city/grid/sensor/s-1",
            raw,
            &Rejected::new(Reason::InvalidPayload, "missing field `kind`"),
            42,
        )
        .unwrap();
        s.record(
            "city/nope",
            b"hello",
            &Rejected::new(Reason::UnknownTopic, "not a citybrain input topic"),
            43,
        )
        .unwrap();
        s.flush().unwrap();
        let got = lines(&dir);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            serde_json::json!({"received_ms": 42, "topic": "city/grid/sensor/s-1", "reason": "invalid_payload",
                "detail": "missing field `kind`", "raw": r#"{"sensor":"s-1","ts":1767225600000}"#})
        );
        assert_eq!(got[1]["reason"], "unknown_topic");
        assert_eq!(got[1]["raw"], "hello");
        assert!(dir.join("dead-letters-000001.jsonl").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn personal_dead_letters_are_deleted_after_their_retention() {
        let dir = temp_dir("retention");
        let day = 86_400_000;
        let t0 = 1_767_225_600_000; // 2026-01-01T00:00Z
        let mut s = DeadLetterStore::open(&dir, 1 << 20, 4, pseudonyms(), "city/").unwrap();
        let bad = Rejected::new(Reason::InvalidPayload, "x");
        s.record("city/health/checkin/v-1", br#"{"person":"p","ts":"x"}"#, &bad, t0 + 5).unwrap();
        s.record("city/grid/sensor/s-1", b"{}", &bad, t0 + 6).unwrap();
        s.file.flush().unwrap();
        s.personal.flush().unwrap();
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["dead-letters-000001.jsonl", "personal-20260101-000001.jsonl"]);
        // Kept for the whole retention (15 days after the end of their day of receipt) …
        assert_eq!(s.expire(t0 + 16 * day - 1).unwrap(), 0);
        assert_eq!(names().len(), 2);
        // … then gone; the other dead letters stay.
        s.expired_at = 0;
        assert_eq!(s.expire(t0 + 16 * day).unwrap(), 1);
        assert_eq!(names(), ["dead-letters-000001.jsonl"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_bounds_the_number_of_files() {
        let dir = temp_dir("rotation");
        let mut s = DeadLetterStore::open(&dir, 200, 3, pseudonyms(), "city/").unwrap();
        for i in 0..50u64 {
            s.record("city/grid/sensor/s-1", b"{}", &Rejected::new(Reason::InvalidPayload, "x"), i).unwrap();
        }
        s.flush().unwrap();
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 3);
        let got = lines(&dir);
        assert!(got.len() < 50);
        // The newest survive, in order.
        assert_eq!(got.last().unwrap()["received_ms"], 49);
        let ms: Vec<u64> = got.iter().map(|l| l["received_ms"].as_u64().unwrap()).collect();
        assert!(ms.windows(2).all(|w| w[1] == w[0] + 1), "{ms:?}");
        assert_eq!(s.counts()["invalid_payload"], 50);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn personal_ids_are_stored_as_pseudonyms_only() {
        let dir = temp_dir("personal");
        let mut s = store(&dir);
        let id = "110105194912310021";
        let pseudonym = pseudonyms().pseudonym(id);
        let rejected = Rejected::new(Reason::InvalidPayload, "schema error at column 50");
        let raw = format!(r#"{{"person":"{id}","ts":"tomorrow","status":"confirmed"}}"#);
        s.record("city/health/case/x", raw.as_bytes(), &rejected, 1).unwrap();
        // A batch, a numeric id, and a trip whose topic id is the person.
        let raw = format!(r#"[{{"person":"{id}","ts":1}},{{"person":{id},"ts":2}}]"#);
        s.record(&format!("city/health/trip/{id}"), raw.as_bytes(), &rejected, 2).unwrap();
        // A personal record on a non-personal topic, with the id echoed in the detail.
        let raw = format!(r#"{{"sensor":"s-1","ts":1,"payload":{{"person":"{id}"}}}}"#);
        let echoing = Rejected::new(Reason::InvalidPayload, format!("invalid type: string \"{id}\""));
        s.record("city/grid/sensor/s-1", raw.as_bytes(), &echoing, 3).unwrap();
        s.flush().unwrap();

        let text = all_text(&dir);
        assert!(!text.contains(id), "{text}");
        assert!(!text.contains("11010519491231002"), "{text}");
        let got = lines(&dir);
        let first: Value = serde_json::from_str(got[0]["raw"].as_str().unwrap()).unwrap();
        assert_eq!(first, serde_json::json!({"person": pseudonym, "ts": "tomorrow", "status": "confirmed"}));
        let second: Value = serde_json::from_str(got[1]["raw"].as_str().unwrap()).unwrap();
        assert_eq!(second[0]["person"], pseudonym.as_str());
        assert_eq!(second[1]["person"], pseudonym.as_str());
        assert_eq!(got[1]["topic"], format!("city/health/trip/{pseudonym}"));
        let third: Value = serde_json::from_str(got[2]["raw"].as_str().unwrap()).unwrap();
        assert_eq!(third["payload"]["person"], pseudonym.as_str());
        assert_eq!(third["sensor"], "s-1");
        assert!(got[2]["detail"].as_str().unwrap().contains(&pseudonym));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unparsable_personal_payload_is_redacted() {
        let dir = temp_dir("redacted");
        let mut s = store(&dir);
        let raw = br#"{"person":"110105194912310021","ts":"#;
        let rejected = Rejected::new(Reason::MalformedJson, "line 1 column 34");
        s.record("city/health/checkin/v-1", raw, &rejected, 1).unwrap();
        // Misrouted and truncated: redacted too.
        s.record("city/grid/case/c-1", raw, &rejected, 2).unwrap();
        // Personal and not UTF-8: redacted, not base64.
        s.record("city/health/case/x", b"\xff\xfe110105194912310021", &rejected, 3).unwrap();
        s.flush().unwrap();
        let text = all_text(&dir);
        assert!(!text.contains("110105194912310021"), "{text}");
        let got = lines(&dir);
        assert_eq!(
            got[0]["raw"],
            format!("<redacted: {} bytes of an unparsable personal payload>", raw.len())
        );
        assert_eq!(got[0]["topic"], "city/health/checkin/v-1");
        assert_eq!(got[1]["raw"], got[0]["raw"]);
        assert_eq!(got[2]["raw"], "<redacted: 20 bytes of an unparsable personal payload>");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_utf8_bytes_become_base64() {
        let dir = temp_dir("base64");
        let mut s = store(&dir);
        s.record("city/traffic/detector/d-1", b"\xff\x00ab", &Rejected::new(Reason::MalformedJson, "x"), 1)
            .unwrap();
        s.flush().unwrap();
        assert_eq!(lines(&dir)[0]["raw"], "base64:/wBhYg==");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn base64_matches_rfc_4648() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input), want);
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn counts_by_reason_and_rate_limited_logging() {
        let dir = temp_dir("counts");
        let mut s = store(&dir);
        let bad = Rejected::new(Reason::MalformedJson, "x");
        let late = Rejected::new(Reason::TooLate, "y");
        for i in 0..5 {
            s.record("city/grid/case/c-1", b"{", &bad, 1_000 + i).unwrap();
        }
        s.record("city/grid/case/c-1", b"{}", &late, 1_000).unwrap();
        assert_eq!(s.counts(), BTreeMap::from([("malformed_json", 5), ("too_late", 1)]));
        assert_eq!(s.log["malformed_json"].suppressed, 4);
        assert_eq!(s.log["malformed_json"].last_ms, 1_000);
        s.record("city/grid/case/c-1", b"{", &bad, 61_000).unwrap();
        assert_eq!(s.log["malformed_json"].suppressed, 0);
        assert_eq!(s.log["malformed_json"].last_ms, 61_000);
        assert_eq!(s.log["too_late"].suppressed, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
