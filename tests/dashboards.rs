//! The dashboards shipped in `dashboards/`.
//!
//! [`grafana`]: static checks, no Grafana or database is started. The files must parse, carry
//! what their provisioning and users rely on (uids, titles, the datasource variable), and query
//! only what citybrain writes: every Flux query is checked against a copy of the measurements
//! table of CONTRACT §6 and the README, so a renamed field or a typo in a dashboard fails here
//! rather than as an empty panel in the operations centre.
//!
//! [`browser`]: the operations-centre and officer pages in headless Chromium against a running
//! `citybrain demo`.

mod common;

/// The Grafana dashboards of `dashboards/grafana/` (InfluxDB v2, Flux) and their provisioning.
mod grafana {
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The measurements citybrain writes, as (measurement, fields, tags): CONTRACT §6
    /// ("Time series", the public interface) and the README's "Measurements" table, which
    /// adds `grid_sensor`, the `alert` field `id`, and the extra `grid_cell` / `grid_district`
    /// fields. Keep it in step with both when a measurement changes.
    const MEASUREMENTS: &[(&str, &[&str], &[&str])] = &[
        (
            "traffic_detector",
            &["count", "flow_vph", "occupancy", "speed_kmh"],
            &["sensor", "segment", "window"],
        ),
        (
            "traffic_segment",
            &["count", "flow_vph", "occupancy", "speed_kmh", "tti", "level"],
            &["segment", "district", "road_class", "window"],
        ),
        ("traffic_district", &["tpi", "level", "speed_kmh", "congested_km"], &["district", "window"]),
        ("traffic_city", &["tpi", "level", "speed_kmh", "congested_km"], &["window"]),
        (
            "emergency_district",
            &[
                "open_incidents",
                "open_fire",
                "open_medical",
                "open_police",
                "open_traffic",
                "open_sev1_2",
                "unassigned",
                "available_units",
                "available_fire_engine",
                "available_ambulance",
                "available_police",
                "call_p50_s",
                "call_p90_s",
                "turnout_p50_s",
                "turnout_p90_s",
                "travel_p50_s",
                "travel_p90_s",
                "response_p50_s",
                "response_p90_s",
            ],
            &["district"],
        ),
        ("emergency_dispatch", &["unit", "unit_type", "eta_s", "distance_m"], &["incident", "rank"]),
        (
            "grid_district",
            &[
                "open_cases",
                "overdue_cases",
                "closed_today",
                "mttr_s",
                "risk",
                "amber_cases",
                "sensor_alarms",
            ],
            &["district"],
        ),
        (
            "grid_cell",
            &[
                "open_cases",
                "overdue_cases",
                "closed_today",
                "sensor_alarms",
                "risk",
                "amber_cases",
                "stale_sensors",
                "traffic_incidents",
                "emergency_incidents",
                "mttr_s",
            ],
            &["cell", "district"],
        ),
        ("grid_sensor", &["value", "alarm", "stale"], &["sensor", "kind", "cell", "district"]),
        (
            "alert",
            &["state", "subject", "cell", "district", "message", "id"],
            &["rule", "severity", "domain"],
        ),
    ];

    /// Tags whose values the contract enumerates (the `window` tag, an alert's domain and
    /// severity): a query comparing one with a literal must use one of these.
    const TAG_VALUES: &[(&str, &[&str])] = &[
        ("window", &["1m", "5m"]),
        ("domain", &["traffic", "emergency", "grid", "health"]),
        ("severity", &["info", "warning", "critical"]),
    ];

    /// The measurements each dashboard must chart, by file stem.
    const COVERAGE: &[(&str, &[&str])] = &[
        ("traffic", &["traffic_city", "traffic_district", "traffic_segment"]),
        ("emergency", &["emergency_district", "emergency_dispatch"]),
        ("grid", &["grid_cell", "grid_district"]),
    ];

    /// Columns every Flux table has, always allowed in a filter.
    const BUILTIN_COLUMNS: &[&str] = &["_measurement", "_field", "_value", "_time", "_start", "_stop"];

    /// Template variables Grafana defines itself.
    const BUILTIN_VARIABLES: &[&str] =
        &["__interval", "__interval_ms", "__range", "__range_s", "__rate_interval", "__from", "__to"];

    /// The directory of the Grafana files.
    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/grafana")
    }

    /// One dashboard file: its stem (`traffic`) and parsed JSON.
    struct Dashboard {
        stem: String,
        json: Value,
    }

    /// Every `dashboards/grafana/*.json`, parsed, in file-name order (panics on invalid JSON).
    fn dashboards() -> Vec<Dashboard> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
            .expect("dashboards/grafana exists")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 3, "expected the traffic, emergency and grid dashboards, found {paths:?}");
        paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("readable dashboard");
                let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                Dashboard { stem: p.file_stem().unwrap().to_string_lossy().into_owned(), json }
            })
            .collect()
    }

    /// All panels of a dashboard, the panels of collapsed rows included.
    fn panels(d: &Value) -> Vec<&Value> {
        fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
            for p in list.as_array().into_iter().flatten() {
                out.push(p);
                if let Some(nested) = p.get("panels") {
                    walk(nested, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&d["panels"], &mut out);
        out
    }

    /// The Flux of a query variable, whether stored as a string or as `{query, refId}`.
    fn variable_query(v: &Value) -> Option<&str> {
        match &v["query"] {
            Value::String(s) => Some(s),
            q => q["query"].as_str(),
        }
    }

    /// Every Flux query of a dashboard with where it is: panel targets and query variables.
    fn queries(d: &Dashboard) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in panels(&d.json) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let title = p["title"].as_str().unwrap_or("?");
                out.push((
                    format!("{}: panel {title:?}", d.stem),
                    t["query"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        for v in d.json["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" {
                let name = v["name"].as_str().unwrap_or("?");
                out.push((
                    format!("{}: variable {name}", d.stem),
                    variable_query(v).unwrap_or("").to_owned(),
                ));
            }
        }
        out
    }

    /// The names of a dashboard's template variables.
    fn variable_names(d: &Value) -> BTreeSet<String> {
        d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether `c` can be part of a Flux identifier.
    fn ident_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// The identifier at the start of `s`.
    fn ident(s: &str) -> &str {
        &s[..s.find(|c: char| !ident_char(c)).unwrap_or(s.len())]
    }

    /// The byte offsets of `needle` in `q` where it is not the tail of a longer identifier.
    fn occurrences(q: &str, needle: &str) -> Vec<usize> {
        q.match_indices(needle)
            .map(|(i, _)| i)
            .filter(|&i| !q[..i].chars().next_back().is_some_and(ident_char))
            .collect()
    }

    /// The string literal at the start of `s` (which must open with `"`), without its quotes.
    fn string_literal(s: &str) -> Option<&str> {
        let rest = s.strip_prefix('"')?;
        rest.find('"').map(|end| &rest[..end])
    }

    /// The measurements a query names (`r._measurement == "x"`); any other use of
    /// `r._measurement` is an error.
    fn measurements(q: &str) -> Result<Vec<String>, String> {
        occurrences(q, "r._measurement")
            .into_iter()
            .map(|i| {
                let after = &q[i + "r._measurement".len()..];
                after
                    .strip_prefix(" == ")
                    .and_then(string_literal)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("unsupported use of r._measurement: {:.40}", &q[i..]))
            })
            .collect()
    }

    /// The names of a field regex `/^name$/` or `/^(a|b)$/` (the regex body without slashes).
    fn regex_names(body: &str) -> Result<Vec<String>, String> {
        let inner = body
            .strip_prefix('^')
            .and_then(|b| b.strip_suffix('$'))
            .ok_or_else(|| format!("field regex /{body}/ must be anchored"))?;
        let inner = inner.strip_prefix('(').and_then(|b| b.strip_suffix(')')).unwrap_or(inner);
        inner
            .split('|')
            .map(|n| {
                if !n.is_empty() && n.chars().all(ident_char) {
                    Ok(n.to_owned())
                } else {
                    Err(format!("field regex /{body}/ is not a list of names"))
                }
            })
            .collect()
    }

    /// The fields a query names, in the forms `r._field == "x"`, `r._field =~ /^(a|b)$/` and
    /// `contains(value: r._field, set: ["a", "b"])`; any other use of `r._field` is an error.
    fn fields(q: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for i in occurrences(q, "r._field") {
            let after = &q[i + "r._field".len()..];
            if let Some(name) = after.strip_prefix(" == ").and_then(string_literal) {
                out.push(name.to_owned());
            } else if let Some(re) = after.strip_prefix(" =~ /") {
                let end = re.find('/').ok_or("unterminated field regex")?;
                out.extend(regex_names(&re[..end])?);
            } else if q[..i].ends_with("contains(value: ")
                && let Some(set) = after.strip_prefix(", set: [")
            {
                let end = set.find(']').ok_or("unterminated contains set")?;
                for item in set[..end].split(',') {
                    let name = string_literal(item.trim())
                        .ok_or_else(|| format!("contains set item {item:?} is not a string"))?;
                    out.push(name.to_owned());
                }
            } else {
                return Err(format!("unsupported use of r._field: {:.40}", &q[i..]));
            }
        }
        Ok(out)
    }

    /// The bodies of the query's `filter(…)` calls with their offsets (balanced parentheses,
    /// ignoring those inside string literals).
    fn filter_bodies(q: &str) -> Vec<(usize, &str)> {
        let mut out = Vec::new();
        for start in occurrences(q, "filter(") {
            let open = start + "filter(".len();
            let (mut depth, mut in_string) = (1, false);
            for (j, c) in q[open..].char_indices() {
                match c {
                    '"' => in_string = !in_string,
                    '(' if !in_string => depth += 1,
                    ')' if !in_string => {
                        depth -= 1;
                        if depth == 0 {
                            out.push((start, &q[open..open + j]));
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// The record columns a filter body reads (`r.district`, `exists r.speed_kmh`, …).
    fn record_columns(body: &str) -> Vec<&str> {
        occurrences(body, "r.").into_iter().map(|i| ident(&body[i + 2..])).filter(|c| !c.is_empty()).collect()
    }

    /// The fields and tags of a known measurement.
    fn schema(m: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
        MEASUREMENTS.iter().find(|(name, _, _)| *name == m).map(|(_, f, t)| (*f, *t))
    }

    /// Checks one Flux query against the measurements table; every problem found, or none.
    fn check_query(q: &str) -> Vec<String> {
        let mut errors = Vec::new();
        if q.trim().is_empty() {
            return vec!["empty query".into()];
        }
        if !q.contains("bucket: v.defaultBucket") || q.contains("bucket: \"") {
            errors.push("must read the datasource's bucket (bucket: v.defaultBucket)".into());
        }
        let named = match measurements(q) {
            Ok(m) if m.is_empty() => return vec!["names no measurement (r._measurement == \"…\")".into()],
            Ok(m) => m,
            Err(e) => return vec![e],
        };
        let mut known_fields = BTreeSet::new();
        let mut known_tags = BTreeSet::new();
        for m in &named {
            match schema(m) {
                Some((f, t)) => {
                    known_fields.extend(f.iter().copied());
                    known_tags.extend(t.iter().copied());
                }
                None => errors.push(format!("unknown measurement {m:?}")),
            }
        }
        match fields(q) {
            Ok(fs) => errors.extend(
                fs.iter()
                    .filter(|f| !known_fields.contains(f.as_str()))
                    .map(|f| format!("field {f:?} is not a field of {named:?}")),
            ),
            Err(e) => errors.push(e),
        }
        for i in occurrences(q, "tag: ") {
            match string_literal(&q[i + "tag: ".len()..]) {
                Some(t) if known_tags.contains(t) => {}
                other => errors.push(format!("tag {other:?} is not a tag of {named:?}")),
            }
        }
        let pivot_at = q.find("pivot(");
        for (at, body) in filter_bodies(q) {
            let pivoted = pivot_at.is_some_and(|p| p < at);
            for c in record_columns(body) {
                let ok = BUILTIN_COLUMNS.contains(&c)
                    || known_tags.contains(c)
                    || (pivoted && known_fields.contains(c));
                if !ok {
                    errors.push(format!("filter reads r.{c}, not a tag of {named:?} (nor a pivoted field)"));
                }
            }
            for (tag, values) in TAG_VALUES {
                for i in occurrences(body, &format!("r.{tag} == ")) {
                    match string_literal(&body[i + tag.len() + 6..]) {
                        Some(v) if values.contains(&v) => {}
                        other => {
                            errors.push(format!("r.{tag} compared with {other:?}, not one of {values:?}"))
                        }
                    }
                }
            }
        }
        errors
    }

    /// The template variables a text refers to (`$name`, `${name}`, `${name:format}`).
    fn variables_used(text: &str) -> BTreeSet<String> {
        text.match_indices('$')
            .map(|(i, _)| {
                let rest = &text[i + 1..];
                ident(rest.strip_prefix('{').unwrap_or(rest)).to_owned()
            })
            .filter(|name| !name.is_empty())
            .collect()
    }

    /// The value of the first `key: value` line of a YAML text (a plain text read, no YAML crate).
    fn yaml_value<'a>(yaml: &'a str, key: &str) -> Option<&'a str> {
        yaml.lines().find_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(key)?.strip_prefix(':').map(str::trim)
        })
    }

    /// Each dashboard file parses and has a uid, a title, panels, a schema version, the
    /// `citybrain` tag, the default time range and refresh, and a datasource variable.
    #[test]
    fn every_dashboard_parses_with_uid_title_panels_and_schema() {
        for d in dashboards() {
            let j = &d.json;
            assert!(j["uid"].as_str().is_some_and(|u| !u.is_empty()), "{}: uid", d.stem);
            assert!(j["title"].as_str().is_some_and(|t| !t.is_empty()), "{}: title", d.stem);
            assert!(j["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{}: schemaVersion", d.stem);
            assert!(j["panels"].as_array().is_some_and(|p| p.len() >= 5), "{}: panels", d.stem);
            assert!(
                j["tags"].as_array().is_some_and(|t| t.contains(&"citybrain".into())),
                "{}: tags",
                d.stem
            );
            assert_eq!(j["time"]["from"], "now-6h", "{}", d.stem);
            assert_eq!(j["refresh"], "30s", "{}", d.stem);
            let vars = j["templating"]["list"].as_array().expect("templating.list");
            let ds = vars.iter().find(|v| v["name"] == "datasource").expect("a `datasource` variable");
            assert_eq!(ds["type"], "datasource", "{}", d.stem);
            assert_eq!(ds["query"], "influxdb", "{}", d.stem);
        }
    }

    /// Dashboard uids are unique and stable (`citybrain-<file stem>`), so provisioning and links
    /// keep pointing at the same dashboard.
    #[test]
    fn uids_are_unique_and_follow_the_file_names() {
        let all = dashboards();
        let uids: BTreeSet<&str> = all.iter().filter_map(|d| d.json["uid"].as_str()).collect();
        assert_eq!(uids.len(), all.len(), "duplicate uid among {uids:?}");
        for d in &all {
            assert_eq!(d.json["uid"], format!("citybrain-{}", d.stem));
        }
    }

    /// Panel ids are unique within a dashboard (rows' nested panels included) and every panel
    /// fits the 24-column grid.
    #[test]
    fn panel_ids_are_unique_and_panels_fit_the_grid() {
        for d in dashboards() {
            let mut ids = BTreeSet::new();
            for p in panels(&d.json) {
                let id = p["id"].as_u64().unwrap_or_else(|| panic!("{}: panel without id", d.stem));
                assert!(ids.insert(id), "{}: panel id {id} twice", d.stem);
                let g = &p["gridPos"];
                let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
                assert!(
                    matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24),
                    "{}: panel {id} gridPos {g}",
                    d.stem
                );
            }
        }
    }

    /// Every panel that is not a row has targets with a non-empty Flux query, and reads the
    /// dashboard's `datasource` variable.
    #[test]
    fn every_panel_has_flux_targets_on_the_datasource_variable() {
        let expected = serde_json::json!({"type": "influxdb", "uid": "${datasource}"});
        let mut checked = 0;
        for d in dashboards() {
            for p in panels(&d.json).into_iter().filter(|p| p["type"] != "row") {
                let title = p["title"].as_str().unwrap_or("?");
                assert_eq!(p["datasource"], expected, "{}: {title}", d.stem);
                let targets = p["targets"].as_array().filter(|t| !t.is_empty());
                let targets = targets.unwrap_or_else(|| panic!("{}: {title} has no targets", d.stem));
                for t in targets {
                    let q = t["query"].as_str().unwrap_or("");
                    assert!(
                        q.contains("from(bucket:") && q.contains("|> "),
                        "{}: {title}: not Flux: {q:?}",
                        d.stem
                    );
                    if !t["datasource"].is_null() {
                        assert_eq!(t["datasource"], expected, "{}: {title}", d.stem);
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 30, "only {checked} queries checked");
    }

    /// Every query (panels and query variables) names at least one measurement, and only
    /// measurements, fields, tags and tag values of the contract's table.
    #[test]
    fn queries_use_only_contract_measurements_fields_and_tags() {
        let mut problems = Vec::new();
        let mut count = 0;
        for d in dashboards() {
            for (place, q) in queries(&d) {
                count += 1;
                problems.extend(check_query(&q).into_iter().map(|e| format!("{place}: {e}")));
            }
        }
        assert!(count >= 30, "only {count} queries found");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// Every template variable a query or panel title uses is defined by the dashboard.
    #[test]
    fn template_variables_used_are_defined() {
        for d in dashboards() {
            let defined = variable_names(&d.json);
            let mut texts: Vec<String> = queries(&d).into_iter().map(|(_, q)| q).collect();
            texts.extend(panels(&d.json).iter().filter_map(|p| p["title"].as_str().map(str::to_owned)));
            for text in texts {
                for v in variables_used(&text) {
                    assert!(
                        defined.contains(&v) || BUILTIN_VARIABLES.contains(&v.as_str()),
                        "{}: ${v} is not defined ({defined:?})",
                        d.stem
                    );
                }
            }
            assert!(defined.contains("district"), "{}: a district variable", d.stem);
        }
    }

    /// Each dashboard charts its domain's measurements.
    #[test]
    fn each_dashboard_covers_its_domain() {
        let all = dashboards();
        for (stem, wanted) in COVERAGE {
            let d = all.iter().find(|d| d.stem == *stem).unwrap_or_else(|| panic!("{stem}.json missing"));
            let named: BTreeSet<String> =
                queries(d).iter().flat_map(|(_, q)| measurements(q).unwrap_or_default()).collect();
            for m in *wanted {
                assert!(named.contains(*m), "{stem}.json does not chart {m}");
            }
        }
    }

    /// The provisioning files exist; the datasource is InfluxDB in Flux mode with its secrets
    /// from the environment, under the uid every dashboard's datasource variable defaults to;
    /// the dashboard provider is a file provider with a path.
    #[test]
    fn provisioning_names_the_datasource_uid_the_dashboards_use() {
        let ds = std::fs::read_to_string(dir().join("provisioning/datasources/citybrain-influxdb.yaml"))
            .expect("datasource provisioning file");
        let uid = yaml_value(&ds, "uid").expect("a datasource uid");
        assert_eq!(yaml_value(&ds, "type"), Some("influxdb"));
        assert_eq!(yaml_value(&ds, "version"), Some("Flux"));
        for key in ["url", "organization", "defaultBucket", "token"] {
            let v = yaml_value(&ds, key).unwrap_or_else(|| panic!("datasource {key}"));
            assert!(v.starts_with('$'), "{key} must come from the environment, not {v:?}");
        }
        let provider = std::fs::read_to_string(dir().join("provisioning/dashboards/citybrain.yaml"))
            .expect("dashboard provisioning file");
        assert_eq!(yaml_value(&provider, "type"), Some("file"));
        assert!(yaml_value(&provider, "path").is_some_and(|p| p.starts_with('/')), "an absolute path");
        for d in dashboards() {
            let vars = d.json["templating"]["list"].as_array().expect("templating.list");
            let var = vars.iter().find(|v| v["name"] == "datasource").expect("datasource variable");
            assert_eq!(var["current"]["value"], uid, "{}: default datasource", d.stem);
        }
    }

    /// The checker reads each query form it supports and accepts a well-formed query.
    #[test]
    fn the_checker_reads_every_supported_form() {
        let q = r#"from(bucket: v.defaultBucket)
  |> filter(fn: (r) => r._measurement == "grid_cell" and r._field == "risk")
  |> filter(fn: (r) => r._field =~ /^(open_cases|mttr_s)$/ or r._field =~ /^amber_cases$/)
  |> filter(fn: (r) => contains(value: r._field, set: ["sensor_alarms", "stale_sensors"]))
  |> filter(fn: (r) => r.district =~ /^${district:regex}$/ and r.cell != "")"#;
        assert_eq!(measurements(q).unwrap(), ["grid_cell"]);
        assert_eq!(
            fields(q).unwrap(),
            ["risk", "open_cases", "mttr_s", "amber_cases", "sensor_alarms", "stale_sensors"]
        );
        let cols: Vec<&str> = filter_bodies(q).iter().flat_map(|(_, b)| record_columns(b)).collect();
        assert_eq!(cols, ["_measurement", "_field", "_field", "_field", "_field", "district", "cell"]);
        assert_eq!(check_query(q), Vec::<String>::new());
        assert_eq!(variables_used(q), BTreeSet::from(["district".to_owned()]));
    }

    /// The checker rejects what the dashboards must not do: unknown measurements, fields and
    /// tags, fields of another measurement, undocumented tag values, a field read as a column
    /// before a pivot, a hard-coded bucket and an unsupported field form.
    #[test]
    fn the_checker_rejects_names_outside_the_contract() {
        let base = "from(bucket: v.defaultBucket) |> filter(fn: (r) => ";
        let bad = [
            r#"r._measurement == "traffic_road" and r._field == "tpi")"#,
            r#"r._measurement == "traffic_district" and r._field == "tti")"#,
            r#"r._measurement == "traffic_district" and r._field =~ /^(tpi|flow_vph)$/)"#,
            r#"r._measurement == "grid_cell" and contains(value: r._field, set: ["risk", "kind"]))"#,
            r#"r._measurement == "traffic_district" and r.segment == "s1")"#,
            r#"r._measurement == "traffic_district" and r.window == "15m")"#,
            r#"r._measurement == "alert" and r.domain == "health_care")"#,
            r#"r._measurement == "alert" and r.state == "raised")"#,
            r#"r._measurement == "grid_cell" and r._field != "risk")"#,
            r#"r._field == "risk")"#,
        ];
        for tail in bad {
            let q = format!("{base}{tail}");
            assert!(!check_query(&q).is_empty(), "accepted: {q}");
        }
        let hard_coded = r#"from(bucket: "citybrain") |> filter(fn: (r) => r._measurement == "grid_cell")"#;
        assert!(!check_query(hard_coded).is_empty());
        let pivoted = format!(
            r#"{base}r._measurement == "alert") |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value") |> filter(fn: (r) => r.state != "cleared")"#
        );
        assert_eq!(check_query(&pivoted), Vec::<String>::new());
        let variable = r#"schema.tagValues(bucket: v.defaultBucket, tag: "segment", predicate: (r) => r._measurement == "traffic_district")"#;
        assert!(!check_query(variable).is_empty());
    }
}

/// The dashboard pages in headless Chromium, driven over WebDriver (Debian's `chromium` and
/// `chromium-driver`; `scripts/test` installs them), against a real `citybrain demo`: the pages
/// load without console errors, draw the city, show an alert published over MQTT within 2 s,
/// acknowledge it and confirm a dispatch through the API, and the officer's page shows only that
/// officer's cells and alerts at phone width. Screenshots of both pages are kept in
/// `target/dashboards/` as the run's artifacts.
///
/// The WebDriver client is the few calls the tests need, over the HTTP client the crate already
/// has (the wire protocol is plain JSON), plus chromedriver's browser-log endpoint, which is how
/// console errors are read.
mod browser {
    use base64::Engine;
    use serde_json::{Value, json};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::common;

    /// A WebDriver session on a chromedriver of our own.
    struct Browser {
        driver: Child,
        base: String,
        http: reqwest::Client,
    }

    impl Browser {
        /// Starts chromedriver and a headless Chromium session with a viewport of
        /// `width`×`height` (a phone's is emulated: a desktop window has a minimum width).
        async fn start(width: u32, height: u32) -> Browser {
            let exe = ["chromedriver", "/usr/bin/chromedriver"]
                .into_iter()
                .find(|c| Command::new(c).arg("--version").stdout(Stdio::null()).status().is_ok())
                .expect("chromedriver not found: install Debian's chromium and chromium-driver (scripts/test does)");
            let port = common::free_port();
            let driver = Command::new(exe)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start chromedriver");
            common::wait_for_port(port, "chromedriver");
            let mut b =
                Browser { driver, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
            let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .expect("chromium not found");
            let mut chrome = json!({"binary": binary, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", format!("--window-size={width},{height}")]});
            if width < 600 {
                chrome["mobileEmulation"] =
                    json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}});
            }
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": chrome,
            }}});
            let v = b.call("POST", "/session", Some(caps)).await;
            let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
            b.base = format!("{}/session/{id}", b.base);
            b
        }

        /// One WebDriver command; its `value`.
        async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
            let url = format!("{}{path}", self.base);
            let req = match method {
                "GET" => self.http.get(&url),
                "DELETE" => self.http.delete(&url),
                _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
            };
            let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let v: Value = resp.json().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let value = v["value"].clone();
            assert!(value.get("error").is_none(), "{method} {path}: {value}");
            value
        }

        async fn goto(&self, url: &str) {
            self.call("POST", "/url", Some(json!({"url": url}))).await;
        }

        /// Runs `script` (a function body; `arguments` are `args`) in the page; its result.
        async fn js(&self, script: &str, args: Value) -> Value {
            self.call("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
        }

        /// Waits up to `secs` until `script` returns something truthy; that value.
        async fn until(&self, what: &str, secs: u64, script: &str, args: Value) -> Value {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                let v = self.js(script, args.clone()).await;
                if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                    return v;
                }
                assert!(Instant::now() < deadline, "{what}: not within {secs} s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// The console messages since the last call (chromedriver's browser log).
        async fn console(&self) -> Vec<Value> {
            let v = self.call("POST", "/se/log", Some(json!({"type": "browser"}))).await;
            v.as_array().cloned().unwrap_or_default()
        }

        /// Saves a PNG screenshot to `target/dashboards/{name}.png`; its path.
        async fn screenshot(&self, name: &str) -> PathBuf {
            let b64 = self.call("GET", "/screenshot", None).await;
            let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboards");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}.png"));
            std::fs::write(&path, png).unwrap();
            path
        }

        async fn quit(mut self) {
            self.call("DELETE", "", None).await;
            let _ = self.driver.kill();
            let _ = self.driver.wait();
        }
    }

    /// Asserts the console holds no error (nor a failed request) of the page.
    fn no_console_errors(log: &[Value], page: &str) {
        let errors: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
        assert!(errors.is_empty(), "{page}: console errors: {errors:#?}");
    }

    /// A running demo: its ports, data directory and tokens.
    struct Demo {
        child: Child,
        dir: PathBuf,
        http: u16,
        mqtt: u16,
        ops: String,
        officer: String,
    }

    impl Demo {
        /// A demo in a fresh scratch directory, on free ports.
        async fn start(name: &str) -> Demo {
            Demo::spawn(common::scratch(name), common::free_port(), common::free_port()).await
        }

        /// Stops the demo, keeping what a restart needs: its data directory and ports.
        fn stop_for_restart(self) -> (PathBuf, u16, u16) {
            let kept = (self.dir.clone(), self.http, self.mqtt);
            self.stop();
            kept
        }

        async fn spawn(dir: PathBuf, http: u16, mqtt: u16) -> Demo {
            let child = Command::new(env!("CARGO_BIN_EXE_citybrain"))
                .args(["demo", "--duration", "120", "--speed", "60", "--mqtt-port", &mqtt.to_string()])
                .args(["--http", &format!("127.0.0.1:{http}")])
                .arg("--data-dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            common::wait_for_port(http, "the demo's API");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = format!("http://127.0.0.1:{http}/readyz");
            while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
                assert!(Instant::now() < deadline, "the demo did not become ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let tokens = std::fs::read_to_string(dir.join("tokens.env")).unwrap();
            let token = |key: &str| {
                tokens.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).unwrap().to_string()
            };
            let (ops, officer) = (token("CITYBRAIN_OPS_TOKEN"), token("CITYBRAIN_OFFICER_TOKEN"));
            Demo { child, dir, http, mqtt, ops, officer }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.http)
        }

        async fn get(&self, path: &str, token: &str) -> Value {
            let r = reqwest::Client::new().get(self.url(path)).bearer_auth(token).send().await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json().await.unwrap()
        }

        /// The demo's city clock (event time), from `/ws/live`'s first message, once the
        /// dataflow has output something (before that it is 0).
        async fn clock(&self) -> u64 {
            use futures_util::StreamExt;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let url = format!("ws://127.0.0.1:{}/ws/live?token={}", self.http, self.ops);
                let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                let msg = ws.next().await.unwrap().unwrap();
                let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
                match v["kpis"]["clock"].as_u64() {
                    Some(clock) if clock > 0 => return clock,
                    _ => assert!(Instant::now() < deadline, "the demo's clock did not start"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        /// Publishes one payload over MQTT (QoS 1) and returns once the broker has it.
        async fn publish(&self, topic: &str, payload: Value) {
            let id = format!("browser-test-{}", topic.rsplit('/').next().unwrap_or("x"));
            let opts = rumqttc::MqttOptions::new(id, "127.0.0.1", self.mqtt);
            let (client, mut events) = rumqttc::AsyncClient::new(opts, 10);
            client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string()).await.unwrap();
            loop {
                match events.poll().await.unwrap() {
                    rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => break,
                    _ => continue,
                }
            }
            let _ = client.disconnect().await;
        }

        fn stop(mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits on `/ws/alerts` of the service at `http` (with the ops token) for a raised alert
    /// matching `want`; the alert and when it came.
    async fn raised(http: u16, ops: &str, want: impl Fn(&Value) -> bool) -> (Value, Instant) {
        use futures_util::StreamExt;
        let url = format!("ws://127.0.0.1:{http}/ws/alerts?token={ops}");
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await else {
                continue;
            };
            let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            let alerts = match v["type"].as_str() {
                Some("transition") => vec![v["alert"].clone()],
                _ => v["alerts"].as_array().cloned().unwrap_or_default(),
            };
            if let Some(a) = alerts.into_iter().find(|a| a["state"] == "raised" && want(a)) {
                return (a, Instant::now());
            }
        }
        panic!("the alert was not raised within 30 s");
    }

    /// A point inside the first cell (its first corner nudged inwards) and the cell's id.
    fn inside_a_cell(city: &Value, cell: Option<&str>) -> (String, f64, f64) {
        let f = city["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["properties"]["kind"] == "cell" && cell.is_none_or(|c| f["properties"]["id"] == c))
            .unwrap();
        let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
        let n = (ring.len() - 1) as f64;
        let (lon, lat) = ring[..ring.len() - 1]
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p[0].as_f64().unwrap() / n, y + p[1].as_f64().unwrap() / n));
        (f["properties"]["id"].as_str().unwrap().to_string(), lon, lat)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_operations_centre_page_is_live_and_acts_through_the_api() {
        let demo = Demo::start("browser-ops").await;
        let browser = Browser::start(1920, 1080).await;
        browser.goto(&demo.url(&format!("/#token={}", demo.ops))).await;
        browser.until("the page is ready", 30, "return document.body.dataset.ready === '1'", json!([])).await;
        // The token left the address bar; the map shows the city's 120 segments and 36 cells.
        let href = browser.js("return location.href", json!([])).await;
        assert!(!href.as_str().unwrap().contains("token"), "{href}");
        let drawn = browser
            .until(
                "the map is drawn",
                10,
                "const m = document.querySelector('#map'); return m && m.dataset.segments",
                json!([]),
            )
            .await;
        assert_eq!(drawn, "120");
        let cells = browser.js("return document.querySelector('#map').dataset.cells", json!([])).await;
        assert_eq!(cells, "36");
        browser
            .until(
                "both websockets are open",
                10,
                "return document.querySelector('#conn').dataset.state === 'open'",
                json!([]),
            )
            .await;
        for kpi in ["city_tpi", "open_incidents", "unassigned_incidents", "available_units", "overdue_cases"]
        {
            let q = format!("return document.querySelector('[data-kpi=\"{kpi}\"]') !== null");
            assert_eq!(browser.js(&q, json!([])).await, true, "KPI tile {kpi}");
        }

        // An alert published over MQTT: a case assigned in a cell raises grid.case_assigned.
        let city = demo.get("/api/city", &demo.ops).await;
        let (cell, lon, lat) = inside_a_cell(&city, None);
        let clock = demo.clock().await;
        let case = json!({"case": "browser-case-1", "ts": clock, "status": "assigned",
            "category": "garbage", "cell": cell, "source": "patrol"});
        let (http, ops) = (demo.http, demo.ops.clone());
        let watch =
            tokio::spawn(
                async move { raised(http, &ops, |a| a["subject"]["case"] == "browser-case-1").await },
            );
        tokio::time::sleep(Duration::from_millis(500)).await; // the listener is subscribed
        demo.publish("city/grid/case/browser-case-1", case).await;
        let (alert, at) = watch.await.unwrap();
        let id = alert["id"].as_str().unwrap().to_string();
        let shown = "return [...document.querySelectorAll('#alerts [data-alert-id]')].some(e => e.dataset.alertId === arguments[0])";
        browser.until("the alert in the feed", 2, shown, json!([id])).await;
        let delay = at.elapsed();
        assert!(delay <= Duration::from_secs(2), "the alert took {delay:?} to reach the page");

        // Acknowledge it in the page: the server has it acknowledged.
        let click = "const e = [...document.querySelectorAll('#alerts [data-alert-id]')].find(e => e.dataset.alertId === arguments[0]); e.querySelector('button.ack').click(); return true";
        browser.js(click, json!([id])).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let active = demo.get("/api/alerts?domain=grid", &demo.ops).await;
            let state = active
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["id"] == id.as_str())
                .map(|a| a["state"].clone());
            if state == Some(json!("acknowledged")) {
                break;
            }
            assert!(Instant::now() < deadline, "the acknowledgement did not reach the server: {state:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let acked = "const e = [...document.querySelectorAll('#alerts [data-alert-id]')].find(e => e.dataset.alertId === arguments[0]); return e && e.dataset.state === 'acknowledged'";
        browser.until("the feed shows it acknowledged", 5, acked, json!([id])).await;

        // An incident of our own (the simulator never dispatches it): confirm its first
        // recommendation in the page; the dataflow has it dispatched with that unit.
        let clock = demo.clock().await;
        let incident = json!({"incident": "browser-inc-1", "ts": clock, "status": "reported",
            "type": "fire", "severity": 2, "lon": lon, "lat": lat});
        demo.publish("city/emergency/incident/browser-inc-1", incident).await;
        let unit = browser
            .until("a recommendation to confirm", 20,
                "const b = document.querySelector('#dispatch [data-incident=\"browser-inc-1\"] button.confirm'); if (!b) return null; b.click(); return b.dataset.unit",
                json!([]))
            .await;
        let unit = unit.as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let incidents = demo.get("/api/emergency/incidents", &demo.ops).await;
            let ours =
                incidents.as_array().unwrap().iter().find(|i| i["incident"] == "browser-inc-1").cloned();
            if ours.as_ref().is_some_and(|i| i["status"] == "dispatched") {
                assert_eq!(ours.unwrap()["unit"], unit.as_str());
                break;
            }
            assert!(Instant::now() < deadline, "the confirmed dispatch did not reach the dataflow: {ours:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Charts from /api/history, the language switch, and a clean console.
        for chart in ["#chart-tpi", "#chart-response", "#chart-cases"] {
            let q = format!("return document.querySelector('{chart}') !== null");
            assert_eq!(browser.js(&q, json!([])).await, true, "{chart}");
        }
        browser.js("document.querySelector('#lang').click(); return true", json!([])).await;
        browser.until("English", 2, "return document.documentElement.lang === 'en'", json!([])).await;
        browser.js("document.querySelector('#lang').click(); return true", json!([])).await;
        browser.until("Chinese", 2, "return document.documentElement.lang.startsWith('zh')", json!([])).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // a few live updates drawn
        browser.screenshot("ops").await;
        no_console_errors(&browser.console().await, "/");

        // The service restarts: the page says it lost the connection, then reconnects by itself
        // (the demo keeps its tokens) and shows what happens next without a reload.
        let (http, ops) = (demo.http, demo.ops.clone());
        let (dir, _, mqtt) = demo.stop_for_restart();
        let conn =
            |state: &str| format!("return document.querySelector('#conn').dataset.state === '{state}'");
        browser.until("the connection shows closed", 10, &conn("closed"), json!([])).await;
        let demo = Demo::spawn(dir, http, mqtt).await;
        assert_eq!(demo.ops, ops, "a restarted demo keeps its tokens");
        browser.until("the page reconnects", 15, &conn("open"), json!([])).await;
        let clock = demo.clock().await;
        let case = json!({"case": "browser-case-2", "ts": clock, "status": "assigned", "category": "garbage", "cell": cell});
        let watch =
            tokio::spawn(
                async move { raised(http, &ops, |a| a["subject"]["case"] == "browser-case-2").await },
            );
        tokio::time::sleep(Duration::from_millis(500)).await;
        demo.publish("city/grid/case/browser-case-2", case).await;
        let (alert, _) = watch.await.unwrap();
        browser.until("an alert after the restart", 5, shown, json!([alert["id"]])).await;
        // (The console now holds the refused connections of the outage: the browser's own.)
        browser.quit().await;
        demo.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_officer_page_shows_only_the_officers_cells_at_phone_width() {
        let demo = Demo::start("browser-officer").await;
        let mine = demo.get("/api/grid/cells", &demo.officer).await;
        let mut my_cells: Vec<String> =
            mine.as_array().unwrap().iter().map(|c| c["cell"].as_str().unwrap().to_string()).collect();
        my_cells.sort();
        assert!(!my_cells.is_empty());
        // An alert in one of the officer's cells and one elsewhere.
        let city = demo.get("/api/city", &demo.ops).await;
        let other = city["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["properties"]["kind"] == "cell")
            .map(|f| f["properties"]["id"].as_str().unwrap().to_string())
            .find(|c| !my_cells.contains(c))
            .unwrap();
        let clock = demo.clock().await;
        for (case, cell) in [("officer-case-mine", &my_cells[0]), ("officer-case-other", &other)] {
            let payload =
                json!({"case": case, "ts": clock, "status": "assigned", "category": "garbage", "cell": cell});
            demo.publish(&format!("city/grid/case/{case}"), payload).await;
        }
        raised(demo.http, &demo.ops, |a| a["subject"]["case"] == "officer-case-other").await;

        let browser = Browser::start(375, 812).await;
        browser.goto(&demo.url(&format!("/officer#token={}", demo.officer))).await;
        browser.until("the page is ready", 30, "return document.body.dataset.ready === '1'", json!([])).await;
        let shown = browser
            .until("the officer's cells", 10,
                "const c = [...document.querySelectorAll('#cells [data-cell]')].map(e => e.dataset.cell).sort(); return c.length ? c : null",
                json!([]))
            .await;
        assert_eq!(shown, json!(my_cells), "only the officer's cells");
        let drawn = browser.js("return document.querySelector('#map').dataset.cells", json!([])).await;
        assert_eq!(drawn, json!(my_cells.len().to_string()));
        // Their alerts: what the API lets them see, and the case in their cell among them.
        let alert_ids =
            "return [...document.querySelectorAll('#alerts [data-alert-id]')].map(e => e.dataset.alertId)";
        let theirs = demo.get("/api/alerts", &demo.officer).await;
        let allowed: Vec<&str> =
            theirs.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        browser
            .until("the officer's case alert", 10,
                "return [...document.querySelectorAll('#alerts [data-alert-id]')].some(e => e.dataset.alertId.includes('officer-case-mine'))",
                json!([]))
            .await;
        for id in browser.js(alert_ids, json!([])).await.as_array().unwrap() {
            let id = id.as_str().unwrap();
            assert!(!id.contains("officer-case-other"), "another cell's alert on the officer's page");
            assert!(allowed.contains(&id) || id.contains("officer-case-mine"), "{id} is not the officer's");
        }
        // Their case, with its light and the lifecycle's next step.
        let light = browser
            .until("the case", 10, "const e = document.querySelector('#cases [data-case=\"officer-case-mine\"]'); return e && e.dataset.light", json!([]))
            .await;
        assert!(["green", "amber", "red"].contains(&light.as_str().unwrap()), "{light}");
        let step = browser
            .js("const b = document.querySelector('#cases [data-case=\"officer-case-mine\"] button.action[data-status=\"in_progress\"]'); if (!b) return null; b.click(); return b.dataset.status", json!([]))
            .await;
        assert_eq!(step, "in_progress");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cases = demo.get("/api/grid/cases", &demo.officer).await;
            let status = cases
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["case"] == "officer-case-mine")
                .map(|c| c["status"].clone());
            if status == Some(json!("in_progress")) {
                break;
            }
            assert!(Instant::now() < deadline, "the officer's step did not reach the dataflow: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Phone width: nothing wider than the screen.
        assert_eq!(browser.js("return window.innerWidth", json!([])).await, 375);
        let width = browser.js("return document.documentElement.scrollWidth", json!([])).await;
        assert!(width.as_u64().unwrap() <= 375, "the page is {width} px wide at 375");
        browser.screenshot("officer").await;
        no_console_errors(&browser.console().await, "/officer");
        browser.quit().await;
        demo.stop();
    }
}
