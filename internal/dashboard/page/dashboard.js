'use strict';
// Parley's rollout dashboard: polls /dashboard/data every second and draws
// it with DOM calls only (textContent, never HTML from data).
(function () {
  const byId = (id) => document.getElementById(id);
  const status = byId('status');
  const pauseButton = byId('pause');
  let paused = false;
  let timer = 0;
  let interval = 1000;

  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : String(c));
    return e;
  };
  const svg = (tag, attrs) => {
    const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const dash = '—';
  const seconds = (s) => {
    if (s === null || s === undefined) return dash;
    if (s < 0.001) return (s * 1e6).toFixed(0) + ' µs';
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + ' ms';
    return s.toFixed(s < 10 ? 2 : 0) + ' s';
  };
  const percent = (r) => (r === null || r === undefined) ? dash : (r * 100).toFixed(r > 0 && r < 0.001 ? 3 : 1) + ' %';
  const rate = (v) => v.toFixed(v < 10 ? 1 : 0) + '/s';
  const bytes = (b) => {
    if (b < 1024) return b + ' B';
    if (b < 1048576) return (b / 1024).toFixed(1) + ' KiB';
    return (b / 1048576).toFixed(1) + ' MiB';
  };
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });
  const tone = (v) => ({ healthy: 'ok', closed: 'ok', up: 'ok', half_open: 'warn', lagging: 'warn', paused: 'warn' }[v] || 'bad');
  const badge = (text, cls) => el('span', { class: 'badge ' + (cls || tone(text)) }, text.replace('_', '-'));
  const bar = () => el('span', { class: 'bar', 'aria-hidden': 'true' }, el('span'));
  const fillBar = (b, ratio) => { b.firstChild.style.width = Math.round(Math.min(1, Math.max(0, ratio)) * 100) + '%'; return b; };
  const rows = (tbody, items, cells, empty) => {
    const trs = items.map((it) => el('tr', null, ...cells(it).map((c, i) =>
      el(i === 0 ? 'th' : 'td', i === 0 ? { scope: 'row' } : null, c))));
    if (trs.length === 0) trs.push(el('tr', null, el('td', { colspan: 9, class: 'muted' }, empty)));
    tbody.replaceChildren(...trs);
  };

  function chart(r, historySeconds) {
    const w = 600, h = 140;
    const pts = r.lag_history;
    const s = svg('svg', { class: 'chart', viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: 'none', role: 'img' });
    const end = pts.length ? pts[pts.length - 1].at : Date.now() / 1000;
    // The axis spans the history kept, at least a minute (less than the
    // whole history while the server has not run that long).
    const span = Math.min(historySeconds, Math.max(60, pts.length ? end - pts[0].at : 0));
    const start = end - span;
    let top = 0;
    for (const p of pts) if (p.lag_seconds !== null && p.lag_seconds > top) top = p.lag_seconds;
    top = Math.max(top, 0.1) * 1.15;
    const x = (t) => ((t - start) / span) * w;
    const y = (v) => h - (v / top) * h;
    for (const f of [0.25, 0.5, 0.75]) s.append(svg('line', { class: 'grid', x1: 0, x2: w, y1: h * f, y2: h * f }));
    // Shade the samples with the breaker open.
    for (let i = 0; i < pts.length; i++) {
      if (pts[i].breaker === 'open') {
        const next = i + 1 < pts.length ? pts[i + 1].at : pts[i].at + 1;
        s.append(svg('rect', { class: 'open', x: x(pts[i].at), y: 0, width: Math.max(1, x(next) - x(pts[i].at)), height: h }));
      }
    }
    const line = pts.filter((p) => p.lag_seconds !== null).map((p) => `${x(p.at).toFixed(1)},${y(p.lag_seconds).toFixed(1)}`);
    if (line.length) s.append(svg('polyline', { class: 'line', points: line.join(' ') }));
    const max = pts.reduce((m, p) => Math.max(m, p.lag_seconds || 0), 0);
    const ago = span >= 120 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
    const label = `Lag of ${r.name} over the last ${ago}: now ${seconds(r.lag_seconds)}, highest ${seconds(max)}` +
      (pts.some((p) => p.breaker === 'open') ? '; shaded where the breaker was open.' : '.');
    s.setAttribute('aria-label', label);
    const t = svg('title', {});
    t.textContent = label;
    s.prepend(t);
    return [s, el('div', { class: 'axis', 'aria-hidden': 'true' },
      el('span', null, `${ago} ago`), el('span', null, `max ${seconds(top / 1.15)}`), el('span', null, 'now'))];
  }

  function renderReplicas(d) {
    const box = byId('replicas');
    if (d.replicas.length === 0) {
      box.replaceChildren(el('p', { class: 'muted' }, 'This instance has no replicas configured.'));
      return;
    }
    box.replaceChildren(...d.replicas.map((r) => {
      const totals = Object.entries(r.transitions_total).filter(([, n]) => n > 0)
        .map(([to, n]) => `${n} to ${to.replace('_', '-')}`).join(', ') || 'none';
      const list = r.transitions.length
        ? el('ol', { class: 'transitions' }, ...r.transitions.map((t) => el('li', null, `${clock(t.at)} → ${t.to.replace('_', '-')}`)))
        : el('p', { class: 'muted' }, `None in the last ${Math.round(d.history_seconds / 60)} minutes.`);
      return el('article', { class: 'replica', 'data-replica': r.name, 'aria-labelledby': 'replica-' + r.name },
        el('h3', { id: 'replica-' + r.name }, r.name),
        el('dl', { class: 'facts' },
          el('dt', null, 'State'), el('dd', { class: 'state', 'data-state': r.state }, badge(r.state)),
          el('dt', null, 'Breaker'), el('dd', { class: 'breaker', 'data-breaker': r.breaker }, badge(r.breaker)),
          el('dt', null, 'Lag'), el('dd', { class: 'lag', 'data-lag-seconds': r.lag_seconds }, `${seconds(r.lag_seconds)} (${bytes(r.lag_bytes)})`)),
        ...chart(r, d.history_seconds),
        el('h4', null, 'Breaker transitions'),
        list,
        el('p', { class: 'muted' }, `Since start: ${totals}.`));
    }));
  }

  function render(d) {
    interval = Math.max(500, Math.min(2000, d.interval_seconds * 1000));
    renderReplicas(d);
    rows(byId('rollouts'), d.rollouts, (r) => [r.endpoint.replace(/_/g, ' '),
      el('span', null, fillBar(bar(), r.percent / 100), `${r.percent} %`), r.cache ? 'on' : 'off', r.replica ? 'on' : 'off'],
    'No rollout switches.');
    const e = d.errors;
    byId('error-ratio').replaceChildren(e.ratio === null ? dash : badge(percent(e.ratio), e.ratio > 0.01 ? 'bad' : e.ratio > 0 ? 'warn' : 'ok'));
    byId('request-rate').textContent = `${rate(e.requests_per_second)} (${rate(e.errors_per_second)} errors)`;
    byId('error-cohorts').textContent = Object.keys(e.cohorts).sort().map((c) => `${c} ${percent(e.cohorts[c])}`).join(' · ') || dash;
    byId('cache-state').replaceChildren(badge(d.cache.state));
    byId('cache-hit').textContent = `${percent(d.cache.hit_ratio)} (${rate(d.cache.requests_per_second)})`;
    rows(byId('cache-endpoints'), d.cache.endpoints, (c) => [c.endpoint.replace(/_/g, ' '), percent(c.hit_ratio), rate(c.requests_per_second)],
      'No cache traffic in the window.');
    rows(byId('latency'), d.latency, (l) => [l.route, l.cohort, rate(l.requests_per_second), seconds(l.p50_seconds), seconds(l.p95_seconds)],
      'No requests in the window.');
    rows(byId('pools'), d.pools, (p) => [p.name, el('span', null, fillBar(bar(), p.saturation), percent(p.saturation)),
      `${p.in_use} of ${p.max}`, seconds(p.acquire_p95_seconds)], 'No pools.');
    const pg = d.pgbouncer;
    byId('pgbouncer-state').textContent = !pg.monitored ? 'Not monitored by this instance (no --pgbouncer-admin-url).'
      : pg.up ? 'Up.' : 'Down: the monitor cannot reach its admin console.';
    rows(byId('pgbouncer'), pg.databases, (b) => [b.database,
      b.saturation === null ? dash : el('span', null, fillBar(bar(), b.saturation), percent(b.saturation)),
      seconds(b.queue_wait_seconds), String(b.clients_waiting)], pg.monitored ? 'No databases.' : dash);
    rows(byId('monitors'), d.monitors, (m) => [m.name, m.last_success ? clock(m.last_success) : 'never',
      el('span', { class: m.age_seconds === null || m.age_seconds > 600 ? 'bad' : '' }, seconds(m.age_seconds))],
    'No monitors run on this instance.');
    byId('window-note').textContent = `Rates, ratios and percentiles over the last ${Math.round(d.window_seconds)} s of samples taken every ${d.interval_seconds} s; lag over the last ${Math.round(d.history_seconds / 60)} minutes. Generated ${clock(d.generated_at)}.`;
    status.classList.remove('stale');
    status.textContent = `Updated ${clock(d.generated_at)} · every ${d.interval_seconds} s`;
  }

  async function tick() {
    timer = 0;
    if (paused) return;
    try {
      const res = await fetch('/dashboard/data', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
      if (res.status === 401) {
        status.textContent = 'Signed out: reloading the sign-in form.';
        window.location.assign('/dashboard');
        return;
      }
      if (!res.ok) throw new Error('HTTP ' + res.status);
      render(await res.json());
    } catch (err) {
      status.classList.add('stale');
      status.textContent = `No fresh data (${err.message}); retrying.`;
    }
    if (!paused) timer = window.setTimeout(tick, interval);
  }

  pauseButton.addEventListener('click', () => {
    paused = !paused;
    pauseButton.setAttribute('aria-pressed', String(paused));
    pauseButton.textContent = paused ? 'Resume updates' : 'Pause updates';
    if (paused) {
      window.clearTimeout(timer);
      timer = 0;
      status.textContent = 'Paused: the figures below are not updating.';
    } else if (!timer) {
      tick();
    }
  });
  tick();
}());
