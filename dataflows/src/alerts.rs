//! Alert identities: which rule, about what.
//!
//! In the dataflows an alert is just an [`AlertKey`] in a collection: it is active while present;
//! its insertion raises it, its retraction clears it (at event times), so an active condition
//! can never raise twice and clears itself. Everything that does not change while an alert is
//! active (its id, domain, severity, cell, district and message) is derived from the key and
//! the city model here, so the alert service and any test see the same text.
//!
//! [`Alert`] is the alert object of the contract (§7) that every outlet carries: `--alerts-out`,
//! the websockets, the MQTT outlet, the `alert` measurement and the alert store.

use crate::city::{CityModel, Idx};
use crate::time::Ms;
use serde::{Deserialize, Serialize};

/// The alert rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// A blocked lane on a segment.
    TrafficIncident,
    /// A district congested for a while.
    TrafficCongestion,
    /// A detector that stopped reporting.
    TrafficDetectorOffline,
    /// A serious incident not dispatched in time.
    EmergencyUnassigned,
    /// A unit's travel to an incident beyond its limit.
    EmergencyResponseSla,
    /// A district with none of its units of a type available.
    EmergencyCoverageGap,
    /// Many more incidents in a district than usual.
    EmergencySurge,
    /// A case assigned to the cell's officers and not yet taken in hand.
    GridCaseAssigned,
    /// An open case past its deadline.
    GridCaseOverdue,
    /// A cell sensor beyond its threshold.
    GridSensorThreshold,
    /// A cell sensor that stopped reporting.
    GridSensorStale,
    /// A cell whose risk score is high.
    GridRiskHigh,
    /// A person who shared a trip or a venue with an active public-health case.
    HealthContact,
}

impl Rule {
    /// The contract's rule name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TrafficIncident => "traffic.incident",
            Rule::TrafficCongestion => "traffic.congestion",
            Rule::TrafficDetectorOffline => "traffic.detector_offline",
            Rule::EmergencyUnassigned => "emergency.unassigned",
            Rule::EmergencyResponseSla => "emergency.response_sla",
            Rule::EmergencyCoverageGap => "emergency.coverage_gap",
            Rule::EmergencySurge => "emergency.surge",
            Rule::GridCaseAssigned => "grid.case_assigned",
            Rule::GridCaseOverdue => "grid.case_overdue",
            Rule::GridSensorThreshold => "grid.sensor_threshold",
            Rule::GridSensorStale => "grid.sensor_stale",
            Rule::GridRiskHigh => "grid.risk_high",
            Rule::HealthContact => "health.contact",
        }
    }

    /// The domain (`traffic`, `emergency`, `grid`, `health`).
    pub fn domain(self) -> &'static str {
        match self {
            Rule::TrafficIncident | Rule::TrafficCongestion | Rule::TrafficDetectorOffline => "traffic",
            Rule::EmergencyUnassigned
            | Rule::EmergencyResponseSla
            | Rule::EmergencyCoverageGap
            | Rule::EmergencySurge => "emergency",
            Rule::GridCaseAssigned
            | Rule::GridCaseOverdue
            | Rule::GridSensorThreshold
            | Rule::GridSensorStale
            | Rule::GridRiskHigh => "grid",
            Rule::HealthContact => "health",
        }
    }

    /// The length of the windows whose close decides the rule, for a rule over windows (its
    /// transitions happen at window ends); `None` for an absence timer, which fires on the
    /// clock alone. See [`crate::pipeline::after_input_keeps`].
    pub fn window_ms(self) -> Option<Ms> {
        match self {
            Rule::TrafficIncident => Some(crate::time::MINUTE),
            Rule::TrafficCongestion => Some(5 * crate::time::MINUTE),
            // Timers and states: they fire on the clock alone.
            Rule::TrafficDetectorOffline
            | Rule::EmergencyUnassigned
            | Rule::EmergencyResponseSla
            | Rule::EmergencyCoverageGap
            | Rule::EmergencySurge
            | Rule::GridCaseAssigned
            | Rule::GridCaseOverdue
            | Rule::GridSensorThreshold
            | Rule::GridSensorStale
            | Rule::GridRiskHigh
            | Rule::HealthContact => None,
        }
    }

    /// The severity the rule raises with.
    pub fn severity(self) -> Severity {
        match self {
            Rule::TrafficIncident => Severity::Critical,
            Rule::TrafficCongestion => Severity::Warning,
            Rule::TrafficDetectorOffline => Severity::Info,
            Rule::EmergencyUnassigned | Rule::EmergencyResponseSla => Severity::Critical,
            Rule::EmergencyCoverageGap | Rule::EmergencySurge => Severity::Warning,
            Rule::GridCaseAssigned | Rule::GridSensorStale => Severity::Info,
            Rule::GridCaseOverdue | Rule::GridSensorThreshold => Severity::Warning,
            Rule::GridRiskHigh => Severity::Critical,
            Rule::HealthContact => Severity::Warning,
        }
    }
}

/// Alert severities, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// The severity an escalation raises this one to (critical stays critical).
    pub fn escalated(self) -> Severity {
        match self {
            Severity::Info => Severity::Warning,
            Severity::Warning | Severity::Critical => Severity::Critical,
        }
    }

    /// Parses a contract name.
    pub fn parse(name: &str) -> Option<Severity> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// The lifecycle states of an alert (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds and nobody has acknowledged it yet.
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

    /// Parses a contract name.
    pub fn parse(name: &str) -> Option<AlertState> {
        match name {
            "raised" => Some(AlertState::Raised),
            "acknowledged" => Some(AlertState::Acknowledged),
            "cleared" => Some(AlertState::Cleared),
            _ => None,
        }
    }
}

/// One alert object (§7), as carried by every transition. The fields after `message` extend the
/// contract and are left out of the JSON while unset, so a plain dataflow transition serializes
/// exactly as the contract shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Alert {
    /// Stable per (rule, subject): `rule:subject…`.
    pub id: String,
    /// Rule name, e.g. `traffic.incident`.
    pub rule: String,
    /// Current severity (raised by an escalation).
    pub severity: Severity,
    /// State after this transition.
    pub state: AlertState,
    /// Domain: `traffic`, `emergency`, `grid` or `health`.
    pub domain: String,
    /// What it is about (§7).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub subject: serde_json::Value,
    /// Cell id, or null.
    pub cell: Option<String>,
    /// District id, or null.
    pub district: Option<String>,
    /// Event time the condition became true, epoch ms.
    pub raised_ts: Ms,
    /// Event time it stopped holding, epoch ms, or null while active.
    pub cleared_ts: Option<Ms>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When it was acknowledged (the city clock at the acknowledgement), epoch ms.
    pub acked_ts: Option<Ms>,
    /// Human-readable text.
    pub message: String,
    /// The note given with the acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_note: Option<String>,
    /// Whether the alert was escalated for being left unacknowledged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub escalated: bool,
}

impl Alert {
    /// A newly raised alert for `key` at event time `t`.
    pub fn raised(key: &AlertKey, t: Ms, city: &CityModel) -> Alert {
        let info = key.describe(city);
        Alert {
            id: info.id,
            rule: info.rule.to_string(),
            severity: info.severity,
            state: AlertState::Raised,
            domain: info.domain.to_string(),
            subject: info.subject,
            cell: info.cell,
            district: info.district,
            raised_ts: t,
            cleared_ts: None,
            acked_by: None,
            acked_ts: None,
            message: info.message,
            ack_note: None,
            escalated: false,
        }
    }

    /// Whether the alert is active (raised or acknowledged).
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Cleared
    }
}

/// What an alert is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// A lane of a segment.
    Lane {
        /// Segment index.
        segment: Idx,
        /// Lane number.
        lane: u32,
    },
    /// A detector.
    Detector(Idx),
    /// A district.
    District(Idx),
    /// An emergency incident, with where it is.
    Incident {
        /// Incident id.
        id: String,
        /// District holding it.
        district: Option<Idx>,
        /// Cell holding it.
        cell: Option<Idx>,
    },
    /// A district and a unit type.
    DistrictUnits {
        /// District.
        district: Idx,
        /// Unit type.
        unit_type: crate::event::UnitType,
    },
    /// A grid case, with where it is.
    Case {
        /// Case id.
        id: String,
        /// Cell.
        cell: Idx,
        /// District.
        district: Idx,
    },
    /// A cell sensor, with where it is.
    Sensor {
        /// Sensor id.
        id: String,
        /// Cell.
        cell: Idx,
        /// District.
        district: Idx,
    },
    /// A grid cell.
    Cell(Idx),
    /// A contact of a public-health case: by pseudonym only, never a clear id.
    Contact {
        /// The contact's pseudonym.
        person: String,
        /// The trip they shared with the case, for a trip contact.
        trip: Option<String>,
        /// The venue they shared with the case, for a venue contact.
        venue: Option<String>,
        /// The local date of the contact's trip or check-in, `YYYY-MM-DD`.
        date: String,
        /// The cell of the contact's latest check-in (the alert goes to its officers).
        cell: Option<Idx>,
    },
}

/// The identity of an alert: stable per (rule, subject).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// The rule.
    pub rule: Rule,
    /// What it is about.
    pub subject: Subject,
}

/// The static description of an alert, resolved against the city model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertInfo {
    /// Stable id, `rule:subject…`.
    pub id: String,
    /// Rule name.
    pub rule: &'static str,
    /// Domain.
    pub domain: &'static str,
    /// Severity at raise.
    pub severity: Severity,
    /// The subject object of the contract (§7).
    pub subject: serde_json::Value,
    /// Cell id, if the subject has one.
    pub cell: Option<String>,
    /// District id, if the subject has one.
    pub district: Option<String>,
    /// Human-readable text.
    pub message: String,
}

impl AlertKey {
    /// Resolves the key into ids and text.
    pub fn describe(&self, city: &CityModel) -> AlertInfo {
        let rule = self.rule;
        let cell_id = |c: Option<Idx>| c.map(|c| city.cells[c as usize].id.clone());
        let district_id = |d: Idx| Some(city.districts[d as usize].id.clone());
        let (id_tail, subject, cell, district, message) = match self.subject.clone() {
            Subject::Lane { segment, lane } => {
                let s = &city.segments[segment as usize];
                (
                    format!("{}:{lane}", s.id),
                    serde_json::json!({ "segment": s.id, "lane": lane }),
                    cell_id(s.cell),
                    district_id(s.district),
                    format!("Lane {lane} of segment {} looks blocked while the next lane flows", s.id),
                )
            }
            Subject::Detector(d) => {
                let det = &city.detectors[d as usize];
                let s = &city.segments[det.segment as usize];
                (
                    det.id.clone(),
                    serde_json::json!({ "sensor": det.id }),
                    cell_id(det.cell),
                    district_id(s.district),
                    format!("Detector {} (segment {}, lane {}) stopped reporting", det.id, s.id, det.lane),
                )
            }
            Subject::District(d) => {
                let dist = &city.districts[d as usize];
                let message = match rule {
                    Rule::EmergencySurge => {
                        format!("District {} ({}) has a surge of emergency calls", dist.name, dist.id)
                    }
                    _ => format!("District {} ({}) is persistently congested", dist.name, dist.id),
                };
                (
                    dist.id.clone(),
                    serde_json::json!({ "district": dist.id }),
                    None,
                    Some(dist.id.clone()),
                    message,
                )
            }
            Subject::Incident { id, district, cell } => {
                let what = match rule {
                    Rule::EmergencyResponseSla => "has no unit on scene within its travel-time limit",
                    _ => "is not dispatched within the time limit",
                };
                (
                    id.clone(),
                    serde_json::json!({ "incident": &id }),
                    cell_id(cell),
                    district.and_then(district_id),
                    format!("Incident {id} {what}"),
                )
            }
            Subject::DistrictUnits { district, unit_type } => {
                let dist = &city.districts[district as usize];
                let t = unit_type.as_str();
                (
                    format!("{}:{t}", dist.id),
                    serde_json::json!({ "district": dist.id, "unit_type": t }),
                    None,
                    Some(dist.id.clone()),
                    format!("District {} ({}) has no {t} unit available", dist.name, dist.id),
                )
            }
            Subject::Case { id, cell, district } => {
                let what = match rule {
                    Rule::GridCaseOverdue => "is past its deadline",
                    _ => "is assigned to the cell's officers",
                };
                (
                    id.clone(),
                    serde_json::json!({ "case": &id }),
                    cell_id(Some(cell)),
                    district_id(district),
                    format!("Case {id} in cell {} {what}", city.cells[cell as usize].id),
                )
            }
            Subject::Sensor { id, cell, district } => {
                let what = match rule {
                    Rule::GridSensorStale => "stopped reporting",
                    _ => "is beyond its alarm threshold",
                };
                (
                    id.clone(),
                    serde_json::json!({ "sensor": &id }),
                    cell_id(Some(cell)),
                    district_id(district),
                    format!("Sensor {id} in cell {} {what}", city.cells[cell as usize].id),
                )
            }
            Subject::Cell(c) => {
                let cell = &city.cells[c as usize];
                (
                    cell.id.clone(),
                    serde_json::json!({ "cell": cell.id }),
                    Some(cell.id.clone()),
                    district_id(cell.district),
                    format!("Cell {} has a high risk score", cell.id),
                )
            }
            Subject::Contact { person, trip, venue, date, cell } => {
                let (what, id, json, text) = match (trip, venue) {
                    (Some(trip), _) => (
                        "trip",
                        trip.clone(),
                        serde_json::json!({ "person": &person, "trip": &trip, "date": &date }),
                        format!("was on trip {trip}"),
                    ),
                    (None, venue) => {
                        let venue = venue.unwrap_or_default();
                        (
                            "venue",
                            venue.clone(),
                            serde_json::json!({ "person": &person, "venue": &venue, "date": &date }),
                            format!("was at venue {venue}"),
                        )
                    }
                };
                (
                    format!("{person}:{what}:{id}:{date}"),
                    json,
                    cell_id(cell),
                    cell.map(|c| city.cells[c as usize].district).and_then(district_id),
                    format!("Person {person} {text} on {date} with a public-health case: a contact to trace"),
                )
            }
        };
        AlertInfo {
            id: format!("{}:{id_tail}", rule.name()),
            rule: rule.name(),
            domain: rule.domain(),
            severity: rule.severity(),
            subject,
            cell,
            district,
            message,
        }
    }
}
