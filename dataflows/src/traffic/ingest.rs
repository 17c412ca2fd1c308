//! The traffic ingest: detector readings in, timed updates of the traffic input collections out.
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
//!   its start and retracted at its end — the offline timer fires on the watermark, and only up
//!   to the `timers_upto` a driver gives (at the end of input: the last event time seen, so the
//!   end of a recording or a shutdown reports nothing offline);
//! * a detector's first reading marks it as `seen`.
//!
//! # Why a late reading never half-corrects its window
//! A reading is accepted iff its 1-minute window's retraction time `end + retention` is after
//! `now` (the watermark the round started from; its 5-minute window ends no earlier). In
//! [`Ingest::flush`] the accepted sums are released first — at `max(now, end)`, with their
//! retraction scheduled at `end + retention`, which is after `now` — and only then are the
//! retractions due by `upto` applied, at their own times. So the late part of a window is
//! retracted at exactly the instant its earlier part is, and the window's total goes from the
//! full sum straight to nothing: the last value written for a window is always the exact total
//! of every reading accepted into it. (Running the retractions first, as an earlier version
//! did, retracted the late part one round later than the rest and wrote the late part alone as
//! a "correction".) The property test in `dataflows/tests/pipeline.rs` checks this against a
//! brute-force model for random readings, delays and round cuts on one and two workers.
//!
//! # Idempotence
//! A reading's identity is its detector and `ts` (CONTRACT §1). Each detector keeps the readings
//! it accepted while they can still change a window (until their 1-minute window's retention
//! ends — exactly as long as a copy could be accepted at all). A second copy with the same
//! content changes nothing and is counted in [`Ingest::duplicates`]; a copy with other content
//! replaces the first: the difference of the two is added to the windows (a correction).
//!
//! # Readings far ahead
//! A reading stamped more than `ingest.max_future_s` past the city's clock (see
//! [`crate::time::SourceClock`]: one source far ahead of all others does not move it) waits in
//! a held list instead of entering any window, and joins the others once the clock catches up.
//! Whatever is still held at the end of input is handed back by [`Ingest::take_held`] for the
//! dead letters (`future_ts`).
//!
//! # Speed
//! Offering a reading only validates it and appends it to a *staged* list; [`Ingest::flush`]
//! first sorts the staged readings by detector and input order and applies them in one sweep.
//! The result is the same as applying each reading at once — sums do not depend on order, and a
//! detector's own readings keep theirs — but the sweep walks the per-detector state in address
//! order instead of jumping to a random detector per reading, which on a large city is mostly
//! cache misses. Holding updates here until they are due, instead of handing differential
//! updates dated in the future, matters too: an arrangement re-merges its pending future updates
//! at every round until they come due. It also means an open window reaches differential once,
//! fully summed, instead of once per reading ("feed differential little").

use crate::city::{CityModel, Idx};
use crate::config::Config;
use crate::event::{Reason, Rejected};
use crate::time::{Ms, SECOND, SourceClock, window_end, window_start};
use crate::traffic::TrafficInputs;
pub use crate::traffic::events::CheckedReading;
use crate::traffic::{DetWin, FlowSum, Win};
use differential_dataflow::difference::{Abelian, Semigroup};
use smallvec::SmallVec;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// A liveness span of one detector: `[from, until)`, and whether its insertion was released.
#[derive(Clone, Copy, Debug)]
struct Span {
    from: Ms,
    until: Ms,
    inserted: bool,
}

/// A reading a detector accepted, kept for idempotence while it can still change a window:
/// its content in 24 bytes, from which its exact [`FlowSum`] is rebuilt (10,000 detectors keep
/// about 30 each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recent {
    ts: Ms,
    interval_s: u32,
    count: u32,
    /// Occupancy, ppm; −1 when none was reported.
    occ_ppm: i32,
    /// Speed, 0.001 km/h; −1 when none counts (none reported, or no vehicle).
    speed_m: i32,
}

impl Recent {
    /// The content of one checked reading (exact: its sums are products of these parts).
    fn of(r: &CheckedReading) -> Recent {
        let s = &r.sum;
        Recent {
            ts: r.ts,
            interval_s: r.interval_s,
            count: s.count as u32,
            occ_ppm: if s.occ_s > 0 { (s.occ_ppm_s / s.occ_s) as i32 } else { -1 },
            speed_m: if s.speed_n > 0 { (s.speed_mk / s.speed_n) as i32 } else { -1 },
        }
    }

    /// The reading's exact sums, as [`FlowSum::reading`] made them.
    fn sum(&self) -> FlowSum {
        let (i, c) = (self.interval_s as i64, self.count as i64);
        let (occ, speed) = (self.occ_ppm as i64, self.speed_m as i64);
        FlowSum {
            count: c,
            occ_s: if occ >= 0 { i } else { 0 },
            occ_ppm_s: if occ >= 0 { occ * i } else { 0 },
            speed_n: if speed >= 0 { c } else { 0 },
            speed_mk: if speed >= 0 { speed * c } else { 0 },
        }
    }
}

/// What one detector has waiting to be released, and the readings it remembers.
struct Pending {
    /// Sums of windows that have not closed yet (or late ones not yet released). Inline: a
    /// detector has a few open windows, and an extra heap indirection per reading costs a
    /// cache miss.
    windows: SmallVec<[(Win, Ms, FlowSum); 4]>,
    /// Liveness spans not yet fully released.
    spans: SmallVec<[Span; 2]>,
    /// The first reading's time, until the `seen` insertion is released.
    seen_at: Option<Ms>,
    /// Accepted readings by `ts` (ascending), while a copy of them could still be accepted.
    recent: VecDeque<Recent>,
    /// When the oldest of `recent` can be forgotten (`Ms::MAX` while empty): checked here, the
    /// sweep touches the readings themselves only when one is due.
    recent_until: Ms,
    /// Whether the detector is in the `active` list.
    listed: bool,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            windows: SmallVec::new(),
            spans: SmallVec::new(),
            seen_at: None,
            recent: VecDeque::new(),
            recent_until: Ms::MAX,
            listed: false,
        }
    }
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.spans.is_empty() && self.seen_at.is_none() && self.recent.is_empty()
    }
}

/// A reading with its place in the input order (`seq`, the driver's numbering: `replay` uses
/// the line number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequenced {
    /// Place in the input order.
    pub seq: u64,
    /// The reading.
    pub reading: CheckedReading,
}

/// Per-worker ingest state (see module docs).
pub struct Ingest {
    city: Arc<CityModel>,
    retention: Ms,
    offline_intervals: u64,
    now: Ms,
    pending: Vec<Pending>,
    /// Detectors with something pending or remembered.
    active: Vec<Idx>,
    seen: Vec<bool>,
    /// Window sums released earlier, by the time they are due to be retracted.
    expiring: BTreeMap<Ms, Vec<(DetWin, FlowSum)>>,
    /// Readings offered since the last flush, in arrival order.
    staged: Vec<Sequenced>,
    /// Readings beyond the clock's horizon, waiting for it (see module docs).
    held: Vec<Sequenced>,
    /// Scratch for the order in which staged readings are applied.
    order: Vec<u128>,
    /// The sources this worker has seen, for the city's clock.
    sources: SourceClock,
    /// The latest event time of an applied reading.
    max_applied: Option<Ms>,
    duplicates: u64,
    corrections: u64,
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
            held: Vec::new(),
            order: Vec::new(),
            sources: SourceClock::default(),
            max_applied: None,
            duplicates: 0,
            corrections: 0,
        }
    }

    /// The city model.
    pub fn city(&self) -> Arc<CityModel> {
        self.city.clone()
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

    /// The sources this worker has seen (accepted records only), for the city's clock.
    pub fn sources(&self) -> &SourceClock {
        &self.sources
    }

    /// The latest event time of a reading applied to a window (held readings excluded).
    pub fn max_applied(&self) -> Option<Ms> {
        self.max_applied
    }

    /// Copies of readings already accepted that changed nothing (CONTRACT §1), so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Copies of readings already accepted that replaced them with other content, so far.
    pub fn corrections(&self) -> u64 {
        self.corrections
    }

    /// Takes the readings still held (at the end of input: the `future_ts` dead letters), in
    /// input order.
    pub fn take_held(&mut self) -> Vec<Sequenced> {
        let mut held = std::mem::take(&mut self.held);
        held.sort_unstable_by_key(|h| (h.seq, h.reading.det));
        held
    }

    /// Offers a reading already checked against the city model. `seq` places it in the input
    /// order: a detector's readings are applied in increasing `seq` (ties in offer order), so
    /// a driver that offers in another order (several parsers) still gets the same result.
    pub fn offer_checked(&mut self, reading: CheckedReading, seq: u64) -> Result<(), Rejected> {
        if self.is_too_late(&reading) {
            return Err(Rejected::new(Reason::TooLate, "older than the traffic retention"));
        }
        self.sources.observe(reading.source(), reading.ts);
        self.staged.push(Sequenced { seq, reading });
        Ok(())
    }

    /// Whether a reading's 1-minute window has been (or would have been) retracted by `now`.
    fn is_too_late(&self, r: &CheckedReading) -> bool {
        window_end(r.ts, Win::M1.ms()) + self.retention <= self.now
    }

    /// Applies the staged readings detector by detector (readings beyond `horizon` are held
    /// instead, held ones within it join in).
    ///
    /// A held reading is never too late when it joins: it was held in the previous round, so it
    /// lay beyond that round's horizon, which is at least its watermark (see [`Ingest::flush`])
    /// — its window is still open.
    fn apply_staged(&mut self, horizon: Ms) {
        if self.held.iter().any(|h| h.reading.ts <= horizon) {
            let (due, wait): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|h| h.reading.ts <= horizon);
            self.held = wait;
            debug_assert!(due.iter().all(|h| !self.is_too_late(&h.reading)));
            self.staged.extend(due);
        }
        if self.staged.iter().any(|s| s.reading.ts > horizon) {
            let held = &mut self.held;
            self.staged.retain(|s| {
                let keep = s.reading.ts <= horizon;
                if !keep {
                    held.push(*s);
                }
                keep
            });
        }
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
            self.apply(s.reading);
        }
        self.staged.clear();
        self.order = order;
    }

    /// Applies one reading: a new identity is accumulated, an identical copy is counted, a copy
    /// with other content replaces the first.
    fn apply(&mut self, r: CheckedReading) {
        let p = &mut self.pending[r.det as usize];
        let new = Recent::of(&r);
        debug_assert_eq!(new.sum(), r.sum);
        // Readings mostly come in time order: the common case is a push at the end.
        let at = match p.recent.back() {
            Some(last) if last.ts < r.ts => Err(p.recent.len()),
            None => Err(0),
            _ => p.recent.binary_search_by_key(&r.ts, |x| x.ts),
        };
        let delta = match at {
            Err(i) if i == p.recent.len() && i > 0 => {
                p.recent.push_back(new);
                r.sum
            }
            Err(i) => {
                p.recent.insert(i, new);
                if i == 0 {
                    p.recent_until = window_end(r.ts, Win::M1.ms()) + self.retention;
                }
                r.sum
            }
            Ok(i) => {
                let old = p.recent[i];
                if old == new {
                    self.duplicates += 1;
                    return;
                }
                self.corrections += 1;
                p.recent[i] = new;
                let mut delta = old.sum();
                delta.negate();
                delta.plus_equals(&r.sum);
                delta
            }
        };
        self.accumulate(r.det, r.ts, r.interval_s, delta);
    }

    /// Adds `sum` (a reading's, or a correction's difference) to its detector's open windows,
    /// and extends the detector's liveness.
    fn accumulate(&mut self, det: Idx, ts: Ms, interval_s: u32, sum: FlowSum) {
        self.max_applied = self.max_applied.max(Some(ts));
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

    /// Ends the round: applies the staged readings (holding those beyond `horizon`: the
    /// city's clock plus `ingest.max_future_s`; it must be at least `upto`), releases every
    /// update due by the new watermark `upto` into `inputs` (which must still be at the
    /// previous watermark) — liveness retractions only up to `timers_upto` — then moves `now`
    /// to `upto`. The caller advances the inputs to [`Ingest::now`] afterwards.
    pub fn flush(&mut self, inputs: &mut TrafficInputs, upto: Ms, horizon: Ms, timers_upto: Ms) {
        let horizon = horizon.max(upto);
        self.apply_staged(horizon);
        let now = self.now;
        let upto = upto.max(now);
        let retention = self.retention;
        let t = inputs;
        let expiring = &mut self.expiring;
        let pending = &mut self.pending;
        // Releases first, retractions after (see "Why a late reading never half-corrects").
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
                if s.inserted && s.until <= upto.min(timers_upto) {
                    t.alive.update_at(det, now.max(s.until), -1);
                    return false;
                }
                true
            });
            if let Some(at) = p.seen_at.filter(|&at| at <= upto) {
                t.seen.update_at(det, now.max(at), 1);
                p.seen_at = None;
            }
            // Forget readings no copy of which could be accepted any more.
            while p.recent_until <= upto {
                p.recent.pop_front();
                p.recent_until =
                    p.recent.front().map_or(Ms::MAX, |r| window_end(r.ts, Win::M1.ms()) + retention);
            }
            p.listed = !p.is_empty();
            p.listed
        });
        while let Some(due) = self.expiring.first_entry().filter(|e| *e.key() <= upto) {
            let at = now.max(*due.key());
            for (key, mut sum) in due.remove() {
                sum.negate();
                t.windows.update_at(key, at, sum);
            }
        }
        self.now = upto;
    }
}
