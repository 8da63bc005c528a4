// The traffic chart: requests per second on the production line (solid) and the test line
// (dashed) over the last minutes (one to five, as much as there are samples), each stretch coloured by the target group that served it
// (Code1 blue, Code2 green), so a swap shows as the colours trading places; below, the share of
// 5xx answers of each listener as red marks. Plain SVG, drawn again for every new sample.

import { s } from './dom.js';

const MINUTE = 60 * 1000;
const MAX_SPAN_MS = 5 * MINUTE;
const PLOT_HEIGHT = 170;
const STRIP = 14;

function niceCeil(v) {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * p >= v) return m * p;
  }
  return 10 * p;
}

function colourClass(identifier) {
  return identifier === 'Code1' ? 'c-blue' : identifier === 'Code2' ? 'c-green' : 'c-none';
}

// Runs of consecutive samples served by one group; a gap of several intervals breaks a run.
function runs(points, key, intervalMs) {
  const out = [];
  let current = null;
  for (let i = 0; i < points.length; i++) {
    const p = points[i];
    const id = p[key].identifier || '';
    const gap = i > 0 && p.t - points[i - 1].t > 3 * intervalMs;
    if (!current || gap) {
      current = { identifier: id, points: [p] };
      out.push(current);
    } else if (id !== current.identifier) {
      // The stretch into this sample belongs to the group that served it.
      current = { identifier: id, points: [points[i - 1], p] };
      out.push(current);
    } else {
      current.points.push(p);
    }
  }
  return out;
}

export function trafficChart(samples, width, intervalMs = 1000) {
  const W = Math.max(260, Math.floor(width));
  const pad = { l: 44, r: 10, t: 22, b: 20 };
  const H = PLOT_HEIGHT + 2 * STRIP + 14;
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const have = samples.length ? now - samples[0].t : 0;
  const span = Math.min(MAX_SPAN_MS, Math.max(MINUTE, Math.ceil(have / MINUTE) * MINUTE));
  const t0 = now - span;
  const points = samples.filter((p) => p.t >= t0);
  const maxRps = niceCeil(Math.max(0, ...points.map((p) => Math.max(p.production.rps, p.test.rps))));
  const plotW = W - pad.l - pad.r;
  const x = (t) => pad.l + ((t - t0) / span) * plotW;
  const y = (v) => pad.t + (1 - v / maxRps) * (PLOT_HEIGHT - pad.t - pad.b);

  const last = points[points.length - 1];
  const label = last
    ? `Requests per second over the last ${span / MINUTE} min. Now: production ${last.production.rps}, test ${last.test.rps}.`
    : 'Requests per second: no samples yet.';
  const svg = s('svg', {
    class: 'chart', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': label,
  });

  // Grid and axes.
  for (let i = 0; i <= 4; i++) {
    const v = (maxRps * i) / 4;
    const gy = y(v);
    svg.append(s('line', { class: 'grid', x1: pad.l, x2: W - pad.r, y1: gy, y2: gy }));
    svg.append(s('text', { class: 'axis', x: pad.l - 6, y: gy + 3, 'text-anchor': 'end' },
      Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  svg.append(s('text', { class: 'axis unit', x: pad.l - 6, y: 9, 'text-anchor': 'end' }, 'req/s'));
  const tick = span === MINUTE ? 15000 : MINUTE;
  for (let back = span; back >= 0; back -= tick) {
    const label = back === 0 ? 'now' : back % MINUTE ? `−${back / 1000} s` : `−${back / MINUTE} min`;
    svg.append(s('text', {
      class: 'axis', x: x(now - back), y: PLOT_HEIGHT - 4,
      'text-anchor': back === span ? 'start' : back === 0 ? 'end' : 'middle',
    }, label));
  }

  // Swaps: where the production listener's group changes.
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1].production.identifier;
    const b = points[i].production.identifier;
    if (a && b && a !== b) {
      const sx = x(points[i].t);
      svg.append(s('line', { class: 'swap-mark', x1: sx, x2: sx, y1: pad.t, y2: PLOT_HEIGHT - pad.b }));
      const right = sx > W - pad.r - 40;
      svg.append(s('text', {
        class: 'swap-label', x: right ? sx - 3 : sx + 3, y: pad.t + 9, 'text-anchor': right ? 'end' : 'start',
      }, 'swap'));
    }
  }

  // Lines.
  for (const [key, dashed] of [['test', true], ['production', false]]) {
    for (const run of runs(points, key, intervalMs)) {
      const d = run.points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p[key].rps).toFixed(1)}`).join('');
      svg.append(s('path', { class: ['series', dashed ? 'dashed' : 'solid', colourClass(run.identifier)], d }));
    }
  }
  if (last) {
    for (const key of ['test', 'production']) {
      svg.append(s('circle', {
        class: ['end-dot', colourClass(last[key].identifier)], cx: x(last.t), cy: y(last[key].rps), r: 3,
      }));
    }
  }

  // Error strips.
  const step = Math.max(1.5, (intervalMs / span) * plotW);
  [['production', '5xx prod'], ['test', '5xx test']].forEach(([key, name], row) => {
    const top = PLOT_HEIGHT + 4 + row * STRIP;
    svg.append(s('rect', { class: 'strip', x: pad.l, y: top, width: plotW, height: STRIP - 3, rx: 2 }));
    svg.append(s('text', { class: 'axis', x: pad.l - 6, y: top + 9, 'text-anchor': 'end' }, name));
    for (const p of points) {
      const e = p[key].error_rate;
      if (!(e > 0)) continue;
      svg.append(s('rect', {
        class: 'err', x: x(p.t) - step, y: top, width: step, height: STRIP - 3,
        'fill-opacity': Math.min(1, 0.25 + e * 0.75),
      }));
    }
  });
  return svg;
}
