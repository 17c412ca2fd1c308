//! The ingest side of the dataflows: decoded events in, timed updates of the input collections out.
//!
//! One [`Ingest`] per worker. Between two flushes the input time `now` (the watermark of the
//! previous batch) is fixed, so readings of the same (detector, window) can be summed before
//! differential sees them: the dataflow receives one partial [`FlowSum`] per key and batch
//! instead of one record per reading ("feed differential little"). On flush each key becomes
//!
//! * an insertion at `max(now, window end)` — the window's result appears when the watermark
//!   passes its end, or at once as a correction if the window has already closed;
//! * a retraction at the first batch whose `now` is at or past `window end + retention` — state
//!   stays bounded without any clean-up pass. The retraction is queued here rather than handed
//!   to differential dated in the future: future-dated updates are re-merged by every
//!   arrangement at every batch until they come due, and a retention of 15 minutes would keep
//!   several batches of them pending. No output depends on the retraction's exact time: a
//!   window's retraction alone writes nothing, and every window of a district or a lane
//!   comparison shares its end, so they leave together.
//!
//! A reading whose 1-minute window ended `retention` or more before `now` has (or would have
//! had) its window retracted: it is rejected as `too_late`. Liveness intervals (for
//! `traffic.detector_offline`) are merged per detector within the batch and inserted the same
//! way, with their end as retraction time.

use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::event::{DetectorReading, Event, Reason, Rejected};
use crate::pipeline::Inputs;
use crate::time::{Ms, SECOND, window_end, window_start};
use crate::traffic::{DetWin, FlowSum, Win};
use differential_dataflow::difference::Semigroup;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Per-worker ingest state (see module docs).
pub struct Ingest {
    city: Arc<CityModel>,
    retention: Ms,
    offline_intervals: u64,
    now: Ms,
    windows: FxHashMap<DetWin, FlowSum>,
    /// Sums inserted earlier, by the time they are due to be retracted.
    expiring: BTreeMap<Ms, Vec<(DetWin, FlowSum)>>,
    /// Liveness spans of this batch, per detector, and the detectors that have any.
    alive: Vec<Vec<(Ms, Ms)>>,
    alive_dets: Vec<Idx>,
    seen: Vec<bool>,
    seen_pending: Vec<(Idx, Ms)>,
}

impl Ingest {
    /// A fresh ingest state for one worker.
    pub fn new(city: Arc<CityModel>, cfg: &Config) -> Self {
        let seen = vec![false; city.detectors.len()];
        Ingest {
            alive: vec![Vec::new(); city.detectors.len()],
            alive_dets: Vec::new(),
            city,
            retention: cfg.traffic.retention_ms(),
            offline_intervals: cfg.traffic.offline_intervals as u64,
            now: 0,
            windows: FxHashMap::default(),
            expiring: BTreeMap::new(),
            seen,
            seen_pending: Vec::new(),
        }
    }

    /// Sets the input time for the next batch. Call only after [`Ingest::flush`], never backwards.
    pub fn set_now(&mut self, now: Ms) {
        debug_assert!(self.windows.is_empty() && now >= self.now);
        self.now = self.now.max(now);
    }

    /// The input time of the current batch.
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
        let Some(det) = self.city.detector(&r.sensor) else {
            return Err(Rejected::new(Reason::UnknownId, format!("unknown detector {:?}", r.sensor)));
        };
        let segment = self.city.detectors[det as usize].segment;
        if self.city.segments[segment as usize].id != r.segment {
            let known = self.city.segment(&r.segment).is_some();
            let detail = if known {
                format!("detector {:?} is not on segment {:?}", r.sensor, r.segment)
            } else {
                format!("unknown segment {:?}", r.segment)
            };
            return Err(Rejected::new(Reason::UnknownId, detail));
        }
        let ts = r.ts.0;
        if window_end(ts, Win::M1.len()) + self.retention <= self.now {
            return Err(Rejected::new(Reason::TooLate, "older than the traffic retention"));
        }
        let sum = FlowSum::reading(r.interval_s, r.count, r.occupancy, r.speed_kmh);
        for win in Win::ALL {
            let key = DetWin { win, start: window_start(ts, win.len()), det };
            self.windows.entry(key).and_modify(|s| s.plus_equals(&sum)).or_insert(sum);
        }
        let until = ts + (self.offline_intervals + 1) * r.interval_s as Ms * SECOND;
        let spans = &mut self.alive[det as usize];
        if spans.is_empty() {
            self.alive_dets.push(det);
        }
        spans.push((ts, until));
        if !self.seen[det as usize] {
            self.seen[det as usize] = true;
            self.seen_pending.push((det, self.now.max(ts)));
        }
        Ok(())
    }

    /// Hands the batch to the inputs (which must be at time `now`) as timed updates.
    pub fn flush(&mut self, inputs: &mut Inputs) {
        let now = self.now;
        let t = &mut inputs.traffic;
        while let Some(due) = self.expiring.first_entry().filter(|e| *e.key() <= now) {
            for (key, mut sum) in due.remove() {
                differential_dataflow::difference::Abelian::negate(&mut sum);
                t.windows.update_at(key, now, sum);
            }
        }
        for (key, sum) in self.windows.drain() {
            let end = key.start + key.win.len();
            t.windows.update_at(key, now.max(end), sum);
            self.expiring.entry(end + self.retention).or_default().push((key, sum));
        }
        for det in self.alive_dets.drain(..) {
            let spans = &mut self.alive[det as usize];
            spans.sort_unstable();
            let mut merged: Vec<(Ms, Ms)> = Vec::with_capacity(1);
            for (a, b) in spans.drain(..) {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            for (a, b) in merged {
                if b > now {
                    t.alive.update_at(det, now.max(a), 1);
                    t.alive.update_at(det, b, -1);
                }
            }
        }
        for (det, at) in self.seen_pending.drain(..) {
            t.seen.update_at(det, at, 1);
        }
    }
}
