//! The ingest side of the dataflows: decoded events in, timed updates of the input collections out.
//!
//! One [`Ingest`] per worker. The input collections advance in *rounds*: a round ends when the
//! watermark moves from `now` to `upto`. Every update the ingest side produces has an event time
//! at which it must take effect, and [`Ingest::flush`] releases exactly the updates due by `upto`,
//! each at `max(its time, now)`:
//!
//! * a window's sum is due when the window closes (its end): its result then appears exactly at
//!   the end of the window, or at once as a correction when a late reading arrives after close;
//! * the same sum is retracted `retention` after the window's end, so state stays bounded
//!   without any clean-up pass;
//! * a liveness span `[ts, ts + (k+1)·interval)` (for `traffic.detector_offline`) is inserted at
//!   its start and retracted at its end — the offline timer fires on the watermark;
//! * a detector's first reading marks it as `seen`.
//!
//! Offering a reading only validates it and appends it to a *staged* list; [`Ingest::flush`]
//! first sorts the staged readings by detector and input order and adds them to the detectors'
//! pending sums in one sweep. The result is the same as adding each reading at once — sums do
//! not depend on order, and a detector's own readings keep theirs — but the sweep walks the
//! per-detector state in address order instead of jumping to a random detector per reading,
//! which on a large city is mostly cache misses.
//!
//! Holding updates here until they are due, instead of handing differential updates dated in
//! the future, matters for speed: an arrangement re-merges its pending future updates at every
//! round until they come due. It also means an open window reaches differential once, fully
//! summed, instead of once per reading ("feed differential little").
//!
//! A reading whose 1-minute window ended `retention` or more before `now` has (or would have
//! had) its window retracted: it is rejected as `too_late`.

use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::event::{DetectorReading, Event, Reason, Rejected};
use crate::pipeline::Inputs;
use crate::time::{Ms, SECOND, window_end, window_start};
use crate::traffic::{DetWin, FlowSum, Win};
use differential_dataflow::difference::{Abelian, Semigroup};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A liveness span of one detector: `[from, until)`, and whether its insertion was released.
#[derive(Clone, Copy, Debug)]
struct Span {
    from: Ms,
    until: Ms,
    inserted: bool,
}

/// What one detector has waiting to be released.
#[derive(Default)]
struct Pending {
    /// Sums of windows that have not closed yet (or late ones not yet released). Inline: a
    /// detector has a few open windows, and an extra heap indirection per reading costs a
    /// cache miss.
    windows: SmallVec<[(Win, Ms, FlowSum); 4]>,
    /// Liveness spans not yet fully released.
    spans: SmallVec<[Span; 2]>,
    /// The first reading's time, until the `seen` insertion is released.
    seen_at: Option<Ms>,
    /// Whether the detector is in the `active` list.
    listed: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.spans.is_empty() && self.seen_at.is_none()
    }
}

/// A detector reading checked against the city model: its detector, interval and exact sums.
///
/// [`CheckedReading::check`] needs only the (immutable) city model, so a driver may run it on
/// another thread than the worker's and hand the worker [`Ingest::offer_checked`]; this is
/// what [`Ingest::offer`] does in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedReading {
    /// Detector index.
    pub det: Idx,
    /// Interval length, seconds.
    pub interval_s: u32,
    /// Start of the interval.
    pub ts: Ms,
    /// The interval's exact sums.
    pub sum: FlowSum,
}

impl CheckedReading {
    /// Checks a reading against the city model: its detector must exist and lie on the segment
    /// the reading names, else it is `unknown_id`.
    pub fn check(city: &CityModel, r: &DetectorReading<'_>) -> Result<CheckedReading, Rejected> {
        let Some(det) = city.detector(&r.sensor) else {
            return Err(Rejected::new(Reason::UnknownId, format!("unknown detector {:?}", r.sensor)));
        };
        let segment = city.detector_segment(det);
        if city.segment_id(segment) != r.segment {
            let detail = if city.segment(&r.segment).is_some() {
                format!("detector {:?} is not on segment {:?}", r.sensor, r.segment)
            } else {
                format!("unknown segment {:?}", r.segment)
            };
            return Err(Rejected::new(Reason::UnknownId, detail));
        }
        let sum = FlowSum::reading(r.interval_s, r.count, r.occupancy, r.speed_kmh);
        Ok(CheckedReading { det, interval_s: r.interval_s, ts: r.ts.0, sum })
    }
}

/// An offered reading waiting for [`Ingest::flush`], with its place in the input order.
#[derive(Clone, Copy)]
struct Staged {
    seq: u64,
    reading: CheckedReading,
}

/// Per-worker ingest state (see module docs).
pub struct Ingest {
    city: Arc<CityModel>,
    retention: Ms,
    offline_intervals: u64,
    now: Ms,
    pending: Vec<Pending>,
    /// Detectors with something pending.
    active: Vec<Idx>,
    seen: Vec<bool>,
    /// Window sums released earlier, by the time they are due to be retracted.
    expiring: BTreeMap<Ms, Vec<(DetWin, FlowSum)>>,
    /// Readings offered since the last flush, in arrival order.
    staged: Vec<Staged>,
    /// The `seq` [`Ingest::offer`] gives its next reading.
    next_seq: u64,
    /// Scratch for the order in which staged readings are applied.
    order: Vec<u128>,
}

impl Ingest {
    /// A fresh ingest state for one worker.
    pub fn new(city: Arc<CityModel>, cfg: &Config) -> Self {
        let n = city.detectors.len();
        Ingest {
            city,
            retention: cfg.traffic.retention_ms(),
            offline_intervals: cfg.traffic.offline_intervals as u64,
            now: 0,
            pending: (0..n).map(|_| Pending::default()).collect(),
            active: Vec::new(),
            seen: vec![false; n],
            expiring: BTreeMap::new(),
            staged: Vec::new(),
            next_seq: 0,
            order: Vec::new(),
        }
    }

    /// Window sums released into the dataflow and not yet retracted: the logical size of the
    /// windowed state this worker contributes. Bounded by the retention, not by the input.
    pub fn live_windows(&self) -> usize {
        self.expiring.values().map(Vec::len).sum()
    }

    /// The input time: the watermark at the end of the last round.
    pub fn now(&self) -> Ms {
        self.now
    }

    /// Offers one decoded event. Events of domains without a dataflow yet are accepted as is.
    pub fn offer(&mut self, event: &Event<'_>) -> Result<(), Rejected> {
        match event {
            Event::Detector(r) => self.offer_reading(r),
            _ => Ok(()),
        }
    }

    fn offer_reading(&mut self, r: &DetectorReading<'_>) -> Result<(), Rejected> {
        let reading = CheckedReading::check(&self.city, r)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.offer_checked(reading, seq)
    }

    /// Offers a reading already checked against the city model. `seq` places it in the input
    /// order: a detector's readings are applied in increasing `seq` (ties in offer order), so
    /// a driver that offers in another order (several parsers) still gets the same result.
    /// [`Ingest::offer`] numbers its readings itself; a driver should use one of the two.
    pub fn offer_checked(&mut self, reading: CheckedReading, seq: u64) -> Result<(), Rejected> {
        if window_end(reading.ts, Win::M1.ms()) + self.retention <= self.now {
            return Err(Rejected::new(Reason::TooLate, "older than the traffic retention"));
        }
        self.staged.push(Staged { seq, reading });
        Ok(())
    }

    /// Adds the staged readings to their detectors' pending sums, detector by detector.
    fn apply_staged(&mut self) {
        // Sort compact keys, not the readings: (detector, seq, position), unique by position, so
        // equal (detector, seq) — the elements of one batch — keep their offer order.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend(
            self.staged
                .iter()
                .enumerate()
                .map(|(i, s)| (s.reading.det as u128) << 96 | (s.seq as u128) << 32 | i as u128),
        );
        order.sort_unstable();
        for &key in &order {
            let s = self.staged[key as u32 as usize];
            self.accumulate(s.reading);
        }
        self.staged.clear();
        self.order = order;
    }

    /// Adds one reading to its detector's open windows and liveness spans.
    fn accumulate(&mut self, CheckedReading { det, interval_s, ts, sum }: CheckedReading) {
        let p = &mut self.pending[det as usize];
        if !p.listed {
            p.listed = true;
            self.active.push(det);
        }
        // A detector has a handful of open windows: a linear scan beats hashing.
        for win in Win::ALL {
            let start = window_start(ts, win.ms());
            match p.windows.iter_mut().find(|(w, s, _)| *w == win && *s == start) {
                Some((_, _, acc)) => acc.plus_equals(&sum),
                None => p.windows.push((win, start, sum)),
            }
        }
        let until = ts + (self.offline_intervals + 1) * interval_s as Ms * SECOND;
        if until > self.now {
            // Extend a span this reading overlaps, unless that would move a released start.
            let joins = p
                .spans
                .iter_mut()
                .find(|s| ts <= s.until && s.from <= until && (!s.inserted || s.from <= ts));
            match joins {
                Some(s) => {
                    s.from = s.from.min(ts);
                    s.until = s.until.max(until);
                }
                None => p.spans.push(Span { from: ts, until, inserted: false }),
            }
        }
        if !self.seen[det as usize] {
            self.seen[det as usize] = true;
            p.seen_at = Some(ts);
        }
    }

    /// Ends the round: releases every update due by the new watermark `upto` into `inputs`
    /// (which must still be at the previous watermark), then moves `now` to `upto`. The caller
    /// advances the inputs to [`Ingest::now`] afterwards.
    pub fn flush(&mut self, inputs: &mut Inputs, upto: Ms) {
        self.apply_staged();
        let now = self.now;
        let upto = upto.max(now);
        let t = &mut inputs.traffic;
        while let Some(due) = self.expiring.first_entry().filter(|e| *e.key() <= upto) {
            let at = now.max(*due.key());
            for (key, mut sum) in due.remove() {
                sum.negate();
                t.windows.update_at(key, at, sum);
            }
        }
        let retention = self.retention;
        let expiring = &mut self.expiring;
        let pending = &mut self.pending;
        // In detector order: the sweep walks `pending` in address order.
        self.active.sort_unstable();
        self.active.retain(|&det| {
            let p = &mut pending[det as usize];
            p.windows.retain(|&mut (win, start, sum)| {
                let end = start + win.ms();
                if end > upto {
                    return true;
                }
                let key = DetWin { win, start, det };
                t.windows.update_at(key, now.max(end), sum);
                expiring.entry(end + retention).or_default().push((key, sum));
                false
            });
            p.spans.retain_mut(|s| {
                if !s.inserted && s.from <= upto {
                    t.alive.update_at(det, now.max(s.from), 1);
                    s.inserted = true;
                }
                if s.inserted && s.until <= upto {
                    t.alive.update_at(det, now.max(s.until), -1);
                    return false;
                }
                true
            });
            if let Some(at) = p.seen_at.filter(|&at| at <= upto) {
                t.seen.update_at(det, now.max(at), 1);
                p.seen_at = None;
            }
            p.listed = !p.is_empty();
            p.listed
        });
        self.now = upto;
    }
}
