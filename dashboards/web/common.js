/*
 * common.js — the code both dashboard pages share (ops.html and officer.html).
 *
 * Loaded before the page's own script as a plain <script>; it defines one global, `CB`, with:
 *   - i18n: the zh-CN / en dictionary, `t()`, label helpers, the language switch (localStorage)
 *   - formatting in the city's time zone (event time, never the browser's wall clock)
 *   - the token: read from `#token=…`, kept in localStorage, the sign-in form
 *   - `api()`: fetch with the bearer token, JSON errors (`{"error": …}`) turned into exceptions
 *   - `LiveSocket`: a websocket that reconnects with exponential backoff (capped at ~5 s)
 *   - DOM helpers: `esc()`, `reconcile()` (keyed list updates), `toast()`
 *   - the city model (`/api/city`) parsed once, and the map pieces both pages draw with ECharts
 *   - `AlertFeed`: the active alerts (from /ws/alerts) rendered into `#alerts` with acknowledge
 *   - the dark chart theme shared by every ECharts instance
 */
'use strict';

const CB = (() => {
  // ───────────────────────────── settings ─────────────────────────────

  const TOKEN_KEY = 'citybrain.token';
  const LANG_KEY = 'citybrain.lang';
  /** The city's time zone (`time.city_tz`): this default until `/api/session` says. */
  let cityTz = 'Asia/Shanghai';
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const FONT = '"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "Noto Sans SC", sans-serif';

  /** Colours that carry meaning; everything else stays neutral. */
  const COLORS = {
    level: { 0: '#4a5872', 1: '#2fbf71', 2: '#9bd35a', 3: '#f5c542', 4: '#f0862a', 5: '#e8383d' },
    severity: { critical: '#ff4d4f', warning: '#faad14', info: '#3d9bff' },
    light: { green: '#2fbf71', amber: '#f5a623', red: '#ff4d4f' },
    incident: (sev) => (sev <= 2 ? '#ff4d4f' : sev === 3 ? '#ff9c3b' : '#ffd666'),
    unitStatus: {
      available: '#36cfc9', dispatched: '#ffc53d', en_route: '#ffc53d', on_scene: '#ff9c3b',
      returning: '#8fa3bf', out_of_service: '#5b6478',
    },
    station: { fire: '#ff7a45', ambulance: '#f0f5ff', police: '#4c8dff' },
    text: '#e6edf7', muted: '#8a9ab5', grid: '#1d2a40', panel: '#0d1626',
  };

  /** A cell's fill for its risk score 0–100: dark navy to a muted magenta, never green/red. */
  function riskColor(risk) {
    const stops = [[0, [18, 30, 50]], [40, [38, 40, 78]], [75, [74, 40, 96]], [100, [112, 42, 96]]];
    const r = Math.max(0, Math.min(100, Number(risk) || 0));
    let i = 0;
    while (i < stops.length - 2 && r > stops[i + 1][0]) i++;
    const [a, ca] = stops[i];
    const [b, cb] = stops[i + 1];
    const f = (r - a) / (b - a);
    const c = ca.map((v, k) => Math.round(v + (cb[k] - v) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // ───────────────────────────── i18n ─────────────────────────────

  const DICT = {
    'zh-CN': {
      'app.ops': '城市运行指挥中心', 'app.officer': '网格员工作台',
      'lang.switch': 'EN',
      'clock': '城市时钟', 'conn.open': '实时连接', 'conn.closed': '连接中断 · 重连中',
      'signin.title': '登录', 'signin.hint': '请输入访问令牌（由系统管理员提供）。',
      'signin.placeholder': '访问令牌', 'signin.submit': '登录',
      'signin.invalid': '令牌无效或已过期，请重新输入。', 'signout': '退出',
      'forbidden.ops': '此令牌无权使用运行中心大屏。网格员请打开', 'forbidden.link': '网格员工作台',
      'kpi.city_tpi': '全市交通指数', 'kpi.open_incidents': '未结警情', 'kpi.unassigned_incidents': '待派警情',
      'kpi.available_units': '可用救援力量', 'kpi.overdue_cases': '超期案件', 'kpi.alerts': '活动告警',
      'kpi.congested': '拥堵里程 {km} km', 'kpi.sev12': '其中一二级 {n}', 'kpi.waiting': '最长等待 {d}',
      'kpi.units_busy': '执行任务 {n}', 'kpi.open_cases': '在办案件 {n}', 'kpi.none': '暂无',
      'sev.critical': '严重', 'sev.warning': '警告', 'sev.info': '提示',
      'panel.map': '城市态势', 'panel.alerts': '实时告警', 'panel.dispatch': '派警建议',
      'panel.tpi': '交通指数 · 各区', 'panel.response': '应急响应时间（分钟）', 'panel.cases': '网格案件',
      'panel.cells': '我的网格', 'panel.cases.mine': '我的案件', 'panel.sensors': '传感器',
      'alerts.empty': '当前无活动告警', 'alerts.ack': '确认',
      'alerts.acked_by': '{who} 已确认 {time}', 'alerts.escalated': '已升级',
      'dispatch.empty': '暂无待派警情', 'dispatch.confirm': '派遣', 'dispatch.best': '推荐',
      'dispatch.none': '暂无可用推荐', 'dispatch.sent': '已提交派遣 {unit}，等待回执…',
      'incident.sev': '{n}级', 'dispatch.waiting': '已等待 {d}', 'dispatch.eta': '预计 {d}', 'dispatch.ok': '已派遣 {unit} 前往 {incident}',
      'legend.level': '路况', 'legend.risk': '网格风险', 'legend.incident': '警情', 'legend.unit': '救援力量',
      'legend.station': '站点', 'legend.nodata': '无数据',
      'chart.city': '全市', 'chart.p50': 'P50（各区平均）', 'chart.p90': 'P90（各区最长）',
      'chart.open': '在办', 'chart.overdue': '超期', 'chart.nodata': '等待数据…',
      'tip.segment': '路段', 'tip.speed': '车速', 'tip.flow': '流量', 'tip.level': '路况', 'tip.risk': '风险',
      'tip.cases': '在办/超期案件', 'tip.alarms': '传感器报警', 'tip.cell': '网格', 'tip.unit': '救援力量',
      'tip.status': '状态', 'tip.incident': '警情',
      'cells.empty': '没有分配给您的网格', 'cells.risk': '风险', 'cells.open': '在办', 'cells.overdue': '超期',
      'cells.alarms': '报警', 'cells.incidents': '警情',
      'cases.empty': '您的网格暂无案件', 'cases.deadline': '时限 {time}', 'cases.left': '剩余 {d}',
      'cases.over': '超期 {d}', 'cases.overdue': '超期', 'cases.officer': '处理人 {who}',
      'cases.reported': '上报 {time}', 'cases.queued': '已提交：{status}',
      'sensors.empty': '暂无传感器读数', 'sensors.alarm': '报警', 'sensors.stale': '离线',
      'officer.me': '网格员 {who}', 'officer.cells': '{n} 个网格',
      'err.network': '网络错误：{msg}', 'err.action': '操作失败：{msg}',
      'level.0': '无数据', 'level.1': '畅通', 'level.2': '基本畅通', 'level.3': '轻度拥堵', 'level.4': '中度拥堵', 'level.5': '严重拥堵',
      'domain.traffic': '交通', 'domain.emergency': '应急', 'domain.grid': '网格', 'domain.health': '卫健',
      'itype.fire': '火灾', 'itype.medical': '医疗', 'itype.police': '治安', 'itype.traffic': '交通事故',
      'iglyph.fire': '火', 'iglyph.medical': '医', 'iglyph.police': '警', 'iglyph.traffic': '交',
      'istatus.reported': '已接警', 'istatus.dispatched': '已派遣', 'istatus.en_route': '出动途中',
      'istatus.on_scene': '到场处置', 'istatus.cleared': '已处置', 'istatus.cancelled': '已取消',
      'utype.fire_engine': '消防车', 'utype.ambulance': '救护车', 'utype.police': '警车',
      'ustatus.available': '待命', 'ustatus.dispatched': '已派遣', 'ustatus.en_route': '途中',
      'ustatus.on_scene': '到场', 'ustatus.returning': '返回中', 'ustatus.out_of_service': '停用',
      'stype.fire': '消防站', 'stype.ambulance': '急救站', 'stype.police': '派出所',
      'road.expressway': '快速路', 'road.arterial': '主干路', 'road.secondary': '次干路', 'road.branch': '支路',
      'cstatus.reported': '已上报', 'cstatus.assigned': '已受理', 'cstatus.in_progress': '处置中',
      'cstatus.resolved': '已办结', 'cstatus.closed': '已结案', 'cstatus.reopened': '已重启',
      'action.assigned': '认领', 'action.in_progress': '开始处置', 'action.resolved': '办结',
      'light.green': '正常', 'light.amber': '临期', 'light.red': '超时',
      'source.hotline': '热线', 'source.patrol': '巡查', 'source.sensor': '传感器', 'source.app': '随手拍',
      'cat.flooding': '积水', 'cat.manhole_cover': '井盖', 'cat.road_collapse': '路面塌陷', 'cat.gas_leak': '燃气泄漏',
      'cat.fallen_tree': '树木倒伏', 'cat.fire_hazard': '火灾隐患', 'cat.garbage': '垃圾', 'cat.illegal_parking': '违章停车',
      'cat.street_light': '路灯故障', 'cat.road_damage': '道路破损', 'cat.illegal_advertising': '违规广告',
      'cat.illegal_construction': '违章建筑', 'cat.graffiti': '乱涂乱画',
      'sensor.water_level': '水位', 'sensor.manhole_tilt': '井盖倾角', 'sensor.smoke': '烟感', 'sensor.pm25': 'PM2.5',
      'sensor.noise': '噪声', 'sensor.feeder_load': '馈线负载',
      'dur.s': '{s}秒', 'dur.ms': '{m}分{s}秒', 'dur.m': '{m}分钟', 'dur.hm': '{h}小时{m}分', 'dur.dh': '{d}天{h}小时',
      // Alert messages by rule, from the alert's `subject` (the service's `message` is English only).
      'rule.traffic.incident': '路段 {segment} 第 {lane} 车道疑似阻断，相邻车道通行',
      'rule.traffic.congestion': '{district} 持续拥堵',
      'rule.traffic.detector_offline': '检测器 {sensor} 停止上报',
      'rule.emergency.unassigned': '警情 {incident} 超时未派',
      'rule.emergency.response_sla': '警情 {incident} 未在时限内到场',
      'rule.emergency.coverage_gap': '{district} 无可用{unit_type}',
      'rule.emergency.surge': '{district} 警情激增',
      'rule.grid.case_assigned': '案件 {case} 已分派至网格员',
      'rule.grid.case_overdue': '案件 {case} 已超期',
      'rule.grid.sensor_threshold': '传感器 {sensor} 超过报警阈值',
      'rule.grid.sensor_stale': '传感器 {sensor} 停止上报',
      'rule.grid.risk_high': '网格 {cell} 风险评分过高',
      'rule.health.contact': '人员 {person} 于 {date} 与公共卫生病例有接触，需追踪',
    },
    en: {
      'app.ops': 'City Operations Centre', 'app.officer': 'Grid Officer',
      'lang.switch': '中文',
      'clock': 'City clock', 'conn.open': 'Live', 'conn.closed': 'Disconnected · retrying',
      'signin.title': 'Sign in', 'signin.hint': 'Enter your access token (from the system administrator).',
      'signin.placeholder': 'Access token', 'signin.submit': 'Sign in',
      'signin.invalid': 'The token is not valid. Please enter it again.', 'signout': 'Sign out',
      'forbidden.ops': 'This token may not use the operations wall. Grid officers, open the', 'forbidden.link': 'officer page',
      'kpi.city_tpi': 'City traffic index', 'kpi.open_incidents': 'Open incidents', 'kpi.unassigned_incidents': 'Unassigned',
      'kpi.available_units': 'Available units', 'kpi.overdue_cases': 'Overdue cases', 'kpi.alerts': 'Active alerts',
      'kpi.congested': 'Congested {km} km', 'kpi.sev12': 'Severity 1–2: {n}', 'kpi.waiting': 'Longest wait {d}',
      'kpi.units_busy': 'On duty {n}', 'kpi.open_cases': 'Open cases {n}', 'kpi.none': 'None',
      'sev.critical': 'Critical', 'sev.warning': 'Warning', 'sev.info': 'Info',
      'panel.map': 'City situation', 'panel.alerts': 'Live alerts', 'panel.dispatch': 'Dispatch recommendations',
      'panel.tpi': 'Traffic index by district', 'panel.response': 'Emergency response time (min)', 'panel.cases': 'Grid cases',
      'panel.cells': 'My cells', 'panel.cases.mine': 'My cases', 'panel.sensors': 'Sensors',
      'alerts.empty': 'No active alerts', 'alerts.ack': 'Acknowledge',
      'alerts.acked_by': 'Acknowledged by {who} at {time}', 'alerts.escalated': 'Escalated',
      'dispatch.empty': 'No unassigned incidents', 'dispatch.confirm': 'Dispatch', 'dispatch.best': 'Best',
      'dispatch.none': 'No recommendation yet', 'dispatch.sent': 'Dispatch of {unit} sent, awaiting confirmation…',
      'incident.sev': 'Sev {n}', 'dispatch.waiting': 'Waiting {d}', 'dispatch.eta': 'ETA {d}', 'dispatch.ok': '{unit} dispatched to {incident}',
      'legend.level': 'Traffic', 'legend.risk': 'Cell risk', 'legend.incident': 'Incident', 'legend.unit': 'Unit',
      'legend.station': 'Station', 'legend.nodata': 'No data',
      'chart.city': 'City', 'chart.p50': 'P50 (district mean)', 'chart.p90': 'P90 (worst district)',
      'chart.open': 'Open', 'chart.overdue': 'Overdue', 'chart.nodata': 'Waiting for data…',
      'tip.segment': 'Segment', 'tip.speed': 'Speed', 'tip.flow': 'Flow', 'tip.level': 'Traffic', 'tip.risk': 'Risk',
      'tip.cases': 'Open/overdue cases', 'tip.alarms': 'Sensor alarms', 'tip.cell': 'Cell', 'tip.unit': 'Unit',
      'tip.status': 'Status', 'tip.incident': 'Incident',
      'cells.empty': 'No cells are assigned to you', 'cells.risk': 'Risk', 'cells.open': 'Open', 'cells.overdue': 'Overdue',
      'cells.alarms': 'Alarms', 'cells.incidents': 'Incidents',
      'cases.empty': 'No cases in your cells', 'cases.deadline': 'Due {time}', 'cases.left': '{d} left',
      'cases.over': '{d} over', 'cases.overdue': 'Overdue', 'cases.officer': 'Officer {who}',
      'cases.reported': 'Reported {time}', 'cases.queued': 'Sent: {status}',
      'sensors.empty': 'No sensor readings', 'sensors.alarm': 'Alarm', 'sensors.stale': 'Silent',
      'officer.me': 'Officer {who}', 'officer.cells': '{n} cells',
      'err.network': 'Network error: {msg}', 'err.action': 'Failed: {msg}',
      'level.0': 'No data', 'level.1': 'Free flow', 'level.2': 'Light', 'level.3': 'Slow', 'level.4': 'Congested', 'level.5': 'Jammed',
      'domain.traffic': 'Traffic', 'domain.emergency': 'Emergency', 'domain.grid': 'Grid', 'domain.health': 'Health',
      'itype.fire': 'Fire', 'itype.medical': 'Medical', 'itype.police': 'Police', 'itype.traffic': 'Traffic',
      'iglyph.fire': 'F', 'iglyph.medical': 'M', 'iglyph.police': 'P', 'iglyph.traffic': 'T',
      'istatus.reported': 'Reported', 'istatus.dispatched': 'Dispatched', 'istatus.en_route': 'En route',
      'istatus.on_scene': 'On scene', 'istatus.cleared': 'Cleared', 'istatus.cancelled': 'Cancelled',
      'utype.fire_engine': 'Fire engine', 'utype.ambulance': 'Ambulance', 'utype.police': 'Police car',
      'ustatus.available': 'Available', 'ustatus.dispatched': 'Dispatched', 'ustatus.en_route': 'En route',
      'ustatus.on_scene': 'On scene', 'ustatus.returning': 'Returning', 'ustatus.out_of_service': 'Out of service',
      'stype.fire': 'Fire station', 'stype.ambulance': 'Ambulance station', 'stype.police': 'Police station',
      'road.expressway': 'Expressway', 'road.arterial': 'Arterial', 'road.secondary': 'Secondary', 'road.branch': 'Branch',
      'cstatus.reported': 'Reported', 'cstatus.assigned': 'Assigned', 'cstatus.in_progress': 'In progress',
      'cstatus.resolved': 'Resolved', 'cstatus.closed': 'Closed', 'cstatus.reopened': 'Reopened',
      'action.assigned': 'Take', 'action.in_progress': 'Start', 'action.resolved': 'Resolve',
      'light.green': 'On time', 'light.amber': 'Due soon', 'light.red': 'Late',
      'source.hotline': 'Hotline', 'source.patrol': 'Patrol', 'source.sensor': 'Sensor', 'source.app': 'App',
      'dur.s': '{s}s', 'dur.ms': '{m}m {s}s', 'dur.m': '{m} min', 'dur.hm': '{h}h {m}m', 'dur.dh': '{d}d {h}h',
      'cat.flooding': 'Flooding', 'cat.manhole_cover': 'Manhole cover', 'cat.road_collapse': 'Road collapse', 'cat.gas_leak': 'Gas leak',
      'cat.fallen_tree': 'Fallen tree', 'cat.fire_hazard': 'Fire hazard', 'cat.garbage': 'Garbage', 'cat.illegal_parking': 'Illegal parking',
      'cat.street_light': 'Street light', 'cat.road_damage': 'Road damage', 'cat.illegal_advertising': 'Illegal advertising',
      'cat.illegal_construction': 'Illegal construction', 'cat.graffiti': 'Graffiti',
      'sensor.water_level': 'Water level', 'sensor.manhole_tilt': 'Manhole tilt', 'sensor.smoke': 'Smoke', 'sensor.pm25': 'PM2.5',
      'sensor.noise': 'Noise', 'sensor.feeder_load': 'Feeder load',
      // English alert text is the service's own `message`; unknown categories and kinds show their ids.
    },
  };

  let lang = localStorage.getItem(LANG_KEY) === 'en' ? 'en' : 'zh-CN';
  const langListeners = [];

  /** The text of `key` in the current language (falling back to Chinese, then the key), with `{name}` filled. */
  function t(key, params) {
    let s = DICT[lang][key];
    if (s === undefined) s = lang === 'en' ? undefined : DICT['zh-CN'][key];
    if (s === undefined) return null;
    return params ? s.replace(/\{(\w+)\}/g, (m, k) => (params[k] ?? m)) : s;
  }

  /** `t(prefix + id)`, or the id itself when the dictionary has no entry (unknown enum values). */
  function label(prefix, id) {
    if (id === null || id === undefined || id === '') return '—';
    return t(prefix + id) ?? String(id).replace(/_/g, ' ');
  }

  /** Fills the static texts: `data-i18n` (text), `data-i18n-placeholder`, `data-i18n-title`, `data-i18n-empty`. */
  function applyI18n(root = document) {
    document.documentElement.lang = lang;
    for (const n of root.querySelectorAll('[data-i18n]')) n.textContent = t(n.dataset.i18n) ?? n.dataset.i18n;
    for (const n of root.querySelectorAll('[data-i18n-placeholder]')) n.placeholder = t(n.dataset.i18nPlaceholder);
    for (const n of root.querySelectorAll('[data-i18n-title]')) n.title = t(n.dataset.i18nTitle);
    for (const n of root.querySelectorAll('[data-i18n-empty]')) n.dataset.empty = t(n.dataset.i18nEmpty);
  }

  /** Wires `button#lang`: toggles zh-CN/en, remembers it, re-renders through `onLangChange` listeners. */
  function setupLangButton() {
    const btn = document.getElementById('lang');
    btn.addEventListener('click', () => {
      lang = lang === 'en' ? 'zh-CN' : 'en';
      localStorage.setItem(LANG_KEY, lang);
      applyI18n();
      for (const f of langListeners) f(lang);
    });
    applyI18n();
  }

  // ───────────────────────────── formatting ─────────────────────────────

  const fmtCache = new Map();
  function dtf(opts) {
    const key = lang + JSON.stringify(opts);
    if (!fmtCache.has(key)) fmtCache.set(key, new Intl.DateTimeFormat(lang, { timeZone: cityTz, hourCycle: 'h23', ...opts }));
    return fmtCache.get(key);
  }

  /**
   * `GET /api/session`: who the caller is, the city clock and the city's time zone (which the
   * formatting here follows from then on).
   */
  async function session() {
    const s = await api('/api/session');
    if (s.city_tz && s.city_tz !== cityTz) {
      cityTz = s.city_tz;
      fmtCache.clear();
    }
    return s;
  }

  /** `HH:MM` or `HH:MM:SS` of an event time (epoch ms) in the city's time zone. */
  function fmtTime(ms, seconds = false) {
    if (!Number.isFinite(ms)) return '—';
    return dtf({ hour: '2-digit', minute: '2-digit', ...(seconds ? { second: '2-digit' } : {}) }).format(ms);
  }

  /** Date and time of an event time, e.g. `12月3日 14:05` / `Dec 3, 14:05`. */
  function fmtDateTime(ms) {
    if (!Number.isFinite(ms)) return '—';
    return dtf({ month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }).format(ms);
  }

  /** `YYYY-MM-DD` of an event time in the city's time zone. */
  function isoDate(ms) {
    const p = Object.fromEntries(dtf({ year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(ms).map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day}`;
  }

  /** The page-header clock: date, weekday and time to the second. */
  function fmtClock(ms) {
    if (!Number.isFinite(ms) || ms <= 0) return { date: '—', time: '--:--:--' };
    return {
      date: `${isoDate(ms)} ${dtf({ weekday: 'short' }).format(ms)}`,
      time: fmtTime(ms, true),
    };
  }

  /** A duration in seconds, e.g. `3分12秒` / `3m 12s`, `2小时5分` / `2h 5m`. */
  function fmtDuration(sec) {
    if (!Number.isFinite(sec)) return '—';
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return t('dur.s', { s });
    if (s < 600) return t('dur.ms', { m: Math.floor(s / 60), s: s % 60 });
    if (s < 3600) return t('dur.m', { m: Math.round(s / 60) });
    if (s < 86400) return t('dur.hm', { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    return t('dur.dh', { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
  }

  /** A number with `digits` decimals, or `—`. */
  function fmtNum(v, digits = 0) {
    return Number.isFinite(v) ? v.toFixed(digits) : '—';
  }

  /** Escapes text for innerHTML. */
  function esc(s) {
    return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }

  // ───────────────────────────── token and API ─────────────────────────────

  /** Moves a `#token=…` fragment into localStorage and off the address bar. */
  function takeTokenFromUrl() {
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (m) {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
  }

  const token = {
    get: () => localStorage.getItem(TOKEN_KEY),
    set: (v) => localStorage.setItem(TOKEN_KEY, v),
    clear: () => localStorage.removeItem(TOKEN_KEY),
  };

  /** An API failure: `status` (0 for the network) and the service's `{"error"}` text. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  let onUnauthorized = () => {};

  /** Calls `/api/…` with the bearer token; JSON in and out. 401 also calls the page's sign-in handler. */
  async function api(path, { method = 'GET', body } = {}) {
    const headers = { Authorization: `Bearer ${token.get() ?? ''}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, e.message || 'network');
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = new ApiError(res.status, (data && data.error) || text.trim() || res.statusText);
      if (res.status === 401) onUnauthorized(err);
      throw err;
    }
    return data;
  }

  // ───────────────────────────── websocket ─────────────────────────────

  /**
   * A websocket to `path` (`?token=` added) that reconnects by itself: 0.5 s, 1 s, 2 s, 4 s, then
   * every ~5 s. When a connection fails before opening, `probe()` (if given) may answer 'stop'
   * (the token was refused: the page shows the sign-in form instead of retrying).
   */
  class LiveSocket {
    constructor(path, { onMessage, onState, probe }) {
      Object.assign(this, { path, onMessage, onState, probe });
      this.open = false;
      this.attempt = 0;
      this.stopped = true;
    }

    start() {
      this.stopped = false;
      this.connect();
    }

    connect() {
      const proto = location.protocol === 'https:' ? 'wss' : 'ws';
      const url = `${proto}://${location.host}${this.path}?token=${encodeURIComponent(token.get() ?? '')}`;
      const ws = new WebSocket(url);
      let opened = false;
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        this.attempt = 0;
        this.setOpen(true);
      };
      ws.onmessage = (e) => {
        let msg;
        try {
          msg = JSON.parse(e.data);
        } catch {
          return;
        }
        this.onMessage(msg);
      };
      ws.onerror = () => {}; // a close event follows; nothing to add
      ws.onclose = () => {
        if (this.ws === ws) this.ws = null;
        this.setOpen(false);
        if (!this.stopped) this.retry(opened);
      };
    }

    async retry(wasOpen) {
      if (!wasOpen && this.probe && (await this.probe()) === 'stop') return;
      if (this.stopped) return;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt * (0.85 + 0.3 * Math.random()));
      this.attempt = Math.min(this.attempt + 1, 10);
      this.timer = setTimeout(() => this.connect(), delay);
    }

    setOpen(open) {
      if (this.open === open) return;
      this.open = open;
      if (this.onState) this.onState(open);
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      if (this.ws) this.ws.close();
      this.ws = null;
      this.setOpen(false);
    }
  }

  /** Sets `#conn` (`data-state="open"|"closed"`) and its text. */
  function setConn(open) {
    const n = document.getElementById('conn');
    n.dataset.state = open ? 'open' : 'closed';
    const label = n.querySelector('.conn-label');
    label.dataset.i18n = open ? 'conn.open' : 'conn.closed';
    label.textContent = t(label.dataset.i18n);
  }

  // ───────────────────────────── DOM helpers ─────────────────────────────

  /**
   * Updates `container`'s children to one element per item, in order, keyed by `keyOf(item)`:
   * `render(item, node)` returns the element (creating it when `node` is null). Elements of
   * items that went are removed; the rest are moved only when their place changed.
   */
  function reconcile(container, items, keyOf, render) {
    const old = new Map();
    for (const child of container.children) if (child.cbKey !== undefined) old.set(child.cbKey, child);
    // Remove what went first, so the nodes after it need not move.
    const keep = new Set(items.map(keyOf));
    for (const [key, node] of old) {
      if (!keep.has(key)) {
        node.remove();
        old.delete(key);
      }
    }
    let prev = null;
    for (const item of items) {
      const key = keyOf(item);
      const node = render(item, old.get(key) ?? null);
      node.cbKey = key;
      const want = prev ? prev.nextSibling : container.firstChild;
      if (node !== want) container.insertBefore(node, want);
      prev = node;
    }
  }

  /**
   * Sets an element's attributes and (when given) inner HTML, each only when it differs from
   * what it is: rewriting an attribute with the same value still costs the browser a style pass,
   * and a feed holds hundreds of items.
   */
  function patch(node, attrs, html) {
    for (const [name, value] of Object.entries(attrs)) {
      if (node.getAttribute(name) !== value) node.setAttribute(name, value);
    }
    if (html !== undefined && node.cbHtml !== html) {
      node.innerHTML = html;
      node.cbHtml = html;
    }
    return node;
  }

  /** Sets a node's text only when it changes. */
  function text(node, value) {
    if (node.textContent !== value) node.textContent = value;
  }

  /** Adds or removes a class only when that changes it. */
  function flag(node, cls, on) {
    if (node.classList.contains(cls) !== on) node.classList.toggle(cls, on);
  }

  /** A short message at the bottom of the screen (`kind`: 'error' or 'ok'). */
  function toast(message, kind = 'error') {
    let box = document.getElementById('toasts');
    if (!box) {
      box = document.createElement('div');
      box.id = 'toasts';
      box.setAttribute('role', 'status');
      document.body.appendChild(box);
    }
    const n = document.createElement('div');
    n.className = `toast toast-${kind}`;
    n.textContent = message;
    box.appendChild(n);
    setTimeout(() => n.remove(), kind === 'error' ? 8000 : 4000);
  }

  // ───────────────────────────── sign-in ─────────────────────────────

  /**
   * Runs `start()` now if there is a token, else after the sign-in form gives one. When the API
   * answers 401 the page's `stop()` runs, the token is forgotten and the form comes back.
   */
  function signIn({ start, stop }) {
    const form = document.getElementById('signin');
    const input = document.getElementById('token-input');
    const err = form.querySelector('.signin-error');
    let running = false;
    const show = (message) => {
      form.hidden = false;
      err.textContent = message || '';
      input.value = '';
      setTimeout(() => input.focus(), 0);
    };
    const run = () => {
      form.hidden = true;
      running = true;
      start();
    };
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const v = input.value.trim();
      if (!v) return;
      token.set(v);
      run();
    });
    onUnauthorized = () => {
      if (!running) return;
      running = false;
      stop();
      token.clear();
      show(t('signin.invalid'));
    };
    const signout = document.getElementById('signout');
    if (signout) {
      signout.addEventListener('click', () => {
        if (running) stop();
        running = false;
        token.clear();
        show('');
      });
    }
    if (token.get()) run();
    else show('');
  }

  /** For `LiveSocket.probe`: asks a cheap route whether the token is still accepted. */
  async function probeToken(path, onForbidden) {
    try {
      await api(path);
      return 'retry';
    } catch (e) {
      if (e.status === 401) return 'stop'; // api() already brought the sign-in form back
      if (e.status === 403 && onForbidden) {
        onForbidden(e);
        return 'stop';
      }
      return 'retry';
    }
  }

  // ───────────────────────────── the city model ─────────────────────────────

  const city = {
    districts: [], cells: [], segments: [], stations: [],
    districtName: new Map(), cellDistrict: new Map(),
    bbox: null, midLat: 0,
  };

  /** Loads `/api/city` once and sorts its features by kind. */
  async function loadCity() {
    const fc = await api('/api/city');
    const by = { district: [], cell: [], segment: [], station: [] };
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    const grow = (c) => {
      if (typeof c[0] === 'number') {
        x0 = Math.min(x0, c[0]); x1 = Math.max(x1, c[0]);
        y0 = Math.min(y0, c[1]); y1 = Math.max(y1, c[1]);
      } else c.forEach(grow);
    };
    for (const f of fc.features || []) {
      const kind = f.properties && f.properties.kind;
      if (!by[kind]) continue;
      by[kind].push(f);
      if (kind === 'district' || kind === 'cell') grow(f.geometry.coordinates);
    }
    city.districts = by.district;
    city.cells = by.cell;
    city.segments = by.segment;
    city.stations = by.station;
    for (const d of by.district) city.districtName.set(d.properties.id, d.properties);
    for (const c of by.cell) city.cellDistrict.set(c.properties.id, c.properties.district);
    city.bbox = [x0, y0, x1, y1];
    city.midLat = (y0 + y1) / 2;
    return city;
  }

  /** A district's display name (`name_zh` in Chinese when the model has one), or its id. */
  function districtName(id) {
    const p = city.districtName.get(id);
    if (!p) return id ?? '—';
    return (lang !== 'en' && p.name_zh) || p.name || id;
  }

  /** The outer ring(s) of a Polygon or MultiPolygon geometry. */
  function outerRings(geometry) {
    if (geometry.type === 'Polygon') return [geometry.coordinates[0]];
    if (geometry.type === 'MultiPolygon') return geometry.coordinates.map((p) => p[0]);
    return [];
  }

  const centroids = new WeakMap();

  /** The area-weighted centroid of a polygon's largest outer ring (lon, lat); cached per geometry. */
  function centroid(geometry) {
    if (!centroids.has(geometry)) centroids.set(geometry, ringCentroid(geometry));
    return centroids.get(geometry);
  }

  function ringCentroid(geometry) {
    let best = null;
    let bestArea = -1;
    for (const ring of outerRings(geometry)) {
      let a = 0, cx = 0, cy = 0;
      for (let i = 0; i < ring.length - 1; i++) {
        const [x0, y0] = ring[i];
        const [x1, y1] = ring[i + 1];
        const k = x0 * y1 - x1 * y0;
        a += k; cx += (x0 + x1) * k; cy += (y0 + y1) * k;
      }
      if (Math.abs(a) > bestArea) {
        bestArea = Math.abs(a);
        best = a ? [cx / (3 * a), cy / (3 * a)] : ring[0];
      }
    }
    return best;
  }

  /**
   * Registers `features` (polygons: the districts, or an officer's cells) as an ECharts map named
   * `name` and returns a geo component for it that only lays the map out: the true aspect of the
   * city's latitude, no fill, no interaction. What is drawn on it are series (cells, roads,
   * markers): a geo component redraws all its regions on every option change, series only their own.
   */
  function registerGeo(name, features, extra = {}) {
    echarts.registerMap(name, {
      type: 'FeatureCollection',
      features: features.map((f) => ({ type: 'Feature', geometry: f.geometry, properties: { name: f.properties.id } })),
    });
    return {
      map: name,
      roam: false,
      silent: true,
      aspectScale: Math.cos((city.midLat * Math.PI) / 180),
      layoutCenter: ['50%', '50%'],
      layoutSize: '92%',
      itemStyle: { areaColor: 'transparent', borderColor: 'transparent' },
      emphasis: { disabled: true },
      select: { disabled: true },
      label: { show: false },
      ...extra,
    };
  }

  /** A custom series drawing `cells` as polygons on the geo component, filled by their data's colour. */
  function cellSeries(cells, extra = {}) {
    const rings = cells.map((f) => outerRings(f.geometry)[0] || []);
    return {
      id: 'cells',
      type: 'custom',
      coordinateSystem: 'geo',
      z: 1,
      renderItem: (params, api) => ({
        type: 'polygon',
        shape: { points: rings[params.dataIndex].map((p) => api.coord(p)) },
        style: { fill: api.visual('color'), stroke: 'rgba(150,180,220,0.28)', lineWidth: 0.8 },
      }),
      data: cellData(cells, () => 0),
      ...extra,
    };
  }

  /** The data of `cellSeries`: each cell coloured by its risk (`risk(id)` → 0–100). */
  function cellData(cells, risk) {
    return cells.map((f) => {
      const r = risk(f.properties.id);
      return { name: f.properties.id, value: [...(centroid(f.geometry) || [0, 0]), r], itemStyle: { color: riskColor(r) } };
    });
  }

  /** Road widths by class, in px at a ~900 px map. */
  const ROAD_WIDTH = { expressway: 4.2, arterial: 3.2, secondary: 2.4, branch: 1.7 };

  /**
   * Segment polylines shifted `px` pixels to the right of travel (for a map `mapPx` pixels across
   * `bbox`, the whole city by default), so the two directions of a road show side by side.
   */
  function segmentPaths(segments, mapPx, px = 1.8, bbox = city.bbox) {
    const [x0, y0, x1, y1] = bbox;
    const kx = 111320 * Math.cos((city.midLat * Math.PI) / 180);
    const ky = 110540;
    const spanM = Math.max((x1 - x0) * kx, (y1 - y0) * ky) || 1;
    const d = (px * spanM) / Math.max(mapPx, 100); // metres
    return segments.map((f) => {
      const pts = f.geometry.coordinates;
      return pts.map((p, i) => {
        const a = pts[Math.max(0, i - 1)];
        const b = pts[Math.min(pts.length - 1, i + 1)];
        const dx = (b[0] - a[0]) * kx;
        const dy = (b[1] - a[1]) * ky;
        const len = Math.hypot(dx, dy) || 1;
        // Right-hand normal of the direction of travel.
        return [p[0] + ((dy / len) * d) / kx, p[1] + ((-dx / len) * d) / ky];
      });
    });
  }

  // ───────────────────────────── alerts ─────────────────────────────

  /** An alert's text in the current language: the service's message in English, a template of its subject in Chinese. */
  function alertMessage(a) {
    if (lang === 'en') return a.message;
    const s = { ...(a.subject || {}) };
    if (s.district) s.district = districtName(s.district);
    if (s.unit_type) s.unit_type = label('utype.', s.unit_type);
    return t('rule.' + a.rule, s) ?? a.message;
  }

  /**
   * The active alerts the caller may see, from `/ws/alerts`, rendered into `container` (`#alerts`)
   * newest first, each with its acknowledge button. `onChange()` runs after every change.
   */
  class AlertFeed {
    constructor(container, onChange) {
      this.container = container;
      this.onChange = onChange;
      this.alerts = new Map();
      this.pending = new Set();
      container.addEventListener('click', (e) => {
        const btn = e.target.closest('button.ack');
        const item = btn && btn.closest('[data-alert-id]');
        if (item && !btn.disabled) this.ack(item.dataset.alertId);
      });
    }

    /** Applies one `/ws/alerts` message; returns whether the active set changed. */
    handle(msg) {
      if (msg.type === 'snapshot') {
        this.alerts = new Map((msg.alerts || []).map((a) => [a.id, a]));
      } else if (msg.type === 'transition' && msg.alert) {
        this.put(msg.alert);
      } else {
        return false; // heartbeat, lagged (a snapshot follows), ack results
      }
      this.onChange();
      return true;
    }

    put(a) {
      if (a.state === 'cleared') this.alerts.delete(a.id);
      else this.alerts.set(a.id, a);
    }

    async ack(id) {
      this.pending.add(id);
      this.render();
      try {
        const a = await api(`/api/alerts/${encodeURIComponent(id)}/ack`, { method: 'POST', body: {} });
        if (a && a.id) this.put(a);
      } catch (e) {
        if (e.status !== 401) toast(t('err.action', { msg: e.message }));
      } finally {
        this.pending.delete(id);
        this.onChange();
      }
    }

    /** Active alerts by severity. */
    counts() {
      const c = { critical: 0, warning: 0, info: 0 };
      for (const a of this.alerts.values()) c[a.severity] = (c[a.severity] || 0) + 1;
      return c;
    }

    /** The newest event time among the alerts (raise or acknowledgement), or 0. */
    latestTs() {
      let m = 0;
      for (const a of this.alerts.values()) m = Math.max(m, a.raised_ts || 0, a.acked_ts || 0);
      return m;
    }

    render() {
      const list = [...this.alerts.values()].sort((a, b) => b.raised_ts - a.raised_ts || (a.id < b.id ? -1 : 1));
      reconcile(this.container, list, (a) => a.id, (a, node) => {
        const acked = a.state === 'acknowledged';
        const where = [a.cell, a.district && districtName(a.district)].filter(Boolean).join(' · ');
        const ackLine = acked
          ? `<span class="acked">✓ ${esc(t('alerts.acked_by', { who: a.acked_by || '—', time: fmtTime(a.acked_ts) }))}</span>`
          : '';
        return patch(node || document.createElement('article'), { class: `alert sev-${a.severity}`, 'data-alert-id': a.id, 'data-state': a.state }, `
          <div class="alert-head">
            <span class="sev-tag">${esc(t('sev.' + a.severity))}</span>
            <span class="domain-tag">${esc(label('domain.', a.domain))}</span>
            ${a.escalated ? `<span class="esc-tag">${esc(t('alerts.escalated'))}</span>` : ''}
            <span class="where">${esc(where)}</span>
            <time>${esc(fmtTime(a.raised_ts, true))}</time>
          </div>
          <div class="alert-body">
            <p class="alert-msg">${esc(alertMessage(a))}</p>
            <button class="ack" type="button" ${acked || this.pending.has(a.id) ? 'disabled' : ''} ${acked ? 'hidden' : ''}>${esc(t('alerts.ack'))}</button>
          </div>
          ${ackLine ? `<div class="alert-foot">${ackLine}</div>` : ''}`);
      });
    }
  }

  // ───────────────────────────── charts ─────────────────────────────

  /** The options every chart shares: dark, quiet axes, city-time labels, no animation. */
  function chartBase() {
    return {
      backgroundColor: 'transparent',
      animation: false,
      textStyle: { fontFamily: FONT, color: COLORS.muted },
      grid: { left: 8, right: 16, top: 34, bottom: 6, containLabel: true },
      tooltip: {
        trigger: 'axis', confine: true, backgroundColor: 'rgba(10,18,32,0.95)', borderColor: '#2a3a57',
        textStyle: { color: COLORS.text, fontFamily: FONT, fontSize: 12 },
        axisPointer: { lineStyle: { color: '#4a5c7c' } },
      },
      legend: { top: 0, left: 0, type: 'scroll', itemWidth: 14, itemHeight: 3, icon: 'rect',
        textStyle: { color: COLORS.muted, fontSize: 11 }, pageTextStyle: { color: COLORS.muted },
        pageIconColor: COLORS.muted, pageIconInactiveColor: '#33405a' },
      xAxis: {
        type: 'time', axisLine: { lineStyle: { color: '#2a3a57' } }, axisTick: { show: false },
        splitLine: { show: false }, axisLabel: { color: COLORS.muted, hideOverlap: true, formatter: (v) => fmtTime(v) },
      },
      yAxis: {
        type: 'value', axisLine: { show: false }, axisTick: { show: false },
        splitLine: { lineStyle: { color: COLORS.grid } }, axisLabel: { color: COLORS.muted },
        nameTextStyle: { color: COLORS.muted, align: 'left' },
      },
    };
  }

  /** A tooltip formatter for time-axis charts: the city time, then one line per series. */
  function axisTooltip(valueFmt) {
    return (params) => {
      const list = Array.isArray(params) ? params : [params];
      if (!list.length) return '';
      const head = `<b>${esc(fmtDateTime(list[0].value[0]))}</b>`;
      const rows = list
        .filter((p) => p.value && p.value[1] !== null && p.value[1] !== undefined)
        .map((p) => `${p.marker}${esc(p.seriesName)}　<b>${esc(valueFmt(p.value[1]))}</b>`);
      return [head, ...rows].join('<br>');
    };
  }

  /** Resizes every chart when its container changes size. */
  function autoResize(chart, onResize) {
    const ro = new ResizeObserver(() => {
      chart.resize();
      if (onResize) onResize();
    });
    ro.observe(chart.getDom());
  }

  /** Hides the chart's "waiting" overlay once it has data. */
  function chartEmpty(id, empty) {
    const n = document.getElementById(id);
    if (n) n.closest('.chart-wrap').classList.toggle('is-empty', empty);
  }

  // ───────────────────────────── exports ─────────────────────────────

  return {
    cityTz: () => cityTz, session, FONT, COLORS, ROAD_WIDTH, riskColor,
    t, label, applyI18n, setupLangButton, onLangChange: (f) => langListeners.push(f), lang: () => lang,
    fmtTime, fmtDateTime, fmtClock, fmtDuration, fmtNum, esc,
    takeTokenFromUrl, token, api, ApiError, LiveSocket, setConn, probeToken, signIn,
    reconcile, patch, text, flag, toast,
    city, loadCity, districtName, outerRings, centroid, registerGeo, cellSeries, cellData, segmentPaths,
    alertMessage, AlertFeed,
    chartBase, axisTooltip, autoResize, chartEmpty,
  };
})();

// Before anything else: a token in the fragment goes to localStorage and off the address bar.
CB.takeTokenFromUrl();
