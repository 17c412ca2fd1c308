/*
 * officer.js — a grid officer's page (officer.html, GET /officer), phone first.
 *
 * An officer may not follow /ws/live or read /api/history, so the page polls its REST reads
 * (/api/grid/cells, /api/grid/cases, /api/grid/sensors, /api/emergency/incidents — the service
 * scopes them to the officer's cells) every few seconds, and again shortly after each alert
 * transition from /ws/alerts. It shows the officer's cells on a small map shaded by risk, their
 * alerts with acknowledge (CB.AlertFeed), their cases with the lifecycle steps an officer may
 * take, and their cells' sensors. Shared plumbing is in common.js.
 */
'use strict';

(() => {
  const { t, label, esc, fmtTime, fmtDateTime, fmtDuration, fmtNum, COLORS } = CB;
  const $ = (id) => document.getElementById(id);

  const POLL_MS = 5000;
  /** The steps an officer may take from each case status (grid.rs: closing and reopening are the operations centre's). */
  const STEPS = {
    reported: ['assigned', 'in_progress', 'resolved'],
    assigned: ['in_progress', 'resolved'],
    reopened: ['assigned', 'in_progress', 'resolved'],
    in_progress: ['resolved'],
    resolved: [],
    closed: [],
  };
  const OPEN = new Set(['reported', 'assigned', 'in_progress', 'reopened']);
  const LIGHT_ORDER = { red: 0, amber: 1, green: 2 };

  const S = { cells: [], cases: [], sensors: [], incidents: [], me: null, clock: 0 };
  /** Steps sent and not yet seen in a read: case → {status, at (wall ms), error}. */
  const sent = new Map();
  let gotCity = false, gotPoll = false, gotAlerts = false;

  // ───────────────────────────── clock ─────────────────────────────

  /**
   * The city clock: the service's (from `/api/session`, read with every poll), or a newer event
   * time among the officer's reads.
   */
  function clock() {
    let m = Math.max(feed.latestTs(), S.clock || 0);
    for (const s of S.sensors) m = Math.max(m, s.ts || 0);
    for (const c of S.cases) m = Math.max(m, c.updated_ts || 0);
    for (const i of S.incidents) m = Math.max(m, i.reported_ts || 0, i.on_scene_ts || 0, i.closed_ts || 0);
    return m;
  }

  // ───────────────────────────── data ─────────────────────────────

  const feed = new CB.AlertFeed($('alerts'), () => render());
  const alertWs = new CB.LiveSocket('/ws/alerts', {
    onMessage: (m) => {
      if (!feed.handle(m)) return;
      if (m.type === 'snapshot') gotAlerts = true;
      soon(); // a transition usually means a case or a sensor changed: read again shortly
    },
    onState: (open) => CB.setConn(open),
    probe: () => CB.probeToken('/api/grid/cells'),
  });

  let pollTimer = 0, soonTimer = 0, polling = false, running = false;

  /** Reads the officer's cells, cases, sensors and incidents (each on its own: one failing leaves the rest). */
  async function poll() {
    if (polling || !running) return;
    polling = true;
    clearTimeout(pollTimer);
    const reads = await Promise.allSettled([
      CB.api('/api/grid/cells'), CB.api('/api/grid/cases'), CB.api('/api/grid/sensors'), CB.api('/api/emergency/incidents'),
      CB.session(),
    ]);
    polling = false;
    if (!running) return;
    const [cells, cases, sensors, incidents, session] = reads.map((r) => (r.status === 'fulfilled' ? r.value : null));
    if (session) {
      S.clock = session.clock;
      S.me = session.officer || null;
    }
    if (cells) S.cells = cells;
    if (cases) S.cases = cases;
    if (sensors) S.sensors = sensors;
    if (incidents) S.incidents = incidents;
    if (cells && !gotPoll) {
      gotPoll = true;
      drawMap();
    }
    // The connection indicator already says when the service is unreachable; say other failures.
    const failed = reads.find((r) => r.status === 'rejected' && r.reason.status > 0 && r.reason.status !== 401);
    if (failed) CB.toast(t('err.network', { msg: failed.reason.message }));
    render();
    pollTimer = setTimeout(poll, POLL_MS);
  }

  function soon(ms = 600) {
    clearTimeout(soonTimer);
    soonTimer = setTimeout(poll, ms);
  }

  // ───────────────────────────── map ─────────────────────────────

  const mapEl = $('map');
  const mapChart = echarts.init(mapEl);
  let myCells = [];

  /** Clips a polyline to a box: the pieces inside (Liang–Barsky per edge). */
  function clip(points, [x0, y0, x1, y1]) {
    const pieces = [];
    let cur = null;
    for (let i = 0; i < points.length - 1; i++) {
      const [ax, ay] = points[i];
      const [bx, by] = points[i + 1];
      let t0 = 0, t1 = 1;
      const dx = bx - ax, dy = by - ay;
      const ok = [[-dx, ax - x0], [dx, x1 - ax], [-dy, ay - y0], [dy, y1 - ay]].every(([p, q]) => {
        if (p === 0) return q >= 0;
        const r = q / p;
        if (p < 0) { if (r > t1) return false; if (r > t0) t0 = r; } else { if (r < t0) return false; if (r < t1) t1 = r; }
        return true;
      });
      if (!ok) { cur = null; continue; }
      const a = [ax + t0 * dx, ay + t0 * dy];
      const b = [ax + t1 * dx, ay + t1 * dy];
      if (!cur || t0 > 0) { cur = [a]; pieces.push(cur); }
      cur.push(b);
      if (t1 < 1) cur = null;
    }
    return pieces.filter((p) => p.length > 1);
  }

  /**
   * Draws my cells (from /api/city, those /api/grid/cells lists) shaded by risk, in a frame a
   * little larger than them: the neighbouring cells as outlines and the roads through the frame
   * (an officer has no traffic levels) give the place.
   */
  function drawMap() {
    const mine = new Set(S.cells.map((c) => c.cell));
    myCells = CB.city.cells.filter((f) => mine.has(f.properties.id));
    mapEl.dataset.cells = String(myCells.length);
    if (!myCells.length) return;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const f of myCells) for (const ring of CB.outerRings(f.geometry)) for (const [x, y] of ring) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    const m = Math.max(x1 - x0, y1 - y0) * 0.3;
    const frame = [x0 - m, y0 - m, x1 + m, y1 + m];
    const inFrame = ([x, y]) => x >= frame[0] && x <= frame[2] && y >= frame[1] && y <= frame[3];
    const px = Math.min(mapEl.clientWidth, mapEl.clientHeight) * 0.92;
    const paths = CB.segmentPaths(CB.city.segments, px, 2, frame);
    const roads = [];
    let drawn = 0;
    CB.city.segments.forEach((f, i) => {
      const pieces = clip(paths[i], frame);
      if (pieces.length) drawn++;
      for (const coords of pieces) roads.push({ coords, lineStyle: { width: (CB.ROAD_WIDTH[f.properties.road_class] || 2) * 0.9 } });
    });
    const around = CB.city.cells
      .filter((f) => !mine.has(f.properties.id))
      .flatMap((f) => CB.outerRings(f.geometry).flatMap((ring) => clip(ring, frame)))
      .map((coords) => ({ coords }));
    const stations = CB.city.stations.filter((f) => inFrame(f.geometry.coordinates));
    mapEl.dataset.segments = String(drawn);
    const [fx0, fy0, fx1, fy1] = frame;
    const outline = { type: 'Feature', properties: { id: 'frame' },
      geometry: { type: 'Polygon', coordinates: [[[fx0, fy0], [fx1, fy0], [fx1, fy1], [fx0, fy1], [fx0, fy0]]] } };
    mapChart.setOption({
      animation: false,
      tooltip: {
        trigger: 'item', confine: true, backgroundColor: 'rgba(10,18,32,0.95)', borderColor: '#2a3a57',
        textStyle: { color: COLORS.text, fontFamily: CB.FONT, fontSize: 12 }, formatter: tooltip,
      },
      geo: CB.registerGeo('cb-officer', [outline], { layoutSize: '100%' }),
      series: [
        CB.cellSeries(myCells),
        { id: 'around', type: 'lines', coordinateSystem: 'geo', polyline: true, silent: true, z: 2,
          lineStyle: { color: 'rgba(150,180,220,0.18)', width: 1 }, data: around },
        { id: 'roads', type: 'lines', coordinateSystem: 'geo', polyline: true, silent: true, z: 3,
          lineStyle: { color: 'rgba(170,190,220,0.4)' }, data: roads },
        { id: 'stations', type: 'scatter', coordinateSystem: 'geo', z: 4, symbol: 'roundRect', symbolSize: 9,
          data: stations.map((f) => ({ name: f.properties.id, value: f.geometry.coordinates, type: f.properties.type,
            itemStyle: { color: '#08111f', borderColor: COLORS.station[f.properties.type] || '#ccc', borderWidth: 2 } })) },
        { id: 'labels', type: 'scatter', coordinateSystem: 'geo', z: 5, silent: true, symbolSize: 1,
          itemStyle: { color: 'transparent' }, data: [] },
        { id: 'incidents', type: 'scatter', coordinateSystem: 'geo', z: 6, data: [] },
      ],
    });
    renderMap();
  }

  function renderMap() {
    if (!myCells.length) return;
    const byId = new Map(S.cells.map((c) => [c.cell, c]));
    const few = myCells.length <= 6; // room for a cell's name and risk; otherwise only the risk
    mapChart.setOption({
      series: [
        { id: 'cells', data: CB.cellData(myCells, (id) => (byId.get(id) || {}).risk || 0) },
        {
          id: 'labels',
          data: myCells.map((f) => ({ name: f.properties.id, value: CB.centroid(f.geometry), risk: (byId.get(f.properties.id) || {}).risk || 0 })),
          labelLayout: { hideOverlap: true },
          label: {
            show: true, position: 'inside', fontFamily: CB.FONT, backgroundColor: 'rgba(6,12,22,0.75)', borderRadius: 3, padding: [2, 6],
            formatter: (p) => (few ? `{n|${p.name}}\n{r|${t('cells.risk')} ${p.data.risk}}` : `{r|${p.data.risk}}`),
            rich: { n: { color: '#dfe8f5', fontSize: 12, lineHeight: 16 }, r: { color: '#f0c8e0', fontSize: 13, fontWeight: 700, lineHeight: 17 } },
          },
        },
        {
          id: 'incidents',
          data: S.incidents.filter((i) => !['cleared', 'cancelled'].includes(i.status) && Number.isFinite(i.lon)).map((i) => ({
            name: i.incident, value: [i.lon, i.lat], incident: i, symbol: 'pin', symbolSize: 26, symbolOffset: [0, '-40%'],
            itemStyle: { color: COLORS.incident(i.severity) },
            label: { show: true, formatter: t('iglyph.' + i.type) || '!', color: '#111', fontSize: 10, fontWeight: 700, offset: [0, -3] },
          })),
        },
      ],
    });
  }

  function tooltip(p) {
    if (p.seriesId === 'cells') {
      const c = S.cells.find((x) => x.cell === p.name) || {};
      return `<b>${esc(p.name)}</b><br>${esc(t('tip.risk'))} <b>${c.risk ?? 0}</b><br>${esc(t('tip.cases'))} <b>${c.open_cases ?? 0} / ${c.overdue_cases ?? 0}</b>`;
    }
    if (p.seriesId === 'incidents') {
      const i = p.data.incident;
      return `<b>${esc(label('itype.', i.type))} · ${esc(t('incident.sev', { n: i.severity }))}</b><br>${esc(i.incident)}<br>${esc(label('istatus.', i.status))}`;
    }
    if (p.seriesId === 'stations') return `${esc(label('stype.', p.data.type))}<br>${esc(p.data.name)}`;
    return '';
  }

  // ───────────────────────────── lists ─────────────────────────────

  function renderHeader() {
    const { date, time } = CB.fmtClock(clock());
    CB.text($('clock-date'), date);
    CB.text($('clock-time'), time);
    const me = S.me ? t('officer.me', { who: S.me }) : '';
    const cells = S.cells.length <= 4 ? S.cells.map((c) => c.cell).join('、') : t('officer.cells', { n: S.cells.length });
    CB.text($('officer-me'), [me, cells].filter(Boolean).join(' · '));
  }

  function renderCells() {
    const list = $('cells');
    CB.reconcile(list, S.cells, (c) => c.cell, (c, node) => {
      const incidents = c.emergency_incidents + c.traffic_incidents;
      return CB.patch(node || document.createElement('div'), { class: 'cell-item', 'data-cell': c.cell }, `
        <div class="cell-risk" style="background:${CB.riskColor(c.risk)}" title="${esc(t('cells.risk'))}">${c.risk}</div>
        <div>
          <div class="cell-name">${esc(c.cell)} <small class="cell-meta">${esc(CB.districtName(c.district))}</small></div>
          <div class="cell-meta">
            <span>${esc(t('cells.open'))} ${c.open_cases}</span>
            <span class="${c.overdue_cases ? 'bad' : ''}">${esc(t('cells.overdue'))} ${c.overdue_cases}</span>
            <span class="${c.sensor_alarms ? 'hot' : ''}">${esc(t('cells.alarms'))} ${c.sensor_alarms}</span>
            <span class="${incidents ? 'hot' : ''}">${esc(t('cells.incidents'))} ${incidents}</span>
          </div>
        </div>`);
    });
    CB.text($('cells-count'), S.cells.length ? String(S.cells.length) : '');
  }

  /** The steps this officer may take on a case now. */
  function steps(c) {
    const list = [...(STEPS[c.status] || [])];
    // Taking over a case assigned to someone else (or not to me) is an assignment to myself.
    if (c.status === 'assigned' && c.officer && S.me && c.officer !== S.me) list.unshift('assigned');
    if (c.status === 'assigned' && S.me && c.officer === S.me) return list.filter((s) => s !== 'assigned');
    return list;
  }

  function caseOrder(a, b) {
    const open = (c) => (OPEN.has(c.status) ? 0 : 1);
    return open(a) - open(b) || (b.overdue - a.overdue) || (LIGHT_ORDER[a.light] - LIGHT_ORDER[b.light]) || a.deadline_ts - b.deadline_ts;
  }

  function renderCases() {
    const now = clock();
    for (const [id, s] of sent) {
      const c = S.cases.find((x) => x.case === id);
      if (!c || c.status === s.status || Date.now() - s.at > 20000) sent.delete(id);
    }
    const list = [...S.cases].sort(caseOrder);
    CB.reconcile($('cases'), list, (c) => c.case, (c, node) => {
      const open = OPEN.has(c.status);
      const left = (c.deadline_ts - now) / 1000;
      const due = open
        ? `${esc(t('cases.deadline', { time: fmtDateTime(c.deadline_ts) }))} · <b>${esc(left >= 0 ? t('cases.left', { d: fmtDuration(left) }) : t('cases.over', { d: fmtDuration(-left) }))}</b>`
        : esc(t('cases.deadline', { time: fmtDateTime(c.deadline_ts) }));
      const pending = sent.get(c.case);
      const actions = steps(c).map((st) => `<button class="action" type="button" data-status="${st}" ${pending && !pending.error ? 'disabled' : ''}>${esc(label('action.', st))}</button>`).join('');
      const note = pending
        ? `<div class="case-note">${esc(pending.error ? t('err.action', { msg: pending.error }) : t('cases.queued', { status: label('cstatus.', pending.status) }))}</div>`
        : '';
      return CB.patch(node || document.createElement('article'), { class: 'case', 'data-case': c.case, 'data-light': c.light }, `
        <div class="case-head">
          <span class="light-dot" title="${esc(label('light.', c.light))}"></span>
          <span class="case-cat">${esc(label('cat.', c.category))}</span>
          ${c.overdue ? `<span class="overdue-tag">${esc(t('cases.overdue'))}</span>` : ''}
          <span class="case-status">${esc(label('cstatus.', c.status))}</span>
        </div>
        <div class="case-due">${due}</div>
        <div class="case-meta">
          <span>${esc(c.cell)}</span>
          <span>${esc(label('source.', c.source))}</span>
          <span>${esc(t('cases.reported', { time: fmtDateTime(c.reported_ts) }))}</span>
          ${c.officer ? `<span>${esc(t('cases.officer', { who: c.officer }))}</span>` : ''}
        </div>
        <div class="case-id">${esc(c.case)}</div>
        ${note}
        ${actions ? `<div class="case-actions">${actions}</div>` : ''}`);
    });
    const open = S.cases.filter((c) => OPEN.has(c.status)).length;
    CB.text($('cases-count'), S.cases.length ? String(open) : '');
  }

  $('cases').addEventListener('click', async (e) => {
    const btn = e.target.closest('button.action');
    const item = btn && btn.closest('[data-case]');
    if (!item || btn.disabled) return;
    const id = item.dataset.case;
    const status = btn.dataset.status;
    sent.set(id, { status, at: Date.now() });
    render();
    try {
      await CB.api(`/api/grid/cases/${encodeURIComponent(id)}/status`, { method: 'POST', body: { status } });
      soon(1500);
    } catch (err) {
      if (err.status === 401) return;
      sent.set(id, { status, at: Date.now(), error: err.message });
      CB.toast(t('err.action', { msg: err.message }));
    }
    render();
  });

  function renderSensors() {
    const list = [...S.sensors].sort((a, b) => (b.alarm - a.alarm) || (b.stale - a.stale) || (a.sensor < b.sensor ? -1 : 1));
    CB.reconcile($('sensors'), list, (s) => s.sensor, (s, node) => {
      const state = s.alarm ? ` · ${t('sensors.alarm')}` : s.stale ? ` · ${t('sensors.stale')}` : '';
      return CB.patch(node || document.createElement('div'), {
        class: `sensor${s.alarm ? ' is-alarm' : ''}${s.stale ? ' is-stale' : ''}`, 'data-sensor': s.sensor,
      }, `<small>${esc(label('sensor.', s.kind))}${esc(state)}</small><b>${esc(fmtNum(s.value, s.value < 10 ? 2 : 0))}</b>
        <small>${esc(s.cell)} · ${esc(fmtTime(s.ts))}</small>`);
    });
  }

  let frame = 0;
  function render() {
    if (!frame) frame = requestAnimationFrame(() => {
      frame = 0;
      renderHeader();
      renderCells();
      feed.render();
      CB.text($('alerts-count'), feed.alerts.size ? String(feed.alerts.size) : '');
      renderCases();
      renderSensors();
      renderMap();
      if (gotCity && gotPoll && gotAlerts && document.body.dataset.ready !== '1') document.body.dataset.ready = '1';
    });
  }

  // ───────────────────────────── start, stop ─────────────────────────────

  async function start() {
    running = true;
    if (!gotCity) {
      try {
        await CB.loadCity();
        gotCity = true;
      } catch (e) {
        if (e.status === 401) return;
        CB.toast(t('err.network', { msg: e.message }));
        setTimeout(() => running && start(), 3000);
        return;
      }
    }
    alertWs.start();
    poll();
  }

  function stop() {
    running = false;
    clearTimeout(pollTimer);
    clearTimeout(soonTimer);
    alertWs.stop();
  }

  CB.autoResize(mapChart, () => gotPoll && drawMap());
  CB.setupLangButton();
  CB.onLangChange(() => render());
  setInterval(() => gotPoll && render(), 1000); // remaining times follow the clock
  CB.signIn({ start, stop });
})();
