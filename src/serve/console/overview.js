// The stacks overview: per stack, which side is live and what it runs, what the test side runs,
// the production and test URLs, and the current execution. Live from GET /api/v1/stream.

import * as api from './api.js';
import { h, fill } from './dom.js';
import { pill, sideBadge, service, otherSide, shortSha, listenerUrl, when, runtimeWarning, STAGES } from './format.js';

function sideRow(status, label, identifier, port) {
  const svc = service(status, identifier);
  const version = svc && svc.version;
  const commit = version ? (status.commits || {})[version] : null;
  return h('div', { class: 'side-row', dataset: { listener: label.toLowerCase() } },
    h('span', { class: 'side-row-label' }, label),
    h('div', { class: 'side-row-body' },
      h('div', { class: 'side-row-line' },
        sideBadge(identifier),
        version ? h('code', { class: 'version' }, version) : h('span', { class: 'muted' }, 'no version yet'),
        commit ? h('span', { class: 'commit-message', title: commit.commit }, commit.commit_message || shortSha(commit.commit)) : null),
      h('a', { class: 'url', href: listenerUrl(port), target: '_blank', rel: 'noopener noreferrer' }, listenerUrl(port))));
}

function stageDots(e) {
  return h('ol', { class: 'mini-stages', 'aria-label': 'stages' },
    STAGES.map((name) => {
      const st = e.stages?.[name]?.status || '';
      return h('li', { class: ['mini-stage', `st-${st || 'none'}`], title: `${name}: ${st || 'not started'}` });
    }));
}

function stackCard(status) {
  const live = status.live;
  const prod = status.listeners.find((l) => l.name === 'production');
  const test = status.listeners.find((l) => l.name === 'test');
  const e = status.execution;
  return h('a', { class: 'card stack-card', href: `#/stacks/${status.name}`, dataset: { stack: status.name } },
    h('div', { class: 'stack-card-head' },
      h('h2', {}, status.name),
      h('span', { class: 'live-side' }, 'live: ', sideBadge(live))),
    runtimeWarning(status),
    sideRow(status, 'Production', live, prod.port),
    sideRow(status, 'Test', otherSide(live), test.port),
    h('div', { class: 'stack-card-exec' },
      e ? [
        h('span', { class: 'exec-id' }, `#${e.id}`),
        pill(e.status),
        h('span', { class: 'muted' }, e.status === 'InProgress' ? e.stage : ''),
        stageDots(e),
        h('span', { class: 'muted right' }, when(e.updated_at)),
      ] : h('span', { class: 'muted' }, 'No executions yet')));
}

export function overviewView(ctx) {
  const abort = new AbortController();
  ctx.setCrumbs(h('a', { href: '#/' }, 'Stacks'));
  const grid = h('div', { class: 'stack-grid', id: 'stacks' });
  const empty = h('div', { class: 'empty card', hidden: true },
    h('h2', {}, 'No stacks yet'),
    h('p', {}, 'Create one from a stack file: ', h('code', {}, 'bluegreen up -f stack.yaml')));
  fill(ctx.main, h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Stacks')), empty, grid));

  const render = (stacks) => {
    empty.hidden = stacks.length > 0;
    fill(grid, stacks.map(stackCard));
  };
  api.stream('/api/v1/stream', {
    signal: abort.signal,
    onState: (state, err) => {
      ctx.setLive(state);
      if (state === 'failed') ctx.showError(err, 'live updates');
    },
    onEvent: (name, data) => {
      if (name === 'stacks') render(data.stacks || []);
    },
  });
  return { stop: () => abort.abort() };
}
