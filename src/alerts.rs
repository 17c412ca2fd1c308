//! Alert transitions: from the dataflow's alert collection to the alert objects of CONTRACT §7.
//!
//! The dataflow says *that* an alert became active (+1 at event time t) or stopped (−1);
//! [`AlertBook`] remembers when each active alert was raised, so a cleared transition carries
//! both `raised_ts` and `cleared_ts`. It holds only the active set, so it stays as small as the
//! number of active alerts.

use citybrain_dataflows::alerts::AlertKey;
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::{CityModel, Config, Ms, lp};
use serde::Serialize;
use std::collections::HashMap;

/// Alert states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds.
    Raised,
    /// Someone acknowledged it while it holds.
    Acknowledged,
    /// The condition stopped holding.
    Cleared,
}

impl AlertState {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Cleared => "cleared",
        }
    }
}

/// One alert object (CONTRACT §7), as sent for each transition.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// Stable per (rule, subject).
    pub id: String,
    /// Rule name.
    pub rule: &'static str,
    /// Severity.
    pub severity: &'static str,
    /// State after this transition.
    pub state: AlertState,
    /// Domain.
    pub domain: &'static str,
    /// What it is about.
    pub subject: serde_json::Value,
    /// Cell id or null.
    pub cell: Option<String>,
    /// District id or null.
    pub district: Option<String>,
    /// Event time the condition became true, epoch ms.
    pub raised_ts: Ms,
    /// Event time it stopped holding, epoch ms, or null.
    pub cleared_ts: Option<Ms>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When it was acknowledged.
    pub acked_ts: Option<Ms>,
    /// Human-readable text.
    pub message: String,
}

/// The set of active alerts with their raise times.
#[derive(Default)]
pub struct AlertBook {
    active: HashMap<AlertKey, Ms>,
}

impl AlertBook {
    /// Applies one change of the alert collection at event time `t`; returns the transition.
    pub fn apply(&mut self, key: &AlertKey, t: Ms, diff: isize, city: &CityModel) -> Option<Alert> {
        let (state, raised_ts, cleared_ts) = if diff > 0 {
            if self.active.contains_key(key) {
                return None;
            }
            self.active.insert(*key, t);
            (AlertState::Raised, t, None)
        } else {
            let raised = self.active.remove(key)?;
            (AlertState::Cleared, raised, Some(t))
        };
        let info = key.describe(city);
        Some(Alert {
            id: info.id,
            rule: info.rule,
            severity: info.severity.as_str(),
            state,
            domain: info.domain,
            subject: info.subject,
            cell: info.cell,
            district: info.district,
            raised_ts,
            cleared_ts,
            acked_by: None,
            acked_ts: None,
            message: info.message,
        })
    }

    /// Consolidates one delivered batch of the dataflow (event time `t`), appends its line
    /// protocol to `lp` — every new window value and every alert transition — and returns the
    /// number of points appended and the alert transitions. The one rendering of dataflow output,
    /// shared by `replay` and the live service.
    pub fn render(
        &mut self,
        t: Ms,
        records: &mut Vec<(Out, isize)>,
        city: &CityModel,
        cfg: &Config,
        lp: &mut String,
    ) -> (u64, Vec<Alert>) {
        pipeline::consolidate_batch(records);
        let (mut points, mut transitions) = (0, Vec::new());
        for (out, diff) in records.iter() {
            match out {
                Out::Alert(key) => {
                    let Some(alert) = self.apply(key, t, *diff, city) else { continue };
                    lp::alert_line(key, alert.state.as_str(), alert.severity, t, city, lp);
                    points += 1;
                    transitions.push(alert);
                }
                _ if *diff > 0 => {
                    lp::encode(out, city, cfg, lp);
                    points += 1;
                }
                _ => {}
            }
        }
        (points, transitions)
    }

    /// Number of active alerts.
    pub fn active(&self) -> usize {
        self.active.len()
    }
}
