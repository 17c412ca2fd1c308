//! The city generator: a synthetic city model (CONTRACT §3) as one GeoJSON FeatureCollection.
//!
//! The city is a rectangle of districts, each split into square grid cells, crossed by a grid of
//! two-way roads: one east–west road per row of cells and one north–south road per column. Each
//! road runs 30–40 % of the way into its row or column, so every intersection, segment midpoint,
//! detector and station lies strictly inside one cell and never on a boundary. A road is split at
//! its intersections into directed segments (traffic drives on the right), linked upstream and
//! downstream along the same road and direction, with one detector per lane near each segment's
//! downstream end. Every district gets one fire, one EMS and one police station.
//!
//! Geometry is laid out in metres on a local plane and projected to WGS84 lon/lat
//! (equirectangular, exact enough for a city), rounded to 1e-7° (about 1 cm). Everything random
//! comes from one ChaCha8 generator seeded with [`CityOptions::seed`], so a seed always gives the
//! same file.

use anyhow::{Result, ensure};
use citybrain_dataflows::city::RoadClass;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Mean Earth radius (IUGG), metres: used both to project and to measure.
const EARTH_RADIUS_M: f64 = 6_371_008.8;
/// Width of one lane, metres.
const LANE_WIDTH_M: f64 = 3.5;
/// Gap between the centre line and the innermost lane of each direction, metres.
const MEDIAN_M: f64 = 1.0;
/// How far before a segment's downstream end its detectors sit, metres (at most a tenth of a cell).
const DETECTOR_SETBACK_M: f64 = 40.0;
/// District display names (Hangzhou's), used in order; later districts are numbered.
const DISTRICT_NAMES: [&str; 13] = [
    "Shangcheng",
    "Gongshu",
    "Xihu",
    "Binjiang",
    "Xiaoshan",
    "Yuhang",
    "Linping",
    "Qiantang",
    "Fuyang",
    "Lin'an",
    "Tonglu",
    "Chun'an",
    "Jiande",
];
/// Station types of the contract, one station of each per district.
const STATION_TYPES: [&str; 3] = ["fire", "ems", "police"];

/// What city to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct CityOptions {
    /// Seed of the random generator: the same options always give the same city.
    pub seed: u64,
    /// Districts from west to east.
    pub districts_x: u32,
    /// Districts from south to north.
    pub districts_y: u32,
    /// Grid cells along each side of a district.
    pub cells_per_district_side: u32,
    /// Side of a (square) grid cell, metres.
    pub cell_size_m: f64,
    /// Longitude of the city centre, degrees.
    pub center_lon: f64,
    /// Latitude of the city centre, degrees.
    pub center_lat: f64,
}

impl CityOptions {
    /// The defaults: 3 × 3 districts of 2 × 2 one-kilometre cells around Hangzhou (120.15E 30.25N).
    pub const DEFAULT: CityOptions = CityOptions {
        seed: 1,
        districts_x: 3,
        districts_y: 3,
        cells_per_district_side: 2,
        cell_size_m: 1000.0,
        center_lon: 120.15,
        center_lat: 30.25,
    };

    /// Checks that the options describe a city with at least one road segment each way.
    pub fn validate(&self) -> Result<()> {
        ensure!((1..=20).contains(&self.districts_x), "districts-x must be 1..20, not {}", self.districts_x);
        ensure!((1..=20).contains(&self.districts_y), "districts-y must be 1..20, not {}", self.districts_y);
        ensure!(
            (1..=10).contains(&self.cells_per_district_side),
            "cells-per-district-side must be 1..10, not {}",
            self.cells_per_district_side
        );
        ensure!(
            self.districts_x * self.cells_per_district_side >= 2
                && self.districts_y * self.cells_per_district_side >= 2,
            "the city needs at least 2 cells each way (districts × cells per district side) to have roads"
        );
        ensure!(
            (200.0..=5000.0).contains(&self.cell_size_m),
            "cell-size-m must be 200..5000, not {}",
            self.cell_size_m
        );
        ensure!(
            (-170.0..=170.0).contains(&self.center_lon) && (-70.0..=70.0).contains(&self.center_lat),
            "centre {}, {} is out of range (lon -170..170, lat -70..70)",
            self.center_lon,
            self.center_lat
        );
        Ok(())
    }
}

impl Default for CityOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The local plane: metres east and north of the city's south-west corner.
struct Frame {
    lon0: f64,
    lat0: f64,
    m_per_deg_lon: f64,
    m_per_deg_lat: f64,
}

impl Frame {
    fn new(opts: &CityOptions, width_m: f64, height_m: f64) -> Frame {
        let m_per_deg_lat = EARTH_RADIUS_M.to_radians();
        let m_per_deg_lon = m_per_deg_lat * opts.center_lat.to_radians().cos();
        Frame {
            lon0: opts.center_lon - width_m / 2.0 / m_per_deg_lon,
            lat0: opts.center_lat - height_m / 2.0 / m_per_deg_lat,
            m_per_deg_lon,
            m_per_deg_lat,
        }
    }

    /// Lon/lat of a point of the plane, rounded to 1e-7°.
    fn lonlat(&self, (x, y): (f64, f64)) -> [f64; 2] {
        let round = |v: f64| (v * 1e7).round() / 1e7;
        [round(self.lon0 + x / self.m_per_deg_lon), round(self.lat0 + y / self.m_per_deg_lat)]
    }

    /// A rectangle of the plane as a GeoJSON Polygon (counter-clockwise, closed).
    fn rect(&self, (x0, y0): (f64, f64), (x1, y1): (f64, f64)) -> Value {
        let ring: Vec<[f64; 2]> =
            [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)].into_iter().map(|p| self.lonlat(p)).collect();
        json!({"type": "Polygon", "coordinates": [ring]})
    }
}

/// Great-circle distance between two lon/lat points, metres.
fn haversine_m(a: [f64; 2], b: [f64; 2]) -> f64 {
    let (la, lb) = (a[1].to_radians(), b[1].to_radians());
    let dlat = lb - la;
    let dlon = (b[0] - a[0]).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

fn feature(geometry: Value, properties: Value) -> Value {
    json!({"type": "Feature", "geometry": geometry, "properties": properties})
}

fn point(frame: &Frame, p: (f64, f64)) -> Value {
    json!({"type": "Point", "coordinates": frame.lonlat(p)})
}

/// One straight two-way road through a row or column of intersections.
struct Road {
    /// `h3` for the fourth east–west road, `v0` for the first north–south one.
    label: String,
    /// Its intersections, west to east or south to north.
    points: Vec<(f64, f64)>,
    /// Direction suffixes: along `points`, then against.
    dirs: [(&'static str, &'static str); 2],
    class: RoadClass,
    lanes: u32,
    speed_limit_kmh: f64,
}

impl Road {
    /// The middle road each way is an expressway, the outermost are branch roads, and the others
    /// alternate between arterial and secondary.
    fn new(rng: &mut ChaCha8Rng, label: String, points: Vec<(f64, f64)>, index: u32, count: u32) -> Road {
        let class = if index == count / 2 {
            RoadClass::Expressway
        } else if index == 0 || index + 1 == count {
            RoadClass::Branch
        } else if index.is_multiple_of(2) {
            RoadClass::Arterial
        } else {
            RoadClass::Secondary
        };
        let (lanes, speed_limit_kmh) = match class {
            RoadClass::Expressway => (rng.random_range(3..=4), 80.0),
            RoadClass::Arterial => (rng.random_range(2..=3), 60.0),
            RoadClass::Secondary => (2, 50.0),
            RoadClass::Branch => (rng.random_range(1..=2), 40.0),
        };
        let dirs = if label.starts_with('h') {
            [("e", "east"), ("w", "west")]
        } else {
            [("n", "north"), ("s", "south")]
        };
        Road { label, points, dirs, class, lanes, speed_limit_kmh }
    }
}

/// The city's layout: the grid of cells on the local plane, and how it maps to districts.
struct Grid {
    frame: Frame,
    /// Cells along a district side.
    side: u32,
    /// Districts from west to east.
    districts_x: u32,
    /// Cells from west to east and from south to north.
    nx: u32,
    ny: u32,
    /// Cell side, metres.
    cell: f64,
}

impl Grid {
    fn new(opts: &CityOptions) -> Grid {
        let side = opts.cells_per_district_side;
        let (nx, ny, cell) = (opts.districts_x * side, opts.districts_y * side, opts.cell_size_m);
        let frame = Frame::new(opts, nx as f64 * cell, ny as f64 * cell);
        Grid { frame, side, districts_x: opts.districts_x, nx, ny, cell }
    }

    /// The 1-based number of the district holding cell `(cx, cy)`.
    fn district_no(&self, cx: u32, cy: u32) -> u32 {
        (cy / self.side) * self.districts_x + cx / self.side + 1
    }

    fn district_id(&self, cx: u32, cy: u32) -> String {
        format!("district-{}", self.district_no(cx, cy))
    }

    /// The district holding a point of the plane.
    fn district_at(&self, (x, y): (f64, f64)) -> String {
        self.district_id((x / self.cell) as u32, (y / self.cell) as u32)
    }

    /// The square of cells `(cx, cy)` .. `(cx + n, cy + n)` as a polygon.
    fn square(&self, cx: u32, cy: u32, n: u32) -> Value {
        let (x0, y0) = (cx as f64 * self.cell, cy as f64 * self.cell);
        let len = n as f64 * self.cell;
        self.frame.rect((x0, y0), (x0 + len, y0 + len))
    }

    /// The lower-left cells of the districts, with their numbers.
    fn district_corners(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let rows = self.ny / self.side;
        (0..rows).flat_map(move |dy| {
            (0..self.districts_x).map(move |dx| {
                let (cx, cy) = (dx * self.side, dy * self.side);
                (self.district_no(cx, cy), cx, cy)
            })
        })
    }

    fn districts(&self) -> Vec<Value> {
        self.district_corners()
            .map(|(n, cx, cy)| {
                let name = DISTRICT_NAMES
                    .get(n as usize - 1)
                    .map_or_else(|| format!("District {n}"), |s| s.to_string());
                feature(
                    self.square(cx, cy, self.side),
                    json!({"kind": "district", "id": self.district_id(cx, cy), "name": name}),
                )
            })
            .collect()
    }

    /// One officer per cell; some cells share their western neighbour's officer too.
    fn cells(&self, rng: &mut ChaCha8Rng) -> Vec<Value> {
        let mut out = Vec::new();
        let mut western: Option<(String, String)> = None;
        for cy in 0..self.ny {
            for cx in 0..self.nx {
                let district = self.district_id(cx, cy);
                let own = format!("officer-{:03}", cy * self.nx + cx + 1);
                let mut officers = vec![own.clone()];
                if let Some((d, o)) = western.take()
                    && d == district
                    && rng.random_bool(0.3)
                {
                    officers.push(o);
                }
                out.push(feature(
                    self.square(cx, cy, 1),
                    json!({"kind": "cell", "id": format!("cell-{cx}-{cy}"), "district": district, "officers": officers}),
                ));
                western = (cx + 1 < self.nx).then_some((district, own));
            }
        }
        out
    }

    /// One east–west road per row of cells, one north–south road per column, each 30–40 % of
    /// the way into its row or column.
    fn roads(&self, rng: &mut ChaCha8Rng) -> Vec<Road> {
        let mut offset = |i: u32| (i as f64 + rng.random_range(0.3..0.4)) * self.cell;
        let rows: Vec<f64> = (0..self.ny).map(&mut offset).collect();
        let cols: Vec<f64> = (0..self.nx).map(&mut offset).collect();
        let mut roads = Vec::new();
        for (r, &y) in rows.iter().enumerate() {
            let points = cols.iter().map(|&x| (x, y)).collect();
            roads.push(Road::new(rng, format!("h{r}"), points, r as u32, self.ny));
        }
        for (c, &x) in cols.iter().enumerate() {
            let points = rows.iter().map(|&y| (x, y)).collect();
            roads.push(Road::new(rng, format!("v{c}"), points, c as u32, self.nx));
        }
        roads
    }

    /// The directed segments of a road, and their detectors.
    fn segments(&self, road: &Road, segments: &mut Vec<Value>, detectors: &mut Vec<Value>) {
        let setback = DETECTOR_SETBACK_M.min(self.cell / 10.0);
        for (reverse, (dir, heading)) in [false, true].into_iter().zip(road.dirs) {
            let mut points = road.points.clone();
            if reverse {
                points.reverse();
            }
            let links = points.len() - 1;
            let seg_id = |k: usize| format!("seg-{}{dir}-{k}", road.label);
            for (k, pair) in points.windows(2).enumerate() {
                let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
                let len = (x1 - x0).hypot(y1 - y0);
                let (ux, uy) = ((x1 - x0) / len, (y1 - y0) / len);
                // A point `along` metres from the start, `right` metres right of the centre line.
                let at =
                    |along: f64, right: f64| (x0 + ux * along + uy * right, y0 + uy * along - ux * right);
                let middle = MEDIAN_M + road.lanes as f64 * LANE_WIDTH_M / 2.0;
                let (start, end) = (self.frame.lonlat(at(0.0, middle)), self.frame.lonlat(at(len, middle)));
                let id = seg_id(k);
                let mut props = json!({
                    "kind": "segment", "id": id, "name": format!("{} {heading}bound {k}", road.label.to_uppercase()),
                    "district": self.district_at(at(len / 2.0, 0.0)),
                    "length_m": (haversine_m(start, end) * 10.0).round() / 10.0,
                    "speed_limit_kmh": road.speed_limit_kmh, "lanes": road.lanes, "road_class": road.class.as_str(),
                });
                if k > 0 {
                    props["upstream"] = json!([seg_id(k - 1)]);
                }
                if k + 1 < links {
                    props["downstream"] = json!([seg_id(k + 1)]);
                }
                segments.push(feature(json!({"type": "LineString", "coordinates": [start, end]}), props));
                for lane in 0..road.lanes {
                    let right = MEDIAN_M + (lane as f64 + 0.5) * LANE_WIDTH_M;
                    detectors.push(feature(
                        point(&self.frame, at(len - setback, right)),
                        json!({"kind": "detector", "id": format!("det-{}{dir}-{k}-{lane}", road.label),
                               "segment": id, "lane": lane}),
                    ));
                }
            }
        }
    }

    /// One station of each type per district, well inside a random cell of it.
    fn stations(&self, rng: &mut ChaCha8Rng) -> Vec<Value> {
        let mut out = Vec::new();
        for (n, cx0, cy0) in self.district_corners() {
            for kind in STATION_TYPES {
                let (cx, cy) = (cx0 + rng.random_range(0..self.side), cy0 + rng.random_range(0..self.side));
                let x = (cx as f64 + rng.random_range(0.1..0.9)) * self.cell;
                let y = (cy as f64 + rng.random_range(0.1..0.9)) * self.cell;
                out.push(feature(
                    point(&self.frame, (x, y)),
                    json!({"kind": "station", "id": format!("station-{kind}-{n}"), "type": kind,
                           "district": self.district_id(cx, cy)}),
                ));
            }
        }
        out
    }
}

/// Generates a city model: a GeoJSON FeatureCollection of districts, cells, segments, detectors
/// and stations (in that order), deterministic for [`CityOptions::seed`].
pub fn generate_city(opts: &CityOptions) -> Result<Value> {
    opts.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let grid = Grid::new(opts);
    let mut features = grid.districts();
    features.extend(grid.cells(&mut rng));
    let mut detectors = Vec::new();
    for road in grid.roads(&mut rng) {
        grid.segments(&road, &mut features, &mut detectors);
    }
    features.append(&mut detectors);
    features.extend(grid.stations(&mut rng));
    Ok(json!({"type": "FeatureCollection", "features": features}))
}

/// The GeoJSON text of a city: compact, one feature per line (readable and diff-friendly).
pub fn geojson_text(city: &Value) -> String {
    let features = city["features"].as_array().map(Vec::as_slice).unwrap_or_default();
    let lines: Vec<String> = features.iter().map(Value::to_string).collect();
    format!("{{\"type\":\"FeatureCollection\",\"features\":[\n{}\n]}}\n", lines.join(",\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use citybrain_dataflows::CityModel;

    fn count_kind(city: &Value, kind: &str) -> usize {
        city["features"].as_array().unwrap().iter().filter(|f| f["properties"]["kind"] == kind).count()
    }

    fn load(opts: &CityOptions) -> CityModel {
        CityModel::from_geojson_str(&geojson_text(&generate_city(opts).unwrap())).unwrap()
    }

    #[test]
    fn generated_city_loads_and_is_complete() {
        let m = load(&CityOptions::default());
        assert_eq!(m.districts.len(), 9);
        assert_eq!(m.cells.len(), 36);
        // 6 east–west and 6 north–south roads, 5 links each way.
        assert_eq!(m.segments.len(), 12 * 2 * 5);
        assert_eq!(m.stations.len(), 27);
        for (s, seg) in m.segments.iter().enumerate() {
            let lanes: Vec<u32> = m.segment_detectors(s as u32).iter().map(|&(l, _)| l).collect();
            assert_eq!(lanes, (0..seg.lanes).collect::<Vec<_>>(), "{}", seg.id);
            assert!((1..=4).contains(&seg.lanes));
            assert!(seg.cell.is_some_and(|c| m.cells[c as usize].district == seg.district), "{}", seg.id);
            // Links 0..=4 along each road and direction, chained in order.
            let k: usize = seg.id.rsplit('-').next().unwrap().parse().unwrap();
            assert_eq!(seg.upstream.is_empty(), k == 0, "{}", seg.id);
            assert_eq!(seg.downstream.is_empty(), k == 4, "{}", seg.id);
            for &d in &seg.downstream {
                let next = &m.segments[d as usize];
                assert_eq!(next.id, seg.id.replace(&format!("-{k}"), &format!("-{}", k + 1)));
                assert!(next.upstream.contains(&(s as u32)));
            }
            // Cells are 1 km; a link spans one cell width give or take the 30–40 % road offsets.
            assert!((850.0..1150.0).contains(&seg.length_m), "{} {}", seg.id, seg.length_m);
        }
        for det in &m.detectors {
            assert!(det.cell.is_some(), "{} has no cell", det.id);
        }
        for st in &m.stations {
            let (cell, district) = m.place(st.location.x(), st.location.y());
            assert!(cell.is_some() && district == Some(st.district), "{}", st.id);
        }
        assert!(m.officers().any(|(_, cells)| cells.len() > 1), "some officer looks after two cells");
        assert!(m.cells.iter().all(|c| (1..=2).contains(&c.officers.len())));
    }

    #[test]
    fn same_seed_same_city() {
        let a = generate_city(&CityOptions::default()).unwrap();
        assert_eq!(a, generate_city(&CityOptions::default()).unwrap());
        assert_ne!(a, generate_city(&CityOptions { seed: 2, ..CityOptions::default() }).unwrap());
        assert_eq!(count_kind(&a, "detector"), load(&CityOptions::default()).detectors.len());
    }

    #[test]
    fn small_and_odd_cities() {
        let tiny = CityOptions {
            districts_x: 1,
            districts_y: 1,
            cells_per_district_side: 2,
            cell_size_m: 200.0,
            seed: 7,
            ..CityOptions::default()
        };
        let m = load(&tiny);
        assert_eq!(m.segments.len(), 4 * 2);
        assert!(m.detectors.iter().all(|d| d.cell.is_some()));
        let bad = CityOptions {
            districts_x: 1,
            districts_y: 1,
            cells_per_district_side: 1,
            ..CityOptions::default()
        };
        assert!(generate_city(&bad).unwrap_err().to_string().contains("at least 2 cells"));
    }
}
