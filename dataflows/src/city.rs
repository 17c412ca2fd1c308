//! The city model (CONTRACT §3): districts, grid cells, road segments, detectors and stations,
//! loaded from one GeoJSON FeatureCollection (WGS84 lon/lat).
//!
//! String ids are interned to dense `u32` indices here, at the edge, so dataflows key on small
//! integers and turn them back into names only when they write a point. Point placement (which
//! cell and district hold an incident, a case or a sensor) is a point-in-polygon test with
//! `geo`, after an R-tree (`rstar`) narrows the candidates to the polygons whose bounding box
//! holds the point.
//!
//! A model that contradicts itself is refused at load with an error naming the feature
//! (CONTRACT §3): a detector on a missing segment or on a lane its segment does not have, two
//! detectors on one lane of a segment (the incident rule compares a lane with its neighbours, so
//! a doubled lane would make that comparison meaningless), an unknown upstream or downstream
//! segment, and cells whose interiors overlap (a point must lie in one cell). Cells that only
//! share a border are a tiling, not an overlap: the test is `geo`'s DE-9IM relation
//! (intersecting but not merely touching), run on the pairs whose bounding boxes meet.

use crate::names::Names;
use geo::{BoundingRect, Centroid, Geometry, Intersects, LineString, MultiPolygon, Point, Relate};
use rstar::{AABB, RTree, primitives::GeomWithData, primitives::Rectangle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Dense index of a district, cell, segment, detector or station in its table.
pub type Idx = u32;

/// Road classes, each with its own congestion bands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoadClass {
    /// Grade-separated, high speed.
    Expressway,
    /// Main urban roads.
    Arterial,
    /// Collector roads.
    Secondary,
    /// Local access roads.
    Branch,
}

impl RoadClass {
    /// The contract's name of the class.
    pub fn as_str(self) -> &'static str {
        match self {
            RoadClass::Expressway => "expressway",
            RoadClass::Arterial => "arterial",
            RoadClass::Secondary => "secondary",
            RoadClass::Branch => "branch",
        }
    }
}

/// An administrative district.
#[derive(Clone, Debug)]
pub struct District {
    /// Contract id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its area.
    pub area: MultiPolygon<f64>,
}

/// A grid cell (网格), looked after by its officers.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Contract id.
    pub id: String,
    /// The district it belongs to.
    pub district: Idx,
    /// Officer ids responsible for the cell.
    pub officers: Vec<String>,
    /// Its area.
    pub area: MultiPolygon<f64>,
}

/// A directed road segment.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Contract id.
    pub id: String,
    /// The district it belongs to.
    pub district: Idx,
    /// The cell holding its midpoint, if any.
    pub cell: Option<Idx>,
    /// Length in metres.
    pub length_m: f64,
    /// Posted speed limit, km/h.
    pub speed_limit_kmh: f64,
    /// Number of lanes.
    pub lanes: u32,
    /// Road class, selecting the congestion bands.
    pub road_class: RoadClass,
    /// Segments feeding into this one.
    pub upstream: Vec<Idx>,
    /// Segments this one feeds.
    pub downstream: Vec<Idx>,
    /// Its geometry (WGS84 lon/lat), from its start to its end in the direction of travel.
    pub line: LineString<f64>,
}

/// A loop detector on one lane of a segment.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Contract id.
    pub id: String,
    /// The segment it measures.
    pub segment: Idx,
    /// Lane number (as in the model; neighbours differ by one).
    pub lane: u32,
    /// The cell holding it, if any.
    pub cell: Option<Idx>,
    /// Where it is.
    pub location: Point<f64>,
}

/// An emergency station.
#[derive(Clone, Debug)]
pub struct Station {
    /// Contract id.
    pub id: String,
    /// `fire`, `ems` or `police`.
    pub kind: String,
    /// The district it serves.
    pub district: Idx,
    /// Where it is.
    pub location: Point<f64>,
}

/// Why a city model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CityError {
    /// The file is not a GeoJSON FeatureCollection of the expected shape.
    #[error("city model is not a valid GeoJSON FeatureCollection: {0}")]
    GeoJson(String),
    /// A feature is missing a property or names something that does not exist.
    #[error("city model feature {index} ({kind} {id:?}): {reason}")]
    Feature {
        /// Position in the features array.
        index: usize,
        /// Its `kind`.
        kind: String,
        /// Its `id`.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
struct RawFeature {
    #[serde(deserialize_with = "geojson::de::deserialize_geometry")]
    geometry: Geometry<f64>,
    kind: String,
    #[serde(default)]
    id: String,
    name: Option<String>,
    district: Option<String>,
    officers: Option<Vec<String>>,
    length_m: Option<f64>,
    speed_limit_kmh: Option<f64>,
    lanes: Option<u32>,
    road_class: Option<RoadClass>,
    upstream: Option<Vec<String>>,
    downstream: Option<Vec<String>>,
    segment: Option<String>,
    lane: Option<u32>,
    #[serde(rename = "type")]
    kind_of_station: Option<String>,
}

type Placed = GeomWithData<Rectangle<[f64; 2]>, Idx>;

/// The loaded, interned city model. Immutable once built; shared by every worker.
#[derive(Debug)]
pub struct CityModel {
    /// Districts, by index.
    pub districts: Vec<District>,
    /// Grid cells, by index.
    pub cells: Vec<Cell>,
    /// Road segments, by index.
    pub segments: Vec<Segment>,
    /// Detectors, by index.
    pub detectors: Vec<Detector>,
    /// Stations, by index.
    pub stations: Vec<Station>,
    district_ix: Names,
    cell_ix: Names,
    segment_ix: Names,
    detector_ix: Names,
    /// Station ids; `station_of[n]` is the station of the `n`th distinct id (the first station
    /// with that id: station ids are not checked for duplicates).
    station_ix: Names,
    station_of: Vec<Idx>,
    /// Detectors of each segment, by lane: `segment_lanes[s]` is sorted by lane.
    segment_lanes: Vec<Vec<(u32, Idx)>>,
    /// Each detector's segment, densely: hot paths read this instead of `detectors[d]`.
    detector_segment: Vec<Idx>,
    /// Whether each detector's segment has more than one detector (lanes can be compared).
    detector_multi_lane: Vec<bool>,
    cell_tree: RTree<Placed>,
    district_tree: RTree<Placed>,
    /// Officer id → the cells they look after.
    officer_cells: BTreeMap<String, Vec<Idx>>,
}

fn areas(g: Geometry<f64>) -> Option<MultiPolygon<f64>> {
    match g {
        Geometry::Polygon(p) => Some(MultiPolygon(vec![p])),
        Geometry::MultiPolygon(m) => Some(m),
        _ => None,
    }
}

fn rect_of(area: &MultiPolygon<f64>, idx: Idx) -> Option<Placed> {
    let r = area.bounding_rect()?;
    Some(GeomWithData::new(Rectangle::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]), idx))
}

impl CityModel {
    /// Parses a city model from GeoJSON text.
    pub fn from_geojson_str(text: &str) -> Result<CityModel, CityError> {
        let raws: Vec<RawFeature> = geojson::de::deserialize_feature_collection_str_to_vec(text)
            .map_err(|e| CityError::GeoJson(e.to_string()))?;
        Self::build(raws)
    }

    fn build(raws: Vec<RawFeature>) -> Result<CityModel, CityError> {
        let fail = |index: usize, r: &RawFeature, reason: &str| CityError::Feature {
            index,
            kind: r.kind.clone(),
            id: r.id.clone(),
            reason: reason.to_string(),
        };
        let mut m = CityModel {
            districts: vec![],
            cells: vec![],
            segments: vec![],
            detectors: vec![],
            stations: vec![],
            district_ix: Names::default(),
            cell_ix: Names::default(),
            segment_ix: Names::default(),
            detector_ix: Names::default(),
            station_ix: Names::default(),
            station_of: vec![],
            segment_lanes: vec![],
            detector_segment: vec![],
            detector_multi_lane: vec![],
            cell_tree: RTree::new(),
            district_tree: RTree::new(),
            officer_cells: BTreeMap::new(),
        };
        // Pass 1: districts and the ids of everything, so references may point forwards.
        for (i, r) in raws.iter().enumerate() {
            if r.id.is_empty() {
                return Err(fail(i, r, "missing property `id`"));
            }
            let dup = match r.kind.as_str() {
                "district" => {
                    let area =
                        areas(r.geometry.clone()).ok_or_else(|| fail(i, r, "geometry must be a Polygon"))?;
                    let idx = m.districts.len() as Idx;
                    m.districts.push(District {
                        id: r.id.clone(),
                        name: r.name.clone().unwrap_or_else(|| r.id.clone()),
                        area,
                    });
                    m.district_ix.insert(&r.id).is_none_or(|i| i != idx)
                }
                "cell" => m.cell_ix.insert(&r.id).is_none(),
                "segment" => m.segment_ix.insert(&r.id).is_none(),
                "detector" => m.detector_ix.insert(&r.id).is_none(),
                "station" => false,
                other => return Err(fail(i, r, &format!("unknown kind {other:?}"))),
            };
            if dup {
                return Err(fail(i, r, "duplicate id"));
            }
        }
        let district_of = |i: usize, r: &RawFeature, m: &CityModel| -> Result<Idx, CityError> {
            let d = r.district.as_deref().ok_or_else(|| fail(i, r, "missing property `district`"))?;
            m.district_ix.get(d).ok_or_else(|| fail(i, r, &format!("unknown district {d:?}")))
        };
        // Pass 2: cells (placement of segments and detectors needs them).
        for (i, r) in raws.iter().enumerate().filter(|(_, r)| r.kind == "cell") {
            let area = areas(r.geometry.clone()).ok_or_else(|| fail(i, r, "geometry must be a Polygon"))?;
            let idx = m.cells.len() as Idx;
            let district = district_of(i, r, &m)?;
            let officers = r.officers.clone().unwrap_or_default();
            for o in &officers {
                m.officer_cells.entry(o.clone()).or_default().push(idx);
            }
            m.cells.push(Cell { id: r.id.clone(), district, officers, area });
        }
        m.cell_tree = RTree::bulk_load(
            m.cells.iter().enumerate().filter_map(|(i, c)| rect_of(&c.area, i as Idx)).collect(),
        );
        // Overlapping cells: each later cell against the earlier ones its box meets.
        let cell_raw: Vec<usize> =
            raws.iter().enumerate().filter(|(_, r)| r.kind == "cell").map(|(i, _)| i).collect();
        for (c, cell) in m.cells.iter().enumerate() {
            let Some(rect) = rect_of(&cell.area, c as Idx) else { continue };
            let env = rstar::RTreeObject::envelope(&rect);
            let earlier = m
                .cell_tree
                .locate_in_envelope_intersecting(&env)
                .map(|g| g.data as usize)
                .filter(|&o| o < c)
                .filter(|&o| {
                    let rel = cell.area.relate(&m.cells[o].area);
                    rel.is_intersects() && !rel.is_touches()
                })
                .min();
            if let Some(o) = earlier {
                let i = cell_raw[c];
                return Err(fail(i, &raws[i], &format!("overlaps cell {:?}", m.cells[o].id)));
            }
        }
        m.district_tree = RTree::bulk_load(
            m.districts.iter().enumerate().filter_map(|(i, d)| rect_of(&d.area, i as Idx)).collect(),
        );
        // Pass 3: segments, detectors, stations.
        let mut detector_raw = Vec::new();
        for (i, r) in raws.iter().enumerate() {
            match r.kind.as_str() {
                "segment" => {
                    let Geometry::LineString(line) = &r.geometry else {
                        return Err(fail(i, r, "geometry must be a LineString"));
                    };
                    let district = district_of(i, r, &m)?;
                    let links = |ids: &Option<Vec<String>>, what: &str| -> Result<Vec<Idx>, CityError> {
                        ids.iter()
                            .flatten()
                            .map(|s| {
                                m.segment_ix
                                    .get(s)
                                    .ok_or_else(|| fail(i, r, &format!("unknown {what} segment {s:?}")))
                            })
                            .collect()
                    };
                    let upstream = links(&r.upstream, "upstream")?;
                    let downstream = links(&r.downstream, "downstream")?;
                    let length_m = r.length_m.ok_or_else(|| fail(i, r, "missing property `length_m`"))?;
                    let speed_limit_kmh =
                        r.speed_limit_kmh.ok_or_else(|| fail(i, r, "missing property `speed_limit_kmh`"))?;
                    if !(length_m > 0.0
                        && length_m.is_finite()
                        && speed_limit_kmh > 0.0
                        && speed_limit_kmh.is_finite())
                    {
                        return Err(fail(i, r, "length_m and speed_limit_kmh must be positive"));
                    }
                    let cell = line.centroid().and_then(|c| m.cell_at(c));
                    m.segments.push(Segment {
                        id: r.id.clone(),
                        district,
                        cell,
                        length_m,
                        speed_limit_kmh,
                        lanes: r.lanes.unwrap_or(1).max(1),
                        road_class: r
                            .road_class
                            .ok_or_else(|| fail(i, r, "missing property `road_class`"))?,
                        upstream,
                        downstream,
                        line: line.clone(),
                    });
                }
                "detector" => {
                    let Geometry::Point(location) = r.geometry else {
                        return Err(fail(i, r, "geometry must be a Point"));
                    };
                    let s = r.segment.as_deref().ok_or_else(|| fail(i, r, "missing property `segment`"))?;
                    let segment =
                        m.segment_ix.get(s).ok_or_else(|| fail(i, r, &format!("unknown segment {s:?}")))?;
                    detector_raw.push(i);
                    m.detectors.push(Detector {
                        id: r.id.clone(),
                        segment,
                        lane: r.lane.unwrap_or(0),
                        cell: m.cell_at(location),
                        location,
                    });
                }
                "station" => {
                    let Geometry::Point(location) = r.geometry else {
                        return Err(fail(i, r, "geometry must be a Point"));
                    };
                    let district = district_of(i, r, &m)?;
                    let kind =
                        r.kind_of_station.clone().ok_or_else(|| fail(i, r, "missing property `type`"))?;
                    if m.station_ix.insert(&r.id).is_some() {
                        m.station_of.push(m.stations.len() as Idx);
                    }
                    m.stations.push(Station { id: r.id.clone(), kind, district, location });
                }
                _ => {}
            }
        }
        // Links may be given on either side; make them symmetric.
        let links: Vec<(Idx, Idx)> = m
            .segments
            .iter()
            .enumerate()
            .flat_map(|(s, seg)| {
                let s = s as Idx;
                seg.downstream.iter().map(move |&d| (s, d)).chain(seg.upstream.iter().map(move |&u| (u, s)))
            })
            .collect();
        for (up, down) in links {
            if !m.segments[up as usize].downstream.contains(&down) {
                m.segments[up as usize].downstream.push(down);
            }
            if !m.segments[down as usize].upstream.contains(&up) {
                m.segments[down as usize].upstream.push(up);
            }
        }
        // Detectors and lanes: each on a lane its segment has, at most one per lane.
        m.segment_lanes = vec![Vec::new(); m.segments.len()];
        for (d, det) in m.detectors.iter().enumerate() {
            let seg = &m.segments[det.segment as usize];
            let i = detector_raw[d];
            if det.lane >= seg.lanes {
                let reason = format!(
                    "lane {} of segment {:?}, which has {} lane(s) (numbered from 0)",
                    det.lane, seg.id, seg.lanes
                );
                return Err(fail(i, &raws[i], &reason));
            }
            let lanes = &mut m.segment_lanes[det.segment as usize];
            if let Some(&(_, other)) = lanes.iter().find(|&&(l, _)| l == det.lane) {
                let reason = format!(
                    "second detector on lane {} of segment {:?} (detector {:?} is there already)",
                    det.lane, seg.id, m.detectors[other as usize].id
                );
                return Err(fail(i, &raws[i], &reason));
            }
            lanes.push((det.lane, d as Idx));
        }
        for lanes in &mut m.segment_lanes {
            lanes.sort_unstable();
        }
        m.detector_segment = m.detectors.iter().map(|d| d.segment).collect();
        m.detector_multi_lane =
            m.detectors.iter().map(|d| m.segment_lanes[d.segment as usize].len() > 1).collect();
        Ok(m)
    }

    /// The index of a detector id.
    #[inline]
    pub fn detector(&self, id: &str) -> Option<Idx> {
        self.detector_ix.get(id)
    }

    /// The index of a segment id.
    #[inline]
    pub fn segment(&self, id: &str) -> Option<Idx> {
        self.segment_ix.get(id)
    }

    /// A segment's id, from the compact id table (cheaper on the hot path than `segments[i].id`).
    #[inline]
    pub fn segment_id(&self, segment: Idx) -> &str {
        self.segment_ix.name(segment)
    }

    /// The index of a station id (the first station with that id).
    pub fn station(&self, id: &str) -> Option<Idx> {
        self.station_ix.get(id).and_then(|n| self.station_of.get(n as usize).copied())
    }

    /// The index of a district id.
    pub fn district(&self, id: &str) -> Option<Idx> {
        self.district_ix.get(id)
    }

    /// The index of a cell id.
    pub fn cell(&self, id: &str) -> Option<Idx> {
        self.cell_ix.get(id)
    }

    /// The segment a detector measures.
    #[inline]
    pub fn detector_segment(&self, det: Idx) -> Idx {
        self.detector_segment[det as usize]
    }

    /// Whether a detector shares its segment with other detectors (other lanes).
    #[inline]
    pub fn detector_multi_lane(&self, det: Idx) -> bool {
        self.detector_multi_lane[det as usize]
    }

    /// Whether any segment has detectors on more than one lane.
    pub fn has_multi_lane(&self) -> bool {
        self.detector_multi_lane.iter().any(|&m| m)
    }

    /// The detectors of a segment as `(lane, detector)`, sorted by lane.
    pub fn segment_detectors(&self, segment: Idx) -> &[(u32, Idx)] {
        &self.segment_lanes[segment as usize]
    }

    /// The cells an officer looks after.
    pub fn officer_cells(&self, officer: &str) -> &[Idx] {
        self.officer_cells.get(officer).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every officer id with their cells.
    pub fn officers(&self) -> impl Iterator<Item = (&str, &[Idx])> {
        self.officer_cells.iter().map(|(o, c)| (o.as_str(), c.as_slice()))
    }

    /// The grid cell holding a point (the first in model order when polygons overlap).
    pub fn cell_at(&self, p: Point<f64>) -> Option<Idx> {
        Self::locate(&self.cell_tree, p, |i| &self.cells[i as usize].area)
    }

    /// The district holding a point.
    pub fn district_at(&self, p: Point<f64>) -> Option<Idx> {
        Self::locate(&self.district_tree, p, |i| &self.districts[i as usize].area)
    }

    /// Places a point in its cell and district; the district of the cell wins when both exist.
    pub fn place(&self, lon: f64, lat: f64) -> (Option<Idx>, Option<Idx>) {
        let p = Point::new(lon, lat);
        let cell = self.cell_at(p);
        let district = cell.map(|c| self.cells[c as usize].district).or_else(|| self.district_at(p));
        (cell, district)
    }

    fn locate<'a>(
        tree: &RTree<Placed>,
        p: Point<f64>,
        area: impl Fn(Idx) -> &'a MultiPolygon<f64>,
    ) -> Option<Idx> {
        let env = AABB::from_point([p.x(), p.y()]);
        tree.locate_in_envelope_intersecting(&env).map(|g| g.data).filter(|&i| area(i).intersects(&p)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TINY: &str = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[2,0],[2,1],[0,1],[0,0]]]},"properties":{"kind":"district","id":"d1","name":"One"}},
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,1],[0,0]]]},"properties":{"kind":"cell","id":"c1","district":"d1","officers":["o1"]}},
      {"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,0],[2,0],[2,1],[1,1],[1,0]]]},"properties":{"kind":"cell","id":"c2","district":"d1","officers":["o1","o2"]}},
      {"type":"Feature","geometry":{"type":"LineString","coordinates":[[0.1,0.5],[0.4,0.5]]},"properties":{"kind":"segment","id":"s1","district":"d1","length_m":300,"speed_limit_kmh":60,"lanes":2,"road_class":"arterial","downstream":["s2"]}},
      {"type":"Feature","geometry":{"type":"LineString","coordinates":[[1.1,0.5],[1.4,0.5]]},"properties":{"kind":"segment","id":"s2","district":"d1","length_m":300,"speed_limit_kmh":60,"lanes":2,"road_class":"arterial","upstream":["s1"]}},
      {"type":"Feature","geometry":{"type":"Point","coordinates":[0.3,0.5]},"properties":{"kind":"detector","id":"k1","segment":"s1","lane":1}},
      {"type":"Feature","geometry":{"type":"Point","coordinates":[0.3,0.5]},"properties":{"kind":"detector","id":"k0","segment":"s1","lane":0}},
      {"type":"Feature","geometry":{"type":"Point","coordinates":[1.5,0.5]},"properties":{"kind":"station","id":"st1","type":"fire","district":"d1"}}
    ]}"#;

    #[test]
    fn loads_and_places() {
        let m = CityModel::from_geojson_str(TINY).unwrap();
        assert_eq!(m.segments.len(), 2);
        assert_eq!(m.segments[0].downstream, vec![1]);
        assert_eq!(m.segments[1].cell, m.cell("c2"));
        assert_eq!(m.segment_detectors(0), &[(0, 1), (1, 0)]);
        assert_eq!(m.place(1.5, 0.5), (m.cell("c2"), m.district("d1")));
        assert_eq!(m.place(5.0, 5.0), (None, None));
        assert_eq!(m.officer_cells("o1").len(), 2);
    }

    #[test]
    fn stations_by_id_and_segment_geometry() {
        let m = CityModel::from_geojson_str(TINY).unwrap();
        assert_eq!(m.station("st1"), Some(0));
        assert_eq!(m.station("st9"), None);
        assert_eq!(m.segments[1].line.0.first().map(|c| (c.x, c.y)), Some((1.1, 0.5)));
        assert_eq!(m.segments[1].line.0.len(), 2);
    }

    /// The load error of `TINY` with `from` replaced by `to`.
    fn refused(from: &str, to: &str) -> String {
        let bad = TINY.replace(from, to);
        assert_ne!(bad, TINY, "the replacement must apply");
        CityModel::from_geojson_str(&bad).unwrap_err().to_string()
    }

    #[test]
    fn two_detectors_on_one_lane_are_refused() {
        let e = refused(r#""id":"k1","segment":"s1","lane":1"#, r#""id":"k1","segment":"s1","lane":0"#);
        assert!(e.contains("feature 6 (detector \"k0\")") && e.contains("\"k1\" is there"), "{e}");
    }

    #[test]
    fn a_detector_on_a_missing_lane_or_segment_is_refused() {
        let e = refused(r#""segment":"s1","lane":1"#, r#""segment":"s1","lane":2"#);
        assert!(e.contains("(detector \"k1\")") && e.contains("lane 2 of segment \"s1\""), "{e}");
        let e = refused(r#""segment":"s1","lane":0"#, r#""segment":"s9","lane":0"#);
        assert!(e.contains("(detector \"k0\")") && e.contains("unknown segment \"s9\""), "{e}");
    }

    #[test]
    fn unknown_upstream_or_downstream_is_refused() {
        let e = refused(r#""downstream":["s2"]"#, r#""downstream":["s7"]"#);
        assert!(e.contains("(segment \"s1\")") && e.contains("unknown downstream segment \"s7\""), "{e}");
        let e = refused(r#""upstream":["s1"]"#, r#""upstream":["s8"]"#);
        assert!(e.contains("(segment \"s2\")") && e.contains("unknown upstream segment \"s8\""), "{e}");
    }

    #[test]
    fn overlapping_cells_are_refused_touching_ones_are_not() {
        // c2 widened to x = 0.9 overlaps c1 (0..1); as given they share the border x = 1.
        let e = refused("[[[1,0],[2,0],[2,1],[1,1],[1,0]]]", "[[[0.9,0],[2,0],[2,1],[0.9,1],[0.9,0]]]");
        assert!(e.contains("feature 2 (cell \"c2\")") && e.contains("overlaps cell \"c1\""), "{e}");
        // A cell inside another is an overlap too.
        let e = refused("[[[1,0],[2,0],[2,1],[1,1],[1,0]]]", "[[[0.2,0.2],[0.4,0.2],[0.4,0.4],[0.2,0.2]]]");
        assert!(e.contains("overlaps cell \"c1\""), "{e}");
        // Cells touching at a corner only are fine.
        let ok = TINY.replace("[[[1,0],[2,0],[2,1],[1,1],[1,0]]]", "[[[1,1],[2,1],[2,2],[1,2],[1,1]]]");
        CityModel::from_geojson_str(&ok).unwrap();
    }

    #[test]
    fn bad_references_are_named() {
        let bad = TINY.replace(r#""segment":"s1","lane":1"#, r#""segment":"nope","lane":1"#);
        let e = CityModel::from_geojson_str(&bad).unwrap_err().to_string();
        assert!(e.contains("k1") && e.contains("nope"), "{e}");
    }
}
