// admin_page.js -- the stats page's script (admin_page.html), served as /admin/page.js.
//
// Polls stats.json every POLL_MS, keeps the last WINDOW_S seconds of samples in memory and
// redraws: tiles, two canvas charts (connections; delivered messages per second, from the
// difference of messages_out between two samples), the workers table and the counter tables.
// The charts' time axis grows with the history the page has (1, 2, 5, then 10 minutes), so a
// freshly opened page does not squeeze its first samples against the right edge.
// No libraries, no inline code (the page's CSP allows only this file).
//
// Authentication: fetches carry "Authorization: Bearer <token>" when the operator gave a token;
// after a 401 the page asks for it and keeps it in sessionStorage (this tab only). When the web
// server adds the header itself, the page never asks.
// CSRF: POST and DELETE carry X-CSRF-Token, from the page's <meta> tag and refreshed from the
// header of every stats.json answer (a restarted hub brings a new token).
//
// For tests: body[data-renders] counts successful renders; elements holding numbers carry the
// raw value in data-value.
'use strict';

(function () {
  const POLL_MS = 1500;
  const WINDOW_S = 600;
  const TOKEN_KEY = 'wshub-admin-token';
  const nf = new Intl.NumberFormat('en-US');
  const nf1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

  const $ = (id) => document.getElementById(id);
  let csrf = document.querySelector('meta[name="csrf-token"]').content;
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let samples = []; // {t (ms), conns, rate (msgs/s or null)}
  let prev = null; // previous stats snapshot
  let timer = null;
  let renders = 0;
  let waitingForToken = false;

  // ---- formatting ----

  function fmtInt(v) {
    return v === null || v === undefined ? '–' : nf.format(v);
  }

  function fmtRate(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    return v >= 100 ? nf.format(Math.round(v)) : nf1.format(v);
  }

  function fmtCompact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return nf1.format(v / 1e9) + 'G';
    if (a >= 1e6) return nf1.format(v / 1e6) + 'M';
    if (a >= 1e4) return nf1.format(v / 1e3) + 'k';
    return nf1.format(v);
  }

  function fmtBytes(v) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? nf.format(v) : nf1.format(v)) + ' ' + units[i];
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return '–';
    s = Math.max(0, Math.floor(s));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    if (m > 0) return m + 'm ' + sec + 's';
    return sec + 's';
  }

  function fmtAgo(ms, now) {
    return ms ? fmtDuration((now - ms) / 1000) + ' ago' : '–';
  }

  // ---- DOM helpers ----

  function setText(id, text, raw) {
    const el = $(id);
    el.textContent = text;
    if (raw !== undefined) el.dataset.value = String(raw);
  }

  function cell(tr, text, cls, raw) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    if (raw !== undefined) td.dataset.value = String(raw);
    tr.appendChild(td);
    return td;
  }

  function showResult(id, ok, text) {
    const el = $(id);
    el.className = 'result ' + (ok ? 'ok' : 'err');
    el.textContent = text;
  }

  function banner(text) {
    const b = $('banner');
    b.textContent = text || '';
    b.hidden = !text;
  }

  // ---- HTTP ----

  async function api(method, url, body, extraHeaders) {
    const headers = Object.assign({}, extraHeaders || {});
    if (token) headers['Authorization'] = 'Bearer ' + token;
    if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
    const res = await fetch(url, {
      method: method, headers: headers, body: body, cache: 'no-store',
      credentials: 'same-origin',
    });
    const fresh = res.headers.get('X-CSRF-Token');
    if (fresh) csrf = fresh;
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.status === 401) askForToken(token !== '');
    return { status: res.status, data: data };
  }

  function errorText(r) {
    if (r.data && r.data.error) {
      let d = r.data.detail;
      if (d && typeof d === 'object') d = JSON.stringify(d);
      return r.status + ' ' + r.data.error + (d ? ': ' + d : '');
    }
    return 'HTTP ' + r.status;
  }

  // ---- token ----

  function askForToken(wrong) {
    waitingForToken = true;
    $('auth').hidden = false;
    $('auth-token').placeholder = wrong ? 'that token was refused; try again' : 'admin token';
    $('auth-token').focus();
    $('hub-state').textContent = 'token needed';
    $('hub-state').className = 'pill pill-warn';
  }

  function useToken(value) {
    token = value;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $('forget-token').hidden = !token;
    $('auth').hidden = true;
    waitingForToken = false;
    poll();
  }

  // ---- charts ----

  function niceStep(max, ticks) {
    const raw = Math.max(max, 1e-9) / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
    return step * mag;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // The time span the charts show: the history we have, rounded up to 1, 2, 5 or 10 minutes.
  function chartSpan() {
    const have = samples.length ? (samples[samples.length - 1].t - samples[0].t) / 1000 : 0;
    for (const s of [60, 120, 300]) if (have <= s) return s;
    return WINDOW_S;
  }

  function spanLabel(span) {
    return 'last ' + (span === 60 ? 'minute' : span / 60 + ' minutes');
  }

  // Draws series [{t, v}] over the last `span` seconds ending at `now` (ms).
  function drawChart(canvas, series, now, span, colors, integer) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const font = '11px ' + getComputedStyle(document.body).fontFamily;
    const pad = { l: 52, r: 12, t: 10, b: 24 };
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    const t0 = now - span * 1000;
    const pts = series.filter((p) => p.v !== null && p.t >= t0);
    let max = 0;
    for (const p of pts) max = Math.max(max, p.v);
    let step = niceStep(max > 0 ? max : 1, 4);
    if (integer) step = Math.max(1, Math.ceil(step));
    const top = Math.max(step, Math.ceil((max * 1.05) / step) * step);
    const x = (t) => pad.l + ((t - t0) / (span * 1000)) * pw;
    const y = (v) => pad.t + ph - (v / top) * ph;

    ctx.font = font;
    ctx.lineWidth = 1;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'right';
    for (let v = 0; v <= top + step / 2; v += step) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = cssVar('--chart-grid');
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + pw, yy);
      ctx.stroke();
      ctx.fillStyle = cssVar('--chart-axis');
      ctx.fillText(fmtCompact(v), pad.l - 8, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const tick = span <= 60 ? 10 : span <= 120 ? 20 : span <= 300 ? 60 : 120; // seconds
    for (let s = span; s >= 0; s -= tick) {
      const xx = x(now - s * 1000);
      const label = s === 0 ? 'now' : s < 60 || s % 60 ? '-' + s + ' s' : '-' + s / 60 + ' min';
      ctx.fillStyle = cssVar('--chart-axis');
      ctx.fillText(label, Math.min(Math.max(xx, pad.l + 14), pad.l + pw - 14), pad.t + ph + 7);
      ctx.strokeStyle = cssVar('--chart-grid');
      ctx.beginPath();
      ctx.moveTo(Math.round(xx) + 0.5, pad.t + ph);
      ctx.lineTo(Math.round(xx) + 0.5, pad.t + ph + 4);
      ctx.stroke();
    }
    ctx.strokeStyle = cssVar('--chart-axis');
    ctx.beginPath();
    ctx.moveTo(pad.l, pad.t + ph + 0.5);
    ctx.lineTo(pad.l + pw, pad.t + ph + 0.5);
    ctx.stroke();

    if (pts.length === 0) {
      ctx.fillStyle = cssVar('--chart-axis');
      ctx.textAlign = 'center';
      ctx.fillText('collecting samples…', pad.l + pw / 2, pad.t + ph / 2 - 6);
      return;
    }
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
    ctx.lineTo(x(pts[pts.length - 1].t), y(0));
    ctx.lineTo(x(pts[0].t), y(0));
    ctx.closePath();
    ctx.fillStyle = cssVar(colors[1]);
    ctx.fill();
    ctx.beginPath();
    pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
    ctx.strokeStyle = cssVar(colors[0]);
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    ctx.stroke();
    const last = pts[pts.length - 1];
    ctx.fillStyle = cssVar(colors[0]);
    ctx.beginPath();
    ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI);
    ctx.fill();
  }

  function drawCharts() {
    const now = samples.length ? samples[samples.length - 1].t : Date.now();
    const span = chartSpan();
    for (const el of document.querySelectorAll('.chart-span')) el.textContent = spanLabel(span);
    drawChart($('chart-conn'), samples.map((s) => ({ t: s.t, v: s.conns })), now, span,
      ['--chart-line', '--chart-fill'], true);
    drawChart($('chart-rate'), samples.map((s) => ({ t: s.t, v: s.rate })), now, span,
      ['--chart-line2', '--chart-fill2'], false);
  }

  // ---- rendering ----

  function rate(curCount, prevCount, dtMs) {
    if (prevCount === undefined || dtMs <= 0 || curCount < prevCount) return null;
    return ((curCount - prevCount) * 1000) / dtMs;
  }

  function renderTiles(st, deliveredRate, bcastRate) {
    const running = st.workers.filter(
      (w) => w.state === 'running' && w.generation === st.hub.generation).length;
    setText('instance', st.instance);
    setText('v-connections', fmtInt(st.totals.connections), st.totals.connections);
    setText('v-conn-cap', fmtInt(st.connections.in_use) + ' of ' +
      fmtInt(st.connections.capacity) + ' table rows');
    setText('v-rate', fmtRate(deliveredRate), deliveredRate === null ? '' : deliveredRate);
    setText('v-delivered', fmtInt(st.totals.messages_out) + ' delivered');
    setText('v-bcast-rate', fmtRate(bcastRate), bcastRate === null ? '' : bcastRate);
    setText('v-published', fmtInt(st.ring.published) + ' published');
    setText('v-workers', running + ' / ' + st.hub.workers_configured, running);
    setText('v-generation', 'generation ' + st.hub.generation);
    setText('v-next-seq', fmtInt(st.ring.next_seq), st.ring.next_seq);
    setText('v-oldest-seq', 'oldest retained ' + fmtInt(st.ring.oldest_seq));
    const pct = st.ring.capacity ? (100 * st.ring.used_bytes) / st.ring.capacity : 0;
    setText('v-ring-pct', nf1.format(pct) + ' %', pct);
    setText('v-ring-bytes', fmtBytes(st.ring.used_bytes) + ' of ' + fmtBytes(st.ring.capacity));
    $('ring-bar').style.width = Math.min(100, pct) + '%';
  }

  function renderWorkers(st, dtMs) {
    const tbody = $('workers').tBodies[0];
    const rows = document.createDocumentFragment();
    const prevBySlot = new Map((prev ? prev.workers : []).map((w) => [w.slot, w]));
    for (const w of st.workers) {
      const tr = document.createElement('tr');
      tr.dataset.slot = w.slot;
      const p = prevBySlot.get(w.slot);
      const r = p ? rate(w.messages_out, p.messages_out, dtMs) : null;
      cell(tr, String(w.slot), 'slot', w.slot);
      cell(tr, w.pid ? String(w.pid) : '–', 'pid mono', w.pid);
      cell(tr, String(w.generation), 'gen', w.generation);
      cell(tr, w.state, 'state state-' + w.state);
      cell(tr, fmtInt(w.connections), 'num conns', w.connections);
      cell(tr, fmtRate(r), 'num rate', r === null ? '' : r);
      cell(tr, fmtDuration(w.uptime_s), 'num uptime');
      cell(tr, fmtInt(w.restarts), 'num restarts', w.restarts);
      cell(tr, w.last_exit || '–', 'exit muted');
      rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
  }

  function renderCounts(id, counts) {
    const table = $(id);
    const rows = document.createDocumentFragment();
    const names = Object.keys(counts).sort((a, b) => counts[b] - counts[a] || a.localeCompare(b));
    for (const name of names) {
      const tr = document.createElement('tr');
      tr.dataset.reason = name;
      const th = document.createElement('th');
      th.textContent = name.replace(/_/g, ' ');
      tr.appendChild(th);
      cell(tr, fmtInt(counts[name]), counts[name] ? '' : 'zero', counts[name]);
      rows.appendChild(tr);
    }
    table.replaceChildren(rows);
  }

  function renderRing(st) {
    const r = st.ring;
    setText('ring-capacity', fmtBytes(r.capacity), r.capacity);
    setText('ring-used', fmtBytes(r.used_bytes), r.used_bytes);
    setText('ring-next', fmtInt(r.next_seq), r.next_seq);
    setText('ring-oldest', fmtInt(r.oldest_seq), r.oldest_seq);
    setText('ring-published', fmtInt(r.published) + ' (' + fmtBytes(r.published_bytes) + ')',
      r.published);
    setText('ring-max', fmtBytes(r.max_payload), r.max_payload);
    setText('ring-rejected', fmtInt(r.broadcasts_rejected), r.broadcasts_rejected);
    setText('ring-recoveries', fmtInt(r.lock_recoveries), r.lock_recoveries);
  }

  function renderHub(st) {
    const h = st.hub;
    setText('hub-pid', String(h.pid), h.pid);
    setText('hub-uptime', fmtDuration(h.uptime_s));
    setText('hub-heartbeat', nf.format(h.heartbeat_age_ms) + ' ms ago', h.heartbeat_age_ms);
    setText('hub-generation', String(h.generation), h.generation);
    setText('hub-restarts', fmtInt(h.restart_requested || 0), h.restart_requested || 0);
    setText('hub-conntab', fmtInt(st.connections.in_use) + ' / ' + fmtInt(st.connections.capacity) +
      ' rows, ' + fmtInt(st.connections.reclaimed) + ' reclaimed');
    const state = $('hub-state');
    const allUp = st.workers.filter((w) => w.state === 'running' &&
      w.generation === h.generation).length >= h.workers_configured;
    state.textContent = h.state + (h.state === 'running' && !allUp ? ', workers missing' : '');
    state.className = 'pill ' + (h.state !== 'running' ? 'pill-bad' : allUp ? 'pill-ok' : 'pill-warn');
    const bridge = st.redis_bridge;
    setText('redis-state', bridge && bridge.state ? bridge.state : 'not configured');
  }

  // Loud when clients can connect without a token (admin_security.c).
  function renderSecurity(st) {
    const sec = st.security;
    const el = $('auth-off');
    let text = '';
    if (sec && sec.auth === 'off')
      text = sec.auth_off_explicit
        ? 'Authentication is OFF ("auth off"): any client can connect without a token.'
        : 'Authentication is OFF: no jwt_key is configured, any client can connect without a token.';
    else if (sec && sec.auth === 'mixed')
      text = 'Authentication differs between workers (a rolling restart is switching it).';
    el.textContent = text;
    el.hidden = !text;
    document.body.dataset.auth = sec ? sec.auth : 'unknown';
  }

  function render(st) {
    const dtMs = prev ? st.generated_at_ms - prev.generated_at_ms : 0;
    const delivered = prev ? rate(st.totals.messages_out, prev.totals.messages_out, dtMs) : null;
    const bcast = prev ? rate(st.ring.published, prev.ring.published, dtMs) : null;
    samples.push({ t: st.generated_at_ms, conns: st.totals.connections, rate: delivered });
    const cutoff = st.generated_at_ms - WINDOW_S * 1000 - POLL_MS;
    while (samples.length && samples[0].t < cutoff) samples.shift();
    renderTiles(st, delivered, bcast);
    renderWorkers(st, dtMs);
    renderCounts('rejected', st.totals.rejected);
    renderCounts('closed', st.totals.closed);
    renderRing(st);
    renderHub(st);
    renderSecurity(st);
    drawCharts();
    prev = st;
    renders++;
    document.body.dataset.renders = String(renders);
    setText('updated', 'updated ' + new Date(st.generated_at_ms).toLocaleTimeString());
  }

  async function poll() {
    clearTimeout(timer);
    timer = null;
    if (waitingForToken) return;
    try {
      const r = await api('GET', 'stats.json');
      if (r.status === 200 && r.data) {
        banner('');
        render(r.data);
      } else if (r.status !== 401) {
        banner('stats.json: ' + errorText(r));
        $('hub-state').textContent = 'unavailable';
        $('hub-state').className = 'pill pill-bad';
      }
    } catch (e) {
      banner('cannot reach the admin API: ' + e.message);
    }
    if (!waitingForToken) timer = setTimeout(poll, POLL_MS);
  }

  // ---- actions ----

  async function sendBroadcast(ev) {
    ev.preventDefault();
    const text = $('bcast-text').value;
    const channel = $('bcast-channel').value.trim();
    if (!text) return;
    $('bcast-send').disabled = true;
    try {
      const url = 'broadcast' + (channel ? '?channel=' + encodeURIComponent(channel) : '');
      const r = await api('POST', url, text, { 'Content-Type': 'text/plain; charset=utf-8' });
      if (r.status === 202 && r.data) {
        showResult('bcast-result', true, 'Sent as sequence ' + fmtInt(r.data.seq) +
          (channel ? ' to channel ' + channel : ' to everyone') + '.');
        $('bcast-result').dataset.seq = String(r.data.seq);
      } else {
        showResult('bcast-result', false, errorText(r));
      }
    } catch (e) {
      showResult('bcast-result', false, e.message);
    } finally {
      $('bcast-send').disabled = false;
    }
  }

  let restartArmed = null;

  async function requestRestart() {
    const btn = $('restart-btn');
    if (!restartArmed) { // two clicks: no native dialog to block on
      btn.textContent = 'Click again to confirm';
      btn.classList.add('armed');
      restartArmed = setTimeout(() => {
        restartArmed = null;
        btn.textContent = 'Request rolling restart';
        btn.classList.remove('armed');
      }, 4000);
      return;
    }
    clearTimeout(restartArmed);
    restartArmed = null;
    btn.textContent = 'Request rolling restart';
    btn.classList.remove('armed');
    btn.disabled = true;
    try {
      const r = await api('POST', 'workers/restart', '');
      if (r.status === 202 && r.data) {
        showResult('restart-result', true, 'Request #' + r.data.restart_requested +
          ' recorded at generation ' + r.data.generation + '.');
      } else {
        showResult('restart-result', false, errorText(r));
      }
    } catch (e) {
      showResult('restart-result', false, e.message);
    } finally {
      btn.disabled = false;
    }
  }

  async function loadConnections(ev) {
    if (ev) ev.preventDefault();
    const user = $('conns-user').value.trim();
    const url = 'connections?limit=50' + (user ? '&user=' + encodeURIComponent(user) : '');
    try {
      const r = await api('GET', url);
      if (r.status !== 200 || !r.data) {
        showResult('conns-result', false, errorText(r));
        return;
      }
      const now = Date.now();
      const rows = document.createDocumentFragment();
      for (const c of r.data.connections) {
        const tr = document.createElement('tr');
        tr.dataset.id = c.id;
        cell(tr, String(c.id), 'num mono', c.id);
        cell(tr, String(c.worker), '', c.worker);
        cell(tr, c.remote, 'mono');
        cell(tr, c.user || '–');
        cell(tr, (c.channels && c.channels.length) ? c.channels.join(', ') : '–');
        cell(tr, fmtAgo(c.connected_at_ms, now), 'num');
        cell(tr, fmtAgo(c.last_seen_ms, now), 'num');
        cell(tr, fmtInt(c.messages_out), 'num', c.messages_out);
        cell(tr, fmtInt(c.messages_in), 'num', c.messages_in);
        const td = cell(tr, '');
        const b = document.createElement('button');
        b.type = 'button';
        b.className = 'danger small';
        b.textContent = c.kick_code ? 'closing' : 'Close';
        b.disabled = !!c.kick_code;
        b.addEventListener('click', () => kick(c.id, b));
        td.appendChild(b);
        rows.appendChild(tr);
      }
      $('conns').tBodies[0].replaceChildren(rows);
      $('conns').hidden = r.data.connections.length === 0;
      $('conns-total').textContent = fmtInt(r.data.total) + ' match' +
        (r.data.total === 1 ? '' : 'es');
      showResult('conns-result', true, '');
    } catch (e) {
      showResult('conns-result', false, e.message);
    }
  }

  async function kick(id, btn) {
    btn.disabled = true;
    try {
      const r = await api('DELETE', 'connections/' + id);
      if (r.status === 202) {
        btn.textContent = 'closing';
        showResult('conns-result', true, 'Connection ' + id + ' is being closed with ' +
          r.data.code + '.');
      } else {
        btn.disabled = false;
        showResult('conns-result', false, errorText(r));
      }
    } catch (e) {
      btn.disabled = false;
      showResult('conns-result', false, e.message);
    }
  }

  // ---- start ----

  document.addEventListener('DOMContentLoaded', () => {
    $('bcast-form').addEventListener('submit', sendBroadcast);
    $('restart-btn').addEventListener('click', requestRestart);
    $('conns-form').addEventListener('submit', loadConnections);
    $('auth-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      useToken($('auth-token').value.trim());
    });
    $('forget-token').hidden = !token;
    $('forget-token').addEventListener('click', (ev) => {
      ev.preventDefault();
      useToken('');
    });
    window.addEventListener('resize', drawCharts);
    poll();
  });
})();
