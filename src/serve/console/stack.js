// One stack: its two sides, the current execution as stages with live durations, the Review
// panel (approve or reject with a comment), rollback with a confirmation that names the version
// that will go live, the target groups with their targets' health and tags, the traffic chart,
// the build log as it is written, and the history of executions. Live from
// GET /api/v1/stacks/NAME/stream.

import * as api from './api.js';
import { h, fill } from './dom.js';
import { trafficChart } from './chart.js';
import {
  STAGES, pill, sideBadge, sideClass, otherSide, service, shortSha, duration, when, listenerUrl,
  rate, percent, statusText, holdsStack, runtimeWarning,
} from './format.js';

const MAX_SAMPLES = 300;
const STAGE_GLYPH = {
  Succeeded: '✓', Approved: '✓', Failed: '✕', Rejected: '✕', Superseded: '–',
  WaitingForApproval: '!', Waiting: '…', InProgress: '',
};

function commitOf(status, version) {
  return version ? (status.commits || {})[version] || null : null;
}

function versionLine(status, version) {
  if (!version) return h('span', { class: 'muted' }, 'no version yet');
  const c = commitOf(status, version);
  return [h('code', { class: 'version' }, version),
    c ? h('span', { class: 'commit-message', title: c.commit }, c.commit_message || shortSha(c.commit)) : null];
}

export function stackView(ctx, name) {
  const abort = new AbortController();
  const base = `/api/v1/stacks/${encodeURIComponent(name)}`;
  const state = {
    status: null,
    executions: [],
    log: { execution: null, complete: false },
    samples: [],
    intervalMs: 1000,
    busy: false,
  };

  ctx.setCrumbs(h('a', { href: '#/' }, 'Stacks'), h('a', { href: `#/stacks/${name}`, 'aria-current': 'page' }, name));

  // ---- the page's parts; each is filled again when its data changes
  const head = h('div', { class: 'stack-head', id: 'stack-head' });
  const notice = h('div', { class: 'notice', id: 'notice', role: 'status', hidden: true });
  const sides = h('div', { class: 'sides', id: 'sides' });
  const execution = h('section', { class: 'card execution', id: 'execution', 'aria-labelledby': 'execution-title' });

  const comment = h('textarea', {
    id: 'review-comment', name: 'comment', rows: 2, maxlength: 4096,
    placeholder: 'What did you check? (recorded with your decision)',
  });
  const approveButton = h('button', { type: 'button', class: 'button primary', id: 'approve' }, 'Approve and swap');
  const rejectButton = h('button', { type: 'button', class: 'button danger', id: 'reject' }, 'Reject');
  const reviewWhat = h('p', { class: 'review-what' });
  const reviewWho = h('p', { class: 'review-who' });
  const reviewError = h('p', { class: 'form-error', role: 'alert' });
  const review = h('section', { class: 'card review', id: 'review', hidden: true, 'aria-labelledby': 'review-title' },
    h('div', { class: 'card-head' }, h('h2', { id: 'review-title' }, 'Review'), pill('WaitingForApproval')),
    reviewWhat, reviewWho,
    h('label', { for: 'review-comment' }, 'Comment'),
    comment,
    h('div', { class: 'actions' }, approveButton, rejectButton),
    reviewError);

  const trafficStats = h('div', { class: 'traffic-stats', id: 'traffic-stats' });
  const chartBox = h('div', { class: 'chart-box', id: 'traffic-chart' });
  const traffic = h('section', { class: 'card traffic', id: 'traffic', 'aria-labelledby': 'traffic-title' },
    h('div', { class: 'card-head' }, h('h2', { id: 'traffic-title' }, 'Traffic'),
      h('span', { class: 'legend' },
        h('span', { class: 'key solid' }), 'production ',
        h('span', { class: 'key dashed' }), 'test ',
        h('span', { class: 'swatch c-blue' }), 'Code1 ',
        h('span', { class: 'swatch c-green' }), 'Code2')),
    trafficStats, chartBox);
  const groups = h('section', { class: 'card groups', id: 'target-groups', 'aria-labelledby': 'groups-title' });
  const logState = h('span', { class: 'log-state' });
  const logTitle = h('span', {}, 'Build log');
  const logText = h('pre', { class: 'log', id: 'log-text', tabindex: 0 });
  const log = h('details', { class: 'card log-card', id: 'log', open: true },
    h('summary', {}, h('h2', {}, logTitle), logState), logText);
  const history = h('section', { class: 'card history', id: 'history', 'aria-labelledby': 'history-title' });

  fill(ctx.main, h('section', { class: 'page stack-page', dataset: { stack: name } },
    head, notice, sides, review, execution,
    h('div', { class: 'two-col' }, traffic, groups),
    log, history));

  function say(text, tone = 'ok') {
    notice.hidden = false;
    notice.dataset.tone = tone;
    fill(notice, text);
  }

  // ---- rendering

  // What a rollback would make live, or why there is none: the version production ran before the
  // last swap, which must still run on the test side (the server checks the same).
  function rollbackPlan() {
    const st = state.status;
    const testSvc = service(st, otherSide(st.live));
    const who = ctx.me();
    const holding = holdsStack(st.execution) ? st.execution : state.executions.find(holdsStack);
    const lastSwap = state.executions.find((e) => e.status === 'Succeeded' && e.stages?.Swap);
    if (!who.can.approve) return { why: `Rolling back needs the approver or admin role; you are ${who.role}.` };
    if (holding) return { why: `Execution #${holding.id} is in ${holding.stage}; roll back when it has ended.` };
    if (!lastSwap) return { why: 'Nothing to roll back to: no swap has happened yet.' };
    if (testSvc?.version !== lastSwap.from_version) {
      return {
        why: `The test side runs ${testSvc?.version || 'nothing'}, not ${lastSwap.from_version}, which production ran before the last swap: rolling back would make an unapproved version live.`,
      };
    }
    if (testSvc.rollout?.state === 'in_progress') return { why: 'A rollout is in progress on the test side.' };
    return { version: lastSwap.from_version };
  }

  function renderHead() {
    const st = state.status;
    const prodSvc = service(st, st.live);
    const testSvc = service(st, otherSide(st.live));
    const plan = rollbackPlan();
    const button = h('button', {
      type: 'button', class: 'button', id: 'rollback', disabled: !!plan.why || state.busy,
      'aria-describedby': plan.why ? 'rollback-why' : undefined, onclick: () => rollback(prodSvc, testSvc),
    }, plan.version ? `Roll back to ${plan.version}…` : 'Roll back…');
    fill(head,
      h('div', { class: 'stack-title' },
        h('h1', {}, st.name),
        h('span', { class: 'live-side' }, 'live: ', sideBadge(st.live)),
        h('span', { class: 'muted' }, `${st.runtime} runtime`)),
      h('div', { class: 'head-actions' }, button,
        plan.why ? h('p', { class: 'why', id: 'rollback-why' }, plan.why) : null),
      runtimeWarning(st));
  }

  function sideCard(label, identifier, listener) {
    const st = state.status;
    const svc = service(st, identifier);
    const rollout = svc?.rollout;
    return h('section', { class: ['card', 'side-card', sideClass(identifier)], id: `side-${label.toLowerCase()}`, dataset: { side: identifier } },
      h('div', { class: 'card-head' },
        h('h2', {}, label),
        sideBadge(identifier),
        h('a', { class: 'url', href: listenerUrl(listener.port), target: '_blank', rel: 'noopener noreferrer' }, listenerUrl(listener.port))),
      h('div', { class: 'side-version' }, versionLine(st, svc?.version)),
      h('div', { class: 'side-meta muted' },
        `${listener.target_group} · ${svc ? `${svc.running_count}/${svc.desired_count} tasks healthy` : 'no service'}`,
        rollout ? h('span', { class: ['rollout', `rollout-${rollout.state}`] },
          rollout.state === 'in_progress' ? ` · deploying ${rollout.version}…` : ` · deploy of ${rollout.version} failed: ${rollout.error}`) : null));
  }

  function renderSides() {
    const st = state.status;
    const prod = st.listeners.find((l) => l.name === 'production');
    const test = st.listeners.find((l) => l.name === 'test');
    fill(sides, sideCard('Production', st.live, prod), sideCard('Test', otherSide(st.live), test));
  }

  function stageItem(e, stage) {
    const info = e.stages?.[stage];
    const st = info?.status || '';
    let time = '';
    if (info?.duration_ms !== undefined) time = duration(info.duration_ms);
    else if (info?.started_at) time = duration(Date.now() - info.started_at);
    return h('li', { class: ['stage', `st-${st || 'none'}`], dataset: { stage, status: st } },
      h('span', { class: 'stage-icon', 'aria-hidden': 'true' }, STAGE_GLYPH[st] ?? ''),
      h('span', { class: 'stage-text' },
        h('span', { class: 'stage-name' }, stage),
        h('span', { class: 'stage-status' }, st ? statusText(st) : 'Not started'),
        h('span', { class: 'stage-time' }, time)));
  }

  function renderExecution() {
    const e = state.status.execution;
    if (!e) {
      fill(execution, h('div', { class: 'card-head' }, h('h2', { id: 'execution-title' }, 'Pipeline')),
        h('p', { class: 'muted' }, 'No execution yet: push a commit to the stack\'s branch, or run ',
          h('code', {}, `bluegreen release ${name}`), '.'));
      return;
    }
    const stages = e.kind === 'rollback' ? ['Swap'] : STAGES;
    const total = (['InProgress', 'WaitingForApproval'].includes(e.status) ? Date.now() : e.updated_at) - e.created_at;
    fill(execution,
      h('div', { class: 'card-head' },
        h('h2', { id: 'execution-title' }, `Execution #${e.id}`),
        pill(e.status),
        h('span', { class: 'muted' }, `${e.trigger === e.kind ? e.kind : `${e.kind} · ${e.trigger}`} · started `, when(e.created_at), ` · ${duration(total)}`)),
      e.commit ? h('p', { class: 'exec-commit' },
        h('code', { class: 'sha' }, shortSha(e.commit)), ' ',
        h('span', { class: 'commit-message' }, e.commit_message), e.author ? h('span', { class: 'muted' }, ` — ${e.author}`) : null,
        e.version ? [' ', h('code', { class: 'version' }, e.version)] : null) : null,
      h('ol', { class: 'stages', 'aria-label': 'stages' }, stages.map((s) => stageItem(e, s))),
      e.reason ? h('p', { class: ['exec-reason', `tone-${e.status}`] }, e.reason) : null);
  }

  function renderReview() {
    const st = state.status;
    const e = st.execution;
    const waiting = e && e.status === 'WaitingForApproval';
    review.hidden = !waiting;
    if (!waiting) return;
    const test = st.listeners.find((l) => l.name === 'test');
    const c = commitOf(st, e.version);
    fill(reviewWhat, `Execution #${e.id} — `, h('code', { class: 'version' }, e.version),
      ` (${e.commit_message || (c && c.commit_message) || shortSha(e.commit)}) is on the test listener: `,
      h('a', { href: listenerUrl(test.port), target: '_blank', rel: 'noopener noreferrer' }, listenerUrl(test.port)),
      '. Approve to swap it onto production, or reject it.');
    const who = ctx.me();
    const can = who.can.approve;
    fill(reviewWho, can
      ? [`You are signed in as `, h('strong', {}, who.name), ` (${who.role}) and may approve or reject.`]
      : [`You are signed in as `, h('strong', {}, who.name), ` (${who.role}): approving or rejecting needs the approver or admin role.`]);
    reviewWho.classList.toggle('denied', !can);
    approveButton.disabled = !can || state.busy;
    rejectButton.disabled = !can || state.busy;
    comment.disabled = !can || state.busy;
  }

  function healthPill(health) {
    const tone = { healthy: 'ok', unhealthy: 'bad', draining: 'pending', initial: 'muted' }[health] || 'muted';
    return h('span', { class: ['pill', `tone-${tone}`] }, h('span', { class: 'dot', 'aria-hidden': 'true' }), health);
  }

  function renderGroups() {
    const st = state.status;
    const behind = Object.fromEntries(st.listeners.map((l) => [l.target_group, l.name]));
    fill(groups,
      h('div', { class: 'card-head' }, h('h2', { id: 'groups-title' }, 'Target groups')),
      st.target_groups.map((g) => h('div', { class: ['group', sideClass(g.tags?.Identifier)], dataset: { group: g.name } },
        h('div', { class: 'group-head' },
          h('strong', {}, g.name),
          h('span', { class: 'muted' }, behind[g.name] ? `behind the ${behind[g.name]} listener` : '')),
        h('ul', { class: 'tags', 'aria-label': 'tags' },
          Object.entries(g.tags || {}).map(([k, v]) => h('li', { class: 'tag' }, h('span', { class: 'tag-key' }, k), h('span', { class: 'tag-value' }, v || '—')))),
        g.targets.length
          ? h('ul', { class: 'targets' }, g.targets.map((t) => h('li', {}, h('code', {}, t.address), healthPill(t.health))))
          : h('p', { class: 'muted small' }, 'No targets'))));
  }

  function renderTraffic() {
    const last = state.samples[state.samples.length - 1];
    const stat = (label, x) => h('div', { class: 'stat' },
      h('span', { class: 'stat-label' }, label, ' ', x ? sideBadge(x.identifier) : null),
      h('span', { class: 'stat-value' }, x ? rate(x.rps) : '–', h('small', {}, ' req/s')),
      h('span', { class: ['stat-errors', x && x.error_rate > 0 ? 'has-errors' : ''] }, x ? `${percent(x.error_rate)} 5xx` : ''));
    fill(trafficStats, stat('Production', last?.production), stat('Test', last?.test));
    const width = chartBox.clientWidth || 600;
    fill(chartBox, state.samples.length
      ? trafficChart(state.samples, width, state.intervalMs)
      : h('p', { class: 'muted chart-empty' }, 'Waiting for the first samples from the proxy…'));
  }

  function reviewer(e) {
    if (!e.approved_by) return h('span', { class: 'muted' }, '—');
    const verb = e.status === 'Rejected' ? 'rejected' : e.kind === 'rollback' ? 'rolled back' : 'approved';
    const at = e.kind === 'rollback' ? e.created_at : e.stages?.Review?.ended_at;
    return [h('strong', {}, e.approved_by), ` ${verb}`, at ? h('div', { class: 'muted small' }, when(at)) : null];
  }

  function renderHistory() {
    const rows = state.executions.map((e) => {
      const end = ['InProgress', 'WaitingForApproval'].includes(e.status) ? Date.now() : e.updated_at;
      return h('tr', { dataset: { execution: e.id, status: e.status } },
        h('td', { 'data-label': '#' }, `#${e.id}`),
        h('td', { 'data-label': 'Change', class: 'change' },
          e.kind === 'rollback'
            ? h('span', {}, `Rollback to `, h('code', { class: 'version' }, e.version || '?'))
            : [h('code', { class: 'sha' }, shortSha(e.commit)), ' ', h('span', { class: 'commit-message' }, e.commit_message)],
          e.kind !== 'rollback' && e.version ? h('div', {}, h('code', { class: 'version' }, e.version)) : null),
        h('td', { 'data-label': 'Status' }, pill(e.status), e.status === 'InProgress' ? h('span', { class: 'muted' }, ` ${e.stage}`) : null),
        h('td', { 'data-label': 'Reviewed by', class: 'reviewer' }, reviewer(e)),
        h('td', { 'data-label': 'Comment', class: 'comment' }, e.comment ? h('q', {}, e.comment) : h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': 'Started' }, when(e.created_at)),
        h('td', { 'data-label': 'Duration' }, duration(end - e.created_at)),
        h('td', { 'data-label': 'Reason', class: 'reason muted' }, e.reason || ''));
    });
    fill(history,
      h('div', { class: 'card-head' }, h('h2', { id: 'history-title' }, 'History'),
        h('span', { class: 'muted' }, `${state.executions.length} execution${state.executions.length === 1 ? '' : 's'}`)),
      rows.length
        ? h('div', { class: 'table-wrap' }, h('table', { class: 'history-table' },
          h('thead', {}, h('tr', {}, ['#', 'Change', 'Status', 'Reviewed by', 'Comment', 'Started', 'Duration', 'Reason'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rows)))
        : h('p', { class: 'muted' }, 'No executions yet.'));
  }

  function renderAll() {
    if (!state.status) return;
    renderHead();
    renderSides();
    renderExecution();
    renderReview();
    renderGroups();
  }

  // ---- the build log

  function onLog(data) {
    if (data.reset || data.execution !== state.log.execution) {
      state.log.execution = data.execution;
      logText.textContent = data.truncated ? '… (the start of the log is not shown)\n' : '';
      logTitle.textContent = `Build log · execution #${data.execution}`;
    }
    const atBottom = logText.scrollTop + logText.clientHeight >= logText.scrollHeight - 8;
    if (data.text) logText.append(data.text);
    if (atBottom) logText.scrollTop = logText.scrollHeight;
    state.log.complete = data.complete;
    logState.dataset.state = data.complete ? 'done' : 'streaming';
    logState.textContent = data.complete ? 'complete' : 'streaming…';
    if (!logText.textContent && data.complete) {
      const rollback = state.executions.find((e) => e.id === data.execution)?.kind === 'rollback' ||
        state.status?.execution?.kind === 'rollback';
      logText.textContent = rollback ? '(a rollback is only a swap: it has no build)\n' : '(no output)\n';
    }
  }

  // ---- actions

  async function act(action, body, done) {
    state.busy = true;
    renderAll();
    reviewError.replaceChildren();
    try {
      const answer = await api.post(`${base}/${action}`, body, { signal: abort.signal });
      done(answer && answer.execution);
    } catch (err) {
      if (err.name === 'AbortError') return;
      fill(reviewError, h('span', { class: 'banner-code' }, err.code || 'error'), ' ', err.message);
      ctx.showError(err, action);
    } finally {
      state.busy = false;
      if (!abort.signal.aborted) renderAll();
    }
  }

  approveButton.addEventListener('click', () => {
    approveButton.textContent = 'Swapping…';
    act('approve', { comment: comment.value }, (e) => {
      if (!e) return;
      if (e.status === 'Succeeded') {
        comment.value = '';
        say(`Execution #${e.id} approved: production now serves ${e.version}.`);
      } else if (e.status === 'Failed') {
        say(`Execution #${e.id} failed at the swap: ${e.reason}`, 'bad');
      } else {
        say(`Execution #${e.id} approved; the swap is still in progress.`, 'pending');
      }
    }).finally(() => { approveButton.textContent = 'Approve and swap'; });
  });

  rejectButton.addEventListener('click', () => {
    act('reject', { comment: comment.value }, (e) => {
      comment.value = '';
      if (e) say(`Execution #${e.id} rejected: production keeps ${service(state.status, state.status.live)?.version || 'its version'}.`, 'pending');
    });
  });

  async function rollback(prodSvc, testSvc) {
    const st = state.status;
    const from = commitOf(st, prodSvc?.version);
    const to = commitOf(st, testSvc.version);
    const why = h('input', { id: 'rollback-comment', type: 'text', maxlength: 4096, placeholder: 'Why? (optional)' });
    const body = h('div', {},
      h('p', {}, 'Production will switch from ',
        h('code', { class: 'version' }, prodSvc?.version || '?'), from ? ` (${from.commit_message})` : '', ' on ', sideBadge(st.live),
        ' to ', h('strong', {}, h('code', { class: 'version', id: 'rollback-target' }, testSvc.version)),
        to ? ` (${to.commit_message})` : '', ' on ', sideBadge(testSvc.identifier), '.'),
      h('p', { class: 'muted' }, `${prodSvc?.version || 'The current version'} keeps running behind the test listener, so you can swap forward again.`),
      h('label', { for: 'rollback-comment' }, 'Comment'), why);
    const ok = await ctx.confirmDialog({
      title: `Roll back ${st.name}?`, body, confirmLabel: `Roll back to ${testSvc.version}`, tone: 'danger',
    });
    if (!ok) return;
    await act('rollback', { comment: why.value }, (e) => {
      if (e && e.status === 'Succeeded') say(`Rolled back: production now serves ${e.version}.`);
      else if (e) say(`Rollback #${e.id}: ${statusText(e.status)} ${e.reason || ''}`, e.status === 'Failed' ? 'bad' : 'pending');
    });
  }

  // ---- live updates

  api.stream(`${base}/stream`, {
    signal: abort.signal,
    onState: (s, err) => {
      ctx.setLive(s);
      if (s === 'failed') ctx.showError(err, 'live updates');
    },
    onEvent: (event, data) => {
      if (event === 'status') {
        state.status = data;
        renderAll();
      } else if (event === 'executions') {
        state.executions = data.executions || [];
        renderHistory();
        if (state.status) renderHead();
      } else if (event === 'log') {
        onLog(data);
      } else if (event === 'metrics') {
        state.intervalMs = data.interval_ms || 1000;
        const lastT = state.samples.length ? state.samples[state.samples.length - 1].t : 0;
        for (const x of data.samples || []) if (x.t > lastT) state.samples.push(x);
        if (state.samples.length > MAX_SAMPLES) state.samples.splice(0, state.samples.length - MAX_SAMPLES);
        renderTraffic();
      } else if (event === 'error') {
        ctx.showError(new api.ApiError(404, data.error?.code || 'error', data.error?.message || 'the stream ended'));
      }
    },
  });
  renderTraffic();

  // Durations of running stages tick; relative times age.
  const ticker = setInterval(() => {
    const e = state.status?.execution;
    if (e && ['InProgress', 'WaitingForApproval'].includes(e.status)) renderExecution();
  }, 1000);
  const slowTicker = setInterval(renderHistory, 30000);
  // Redrawn for a new width only (the chart's own height never changes the box's width).
  let chartWidth = 0;
  const resize = new ResizeObserver(() => {
    const w = chartBox.clientWidth;
    if (Math.abs(w - chartWidth) < 2) return;
    chartWidth = w;
    requestAnimationFrame(renderTraffic);
  });
  resize.observe(chartBox);

  return {
    stop() {
      abort.abort();
      clearInterval(ticker);
      clearInterval(slowTicker);
      resize.disconnect();
    },
  };
}
