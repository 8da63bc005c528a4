// Words and numbers as the console shows them.

import { h } from './dom.js';

export const STAGES = ['Source', 'Build', 'Deploy', 'Review', 'Swap'];

const STATUS_TEXT = {
  InProgress: 'In progress',
  WaitingForApproval: 'Waiting for approval',
  Waiting: 'Waiting',
  Approved: 'Approved',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  Rejected: 'Rejected',
  Superseded: 'Superseded',
};

const STATUS_TONE = {
  InProgress: 'running',
  Waiting: 'pending',
  WaitingForApproval: 'attention',
  Approved: 'ok',
  Succeeded: 'ok',
  Failed: 'bad',
  Rejected: 'bad',
  Superseded: 'muted',
};

export function statusText(status) {
  return STATUS_TEXT[status] || status || 'Not started';
}

export function statusTone(status) {
  return STATUS_TONE[status] || 'muted';
}

// A coloured label for an execution or stage status.
export function pill(status, extra) {
  return h('span', { class: ['pill', `tone-${statusTone(status)}`], dataset: { status: status || '' } },
    h('span', { class: 'dot', 'aria-hidden': 'true' }), extra ?? statusText(status));
}

// The colour of a side: Code1 is the blue target group, Code2 the green one.
export function sideClass(identifier) {
  return identifier === 'Code1' ? 'side-blue' : identifier === 'Code2' ? 'side-green' : 'side-none';
}

export function sideBadge(identifier, text) {
  return h('span', { class: ['side-badge', sideClass(identifier)] }, text ?? identifier ?? '—');
}

export function otherSide(identifier) {
  return identifier === 'Code1' ? 'Code2' : 'Code1';
}

export function shortSha(sha) {
  return (sha || '').slice(0, 7);
}

export function duration(ms) {
  if (ms === undefined || ms === null || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  if (m < 60) return `${m} min ${String(rest).padStart(2, '0')} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

export function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 10) return 'just now';
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(ms).toLocaleDateString();
}

export function when(ms) {
  if (!ms) return '';
  return h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString() },
    ago(ms));
}

// http://HOST:PORT/ of a listener, as seen from this browser.
export function listenerUrl(port) {
  const host = location.hostname.includes(':') ? `[${location.hostname}]` : location.hostname;
  return `http://${host}:${port}/`;
}

export function rate(rps) {
  if (rps === undefined || rps === null) return '–';
  return rps >= 100 ? rps.toFixed(0) : rps >= 10 ? rps.toFixed(1) : rps.toFixed(2);
}

export function percent(share) {
  if (!share) return '0%';
  const p = share * 100;
  return `${p >= 10 ? p.toFixed(0) : p.toFixed(1)}%`;
}

// The service of a side in a status document.
export function service(status, identifier) {
  return (status.services || []).find((x) => x.identifier === identifier) || null;
}

// Deploy, Review or Swap in progress: the execution that holds the stack.
export function holdsStack(e) {
  if (!e) return false;
  if (e.status === 'WaitingForApproval') return true;
  return e.status === 'InProgress' && ['Deploy', 'Review', 'Swap'].includes(e.stage);
}

// What the console says when a stack's container engine does not answer (the status document's
// runtime_status, serve's last check of it), or null while it answers. `since` is in seconds.
export function runtimeWarning(status) {
  const rs = status.runtime_status;
  if (!rs || rs.reachable !== false) return null;
  return h('p', { class: 'runtime-down', dataset: { runtime: status.runtime } },
    h('strong', {}, `The ${status.runtime} runtime does not answer`),
    rs.since ? [' (since ', when(rs.since * 1000), ')'] : null,
    `: ${rs.error || 'no detail'}. Its tasks are left as they are; no deploy starts until it answers.`);
}
