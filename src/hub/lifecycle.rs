//! The alert lifecycle as a pure state machine: raised → acknowledged → cleared, with hold-down
//! against flapping, escalation of unacknowledged alerts, and reconciliation after a restart.
//!
//! Inputs are the dataflow's own transitions (from [`crate::alerts::AlertBook`]), the city clock
//! (event time, advanced by the dataflow's progress) and acknowledgements; outputs are the
//! transitions the hub publishes. No I/O and no wall clock: the same inputs give the same
//! outputs, which is what the tests drive directly.
//!
//! Why it is correct:
//! - **One alert per (rule, subject).** Entries are keyed by the alert id; a raise for an id that
//!   is already active never publishes a second alert.
//! - **Hold-down.** A clear from the dataflow at `c` only marks the entry; it is published when
//!   the clock reaches `c + hold_down` with the condition still gone, carrying `cleared_ts = c`
//!   (the instant the condition stopped holding, as §7 asks). A re-raise before then cancels the
//!   mark: the alert keeps its id, raise time and acknowledgement, and nobody is notified twice.
//! - **Escalation.** A timer on the city clock: an alert still unacknowledged at
//!   `raised_ts + escalate_after` is published again with its severity raised one step and
//!   `escalated: true`, stamped with that deadline; once per alert.
//! - **Stamps.** A published transition is stamped (its `alert` point's time) with the event time
//!   of what it reports: the raise, the end of the condition (`cleared_ts`, also when the clear
//!   was held down), the escalation deadline, or the acknowledgement.
//! - **Restart.** Alerts restored from the store are *unconfirmed*: the new dataflow starts empty,
//!   so a condition that still holds raises again (and confirms the alert, silently); one that
//!   ended while the service was down never will, and is cleared once the clock is
//!   `restore_grace` past the first time it saw after the restart.

use crate::alerts::{Alert, AlertState};
use citybrain_dataflows::Ms;
use std::collections::{BTreeMap, BTreeSet};

/// The hub's timing rules (all on the city clock, ms of event time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A clear followed by a re-raise within this long keeps the alert (0: clear at once).
    pub hold_down_ms: Ms,
    /// An alert unacknowledged this long after its raise escalates (`None`: never).
    pub escalate_after_ms: Option<Ms>,
    /// Restored alerts the dataflow has not raised again this long after a restart are cleared.
    pub restore_grace_ms: Ms,
}

/// One alert the hub holds, active from the outside.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The alert as last published.
    pub alert: Alert,
    /// The condition stopped holding at this time; the clear is held down.
    pub pending_clear: Option<Ms>,
    /// Restored after a restart and not yet raised again by the dataflow.
    pub unconfirmed: bool,
}

/// Why an acknowledgement was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AckError {
    /// No active alert has that id.
    #[error("no active alert with this id")]
    NotFound,
    /// It was acknowledged before.
    #[error("already acknowledged by {0}")]
    AlreadyAcknowledged(String),
}

/// The state machine.
#[derive(Debug)]
pub struct Lifecycle {
    policy: Policy,
    entries: BTreeMap<String, Entry>,
    clock: Ms,
    /// When restored entries are reconciled: set by the first clock after a restore.
    reconcile_at: Option<Ms>,
    restored: bool,
    dirty: BTreeSet<String>,
    flaps: u64,
}

impl Lifecycle {
    /// An empty lifecycle.
    pub fn new(policy: Policy) -> Lifecycle {
        Lifecycle {
            policy,
            entries: BTreeMap::new(),
            clock: 0,
            reconcile_at: None,
            restored: false,
            dirty: BTreeSet::new(),
            flaps: 0,
        }
    }

    /// A lifecycle resuming from stored entries (they become unconfirmed) and the stored clock.
    pub fn restore(policy: Policy, entries: Vec<Entry>, clock: Ms) -> Lifecycle {
        let mut l = Lifecycle::new(policy);
        l.clock = clock;
        l.restored = !entries.is_empty();
        for mut e in entries {
            e.unconfirmed = true;
            l.entries.insert(e.alert.id.clone(), e);
        }
        l
    }

    /// The city clock as last advanced.
    pub fn clock(&self) -> Ms {
        self.clock
    }

    /// Raises suppressed by the hold-down so far.
    pub fn flaps(&self) -> u64 {
        self.flaps
    }

    /// The active entries, by id.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// Ids whose entry changed (or went) since the last call, for the store.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Takes one transition of the dataflow; what to publish is appended to `out` as
    /// `(time, alert)`.
    pub fn on_dataflow(&mut self, raw: Alert, out: &mut Vec<(Ms, Alert)>) {
        match raw.state {
            AlertState::Raised | AlertState::Acknowledged => {
                if let Some(e) = self.entries.get_mut(&raw.id) {
                    if e.pending_clear.take().is_some() {
                        self.flaps += 1;
                    }
                    e.unconfirmed = false;
                    self.dirty.insert(raw.id);
                    return;
                }
                self.dirty.insert(raw.id.clone());
                out.push((raw.raised_ts, raw.clone()));
                self.entries
                    .insert(raw.id.clone(), Entry { alert: raw, pending_clear: None, unconfirmed: false });
            }
            AlertState::Cleared => {
                let cleared = raw.cleared_ts.unwrap_or(self.clock);
                if let Some(e) = self.entries.get_mut(&raw.id) {
                    e.pending_clear = Some(cleared);
                    self.dirty.insert(raw.id.clone());
                    if self.policy.hold_down_ms == 0 {
                        self.clear(&raw.id, cleared, out);
                    }
                }
            }
        }
    }

    fn clear(&mut self, id: &str, at: Ms, out: &mut Vec<(Ms, Alert)>) {
        if let Some(e) = self.entries.remove(id) {
            let mut alert = e.alert;
            alert.state = AlertState::Cleared;
            alert.cleared_ts = Some(at);
            self.dirty.insert(id.to_string());
            out.push((at, alert));
        }
    }

    /// Advances the city clock to `now` (never backwards) and fires what is due: held-down
    /// clears, escalations and the reconciliation after a restart, in order of their times.
    pub fn advance(&mut self, now: Ms, out: &mut Vec<(Ms, Alert)>) {
        if now <= self.clock && !(self.restored && self.reconcile_at.is_none()) {
            return;
        }
        self.clock = self.clock.max(now);
        if self.restored && self.reconcile_at.is_none() {
            self.reconcile_at = Some(self.clock + self.policy.restore_grace_ms);
        }
        enum Due {
            Clear(Ms),
            Escalate,
        }
        let mut due: Vec<(Ms, String, Due)> = Vec::new();
        for (id, e) in &self.entries {
            if let Some(c) = e.pending_clear {
                if c + self.policy.hold_down_ms <= self.clock {
                    due.push((c + self.policy.hold_down_ms, id.clone(), Due::Clear(c)));
                }
                continue;
            }
            if let Some(at) = self.reconcile_at.filter(|at| e.unconfirmed && *at <= self.clock) {
                due.push((at, id.clone(), Due::Clear(at)));
                continue;
            }
            if let Some(after) = self.policy.escalate_after_ms {
                let deadline = e.alert.raised_ts + after;
                if e.alert.state == AlertState::Raised && !e.alert.escalated && deadline <= self.clock {
                    due.push((deadline, id.clone(), Due::Escalate));
                }
            }
        }
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (time, id, what) in due {
            match what {
                Due::Clear(at) => self.clear(&id, at, out),
                Due::Escalate => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.alert.severity = e.alert.severity.escalated();
                        e.alert.escalated = true;
                        self.dirty.insert(id);
                        out.push((time, e.alert.clone()));
                    }
                }
            }
        }
        if self.reconcile_at.is_some_and(|at| at <= self.clock) {
            self.restored = false;
        }
    }

    /// Acknowledges an active alert for `who`, stamped with the city clock (never before the
    /// raise); returns the transition to publish.
    pub fn ack(&mut self, id: &str, who: &str, note: Option<String>) -> Result<(Ms, Alert), AckError> {
        let e = self.entries.get_mut(id).ok_or(AckError::NotFound)?;
        if let Some(by) = &e.alert.acked_by {
            return Err(AckError::AlreadyAcknowledged(by.clone()));
        }
        let at = self.clock.max(e.alert.raised_ts);
        e.alert.state = AlertState::Acknowledged;
        e.alert.acked_by = Some(who.to_string());
        e.alert.acked_ts = Some(at);
        e.alert.ack_note = note;
        self.dirty.insert(id.to_string());
        Ok((at, e.alert.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;

    const MIN: Ms = 60_000;

    fn policy() -> Policy {
        Policy { hold_down_ms: 2 * MIN, escalate_after_ms: Some(10 * MIN), restore_grace_ms: 15 * MIN }
    }

    fn raw(id: &str, state: AlertState, raised: Ms, cleared: Option<Ms>) -> Alert {
        Alert {
            id: id.into(),
            rule: "traffic.incident".into(),
            severity: Severity::Warning,
            state,
            domain: "traffic".into(),
            subject: serde_json::json!({"segment": "s1", "lane": 1}),
            cell: Some("c1".into()),
            district: Some("d1".into()),
            raised_ts: raised,
            cleared_ts: cleared,
            acked_by: None,
            acked_ts: None,
            message: "m".into(),
            ack_note: None,
            escalated: false,
        }
    }

    fn states(out: &[(Ms, Alert)]) -> Vec<(Ms, AlertState)> {
        out.iter().map(|(t, a)| (*t, a.state)).collect()
    }

    #[test]
    fn flapping_keeps_one_alert_and_its_ack() {
        let mut l = Lifecycle::new(policy());
        let mut out = Vec::new();
        l.on_dataflow(raw("a", AlertState::Raised, 0, None), &mut out);
        l.advance(MIN, &mut out);
        l.ack("a", "ops-1", Some("on it".into())).unwrap();
        // Clears and re-raises within the hold-down, three times.
        for k in 0..3 {
            let t = 2 * MIN + k * 3 * MIN;
            l.on_dataflow(raw("a", AlertState::Cleared, 0, Some(t)), &mut out);
            l.advance(t + MIN, &mut out);
            l.on_dataflow(raw("a", AlertState::Raised, t + MIN, None), &mut out);
            l.advance(t + 2 * MIN, &mut out);
        }
        assert_eq!(states(&out), vec![(0, AlertState::Raised)]);
        assert_eq!(l.flaps(), 3);
        let e = &l.entries()["a"];
        assert_eq!((e.alert.state, e.alert.raised_ts), (AlertState::Acknowledged, 0));
        // A clear that lasts past the hold-down is published with the time the condition ended.
        l.on_dataflow(raw("a", AlertState::Cleared, 0, Some(20 * MIN)), &mut out);
        l.advance(21 * MIN, &mut out);
        assert_eq!(out.len(), 1);
        l.advance(22 * MIN, &mut out);
        let (t, cleared) = out.last().unwrap();
        assert_eq!((*t, cleared.state, cleared.cleared_ts), (20 * MIN, AlertState::Cleared, Some(20 * MIN)));
        assert_eq!(cleared.acked_by.as_deref(), Some("ops-1"));
        assert!(l.entries().is_empty());
    }

    #[test]
    fn unacknowledged_alerts_escalate_once_at_their_deadline() {
        let mut l = Lifecycle::new(policy());
        let mut out = Vec::new();
        l.on_dataflow(raw("a", AlertState::Raised, MIN, None), &mut out);
        l.on_dataflow(raw("b", AlertState::Raised, MIN, None), &mut out);
        l.advance(5 * MIN, &mut out);
        l.ack("b", "o", None).unwrap();
        l.advance(30 * MIN, &mut out);
        l.advance(60 * MIN, &mut out);
        let escalations: Vec<_> = out.iter().filter(|(_, a)| a.escalated).collect();
        assert_eq!(escalations.len(), 1, "{out:?}");
        let (t, a) = escalations[0];
        assert_eq!(
            (*t, a.id.as_str(), a.severity, a.state),
            (11 * MIN, "a", Severity::Critical, AlertState::Raised)
        );
        assert_eq!(l.ack("b", "p", None), Err(AckError::AlreadyAcknowledged("o".into())));
        assert_eq!(l.ack("zzz", "p", None), Err(AckError::NotFound));
    }

    #[test]
    fn without_hold_down_clears_are_immediate() {
        let mut l = Lifecycle::new(Policy { hold_down_ms: 0, escalate_after_ms: None, restore_grace_ms: 0 });
        let mut out = Vec::new();
        l.on_dataflow(raw("a", AlertState::Raised, 0, None), &mut out);
        l.on_dataflow(raw("a", AlertState::Cleared, 0, Some(MIN)), &mut out);
        l.on_dataflow(raw("a", AlertState::Raised, 2 * MIN, None), &mut out);
        assert_eq!(
            states(&out),
            vec![(0, AlertState::Raised), (MIN, AlertState::Cleared), (2 * MIN, AlertState::Raised)]
        );
    }

    #[test]
    fn restored_alerts_clear_unless_raised_again_within_the_grace() {
        let mut old = raw("kept", AlertState::Acknowledged, 0, None);
        old.acked_by = Some("ops".into());
        let gone = raw("gone", AlertState::Raised, 0, None);
        let entries =
            [old, gone].into_iter().map(|alert| Entry { alert, pending_clear: None, unconfirmed: false });
        let policy = Policy { escalate_after_ms: None, ..policy() };
        let mut l = Lifecycle::restore(policy, entries.collect(), 9 * MIN);
        let mut out = Vec::new();
        l.advance(100 * MIN, &mut out); // the first clock after the restart: grace until 115 min
        l.on_dataflow(raw("kept", AlertState::Raised, 101 * MIN, None), &mut out);
        l.advance(114 * MIN, &mut out);
        assert!(out.is_empty(), "{out:?}");
        l.advance(116 * MIN, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].1.id.as_str(), out[0].1.cleared_ts), ("gone", Some(115 * MIN)));
        let kept = &l.entries()["kept"].alert;
        assert_eq!(
            (kept.state, kept.raised_ts, kept.acked_by.as_deref()),
            (AlertState::Acknowledged, 0, Some("ops"))
        );
    }
}
