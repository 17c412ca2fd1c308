//! Alert transitions: from the dataflow's alert collection to the alert objects of CONTRACT §7.
//!
//! The dataflow says *that* an alert became active (+1 at event time t) or stopped (−1);
//! [`AlertBook`] remembers when each active alert was raised, so a cleared transition carries
//! both `raised_ts` and `cleared_ts`. It holds only the active set, so it stays as small as the
//! number of active alerts. These are the dataflow's own transitions, which `replay` writes as
//! they are; the live service passes them through the alert hub ([`crate::hub`]), which adds
//! acknowledgements, hold-down and escalation.

use citybrain_dataflows::alerts::AlertKey;
pub use citybrain_dataflows::alerts::{Alert, AlertState, Severity};
use citybrain_dataflows::pipeline::{self, Out};
use citybrain_dataflows::{CityModel, Config, Ms, lp};
use std::collections::HashMap;

/// The set of active alerts with their raise times.
#[derive(Default)]
pub struct AlertBook {
    active: HashMap<AlertKey, Ms>,
}

impl AlertBook {
    /// Applies one change of the alert collection at event time `t`; returns the transition.
    pub fn apply(&mut self, key: &AlertKey, t: Ms, diff: isize, city: &CityModel) -> Option<Alert> {
        if diff > 0 {
            if self.active.contains_key(key) {
                return None;
            }
            self.active.insert(key.clone(), t);
            Some(Alert::raised(key, t, city))
        } else {
            let raised = self.active.remove(key)?;
            let mut alert = Alert::raised(key, raised, city);
            alert.state = AlertState::Cleared;
            alert.cleared_ts = Some(t);
            Some(alert)
        }
    }

    /// Consolidates one delivered batch of the dataflow (event time `t`), appends the line
    /// protocol of every new window value to `lp` and returns the number of points appended and
    /// the alert transitions (whose `alert` lines the caller writes with [`lp::alert_line`], after
    /// the windows, once it has decided what to publish). The one rendering of dataflow output,
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
        points += lp::encode_batch(t, records, city, cfg, lp);
        for (out, diff) in records.iter() {
            if let Out::Alert(key) = out {
                transitions.extend(self.apply(key, t, *diff, city));
            }
        }
        (points, transitions)
    }

    /// Number of active alerts.
    pub fn active(&self) -> usize {
        self.active.len()
    }
}
