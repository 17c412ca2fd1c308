//! Scoring `traffic.incident` against the SUMO ground truth of `tests/fixtures/sumo/` (shared by
//! `tests/incidents.rs` and `benches/incidents.rs`).
//!
//! Each fixture is a city model, a recording and a truth file written by
//! `scripts/sumo/generate.py`. A run is replayed through [`citybrain::replay::replay`] — the
//! same dataflows as `run` — and its alert transitions are matched to the truth:
//!
//! * a **stall** (a car held by TraCI over a lane's loop) is *detected* by the first incident
//!   alert on its segment and lane raised between its start and 5 minutes after its end; the
//!   detection delay is `raised_ts − start`, the clear delay `cleared_ts − end`;
//! * every other incident alert is an **other alarm**. It is *explained* when SUMO itself
//!   reports a car standing at the head of that lane for 300 s (a teleport, listed in the truth
//!   as `sumo_blockages`) between 5 minutes before and 5 minutes after it was raised: a real
//!   blockage of the simulation that we did not plant. The targets count every other alarm.

#![allow(dead_code)]

use citybrain::config::Settings;
use citybrain::replay::{BLOCK_BYTES, ReplayOptions, replay};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The fixtures' directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sumo")
}

/// The scenario names, from the truth files present, sorted.
pub fn scenarios() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .expect("tests/fixtures/sumo")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".truth.json").map(String::from))
        .collect();
    names.sort();
    names
}

/// One stall's figures, minutes.
#[derive(Debug, Clone)]
pub struct Stall {
    /// Segment id.
    pub segment: String,
    /// Lane.
    pub lane: u64,
    /// Minutes from the start of the run to the stall's start.
    pub at_min: f64,
    /// How long the car stood, minutes.
    pub minutes: f64,
    /// Raised after the start, minutes (None: not detected).
    pub detect_min: Option<f64>,
    /// Cleared after the end, minutes (None: not cleared).
    pub clear_min: Option<f64>,
}

/// One scenario's figures.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Scenario name.
    pub name: String,
    /// Simulated hours.
    pub hours: f64,
    /// Simulated rush hours.
    pub rush_hours: f64,
    /// The stalls.
    pub stalls: Vec<Stall>,
    /// Incident alarms matching no stall, as (segment, lane, raised minute, explained by SUMO).
    pub others: Vec<(String, u64, f64, bool)>,
    /// The alert transitions file, verbatim (for worker-count comparisons).
    pub alerts: String,
}

impl Scored {
    /// Other alarms that SUMO's own reports do not explain.
    pub fn unexplained(&self) -> usize {
        self.others.iter().filter(|o| !o.3).count()
    }
}

const MIN: f64 = 60_000.0;

/// Replays scenario `name` with `workers` dataflow workers into `dir` and scores it.
pub fn score(name: &str, workers: usize, dir: &Path) -> Scored {
    let fx = fixtures();
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join(format!("{name}.truth.json"))).unwrap())
            .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let opts = ReplayOptions {
        city: fx.join(format!("{name}.city.geojson")),
        input: fx.join(format!("{name}.jsonl.gz")),
        out_lp: dir.join(format!("{name}-{workers}.lp")),
        alerts_out: Some(dir.join(format!("{name}-{workers}.alerts.jsonl"))),
        dead_letter_out: Some(dir.join(format!("{name}-{workers}.dl.jsonl"))),
        workers,
        parsers: 1,
        progress: false,
        block_bytes: BLOCK_BYTES,
    };
    let summary = replay(&opts, &Settings::load(None).unwrap()).unwrap();
    assert_eq!(summary.rejected.values().sum::<u64>(), 0, "{name}: rejected {:?}", summary.rejected);
    let alerts = std::fs::read_to_string(opts.alerts_out.as_ref().unwrap()).unwrap();

    // Incident intervals per lane: (segment, lane, raised, cleared).
    let mut intervals: Vec<(String, u64, f64, Option<f64>)> = Vec::new();
    for line in alerts.lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        if a["rule"] != "traffic.incident" {
            continue;
        }
        let seg = a["subject"]["segment"].as_str().unwrap().to_string();
        let lane = a["subject"]["lane"].as_u64().unwrap();
        let raised = a["raised_ts"].as_f64().unwrap();
        match a["state"].as_str().unwrap() {
            "raised" => intervals.push((seg, lane, raised, None)),
            "cleared" => {
                let open = intervals
                    .iter_mut()
                    .rev()
                    .find(|i| i.0 == seg && i.1 == lane && i.2 == raised && i.3.is_none())
                    .expect("a clear follows its raise");
                open.3 = a["cleared_ts"].as_f64();
            }
            other => panic!("unexpected state {other}"),
        }
    }
    let t0 = truth["start_ms"].as_f64().unwrap();
    let span = |v: &Value| (v["start_ms"].as_f64().unwrap(), v["end_ms"].as_f64().unwrap());
    let same = |v: &Value, seg: &str, lane: u64| v["segment"] == seg && v["lane"].as_u64() == Some(lane);
    let mut used = vec![false; intervals.len()];
    let mut stalls = Vec::new();
    for st in truth["stalls"].as_array().unwrap() {
        let (start, end) = span(st);
        let hit = intervals
            .iter()
            .enumerate()
            .find(|(i, iv)| !used[*i] && same(st, &iv.0, iv.1) && iv.2 >= start && iv.2 <= end + 5.0 * MIN);
        let (detect_min, clear_min) = match hit {
            Some((i, iv)) => {
                used[i] = true;
                (Some((iv.2 - start) / MIN), iv.3.map(|c| (c - end) / MIN))
            }
            None => (None, None),
        };
        stalls.push(Stall {
            segment: st["segment"].as_str().unwrap().to_string(),
            lane: st["lane"].as_u64().unwrap(),
            at_min: (start - t0) / MIN,
            minutes: (end - start) / MIN,
            detect_min,
            clear_min,
        });
    }
    let blockages = truth["sumo_blockages"].as_array().cloned().unwrap_or_default();
    let others = intervals
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(iv, _)| {
            let explained = blockages.iter().any(|b| {
                let (s, e) = span(b);
                same(b, &iv.0, iv.1) && iv.2 >= s - 5.0 * MIN && iv.2 <= e + 5.0 * MIN
            });
            (iv.0.clone(), iv.1, (iv.2 - t0) / MIN, explained)
        })
        .collect();
    Scored {
        name: name.to_string(),
        hours: truth["hours"].as_f64().unwrap(),
        rush_hours: truth["rush_hours"].as_f64().unwrap(),
        stalls,
        others,
        alerts,
    }
}

/// The table of figures, as Markdown.
pub fn table(runs: &[Scored]) -> String {
    let f = |v: Option<f64>| v.map(|m| format!("{m:.1}")).unwrap_or_else(|| "—".into());
    let mut s = String::from(
        "| run | stall (segment/lane) | at min | stood min | detected after (min) | cleared after end (min) |\n|---|---|---|---|---|---|\n",
    );
    for r in runs {
        for st in &r.stalls {
            s += &format!(
                "| {} | {}/{} | {:.1} | {:.1} | {} | {} |\n",
                r.name,
                st.segment,
                st.lane,
                st.at_min,
                st.minutes,
                f(st.detect_min),
                f(st.clear_min)
            );
        }
    }
    s += "\n| run | simulated h | rush hours | stalls | other alarms | of which SUMO-reported blockages | other alarms per h |\n|---|---|---|---|---|---|---|\n";
    for r in runs {
        s += &format!(
            "| {} | {:.1} | {} | {} | {} | {} | {:.2} |\n",
            r.name,
            r.hours,
            r.rush_hours,
            r.stalls.len(),
            r.others.len(),
            r.others.len() - r.unexplained(),
            r.others.len() as f64 / r.hours
        );
    }
    s
}

/// The targets: (stalls ≥ 8 min detected ≤ 5 min, all cleared ≤ 5 min, quiet-run alarms, the
/// bound on them = rush hours / 2).
pub fn targets(runs: &[Scored]) -> (bool, bool, usize, f64) {
    let long = || runs.iter().flat_map(|r| &r.stalls).filter(|s| s.minutes >= 8.0 - 1e-9);
    let detected = long().all(|s| s.detect_min.is_some_and(|d| d <= 5.0));
    let cleared = long().all(|s| s.clear_min.is_some_and(|c| c <= 5.0));
    let quiet: Vec<&Scored> = runs.iter().filter(|r| r.stalls.is_empty()).collect();
    let alarms = quiet.iter().map(|r| r.others.len()).sum();
    let bound = quiet.iter().map(|r| r.rush_hours).sum::<f64>() / 2.0;
    (detected, cleared, alarms, bound)
}
