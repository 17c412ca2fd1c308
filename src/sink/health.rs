//! The health of every output, in one place: what `/readyz`, `/metrics`, MQTT acknowledgements
//! and `POST /api/ingest` consult.
//!
//! Each output (the line-protocol files, `alerts.jsonl`, the SQLite alert store, the InfluxDB
//! spool, the dead-letter store) reports every attempt's outcome here. The first failure of an
//! episode is logged once, as an error naming the output, the path and the reason; later failures
//! of the same episode are only counted; the first success after it is logged once more (with
//! the number of failed attempts). While any output is failing the service is not *healthy*:
//! `/readyz` answers 503 with the reason, MQTT input is no longer taken (and so not acknowledged:
//! the broker keeps it), and HTTP ingestion answers 503. The failed output keeps its unwritten
//! data in memory (bounded) and retries it periodically, so a recovery loses nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One output's state.
#[derive(Debug, Default, Clone)]
struct Output {
    /// `path: reason` of the current failure; `None` while it works.
    failing: Option<String>,
    /// Failed attempts since start.
    failures: u64,
    /// Failed attempts in the current episode.
    episode: u64,
}

/// The health of every output (shared behind an `Arc`).
#[derive(Debug, Default)]
pub struct OutputHealth {
    outputs: Mutex<BTreeMap<&'static str, Output>>,
    failing: AtomicUsize,
}

impl OutputHealth {
    /// Reports a failed attempt of `output` (e.g. `line_protocol`) writing `path`.
    pub fn failed(&self, output: &'static str, path: &str, reason: &dyn std::fmt::Display) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let o = outputs.entry(output).or_default();
        o.failures += 1;
        o.episode += 1;
        if o.failing.is_none() {
            tracing::error!(
                output,
                path,
                reason = %reason,
                "output failed; input is paused (MQTT not acknowledged, HTTP ingest 503, /readyz 503) \
                 and the write is retried until it succeeds"
            );
            o.failing = Some(format!("{path}: {reason}"));
            self.failing.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Reports a successful attempt of `output` (cheap when it was not failing).
    pub fn ok(&self, output: &'static str) {
        if self.failing.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = outputs.get_mut(output)
            && let Some(was) = o.failing.take()
        {
            tracing::info!(output, failed_attempts = o.episode, was = %was, "output recovered; input resumes");
            o.episode = 0;
            self.failing.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether every output works.
    pub fn healthy(&self) -> bool {
        self.failing.load(Ordering::Acquire) == 0
    }

    /// The failing outputs, `output path: reason` each.
    pub fn failing(&self) -> Vec<String> {
        let outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        outputs.iter().filter_map(|(name, o)| o.failing.as_ref().map(|f| format!("{name} {f}"))).collect()
    }

    /// Appends the Prometheus samples: `citybrain_output_failures_total{output}` (failed
    /// attempts) and `citybrain_output_failing{output}` (1 while failing).
    pub fn render(&self, out: &mut String) {
        let outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let name = "citybrain_output_failures_total";
        let _ =
            writeln!(out, "# HELP {name} Failed output writes (retried), by output.\n# TYPE {name} counter");
        for (output, o) in outputs.iter() {
            let _ = writeln!(out, "{name}{{output=\"{output}\"}} {}", o.failures);
        }
        let name = "citybrain_output_failing";
        let _ =
            writeln!(out, "# HELP {name} 1 while an output is failing (input paused).\n# TYPE {name} gauge");
        for (output, o) in outputs.iter() {
            let _ = writeln!(out, "{name}{{output=\"{output}\"}} {}", u64::from(o.failing.is_some()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_counted_and_ends_with_a_success() {
        let h = OutputHealth::default();
        assert!(h.healthy());
        h.ok("line_protocol");
        h.failed("line_protocol", "/x/lp", &"disk full");
        h.failed("line_protocol", "/x/lp", &"disk full");
        h.failed("alert_store", "/x/alerts.db", &"locked");
        assert!(!h.healthy());
        assert_eq!(h.failing(), vec!["alert_store /x/alerts.db: locked", "line_protocol /x/lp: disk full"]);
        h.ok("line_protocol");
        assert!(!h.healthy());
        h.ok("alert_store");
        assert!(h.healthy());
        let mut text = String::new();
        h.render(&mut text);
        assert!(text.contains("citybrain_output_failures_total{output=\"line_protocol\"} 2"), "{text}");
        assert!(text.contains("citybrain_output_failing{output=\"alert_store\"} 0"), "{text}");
    }
}
