//! The road network as a graph, points placed on it, and the ETA ranking of units for an
//! incident (CONTRACT §6).
//!
//! # Model
//!
//! Every directed segment of the city model is a node of a [`RoadGraph`]. A vehicle that reaches
//! the end of segment `a` may continue onto the start of segment `b` when the model links them:
//! `b` is in `a`'s `downstream`, or `a` is in `b`'s `upstream` (either side is enough) — or when
//! `b` starts where `a` ends, within [`JUNCTION_M`] (a turn at a junction; not the U-turn onto
//! the opposite direction of the same street). A vehicle
//! is never *at* a node but at a [`Place`]: a segment and an offset in metres from its start,
//! measured along the segment and scaled to its modelled `length_m` (the drawn polyline and the
//! modelled length need not agree; the offset runs from 0 at the start to `length_m` at the end).
//!
//! ## Placement
//!
//! [`RoadGraph::place`] puts a WGS84 point at the nearest point of the nearest segment. Distances
//! are computed in one equirectangular projection in metres, centred on the network (`x` east,
//! `y` north, the east-west scale taken at the centre's latitude): over a city tens of kilometres
//! across this distorts a distance by well under 1 %, and both the distances that are compared and
//! the offsets are read in the same projection. Every straight piece of every segment sits in an
//! R-tree (`rstar`); its nearest-neighbour iterator yields pieces by increasing exact distance, so
//! a query reads only the pieces near the point. Where several segments are equally near — the
//! two directions of one street drawn on the same line, the segments meeting at a junction — each
//! one whose distance is within [`PLACE_TOLERANCE_M`] of the nearest is a candidate, at its own
//! nearest point, and an ETA takes the best of them. Candidates come in segment order.
//!
//! ## Costs
//!
//! Times are integer milliseconds and distances integer millimetres, so results are exact,
//! comparable and the same however a sum is grouped. Covering `x` metres of segment `s` at speed
//! `v_s` (m/s) costs `round(x · 1000 / v_s)` ms and `round(x · 1000)` mm. A segment whose speed is
//! not a positive finite number (or is missing) cannot be travelled at all. For a unit at
//! `(u, ou)` and an incident at `(i, oi)`:
//!
//! * same segment, incident ahead (`u = i`, `ou ≤ oi`): the span `oi − ou` of `u`;
//! * otherwise: the tail `len_u − ou` of `u`, the whole of every intermediate segment, and the
//!   head `oi` of `i`, along the best route `u → … → i` over downstream links.
//!
//! Routes compare by (time, distance): the fastest route, and among equally fast ones the
//! shortest. A unit's ETA is the best over its candidate places × the incident's candidate places.
//! Units rank by (ETA, distance, unit id).
//!
//! ## Why the ranking is correct
//!
//! Let `D(s)` be the best (time, distance) from the **start** of segment `s` to the incident. It
//! satisfies `D(s) = min(H(s), whole(s) + min over downstream t of D(t))`, where `H(s)` is the
//! head cost to the nearest incident place on `s` (absent when the incident is not on `s`). That
//! is a shortest-path problem on the reversed graph with the incident's places as sources
//! (initial value `H`) and the weight of a reversed link `t → s` the whole cost of `s`: one
//! multi-source Dijkstra over upstream links computes every `D`. Pairs (time, distance) under
//! lexicographic order and componentwise addition are non-negative and addition preserves the
//! order, so Dijkstra's argument holds for them as for plain numbers. A unit at `(u, ou)` then has
//! `ETA = min(direct, tail(u, ou) + min over downstream t of D(t))`, where `direct` is the
//! same-segment span when an incident place lies ahead on `u`. The definition above takes `direct`
//! alone in that case; the `min` agrees with it because going round costs at least the tail
//! `len_u − ou ≥ oi − ou`, and rounding is monotone.
//!
//! The search is **bounded**. Units are indexed by segment; when Dijkstra settles `t` (in
//! non-decreasing order of `D`), every unit place on a segment `u` upstream of `t` gets
//! `tail + D(t)`, and the first such value is that place's best, since later settled successors
//! have larger `D`. The ranker keeps the current best `k` units. Every value not yet found is
//! `tail + D(t) ≥ D(t)` for a `t` not yet settled, hence at least the key being settled now: once
//! that key exceeds the current `k`-th best (time, distance), no unit can still enter the best `k`
//! or improve within it, and the search stops. It also stops as soon as every unit place has its
//! value. For `k` = 3 among hundreds of units the search therefore settles only the
//! neighbourhood of the incident that holds the nearest units.
//!
//! Everything here is pure and deterministic: no I/O, no clock, and ties broken by value and
//! index, never by hash or allocation order. [`Ranker`] holds the scratch arrays of a search,
//! stamped with a generation counter so a call neither allocates nor clears per-segment state.

use crate::city::{CityModel, Idx};
use geo::LineString;
use rstar::RTree;
use rstar::primitives::{GeomWithData, Line};
use smallvec::SmallVec;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, TryLockError};

/// Segments whose nearest point is within this many metres of the nearest segment's are all
/// candidates of a placement: the two directions of a street drawn on one line are at the same
/// distance, and so are the segments meeting at a junction when the point is there.
pub const PLACE_TOLERANCE_M: f64 = 1.0;

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A position on the road network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Place {
    /// The segment.
    pub seg: Idx,
    /// Metres from the segment's start along it, in `0..=length_m` (a value outside is clamped).
    pub offset_m: f64,
}

/// The candidate places of a point: every segment equally near, in segment order.
pub type Placement = SmallVec<[Place; 2]>;

/// A unit to rank, with the candidate places of its position.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitAt {
    /// An opaque key of the unit, returned in [`Ranked::unit`] and the last tie-breaker; keys
    /// should be distinct (two entries with one key are ranked as two units).
    pub id: u32,
    /// Where it is; a unit without places cannot reach anything.
    pub places: Placement,
}

/// A unit that can reach the incident, with its ETA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    /// The unit's [`UnitAt::id`].
    pub unit: u32,
    /// Travel time along the best route, milliseconds.
    pub eta_ms: u64,
    /// Length of that route, metres (whole millimetres).
    pub distance_m: f64,
}

/// (time ms, distance mm): how routes compare, lexicographically.
type Cost = (u64, u64);

fn add(a: Cost, b: Cost) -> Cost {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}

/// The cost of covering `metres` (≥ 0) at `speed_mps`; `None` when the speed is not a positive
/// finite number.
fn span(metres: f64, speed_mps: f64) -> Option<Cost> {
    (speed_mps > 0.0 && speed_mps.is_finite())
        .then(|| ((metres * 1000.0 / speed_mps).round() as u64, (metres * 1000.0).round() as u64))
}

/// An offset clamped into `0..=len` (NaN counts as 0).
fn clamp_offset(offset: f64, len: f64) -> f64 {
    if offset >= 0.0 { offset.min(len) } else { 0.0 }
}

/// The equirectangular projection of the network: WGS84 degrees to metres around a centre.
#[derive(Clone, Copy, Debug)]
struct Projection {
    lon0: f64,
    lat0: f64,
    /// Metres per degree east, at the centre's latitude.
    kx: f64,
    /// Metres per degree north.
    ky: f64,
}

impl Projection {
    /// The projection centred on the bounding box of `lines`.
    fn around<'a>(lines: impl Iterator<Item = &'a LineString<f64>>) -> Projection {
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for c in lines.flat_map(|l| l.0.iter()).filter(|c| c.x.is_finite() && c.y.is_finite()) {
            lo = [lo[0].min(c.x), lo[1].min(c.y)];
            hi = [hi[0].max(c.x), hi[1].max(c.y)];
        }
        let (lon0, lat0) =
            if lo[0] <= hi[0] { ((lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0) } else { (0.0, 0.0) };
        let ky = EARTH_RADIUS_M.to_radians();
        Projection { lon0, lat0, kx: ky * lat0.to_radians().cos(), ky }
    }

    fn project(&self, lon: f64, lat: f64) -> [f64; 2] {
        [(lon - self.lon0) * self.kx, (lat - self.lat0) * self.ky]
    }
}

/// What the R-tree stores with each straight piece of a segment.
#[derive(Clone, Copy, Debug)]
struct PieceOf {
    seg: Idx,
    /// Position of the piece within its segment (0 = first).
    piece: u32,
    /// Projected length of the segment before this piece, metres.
    before_m: f64,
}

type Piece = GeomWithData<Line<[f64; 2]>, PieceOf>;

/// The directed road network of a city model, with an index for placing points on it.
/// Immutable once built; share it between workers.
#[derive(Debug)]
pub struct RoadGraph {
    /// Modelled length of each segment, metres.
    length_m: Vec<f64>,
    /// Projected length of each segment's polyline, metres (offsets are scaled by
    /// `length_m / drawn_m`).
    drawn_m: Vec<f64>,
    /// Downstream links, compressed: segment `s` feeds `down[down_at[s]..down_at[s + 1]]`.
    down_at: Vec<u32>,
    down: Vec<Idx>,
    /// Upstream links, compressed the same way.
    up_at: Vec<u32>,
    up: Vec<Idx>,
    projection: Projection,
    pieces: RTree<Piece>,
    /// Scratch for [`RoadGraph::rank`]; a caller that ranks often may keep its own [`Ranker`].
    scratch: Mutex<Ranker>,
}

/// Links `(from, to)`, sorted and without duplicates, as compressed adjacency over `n` nodes.
fn compress(n: usize, links: &[(Idx, Idx)]) -> (Vec<u32>, Vec<Idx>) {
    let mut at = vec![0u32; n + 1];
    for &(from, _) in links {
        at[from as usize + 1] += 1;
    }
    for s in 0..n {
        at[s + 1] += at[s];
    }
    (at, links.iter().map(|&(_, to)| to).collect())
}

/// A segment that starts within this many metres of where another ends is a turn from it at
/// the junction (see the module docs).
pub const JUNCTION_M: f64 = 15.0;

/// The turns at junctions: `a → b` whenever `b` starts within [`JUNCTION_M`] of `a`'s end,
/// except the U-turn onto the opposite direction of the same street (`b` ends where `a`
/// starts). City models link segments of one road through `downstream`/`upstream`; the turns
/// onto crossing roads are in the geometry, and a vehicle at a junction can take them.
fn junction_links(city: &CityModel) -> Vec<(Idx, Idx)> {
    let projection = Projection::around(city.segments.iter().map(|s| &s.line));
    let ends = |s: &crate::city::Segment| {
        let (first, last) = (s.line.0.first()?, s.line.0.last()?);
        Some((projection.project(first.x, first.y), projection.project(last.x, last.y)))
    };
    let ends: Vec<Option<([f64; 2], [f64; 2])>> = city.segments.iter().map(ends).collect();
    let starts = RTree::bulk_load(
        ends.iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|(start, _)| GeomWithData::new(start, i as Idx)))
            .collect(),
    );
    let near = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).hypot(a[1] - b[1]) <= JUNCTION_M;
    let mut links = Vec::new();
    for (a, e) in ends.iter().enumerate() {
        let Some((a_start, a_end)) = *e else { continue };
        for b in starts.locate_within_distance(a_end, JUNCTION_M * JUNCTION_M) {
            let b_idx = b.data;
            let u_turn = ends[b_idx as usize].is_some_and(|(_, b_end)| near(b_end, a_start));
            if b_idx as usize != a && !u_turn {
                links.push((a as Idx, b_idx));
            }
        }
    }
    links
}

impl RoadGraph {
    /// The road network of a city model: its segments, their links and their geometry.
    pub fn new(city: &CityModel) -> RoadGraph {
        let links: Vec<(Idx, Idx)> = city
            .segments
            .iter()
            .enumerate()
            // The city model makes upstream and downstream symmetric at load.
            .flat_map(|(s, seg)| seg.downstream.iter().map(move |&d| (s as Idx, d)))
            .chain(junction_links(city))
            .collect();
        let length_m = city.segments.iter().map(|s| s.length_m).collect();
        RoadGraph::build(length_m, links, city.segments.iter().map(|s| &s.line))
    }

    /// Builds the graph from segment lengths, links `(from, to)` (out-of-range ends are dropped)
    /// and one polyline per segment (missing ones make a segment unplaceable).
    fn build<'a>(
        length_m: Vec<f64>,
        mut links: Vec<(Idx, Idx)>,
        lines: impl Iterator<Item = &'a LineString<f64>> + Clone,
    ) -> RoadGraph {
        let n = length_m.len();
        links.retain(|&(a, b)| (a as usize) < n && (b as usize) < n);
        links.sort_unstable();
        links.dedup();
        let (down_at, down) = compress(n, &links);
        let mut reversed: Vec<(Idx, Idx)> = links.iter().map(|&(a, b)| (b, a)).collect();
        reversed.sort_unstable();
        let (up_at, up) = compress(n, &reversed);

        let projection = Projection::around(lines.clone());
        let mut drawn_m = vec![0.0; n];
        let mut pieces = Vec::new();
        for (s, line) in lines.take(n).enumerate() {
            let points: Vec<[f64; 2]> = line
                .0
                .iter()
                .filter(|c| c.x.is_finite() && c.y.is_finite())
                .map(|c| projection.project(c.x, c.y))
                .collect();
            let ends: Vec<([f64; 2], [f64; 2])> = match points.as_slice() {
                [] => vec![],
                [p] => vec![(*p, *p)],
                more => more.windows(2).map(|w| (w[0], w[1])).collect(),
            };
            let mut before_m = 0.0;
            for (piece, (a, b)) in ends.into_iter().enumerate() {
                let data = PieceOf { seg: s as Idx, piece: piece as u32, before_m };
                pieces.push(GeomWithData::new(Line::new(a, b), data));
                before_m += (b[0] - a[0]).hypot(b[1] - a[1]);
            }
            drawn_m[s] = before_m;
        }
        RoadGraph {
            length_m,
            drawn_m,
            down_at,
            down,
            up_at,
            up,
            projection,
            pieces: RTree::bulk_load(pieces),
            scratch: Mutex::new(Ranker::default()),
        }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.length_m.len()
    }

    /// Whether the network has no segment.
    pub fn is_empty(&self) -> bool {
        self.length_m.is_empty()
    }

    /// A segment's modelled length, metres.
    pub fn length_m(&self, seg: Idx) -> Option<f64> {
        self.length_m.get(seg as usize).copied()
    }

    /// The segments a segment feeds, in index order (empty for an unknown segment).
    pub fn downstream(&self, seg: Idx) -> &[Idx] {
        Self::adjacent(&self.down_at, &self.down, seg)
    }

    /// The segments feeding a segment, in index order (empty for an unknown segment).
    pub fn upstream(&self, seg: Idx) -> &[Idx] {
        Self::adjacent(&self.up_at, &self.up, seg)
    }

    fn adjacent<'a>(at: &[u32], to: &'a [Idx], seg: Idx) -> &'a [Idx] {
        let s = seg as usize;
        match (at.get(s), at.get(s + 1)) {
            (Some(&a), Some(&b)) => to.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Places a WGS84 point on the network: the nearest point of the nearest segment, and of
    /// every other segment within [`PLACE_TOLERANCE_M`] as near, in segment order. Empty for a
    /// network without geometry or a point that is not finite.
    pub fn place(&self, lon: f64, lat: f64) -> Placement {
        let mut out = Placement::new();
        if !(lon.is_finite() && lat.is_finite()) {
            return out;
        }
        let q = self.projection.project(lon, lat);
        // Nearest piece of each candidate segment: (segment, distance², piece).
        let mut near: SmallVec<[(Idx, f64, &Piece); 4]> = SmallVec::new();
        let mut limit_2 = None;
        for (piece, d2) in self.pieces.nearest_neighbor_iter_with_distance_2(&q) {
            // The first piece is the nearest: the others count within the tolerance of it.
            if d2 > *limit_2.get_or_insert_with(|| (d2.sqrt() + PLACE_TOLERANCE_M).powi(2)) {
                break;
            }
            let seg = piece.data.seg;
            match near.iter_mut().find(|(s, _, _)| *s == seg) {
                Some(best) => {
                    if (d2, piece.data.piece) < (best.1, best.2.data.piece) {
                        *best = (seg, d2, piece);
                    }
                }
                None => near.push((seg, d2, piece)),
            }
        }
        near.sort_unstable_by_key(|&(s, _, _)| s);
        for (seg, _, piece) in near {
            out.push(Place { seg, offset_m: self.offset_on(piece, q) });
        }
        out
    }

    /// The offset, in modelled metres, of the point of `piece` nearest to `q`.
    fn offset_on(&self, piece: &Piece, q: [f64; 2]) -> f64 {
        let (a, b) = (piece.geom().from, piece.geom().to);
        let d = [b[0] - a[0], b[1] - a[1]];
        let len_2 = d[0] * d[0] + d[1] * d[1];
        let t = if len_2 > 0.0 {
            (((q[0] - a[0]) * d[0] + (q[1] - a[1]) * d[1]) / len_2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let seg = piece.data.seg as usize;
        let (len, drawn) = (self.length_m[seg], self.drawn_m[seg]);
        if drawn > 0.0 {
            clamp_offset((piece.data.before_m + t * len_2.sqrt()) / drawn * len, len)
        } else {
            0.0
        }
    }

    /// The best `k` units to send to an incident at the candidate places `incident`, by
    /// (ETA, distance, unit id), with `speeds_mps[s]` the speed on segment `s` in m/s (a segment
    /// without a positive finite speed cannot be travelled). Units that cannot reach the incident
    /// are left out. Uses scratch kept in the graph (or a fresh one when another thread holds it);
    /// [`Ranker::rank`] does the same with scratch of the caller's.
    pub fn rank(&self, speeds_mps: &[f64], incident: &[Place], units: &[UnitAt], k: usize) -> Vec<Ranked> {
        match self.scratch.try_lock() {
            Ok(mut ranker) => ranker.rank(self, speeds_mps, incident, units, k),
            // A panic in an earlier search leaves nothing a new search reads: it starts a new
            // generation.
            Err(TryLockError::Poisoned(poisoned)) => {
                poisoned.into_inner().rank(self, speeds_mps, incident, units, k)
            }
            Err(TryLockError::WouldBlock) => Ranker::default().rank(self, speeds_mps, incident, units, k),
        }
    }
}

/// A unit place waiting for its value via a downstream segment.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    seg: Idx,
    /// Cost of the rest of its segment, from the place to the end.
    tail: Cost,
    /// Position of the unit in the `units` argument.
    unit: usize,
    done: bool,
}

/// Reusable scratch of a ranking search: per-segment arrays valid only where stamped with the
/// current generation, so a search touches only the segments it reaches. One per worker (or per
/// thread); it adapts to any graph.
#[derive(Debug, Default)]
pub struct Ranker {
    generation: u32,
    /// `dist[s]` is valid when `reached[s] == generation`.
    reached: Vec<u32>,
    dist: Vec<Cost>,
    /// Settled segments carry the current generation.
    settled: Vec<u32>,
    heap: BinaryHeap<Reverse<(Cost, Idx)>>,
    /// Unit places, sorted by segment; the first of segment `s` is `first[s]` when
    /// `has_units[s] == generation`.
    waiting: Vec<Waiting>,
    has_units: Vec<u32>,
    first: Vec<u32>,
    /// Best value found so far for each unit (by position).
    best: Vec<Option<Cost>>,
    /// The best units so far, sorted by (value, id, position); at most `k`.
    top: Vec<(Cost, u32, usize)>,
}

impl Ranker {
    /// An empty scratch; it grows to the graph on first use and serves any graph.
    pub fn new() -> Ranker {
        Ranker::default()
    }

    /// [`RoadGraph::rank`] with this scratch.
    pub fn rank(
        &mut self,
        graph: &RoadGraph,
        speeds_mps: &[f64],
        incident: &[Place],
        units: &[UnitAt],
        k: usize,
    ) -> Vec<Ranked> {
        if k == 0 || units.is_empty() {
            return Vec::new();
        }
        self.begin(graph.len(), units.len());
        let generation = self.generation;
        let speed = |s: usize| speeds_mps.get(s).copied().unwrap_or(f64::NAN);
        // The incident's places, valid and clamped: (segment, offset).
        let targets: SmallVec<[(usize, f64); 4]> = incident
            .iter()
            .filter_map(|p| {
                let len = graph.length_m(p.seg)?;
                Some((p.seg as usize, clamp_offset(p.offset_m, len)))
            })
            .collect();

        // Unit places: the same-segment case now, the rest waits for the search.
        for (pos, unit) in units.iter().enumerate() {
            for p in &unit.places {
                let Some(len) = graph.length_m(p.seg) else { continue };
                let (s, ou) = (p.seg as usize, clamp_offset(p.offset_m, len));
                let v = speed(s);
                for &(_, oi) in targets.iter().filter(|&&(i, oi)| i == s && ou <= oi) {
                    if let Some(c) = span(oi - ou, v) {
                        self.offer(pos, unit.id, c, k);
                    }
                }
                if let Some(tail) = span(len - ou, v) {
                    self.waiting.push(Waiting { seg: p.seg, tail, unit: pos, done: false });
                }
            }
        }
        self.waiting.sort_unstable_by_key(|w| (w.seg, w.unit));
        for (i, w) in self.waiting.iter().enumerate() {
            let s = w.seg as usize;
            if self.has_units[s] != generation {
                self.has_units[s] = generation;
                self.first[s] = i as u32;
            }
        }
        let mut remaining = self.waiting.len();

        // The reverse search, from the incident's places.
        for &(i, oi) in &targets {
            if let Some(head) = span(oi, speed(i)) {
                self.reach(i as Idx, head, k);
            }
        }
        while let Some(Reverse((d, t))) = self.heap.pop() {
            let ti = t as usize;
            if self.settled[ti] == generation || self.dist[ti] != d {
                continue; // a stale entry
            }
            if remaining == 0 || self.beyond(d, k) {
                break;
            }
            self.settled[ti] = generation;
            for &u in graph.upstream(t) {
                let ui = u as usize;
                if self.has_units[ui] == generation {
                    let mut w = self.first[ui] as usize;
                    while let Some(&place) = self.waiting.get(w).filter(|p| p.seg == u) {
                        if !place.done {
                            self.waiting[w].done = true;
                            remaining -= 1;
                            self.offer(place.unit, units[place.unit].id, add(place.tail, d), k);
                        }
                        w += 1;
                    }
                }
                if let Some(whole) = span(graph.length_m[ui], speed(ui)) {
                    self.reach(u, add(whole, d), k);
                }
            }
        }
        self.top
            .iter()
            .map(|&((ms, mm), unit, _)| Ranked { unit, eta_ms: ms, distance_m: mm as f64 / 1000.0 })
            .collect()
    }

    /// Starts a search over `n` segments and `units` units: a new generation, arrays grown.
    fn begin(&mut self, n: usize, units: usize) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: old stamps could match again, so wipe them once every 2³² searches.
            for stamps in [&mut self.reached, &mut self.settled, &mut self.has_units] {
                stamps.fill(0);
            }
            self.generation = 1;
        }
        self.grow(n);
        self.heap.clear();
        self.waiting.clear();
        self.best.clear();
        self.best.resize(units, None);
        self.top.clear();
    }

    /// Makes room for `n` segments (new entries carry no generation: 0).
    fn grow(&mut self, n: usize) {
        if self.reached.len() < n {
            self.reached.resize(n, 0);
            self.dist.resize(n, (0, 0));
            self.settled.resize(n, 0);
            self.has_units.resize(n, 0);
            self.first.resize(n, 0);
        }
    }

    /// Whether a value is past the current `k`-th best, so that nothing reached through it can
    /// enter the best `k`.
    fn beyond(&self, c: Cost, k: usize) -> bool {
        self.top.len() >= k && self.top.last().is_some_and(|&(worst, _, _)| c > worst)
    }

    /// Segment `s` reached with `d` from its start: keep it if better, and queue it unless it is
    /// already too far to matter.
    fn reach(&mut self, s: Idx, d: Cost, k: usize) {
        let si = s as usize;
        if self.settled[si] == self.generation {
            return;
        }
        if self.reached[si] != self.generation || d < self.dist[si] {
            self.reached[si] = self.generation;
            self.dist[si] = d;
            if !self.beyond(d, k) {
                self.heap.push(Reverse((d, s)));
            }
        }
    }

    /// A unit can reach the incident with `c`: keep the best `k` units.
    fn offer(&mut self, pos: usize, id: u32, c: Cost, k: usize) {
        let previous = self.best[pos];
        if previous.is_some_and(|p| p <= c) {
            return;
        }
        if let Some(p) = previous
            && let Ok(at) = self.top.binary_search(&(p, id, pos))
        {
            self.top.remove(at);
        }
        self.best[pos] = Some(c);
        let entry = (c, id, pos);
        let at = self.top.partition_point(|e| *e < entry);
        if at < k {
            self.top.insert(at, entry);
            self.top.truncate(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use smallvec::smallvec;
    use std::cell::RefCell;

    // ---- Random networks against brute force ----

    /// A random network with an incident and units.
    #[derive(Clone, Debug)]
    struct Case {
        lengths: Vec<f64>,
        speeds: Vec<f64>,
        /// `(a, b)`: `b` in `a`'s downstream.
        down: Vec<(Idx, Idx)>,
        /// `(a, b)`: `a` in `b`'s upstream.
        up: Vec<(Idx, Idx)>,
        incident: Vec<Place>,
        units: Vec<UnitAt>,
        k: usize,
    }

    impl Case {
        fn graph(&self) -> RoadGraph {
            let links = self.down.iter().chain(&self.up).copied().collect();
            RoadGraph::build(self.lengths.clone(), links, std::iter::empty())
        }
    }

    fn length() -> impl Strategy<Value = f64> {
        prop_oneof![(1u32..=400).prop_map(f64::from), 0.5f64..400.0]
    }

    fn speed() -> impl Strategy<Value = f64> {
        prop_oneof![
            1 => Just(0.0),
            1 => Just(f64::NAN),
            8 => (1u32..=30).prop_map(f64::from),
            4 => 0.5f64..30.0,
        ]
    }

    /// A place on one of `lengths` (or, now and then, on a segment that does not exist), often
    /// at an end, the middle or outside the segment.
    fn place(lengths: Vec<f64>) -> impl Strategy<Value = Place> {
        let n = lengths.len() as Idx;
        let seg = prop_oneof![12 => 0..n, 1 => Just(n)];
        let fraction = prop_oneof![Just(0.0), Just(1.0), Just(0.5), Just(-0.5), Just(1.5), 0.0f64..1.0];
        (seg, fraction).prop_map(move |(seg, f)| Place {
            seg,
            offset_m: f * lengths.get(seg as usize).copied().unwrap_or(1.0),
        })
    }

    fn case(max_n: usize) -> impl Strategy<Value = Case> {
        (1..=max_n)
            .prop_flat_map(|n| (prop::collection::vec(length(), n), Just(n)))
            .prop_flat_map(|(lengths, n)| {
                let link = (0..n as Idx, 0..n as Idx);
                let unit = (0u32..12, prop::collection::vec(place(lengths.clone()), 0..=3))
                    .prop_map(|(id, places)| UnitAt { id, places: places.into_iter().collect() });
                (
                    Just(lengths.clone()),
                    prop::collection::vec(speed(), n.saturating_sub(1)..=n),
                    prop::collection::vec(link.clone(), 0..=2 * n),
                    prop::collection::vec(link, 0..=n),
                    prop::collection::vec(place(lengths), 0..=3),
                    prop::collection::vec(unit, 0..=10),
                    0usize..=5,
                )
            })
            .prop_map(|(lengths, speeds, down, up, incident, units, k)| Case {
                lengths,
                speeds,
                down,
                up,
                incident,
                units,
                k,
            })
    }

    /// The ranking by the definition: all-pairs best routes (Floyd–Warshall), every unit place
    /// against every incident place, every unit, sorted.
    fn brute(c: &Case) -> Vec<Ranked> {
        let n = c.lengths.len();
        let speed = |s: usize| c.speeds.get(s).copied().unwrap_or(f64::NAN);
        let whole = |s: usize| span(c.lengths[s], speed(s));
        // via[a][b]: the best sum of whole intermediate segments over routes a → … → b.
        let mut via = vec![vec![None::<Cost>; n]; n];
        for &(a, b) in c.down.iter().chain(&c.up) {
            via[a as usize][b as usize] = Some((0, 0));
        }
        for m in 0..n {
            let Some(wm) = whole(m) else { continue };
            for a in 0..n {
                for b in 0..n {
                    if let (Some(x), Some(y)) = (via[a][m], via[m][b]) {
                        let through = add(add(x, wm), y);
                        if via[a][b].is_none_or(|v| through < v) {
                            via[a][b] = Some(through);
                        }
                    }
                }
            }
        }
        let valid = |p: &Place| {
            let len = *c.lengths.get(p.seg as usize)?;
            Some((p.seg as usize, clamp_offset(p.offset_m, len), len))
        };
        let pair = |(u, ou, lu): (usize, f64, f64), (i, oi, _): (usize, f64, f64)| -> Option<Cost> {
            if u == i && ou <= oi {
                span(oi - ou, speed(i))
            } else {
                Some(add(add(span(lu - ou, speed(u))?, via[u][i]?), span(oi, speed(i))?))
            }
        };
        let mut all: Vec<(Cost, u32)> = c
            .units
            .iter()
            .filter_map(|unit| {
                let best = unit
                    .places
                    .iter()
                    .filter_map(valid)
                    .flat_map(|up| c.incident.iter().filter_map(valid).filter_map(move |ip| pair(up, ip)))
                    .min()?;
                Some((best, unit.id))
            })
            .collect();
        all.sort();
        all.truncate(c.k);
        all.into_iter()
            .map(|((ms, mm), unit)| Ranked { unit, eta_ms: ms, distance_m: mm as f64 / 1000.0 })
            .collect()
    }

    fn check_against_brute_force(max_n: usize, cases: u32) {
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        // One scratch for every case: generations must keep graphs of any size apart.
        let ranker = RefCell::new(Ranker::new());
        TestRunner::new(config)
            .run(&case(max_n), |c| {
                let g = c.graph();
                let want = brute(&c);
                let got = ranker.borrow_mut().rank(&g, &c.speeds, &c.incident, &c.units, c.k);
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(g.rank(&c.speeds, &c.incident, &c.units, c.k), want);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn rank_equals_brute_force_on_small_networks() {
        check_against_brute_force(6, 3000);
    }

    #[test]
    fn rank_equals_brute_force_on_larger_networks() {
        check_against_brute_force(40, 400);
    }

    // ---- Hand-made rankings ----

    fn unit(id: u32, places: &[(Idx, f64)]) -> UnitAt {
        UnitAt { id, places: places.iter().map(|&(seg, offset_m)| Place { seg, offset_m }).collect() }
    }

    /// A chain 0 → 1 → 2 of 100 m segments at 10 m/s, with 2 → 0 closing a loop.
    fn ring() -> RoadGraph {
        RoadGraph::build(vec![100.0; 3], vec![(0, 1), (1, 2), (2, 0)], std::iter::empty())
    }

    #[test]
    fn same_segment_ahead_is_direct_and_behind_goes_round() {
        let g = ring();
        let at = [Place { seg: 1, offset_m: 50.0 }];
        let units = [unit(7, &[(1, 20.0)]), unit(8, &[(1, 80.0)])];
        let r = g.rank(&[10.0; 3], &at, &units, 5);
        assert_eq!(
            r,
            vec![
                Ranked { unit: 7, eta_ms: 3_000, distance_m: 30.0 },
                // 20 m to the end of 1, all of 2 and 0, then 50 m of 1.
                Ranked { unit: 8, eta_ms: 27_000, distance_m: 270.0 },
            ]
        );
    }

    #[test]
    fn unreachable_units_are_left_out_and_k_cuts() {
        // 0 → 1, and 2 alone.
        let g = RoadGraph::build(vec![100.0; 3], vec![(0, 1)], std::iter::empty());
        let at = [Place { seg: 1, offset_m: 0.0 }];
        let units = [unit(1, &[(2, 0.0)]), unit(2, &[(0, 0.0)]), unit(3, &[(0, 50.0)]), unit(4, &[])];
        assert_eq!(
            g.rank(&[10.0; 3], &at, &units, 5),
            vec![
                Ranked { unit: 3, eta_ms: 5_000, distance_m: 50.0 },
                Ranked { unit: 2, eta_ms: 10_000, distance_m: 100.0 },
            ]
        );
        assert_eq!(g.rank(&[10.0; 3], &at, &units, 1).len(), 1);
        assert!(g.rank(&[10.0; 3], &at, &units, 0).is_empty());
        // A segment that cannot be travelled blocks the way.
        assert!(g.rank(&[0.0, 10.0, 10.0], &at, &units, 5).is_empty());
    }

    #[test]
    fn equal_times_rank_by_distance_then_id() {
        // Two ways from 0 to 3: through 1 (200 m at 20 m/s) or through 2 (100 m at 10 m/s).
        let g = RoadGraph::build(
            vec![100.0, 200.0, 100.0, 100.0],
            vec![(0, 1), (0, 2), (1, 3), (2, 3)],
            std::iter::empty(),
        );
        let speeds = [10.0, 20.0, 10.0, 10.0];
        let at = [Place { seg: 3, offset_m: 0.0 }];
        let units = [unit(9, &[(0, 0.0)]), unit(4, &[(1, 0.0)]), unit(5, &[(2, 0.0)])];
        let r = g.rank(&speeds, &at, &units, 3);
        // Unit 9 takes the shorter of the two equally fast routes.
        assert_eq!(r[2], Ranked { unit: 9, eta_ms: 20_000, distance_m: 200.0 });
        // Units 4 and 5 both need 10 s; 5 has 100 m to go, 4 has 200 m.
        assert_eq!(r[0].unit, 5);
        assert_eq!(r[1].unit, 4);
        // Same time and distance: the smaller id first.
        let twins = [unit(6, &[(2, 0.0)]), unit(5, &[(2, 0.0)])];
        assert_eq!(g.rank(&speeds, &at, &twins, 2).iter().map(|r| r.unit).collect::<Vec<_>>(), vec![5, 6]);
    }

    // ---- Placement on a drawn city ----

    const LON0: f64 = 121.47;
    const LAT0: f64 = 31.23;

    /// WGS84 of a point `east`, `north` metres from (LON0, LAT0).
    fn at(east: f64, north: f64) -> (f64, f64) {
        let ky = EARTH_RADIUS_M.to_radians();
        (LON0 + east / (ky * LAT0.to_radians().cos()), LAT0 + north / ky)
    }

    /// A segment drawn in metres around (LON0, LAT0): id, `length_m`, points (east, north) and
    /// more JSON properties (`,"upstream":[…]`).
    type Drawn<'a> = (&'a str, f64, &'a [(f64, f64)], &'a str);

    /// A city of drawn segments in one district.
    fn drawn_city(segments: &[Drawn]) -> CityModel {
        let (w, s) = at(-2000.0, -2000.0);
        let (e, n) = at(2000.0, 2000.0);
        let mut features = vec![format!(
            r#"{{"type":"Feature","geometry":{{"type":"Polygon","coordinates":[[[{w},{s}],[{e},{s}],[{e},{n}],[{w},{n}],[{w},{s}]]]}},"properties":{{"kind":"district","id":"d1"}}}}"#
        )];
        for (id, length, points, more) in segments {
            let coords: Vec<String> = points
                .iter()
                .map(|&(x, y)| {
                    let (lon, lat) = at(x, y);
                    format!("[{lon},{lat}]")
                })
                .collect();
            features.push(format!(
                r#"{{"type":"Feature","geometry":{{"type":"LineString","coordinates":[{}]}},"properties":{{"kind":"segment","id":"{id}","district":"d1","length_m":{length},"speed_limit_kmh":50,"road_class":"branch"{more}}}}}"#,
                coords.join(",")
            ));
        }
        let text = format!(r#"{{"type":"FeatureCollection","features":[{}]}}"#, features.join(","));
        CityModel::from_geojson_str(&text).unwrap()
    }

    /// A junction J at (0, 0): a street arriving from the west, a two-way street to the east, one
    /// leaving to the north; a lone street far off, two parallel ones 2.5 m apart and a bent one
    /// whose modelled length is twice its drawn length.
    fn city() -> CityModel {
        drawn_city(&[
            ("west_in", 100.0, &[(-100.0, 0.0), (0.0, 0.0)], ""),
            ("east_out", 100.0, &[(0.0, 0.0), (100.0, 0.0)], ""),
            ("east_back", 100.0, &[(100.0, 0.0), (0.0, 0.0)], ""),
            ("north_out", 100.0, &[(0.0, 0.0), (0.0, 100.0)], ""),
            ("lone", 100.0, &[(200.0, -200.0), (300.0, -200.0)], ""),
            ("par_a", 100.0, &[(200.0, 100.0), (300.0, 100.0)], ""),
            ("par_b", 100.0, &[(300.0, 102.5), (200.0, 102.5)], ""),
            ("bent", 400.0, &[(-300.0, -300.0), (-300.0, -200.0), (-200.0, -200.0)], ""),
        ])
    }

    /// The placement of a point given in metres, as `(segment id, offset)`.
    fn placed(m: &CityModel, g: &RoadGraph, east: f64, north: f64) -> Vec<(String, f64)> {
        let (lon, lat) = at(east, north);
        g.place(lon, lat).iter().map(|p| (m.segments[p.seg as usize].id.clone(), p.offset_m)).collect()
    }

    fn assert_placed(got: &[(String, f64)], want: &[(&str, f64)]) {
        let ids: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|&(s, _)| s).collect();
        assert_eq!(ids, want_ids, "{got:?}");
        for ((_, o), (_, w)) in got.iter().zip(want) {
            assert!((o - w).abs() < 0.2, "offset {o} not near {w}: {got:?}");
        }
    }

    #[test]
    fn a_point_on_a_two_way_street_gets_both_directions() {
        let m = city();
        let g = RoadGraph::new(&m);
        assert_placed(&placed(&m, &g, 30.0, 0.3), &[("east_out", 30.0), ("east_back", 70.0)]);
        assert_placed(&placed(&m, &g, 50.0, -4.0), &[("east_out", 50.0), ("east_back", 50.0)]);
    }

    #[test]
    fn a_point_at_a_junction_gets_every_segment_meeting_there() {
        let m = city();
        let g = RoadGraph::new(&m);
        assert_placed(
            &placed(&m, &g, 0.2, 0.1),
            &[("west_in", 100.0), ("east_out", 0.0), ("east_back", 100.0), ("north_out", 0.0)],
        );
    }

    #[test]
    fn a_point_near_one_segment_gets_that_one_at_the_right_offset() {
        let m = city();
        let g = RoadGraph::new(&m);
        assert_placed(&placed(&m, &g, 250.0, -197.0), &[("lone", 50.0)]);
        assert_placed(&placed(&m, &g, 180.0, -200.0), &[("lone", 0.0)]);
        // Far away, the nearest segment still takes it.
        assert_placed(&placed(&m, &g, 1500.0, -200.0), &[("lone", 100.0)]);
        // Offsets follow the polyline and scale to the modelled length (400 m drawn as 200 m).
        assert_placed(&placed(&m, &g, -305.0, -250.0), &[("bent", 100.0)]);
        assert_placed(&placed(&m, &g, -250.0, -190.0), &[("bent", 300.0)]);
    }

    #[test]
    fn the_tolerance_decides_between_parallel_segments() {
        let m = city();
        let g = RoadGraph::new(&m);
        // 1 m from one, 1.5 m from the other: both.
        assert_placed(&placed(&m, &g, 250.0, 101.0), &[("par_a", 50.0), ("par_b", 50.0)]);
        // 1 m from one, 3.5 m from the other: only the nearer.
        assert_placed(&placed(&m, &g, 240.0, 99.0), &[("par_a", 40.0)]);
        assert_placed(&placed(&m, &g, 240.0, 106.0), &[("par_b", 60.0)]);
    }

    #[test]
    fn points_without_a_place() {
        let g = RoadGraph::new(&city());
        assert!(g.place(f64::NAN, LAT0).is_empty());
        let empty = RoadGraph::build(vec![], vec![], std::iter::empty());
        assert!(empty.place(LON0, LAT0).is_empty());
        assert!(empty.rank(&[], &[], &[unit(1, &[(0, 0.0)])], 3).is_empty());
    }

    #[test]
    fn placed_units_rank_over_links_given_on_either_side() {
        // a → b is given only as b's upstream, b → c as b's downstream.
        let m = drawn_city(&[
            ("a", 100.0, &[(-100.0, 0.0), (0.0, 0.0)], ""),
            ("b", 100.0, &[(0.0, 0.0), (100.0, 0.0)], r#","upstream":["a"],"downstream":["c"]"#),
            ("c", 100.0, &[(100.0, 0.0), (200.0, 0.0)], ""),
        ]);
        let g = RoadGraph::new(&m);
        assert_eq!((g.downstream(0), g.downstream(1), g.upstream(2)), (&[1][..], &[2][..], &[1][..]));
        let (lon, lat) = at(-50.0, 1.0);
        let unit_at = UnitAt { id: 1, places: g.place(lon, lat) };
        let (lon, lat) = at(140.0, -1.0);
        let r = g.rank(&[10.0; 3], &g.place(lon, lat), &[unit_at], 3);
        // 50 m of a, 100 m of b and 40 m of c at 10 m/s.
        assert_eq!(r.len(), 1);
        assert!((r[0].distance_m - 190.0).abs() < 0.2, "{r:?}");
        assert!(r[0].eta_ms.abs_diff(19_000) <= 20, "{r:?}");
        // The other way round, c cannot reach a.
        let (lon, lat) = at(-50.0, 0.0);
        let from_c = UnitAt { id: 2, places: smallvec![Place { seg: 2, offset_m: 0.0 }] };
        assert!(g.rank(&[10.0; 3], &g.place(lon, lat), &[from_c], 3).is_empty());
    }
}
