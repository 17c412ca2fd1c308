//! The emergency alert rules (CONTRACT §7), each a collection of alert keys that is present
//! exactly while its condition holds, on the city's one event-time clock.
//!
//! * `emergency.unassigned` — an open incident of severity `max_severity` (2) or higher with no
//!   unit dispatched `after_s` (60 s) after its report. Each incident version that is open and
//!   unassigned is made present from `reported + after_s` on ([`during`]), intersected with the
//!   interval the version held; the versions of one incident follow each other, so the alert is
//!   raised at the deadline (a timer: it fires when the watermark passes it, with no further
//!   input) and cleared at the dispatch, or when the incident closes.
//! * `emergency.response_sla` — an open incident whose first unit went en route at `e` and is
//!   not on scene by `e + limit`, where the limit is that of the unit type the incident's type
//!   is sent (`response_sla`: fire engine 240 s, ambulance 480 s, police off). Raised at the
//!   breach, cleared when a unit arrives or the incident closes.
//! * `emergency.coverage_gap` — a district some of whose own units (homed at its stations) are
//!   of a type, and none of that type is available in the district. Raised and cleared by the
//!   unit reports that make and end the gap. A district never served by a type raises nothing.
//! * `emergency.surge` — a district whose incidents reported in the last `window_min` (30)
//!   minutes number at least `min_count` (5) and at least `factor` (3) × its baseline: the
//!   incidents of the `baseline_h` (24) hours before the window, scaled to one window. Both
//!   counts are reports present over their spans ([`during`]), so the condition changes only at
//!   a report or when one leaves a span, and is exact at every event time.

use crate::alerts::{AlertKey, Rule, Subject};
use crate::config::Config;
use crate::emergency::model::{Fact, FactKind, Incident, Unit};
use crate::event::UnitStatus;
use crate::time::{Ms, SECOND};
use crate::totals::totals;
use crate::windows::during;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

fn incident_key(rule: Rule, i: &Incident) -> AlertKey {
    AlertKey { rule, subject: Subject::Incident { id: i.id.clone(), district: i.district, cell: i.cell } }
}

/// Every emergency alert rule over the domain's collections.
pub fn alerts<'s>(
    incidents: VecCollection<'s, Ms, Incident>,
    units: VecCollection<'s, Ms, Unit>,
    facts: VecCollection<'s, Ms, Fact>,
    cfg: &Config,
) -> VecCollection<'s, Ms, AlertKey> {
    let e = &cfg.emergency;

    let (after, max_sev) = (e.unassigned.after_s * SECOND, e.unassigned.max_severity);
    let unassigned =
        during(incidents.clone().filter(move |i| i.is_unassigned() && i.severity <= max_sev), move |i| {
            (i.reported + after, Ms::MAX)
        })
        .map(|i| incident_key(Rule::EmergencyUnassigned, &i));

    let (dispatch, sla) = (e.dispatch.clone(), e.response_sla);
    let limit = move |i: &Incident| sla.get(dispatch.unit_type(i.kind)) * SECOND;
    let late = during(
        incidents.filter({
            let limit = limit.clone();
            move |i| i.is_open() && i.en_route.is_some() && i.on_scene.is_none() && limit(i) > 0
        }),
        move |i| (i.en_route.unwrap_or(Ms::MAX).saturating_add(limit(i)), Ms::MAX),
    )
    .map(|i| incident_key(Rule::EmergencyResponseSla, &i));

    let mut all = unassigned.concat(late);

    if e.coverage_gap {
        let expected = units.clone().flat_map(|u: Unit| u.home.map(|h| (h, u.kind))).distinct();
        let available = units
            .filter(|u| u.status == UnitStatus::Available)
            .flat_map(|u: Unit| u.district.map(|d| (d, u.kind)))
            .distinct();
        let gaps =
            expected.map(|k| (k, ())).antijoin(available).map(|((district, unit_type), ())| AlertKey {
                rule: Rule::EmergencyCoverageGap,
                subject: Subject::DistrictUnits { district, unit_type },
            });
        all = all.concat(gaps);
    }

    let s = e.surge.clone();
    let (window, baseline) = (s.window_ms(), s.baseline_ms());
    let reports = facts.filter(|f| f.what == FactKind::Report);
    let recent = totals(during(reports.clone(), move |f| (f.at, f.at + window)).map(|f| f.district));
    let before =
        totals(during(reports, move |f| (f.at + window, f.at + window + baseline)).map(|f| f.district));
    let surge = recent
        .map(|(d, n)| (d, Count::Recent(n)))
        .concat(before.map(|(d, n)| (d, Count::Baseline(n))))
        .reduce(move |_d, input: &[(&Count, isize)], out: &mut Vec<((), isize)>| {
            let (mut recent, mut base) = (0, 0);
            for (c, _) in input {
                match c {
                    Count::Recent(n) => recent = *n,
                    Count::Baseline(n) => base = *n,
                }
            }
            let expected = base as f64 * window as f64 / baseline as f64;
            if recent as u64 >= s.min_count && recent as f64 >= s.factor * expected {
                out.push(((), 1));
            }
        })
        .map(|(district, ())| AlertKey { rule: Rule::EmergencySurge, subject: Subject::District(district) });
    all.concat(surge).distinct()
}

/// One of the two counts the surge rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Count {
    Recent(isize),
    Baseline(isize),
}
