/*
 * ops.js — the operations centre's video wall (ops.html, GET /).
 *
 * Data: the city model (/api/city) once; /ws/live (a snapshot, then only the rows that changed)
 * merged into local tables by id; /ws/alerts through CB.AlertFeed; /api/history to fill the
 * charts when a live snapshot arrives (a fresh connection, or the service restarted), the
 * charts then grow from the live updates. State changes only mark parts dirty; one animation
 * frame redraws what changed. Shared plumbing (token, API, sockets, i18n, map pieces) is in
 * common.js.
 */
'use strict';

(() => {
  const { t, label, esc, fmtTime, fmtDuration, fmtNum, COLORS } = CB;
  const $ = (id) => document.getElementById(id);

  /** How far back the charts reach (the service keeps 6 h of event time). */
  const HISTORY_MS = 6 * 3600 * 1000;
  /** Line colours for districts in the traffic chart: cool and distinct from the alarm colours. */
  const PALETTE = ['#5b8ff9', '#5ad8a6', '#9270ca', '#6dc8ec', '#c5a3ff', '#269a99', '#7e9cc4', '#ff99c3', '#b6e3a8', '#a0c4ff'];
  /** TPI bands of the five levels (0–2 畅通 … 8–10 严重拥堵). */
  const TPI_BANDS = [0, 2, 4, 6, 8, 10];
  const BUSY = new Set(['dispatched', 'en_route', 'on_scene']);
  const CLOSED = new Set(['cleared', 'cancelled']);

  // ───────────────────────────── state ─────────────────────────────

  const blank = () => ({
    kpis: null,
    districts: new Map(), segments: new Map(), incidents: new Map(), units: new Map(), dispatch: new Map(),
    emDistricts: new Map(), cells: new Map(), gridDistricts: new Map(), cases: new Map(), sensors: new Map(),
  });
  let S = blank();

  /** The tables of a /ws/live message: [rows key, state table, row id, removed-ids key, removed id]. */
  const TABLES = [
    ['districts', 'districts', (r) => r.district],
    ['segments', 'segments', (r) => r.segment],
    ['emergency_incidents', 'incidents', (r) => r.incident, 'emergency_incidents_removed', (x) => x],
    ['emergency_units', 'units', (r) => r.unit, 'emergency_units_removed', (x) => x],
    ['emergency_dispatch', 'dispatch', (r) => `${r.incident}#${r.rank}`, 'emergency_dispatch_removed', (x) => `${x.incident}#${x.rank}`],
    ['emergency_districts', 'emDistricts', (r) => r.district],
    ['grid_cells', 'cells', (r) => r.cell],
    ['grid_districts', 'gridDistricts', (r) => r.district],
    ['grid_cases', 'cases', (r) => r.case, 'grid_cases_removed', (x) => x],
    ['grid_sensors', 'sensors', (r) => r.sensor],
  ];

  const clock = () => (S.kpis && S.kpis.clock) || 0;
  const isUnassigned = (i) => !CLOSED.has(i.status) && !i.dispatched_ts && !i.unit;

  // Chart series: per-district TPI, the city's TPI, and two step aggregates over districts.
  const H = { tpi: new Map(), city: [], em: null, grid: null };

  /**
   * A step series aggregated over districts: each district's latest row holds until it changes,
   * and every change adds a point `[ts, ...agg(latest rows)]` (one point per time).
   */
  class StepAggregate {
    constructor(agg) {
      this.agg = agg;
      this.latest = new Map();
      this.points = [];
    }

    add(ts, district, row) {
      const last = this.points[this.points.length - 1];
      if (last && ts < last[0]) return;
      this.latest.set(district, row);
      const point = [ts, ...this.agg([...this.latest.values()])];
      if (last && last[0] === ts) this.points[this.points.length - 1] = point;
      else this.points.push(point);
    }

    trim(from) {
      const i = this.points.findIndex((p) => p[0] >= from);
      if (i > 0) this.points.splice(0, i);
    }

    series(k) {
      return this.points.map((p) => [p[0], p[k + 1]]);
    }
  }

  const values = (rows, f) => rows.map(f).filter((v) => Number.isFinite(v));
  const newEm = () => new StepAggregate((rows) => {
    const p50 = values(rows, (r) => r.response_p50_s);
    const p90 = values(rows, (r) => r.response_p90_s);
    return [
      p50.length ? p50.reduce((a, b) => a + b, 0) / p50.length / 60 : null,
      p90.length ? Math.max(...p90) / 60 : null,
    ];
  });
  const newGrid = () => new StepAggregate((rows) => [
    rows.reduce((a, r) => a + (r.open_cases || 0), 0),
    rows.reduce((a, r) => a + (r.overdue_cases || 0), 0),
  ]);
  H.em = newEm();
  H.grid = newGrid();

  /** Appends `[ts, v]` to a series in time order (same time: replaces; older: ignored). */
  function pushPoint(arr, ts, v) {
    const last = arr[arr.length - 1];
    if (last && ts < last[0]) return;
    if (last && last[0] === ts) last[1] = v;
    else arr.push([ts, v]);
  }

  // ───────────────────────────── rendering schedule ─────────────────────────────

  const dirty = new Set();
  const pendingMap = new Set();
  let frame = 0;
  function mark(...parts) {
    for (const p of parts) dirty.add(p);
    if (!frame) frame = requestAnimationFrame(renderDirty);
  }

  let gotCity = false, gotLive = false, gotAlerts = false;
  /** The map is redrawn at most this often: a large city's layers cost a few tens of ms. */
  const MAP_EVERY_MS = 1000;
  let mapDrawnAt = 0, mapTimer = 0;

  function renderDirty() {
    frame = 0;
    if (!gotCity) return;
    const parts = Object.keys(MAP_PARTS).filter((p) => dirty.has(p));
    const wait = mapDrawnAt + MAP_EVERY_MS - performance.now();
    if (parts.length && wait > 0 && gotLive && document.body.dataset.ready === '1') {
      // Too soon: keep these parts dirty for a later frame.
      for (const p of parts) dirty.delete(p);
      for (const p of parts) pendingMap.add(p);
      clearTimeout(mapTimer);
      mapTimer = setTimeout(() => mark(...pendingMap), wait);
    } else if (parts.length) {
      renderMap(parts);
      pendingMap.clear();
      mapDrawnAt = performance.now();
    }
    if (dirty.has('kpis')) renderKpis();
    if (dirty.has('alerts')) feed.render();
    if (dirty.has('dispatch')) renderDispatch();
    if (dirty.has('charts')) renderCharts();
    if (dirty.has('legend')) renderLegend();
    dirty.clear();
    if (gotLive && gotAlerts && document.body.dataset.ready !== '1') document.body.dataset.ready = '1';
  }

  // ───────────────────────────── sockets ─────────────────────────────

  /** A cheap ops-only read (an empty answer): is the token still accepted, and is it an ops token? */
  const PROBE = '/api/history?measurement=traffic_city&since=99999999999999';
  const probe = () => CB.probeToken(PROBE, showForbidden);
  const conn = () => CB.setConn(live.open && alertWs.open);
  const live = new CB.LiveSocket('/ws/live', { onMessage: onLive, onState: conn, probe });
  const alertWs = new CB.LiveSocket('/ws/alerts', {
    onMessage: (m) => {
      if (feed.handle(m) && m.type === 'snapshot') gotAlerts = true;
    },
    onState: conn,
    probe,
  });
  const feed = new CB.AlertFeed($('alerts'), () => mark('alerts', 'kpis'));

  /** Merges one /ws/live message into the tables (a snapshot starts them afresh). */
  function onLive(msg) {
    if (msg.type !== 'snapshot' && msg.type !== 'update') return;
    const snapshot = msg.type === 'snapshot';
    if (snapshot) S = blank();
    for (const [key, table, id, removedKey, removedId] of TABLES) {
      const m = S[table];
      for (const row of msg[key] || []) m.set(id(row), row);
      if (removedKey) for (const x of msg[removedKey] || []) m.delete(removedId(x));
    }
    if (msg.kpis) S.kpis = msg.kpis;
    if (snapshot) {
      gotLive = true;
      loadHistory();
      mark(...Object.keys(MAP_PARTS), 'kpis', 'dispatch', 'charts', 'alerts');
      return;
    }
    appendHistory(msg);
    const has = (...keys) => keys.some((k) => (msg[k] || []).length);
    mark('kpis');
    if (has('segments')) mark('segments');
    if (has('grid_cells')) mark('cells');
    if (has('emergency_units', 'emergency_units_removed')) mark('units');
    if (has('emergency_incidents', 'emergency_incidents_removed')) mark('incidents', 'dispatch');
    if (has('emergency_dispatch', 'emergency_dispatch_removed')) mark('dispatch');
    if (has('districts')) mark('labels');
    if (has('districts', 'emergency_districts', 'grid_districts') || msg.city) mark('charts');
  }

  // ───────────────────────────── history ─────────────────────────────

  let historyGen = 0;
  /** Fills the charts from /api/history (the last 6 h before the clock). */
  async function loadHistory() {
    const gen = ++historyGen;
    const since = Math.max(0, clock() - HISTORY_MS);
    const get = (m) => CB.api(`/api/history?measurement=${m}&since=${since}`);
    let rows;
    try {
      rows = await Promise.all(['traffic_district', 'traffic_city', 'emergency_district', 'grid_district'].map(get));
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) setTimeout(() => gen === historyGen && loadHistory(), 3000);
      return;
    }
    if (gen !== historyGen) return;
    const [td, tc, ed, gd] = rows;
    H.tpi = new Map();
    for (const r of td) {
      if (!H.tpi.has(r.district)) H.tpi.set(r.district, []);
      pushPoint(H.tpi.get(r.district), r.ts, r.tpi);
    }
    H.city = [];
    for (const r of tc) pushPoint(H.city, r.ts, r.tpi);
    H.em = newEm();
    for (const r of ed) H.em.add(r.ts, r.district, r);
    H.grid = newGrid();
    for (const r of gd) H.grid.add(r.ts, r.district, r);
    mark('charts');
  }

  /** Adds a live update's district and city rows to the chart series. */
  function appendHistory(msg) {
    const now = clock();
    for (const r of msg.districts || []) {
      if (!H.tpi.has(r.district)) H.tpi.set(r.district, []);
      pushPoint(H.tpi.get(r.district), r.ts, r.tpi);
    }
    if (msg.city) pushPoint(H.city, msg.city.ts, msg.city.tpi);
    // Emergency and grid rows carry no time of their own: the board stamps them with its clock.
    for (const r of msg.emergency_districts || []) H.em.add(now, r.district, r);
    for (const r of msg.grid_districts || []) H.grid.add(now, r.district, r);
    const from = now - HISTORY_MS;
    for (const arr of [...H.tpi.values(), H.city]) {
      const i = arr.findIndex((p) => p[0] >= from);
      if (i > 0) arr.splice(0, i);
    }
    H.em.trim(from);
    H.grid.trim(from);
  }

  // ───────────────────────────── map ─────────────────────────────

  const mapEl = $('map');
  const mapChart = echarts.init(mapEl, null, { renderer: 'canvas' });
  let segPaths = [];
  let scale = 1;

  /** Symbol sizes follow the map's size: 1 at a ~900 px map. */
  function measure() {
    const px = Math.min(mapEl.clientWidth, mapEl.clientHeight) * 0.92;
    scale = Math.max(0.6, Math.min(1.5, px / 900));
    segPaths = CB.segmentPaths(CB.city.segments, px);
  }

  /**
   * Draws the city once: the districts lay the geo component out; cells (custom polygons),
   * district outlines, roads, stations and the live markers are series over it, each updated on
   * its own when its rows change (`renderMap`). Layers that change at different rates sit on
   * their own canvases (`zlevel`): cells 0, roads 1, units and halos 2, incidents and labels 3,
   * so a moving unit never repaints two thousand roads. Nothing on the map animates.
   */
  function drawCity() {
    measure();
    mapChart.setOption({
      animation: false,
      tooltip: {
        trigger: 'item', confine: true, backgroundColor: 'rgba(10,18,32,0.95)', borderColor: '#2a3a57',
        textStyle: { color: COLORS.text, fontFamily: CB.FONT, fontSize: 13 }, formatter: mapTooltip,
      },
      geo: CB.registerGeo('cb-ops', CB.city.districts.length ? CB.city.districts : CB.city.cells),
      series: [
        CB.cellSeries(CB.city.cells),
        {
          id: 'districts', type: 'lines', coordinateSystem: 'geo', polyline: true, silent: true, zlevel: 1, z: 3,
          lineStyle: { color: 'rgba(190,210,240,0.55)', width: 2 },
          data: CB.city.districts.flatMap((d) => CB.outerRings(d.geometry).map((ring) => ({ coords: ring }))),
        },
        { id: 'segments', type: 'lines', coordinateSystem: 'geo', polyline: true, zlevel: 1, z: 4, data: [] },
        { id: 'stations', type: 'scatter', coordinateSystem: 'geo', zlevel: 2, z: 5, data: [] },
        { id: 'units', type: 'scatter', coordinateSystem: 'geo', zlevel: 2, z: 6, data: [] },
        { id: 'halo', type: 'scatter', coordinateSystem: 'geo', zlevel: 2, z: 7, silent: true, symbol: 'circle', data: [] },
        { id: 'incidents', type: 'scatter', coordinateSystem: 'geo', zlevel: 3, z: 8, data: [] },
        {
          id: 'labels', type: 'scatter', coordinateSystem: 'geo', zlevel: 3, z: 9, silent: true, symbolSize: 1,
          itemStyle: { color: 'transparent' }, labelLayout: { hideOverlap: true }, data: [],
        },
      ],
    });
    mapEl.dataset.segments = String(CB.city.segments.length);
    mapEl.dataset.cells = String(CB.city.cells.length);
    renderLegend();
  }

  /** The map's live layers, by the part of the state they show. */
  const MAP_PARTS = {
    cells: () => ({ id: 'cells', data: CB.cellData(CB.city.cells, (id) => (S.cells.get(id) || {}).risk || 0) }),
    segments: () => ({
      id: 'segments',
      data: CB.city.segments.map((f, i) => {
        const p = f.properties;
        const row = S.segments.get(p.id);
        return {
          name: p.id,
          coords: segPaths[i],
          lineStyle: {
            color: COLORS.level[row ? row.level : 0] || COLORS.level[0],
            width: (CB.ROAD_WIDTH[p.road_class] || 2) * scale,
            opacity: row ? 0.95 : 0.55,
          },
        };
      }),
    }),
    stations: () => ({
      id: 'stations',
      data: CB.city.stations.map((f) => ({
        name: f.properties.id, value: f.geometry.coordinates, type: f.properties.type,
        symbol: 'roundRect', symbolSize: 9 * scale,
        itemStyle: { color: 'rgba(8,14,24,0.9)', borderColor: COLORS.station[f.properties.type] || '#ccc', borderWidth: 2 },
      })),
    }),
    units: () => ({
      id: 'units',
      data: [...S.units.values()].filter((u) => Number.isFinite(u.lon)).map((u) => {
        const busy = u.status !== 'available';
        return {
          name: u.unit, value: [u.lon, u.lat], unit: u,
          symbol: u.type === 'fire_engine' ? 'rect' : u.type === 'police' ? 'triangle' : 'circle',
          symbolSize: (busy ? 9 : 6) * scale,
          itemStyle: {
            color: COLORS.unitStatus[u.status] || '#999', opacity: busy ? 1 : 0.75,
            borderColor: '#06101e', borderWidth: busy ? 1 : 0,
          },
        };
      }),
    }),
    incidents: () => {
      const open = [...S.incidents.values()].filter((i) => !CLOSED.has(i.status) && Number.isFinite(i.lon));
      return [
        {
          id: 'incidents',
          data: open.map((i) => ({
            name: i.incident, value: [i.lon, i.lat], incident: i,
            symbol: 'pin', symbolSize: 30 * scale, symbolOffset: [0, '-40%'],
            itemStyle: { color: COLORS.incident(i.severity), borderColor: '#06101e', borderWidth: 1 },
            label: {
              show: true, formatter: t('iglyph.' + i.type) || '!', color: '#101010',
              fontSize: Math.round(11 * scale), fontWeight: 700, offset: [0, -Math.round(3 * scale)],
            },
          })),
        },
        {
          // A ring around each incident still waiting for a unit (static: a running animation
          // would repaint the whole map every frame).
          id: 'halo',
          data: open.filter(isUnassigned).map((i) => ({
            name: i.incident, value: [i.lon, i.lat], symbolSize: 30 * scale,
            itemStyle: { color: 'transparent', borderColor: COLORS.incident(i.severity), borderWidth: 2.5 * scale, opacity: 0.9 },
          })),
        },
      ];
    },
    labels: () => ({
      id: 'labels',
      data: CB.city.districts.map((d) => ({ name: d.properties.id, value: CB.centroid(d.geometry), row: S.districts.get(d.properties.id) })),
      label: {
        show: true, position: 'inside', formatter: districtLabel,
        backgroundColor: 'rgba(6,12,22,0.78)', borderRadius: 4, padding: [3, 7],
        rich: {
          n: { color: '#dfe8f5', fontSize: Math.round(13 * scale), fontFamily: CB.FONT, lineHeight: Math.round(18 * scale) },
          ...Object.fromEntries([0, 1, 2, 3, 4, 5].map((l) => [`l${l}`, {
            color: COLORS.level[l], fontSize: Math.round(17 * scale), fontWeight: 700, fontFamily: CB.FONT, lineHeight: Math.round(20 * scale),
          }])),
        },
      },
    }),
  };

  /** Redraws the given map parts in one option change. */
  function renderMap(parts) {
    const series = parts.flatMap((part) => MAP_PARTS[part]());
    if (series.length) mapChart.setOption({ series });
  }

  function districtLabel(p) {
    const row = p.data.row;
    const name = CB.districtName(p.data.name);
    return row ? `{n|${name}}\n{l${row.level}|${fmtNum(row.tpi, 1)}}` : `{n|${name}}`;
  }

  /** Tooltips of the map: cells (geo), segments, units, incidents, stations. */
  function mapTooltip(p) {
    const line = (k, v) => `${esc(k)}　<b>${esc(v)}</b>`;
    if (p.seriesId === 'cells') {
      const c = S.cells.get(p.name) || {};
      return [`<b>${esc(t('tip.cell'))} ${esc(p.name)}</b>`, line(t('tip.risk'), c.risk ?? 0),
        line(t('tip.cases'), `${c.open_cases ?? 0} / ${c.overdue_cases ?? 0}`), line(t('tip.alarms'), c.sensor_alarms ?? 0)].join('<br>');
    }
    if (p.seriesId === 'segments') {
      const f = CB.city.segments[p.dataIndex];
      const r = S.segments.get(f.properties.id);
      return [`<b>${esc(t('tip.segment'))} ${esc(f.properties.id)}</b>`,
        `${esc(label('road.', f.properties.road_class))} · ${esc(CB.districtName(f.properties.district))}`,
        line(t('tip.level'), label('level.', r ? r.level : 0)),
        line(t('tip.speed'), r && Number.isFinite(r.speed_kmh) ? `${fmtNum(r.speed_kmh, 0)} km/h` : '—'),
        line(t('tip.flow'), r ? `${fmtNum(r.flow_vph, 0)} veh/h` : '—')].join('<br>');
    }
    if (p.seriesId === 'units') {
      const u = p.data.unit;
      return [`<b>${esc(label('utype.', u.type))} ${esc(u.unit)}</b>`, line(t('tip.status'), label('ustatus.', u.status)),
        u.incident ? line(t('tip.incident'), u.incident) : ''].filter(Boolean).join('<br>');
    }
    if (p.seriesId === 'incidents') {
      const i = p.data.incident;
      return [`<b>${esc(label('itype.', i.type))} · ${esc(t('incident.sev', { n: i.severity }))}</b>`, esc(i.incident),
        line(t('tip.status'), label('istatus.', i.status)), i.unit ? line(t('tip.unit'), i.unit) : '',
        `${esc(CB.districtName(i.district))} · ${esc(i.cell || '')} · ${esc(fmtTime(i.reported_ts, true))}`].filter(Boolean).join('<br>');
    }
    if (p.seriesId === 'stations') return `<b>${esc(label('stype.', p.data.type))}</b><br>${esc(p.data.name)}`;
    return '';
  }

  /** The map's key: congestion colours, the risk ramp, markers. */
  function renderLegend() {
    const sw = (c) => `<i class="sw" style="background:${c}"></i>`;
    const levels = [1, 2, 3, 4, 5].map((l) => `<span>${sw(COLORS.level[l])}${esc(label('level.', l))}</span>`).join('');
    const ramp = [0, 25, 50, 75, 100].map((r) => CB.riskColor(r)).join(',');
    $('map-legend').innerHTML = `
      <div class="lg-row"><b>${esc(t('legend.level'))}</b>${levels}<span>${sw(COLORS.level[0])}${esc(t('legend.nodata'))}</span></div>
      <div class="lg-row"><b>${esc(t('legend.risk'))}</b><span>0</span><i class="ramp" style="background:linear-gradient(90deg,${ramp})"></i><span>100</span></div>
      <div class="lg-row"><b>${esc(t('legend.incident'))}</b>
        <span><i class="pin" style="background:${COLORS.incident(1)}"></i>1–2</span>
        <span><i class="pin" style="background:${COLORS.incident(3)}"></i>3</span>
        <span><i class="pin" style="background:${COLORS.incident(5)}"></i>4–5</span>
        <b>${esc(t('legend.unit'))}</b>
        <span>${sw(COLORS.unitStatus.available)}${esc(label('ustatus.', 'available'))}</span>
        <span>${sw(COLORS.unitStatus.en_route)}${esc(label('ustatus.', 'en_route'))}</span>
        <b>${esc(t('legend.station'))}</b>
        ${['fire', 'ambulance', 'police'].map((k) => `<span><i class="st" style="border-color:${COLORS.station[k]}"></i>${esc(label('stype.', k))}</span>`).join('')}
      </div>`;
  }

  // ───────────────────────────── KPI tiles ─────────────────────────────

  const setKpi = (name, v) => CB.text(document.querySelector(`[data-kpi="${name}"]`), v === null || v === undefined ? '—' : String(v));

  function renderKpis() {
    const k = S.kpis || {};
    const { date, time } = CB.fmtClock(k.clock);
    CB.text($('clock-date'), date);
    CB.text($('clock-time'), time);

    setKpi('city_tpi', Number.isFinite(k.city_tpi) ? fmtNum(k.city_tpi, 1) : null);
    const level = k.city_level || 0;
    CB.text($('kpi-level'), level ? label('level.', level) : '');
    CB.patch($('tile-tpi'), { style: `--accent:${COLORS.level[level]}` });
    CB.text($('kpi-sub-tpi'), Number.isFinite(k.congested_km) ? t('kpi.congested', { km: fmtNum(k.congested_km, 1) }) : '');

    setKpi('open_incidents', k.open_incidents);
    const sev12 = [...S.emDistricts.values()].reduce((a, r) => a + (r.open_sev1_2 || 0), 0);
    CB.text($('kpi-sub-open'), t('kpi.sev12', { n: sev12 }));

    setKpi('unassigned_incidents', k.unassigned_incidents);
    const waits = [...S.incidents.values()].filter(isUnassigned).map((i) => clock() - i.reported_ts);
    CB.text($('kpi-sub-unassigned'), waits.length ? t('kpi.waiting', { d: fmtDuration(Math.max(...waits) / 1000) }) : t('kpi.none'));
    CB.flag($('tile-unassigned'), 'is-alarm', (k.unassigned_incidents || 0) > 0);

    setKpi('available_units', k.available_units);
    const busy = [...S.units.values()].filter((u) => BUSY.has(u.status)).length;
    CB.text($('kpi-sub-units'), t('kpi.units_busy', { n: busy }));

    setKpi('overdue_cases', k.overdue_cases);
    CB.text($('kpi-sub-cases'), t('kpi.open_cases', { n: k.open_cases ?? '—' }));
    CB.flag($('tile-overdue'), 'is-alarm', (k.overdue_cases || 0) > 0);

    const c = feed.counts();
    setKpi('alerts_critical', c.critical);
    setKpi('alerts_warning', c.warning);
    setKpi('alerts_info', c.info);
    CB.text($('alerts-count'), String(feed.alerts.size));
  }

  // ───────────────────────────── dispatch ─────────────────────────────

  const dispatchEl = $('dispatch');
  /** Confirmations sent and not yet reflected by the board: incident → {unit, at (wall ms)}. */
  const sent = new Map();

  dispatchEl.addEventListener('click', async (e) => {
    const btn = e.target.closest('button.confirm');
    const item = btn && btn.closest('[data-incident]');
    if (!item || btn.disabled) return;
    const incident = item.dataset.incident;
    const unit = btn.dataset.unit;
    sent.set(incident, { unit, at: Date.now() });
    mark('dispatch');
    try {
      await CB.api(`/api/emergency/dispatch/${encodeURIComponent(incident)}`, { method: 'POST', body: { unit } });
      CB.toast(t('dispatch.ok', { unit, incident }), 'ok');
    } catch (err) {
      sent.delete(incident);
      if (err.status !== 401) CB.toast(t('err.action', { msg: err.message }));
    }
    mark('dispatch');
  });

  function renderDispatch() {
    const recs = new Map();
    for (const r of S.dispatch.values()) {
      if (!recs.has(r.incident)) recs.set(r.incident, []);
      recs.get(r.incident).push(r);
    }
    const list = [...S.incidents.values()]
      .filter((i) => isUnassigned(i) || recs.has(i.incident))
      .sort((a, b) => a.severity - b.severity || a.reported_ts - b.reported_ts);
    // A confirmation is settled once its incident is no longer waiting (or after 30 s without news).
    for (const [id, s] of sent) {
      const i = S.incidents.get(id);
      if (!i || !isUnassigned(i) || Date.now() - s.at > 30000) sent.delete(id);
    }
    CB.reconcile(dispatchEl, list, (i) => i.incident, (i, node) => {
      const pending = sent.get(i.incident);
      const rows = (recs.get(i.incident) || []).sort((a, b) => a.rank - b.rank);
      const recHtml = rows.length
        ? rows.map((r) => `
            <li class="rec${r.rank === 1 ? ' rec-best' : ''}">
              <span class="rank">${r.rank === 1 ? esc(t('dispatch.best')) : r.rank}</span>
              <span class="unit"><b>${esc(r.unit)}</b><small>${esc(label('utype.', r.unit_type))}</small></span>
              <span class="eta">${esc(t('dispatch.eta', { d: fmtDuration(r.eta_s) }))}</span>
              <span class="dist">${fmtNum(r.distance_m / 1000, 1)} km</span>
              <button class="confirm" type="button" data-unit="${esc(r.unit)}" ${pending ? 'disabled' : ''}>${esc(t('dispatch.confirm'))}</button>
            </li>`).join('')
        : `<li class="rec rec-none">${esc(t('dispatch.none'))}</li>`;
      node = CB.patch(node || document.createElement('article'), {
        class: `incident sev-${i.severity <= 2 ? 'high' : i.severity === 3 ? 'mid' : 'low'}`, 'data-incident': i.incident,
      }, `
        <div class="inc-head">
          <span class="glyph" style="background:${COLORS.incident(i.severity)}">${esc(t('iglyph.' + i.type) || '!')}</span>
          <b>${esc(label('itype.', i.type))}</b>
          <span class="sev-badge">${esc(t('incident.sev', { n: i.severity }))}</span>
          <span class="where">${esc(CB.districtName(i.district))}${i.cell ? ' · ' + esc(i.cell) : ''}</span>
          <span class="wait"></span>
        </div>
        <div class="inc-id">${esc(i.incident)} · ${esc(fmtTime(i.reported_ts, true))}</div>
        ${pending ? `<div class="inc-sent">${esc(t('dispatch.sent', { unit: pending.unit }))}</div>` : ''}
        <ol class="recs">${recHtml}</ol>`);
      const wait = node.querySelector('.wait');
      const waited = t('dispatch.waiting', { d: fmtDuration((clock() - i.reported_ts) / 1000) });
      if (wait.textContent !== waited) wait.textContent = waited;
      return node;
    });
    CB.text($('dispatch-count'), list.length ? String(list.length) : '');
  }

  // ───────────────────────────── charts ─────────────────────────────

  const charts = {
    tpi: echarts.init($('chart-tpi')),
    response: echarts.init($('chart-response')),
    cases: echarts.init($('chart-cases')),
  };
  for (const c of Object.values(charts)) CB.autoResize(c);

  /** The charts' common time range: up to 6 h before the clock. */
  function xRange() {
    let first = Infinity;
    for (const arr of H.tpi.values()) if (arr.length) first = Math.min(first, arr[0][0]);
    if (H.city.length) first = Math.min(first, H.city[0][0]);
    if (H.em.points.length) first = Math.min(first, H.em.points[0][0]);
    if (H.grid.points.length) first = Math.min(first, H.grid.points[0][0]);
    const max = Math.max(clock(), first === Infinity ? 0 : first);
    const min = first === Infinity ? max - 3600e3 : Math.max(first, max - HISTORY_MS);
    return { min, max: Math.max(max, min + 10 * 60e3) };
  }

  function renderCharts() {
    const base = CB.chartBase();
    const x = { ...base.xAxis, ...xRange() };
    const ids = CB.city.districts.map((d) => d.properties.id);
    for (const id of H.tpi.keys()) if (!ids.includes(id)) ids.push(id);

    const bands = TPI_BANDS.slice(0, -1).map((lo, i) => [
      { yAxis: lo, itemStyle: { color: COLORS.level[i + 1], opacity: 0.07 } }, { yAxis: TPI_BANDS[i + 1] },
    ]);
    charts.tpi.setOption({
      ...base, xAxis: x,
      yAxis: { ...base.yAxis, min: 0, max: 10, interval: 2 },
      tooltip: { ...base.tooltip, formatter: CB.axisTooltip((v) => fmtNum(v, 1)) },
      series: [
        ...ids.map((id, i) => ({
          id: `d:${id}`, name: CB.districtName(id), type: 'line', showSymbol: false, smooth: false,
          color: PALETTE[i % PALETTE.length], lineStyle: { width: 1.4 }, emphasis: { focus: 'series' },
          data: H.tpi.get(id) || [],
        })),
        {
          id: 'city', name: t('chart.city'), type: 'line', showSymbol: false, color: '#ffffff', z: 5,
          lineStyle: { width: 3 }, data: H.city, markArea: { silent: true, data: bands },
        },
      ],
    }, { replaceMerge: ['series'] });
    CB.chartEmpty('chart-tpi', !H.city.length && ![...H.tpi.values()].some((a) => a.length));

    charts.response.setOption({
      ...base, xAxis: x,
      yAxis: { ...base.yAxis, min: 0 },
      tooltip: { ...base.tooltip, formatter: CB.axisTooltip((v) => fmtDuration(v * 60)) },
      series: [
        { id: 'p50', name: t('chart.p50'), type: 'line', step: 'end', showSymbol: false, color: '#6dc8ec',
          lineStyle: { width: 2 }, areaStyle: { opacity: 0.12 }, data: H.em.series(0), connectNulls: true },
        { id: 'p90', name: t('chart.p90'), type: 'line', step: 'end', showSymbol: false, color: '#f6bd16',
          lineStyle: { width: 2 }, data: H.em.series(1), connectNulls: true },
      ],
    });
    CB.chartEmpty('chart-response', !H.em.points.some((p) => p[1] !== null || p[2] !== null));

    charts.cases.setOption({
      ...base, xAxis: x,
      yAxis: { ...base.yAxis, min: 0, minInterval: 1 },
      tooltip: { ...base.tooltip, formatter: CB.axisTooltip((v) => fmtNum(v, 0)) },
      series: [
        { id: 'open', name: t('chart.open'), type: 'line', step: 'end', showSymbol: false, color: '#5b8ff9',
          lineStyle: { width: 2 }, areaStyle: { opacity: 0.18 }, data: H.grid.series(0) },
        { id: 'overdue', name: t('chart.overdue'), type: 'line', step: 'end', showSymbol: false, color: COLORS.severity.critical,
          lineStyle: { width: 2 }, areaStyle: { opacity: 0.2 }, data: H.grid.series(1) },
      ],
    });
    CB.chartEmpty('chart-cases', !H.grid.points.length);
  }

  // ───────────────────────────── start, stop ─────────────────────────────

  function showForbidden() {
    live.stop();
    alertWs.stop();
    $('forbidden').hidden = false;
  }

  async function start() {
    $('forbidden').hidden = true;
    try {
      // An officer's token reads the city but not /api/history: ask first, so no websocket is refused.
      await Promise.all([gotCity ? null : CB.loadCity(), CB.api(PROBE), CB.session()]);
    } catch (e) {
      if (e.status === 401) return; // the sign-in form is back
      if (e.status === 403) return showForbidden();
      CB.toast(t('err.network', { msg: e.message }));
      setTimeout(start, 3000);
      return;
    }
    if (!gotCity) {
      drawCity();
      gotCity = true;
    }
    live.start();
    alertWs.start();
  }

  function stop() {
    live.stop();
    alertWs.stop();
  }

  new ResizeObserver(() => {
    mapChart.resize();
    if (gotCity) {
      measure();
      mark(...Object.keys(MAP_PARTS));
    }
  }).observe(mapEl);

  CB.setupLangButton();
  CB.onLangChange(() => mark('incidents', 'labels', 'kpis', 'alerts', 'dispatch', 'charts', 'legend'));
  // The waiting times and the clock move with the city clock even without new rows.
  setInterval(() => gotLive && mark('kpis', 'dispatch'), 1000);
  CB.signIn({ start, stop });
})();
