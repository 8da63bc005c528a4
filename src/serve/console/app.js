// The bluegreen web console: sign-in, hash routing (#/ the stacks, #/stacks/NAME one stack), the
// session bar, error banners and dialogs. The views live in overview.js and stack.js.

import * as api from './api.js';
import { h, fill } from './dom.js';
import { overviewView } from './overview.js';
import { stackView } from './stack.js';

const main = document.getElementById('main');
const crumbs = document.getElementById('crumbs');
const session = document.getElementById('session');
const banners = document.getElementById('banners');
const modalRoot = document.getElementById('modal-root');

let current = null;  // {stop()} of the view on screen
let identity = null; // {name, role, can: {read, approve, admin}, assumed}

// ---- errors

// Shows an API error ({code, message}) in a banner until dismissed or the view changes.
export function showError(err, context) {
  if (err && err.name === 'AbortError') return;
  if (err && err.status === 401) {
    signOut(err);
    return;
  }
  const code = (err && err.code) || 'error';
  const message = (err && err.message) || String(err);
  const banner = h('div', { class: 'banner', dataset: { code } },
    h('span', { class: 'banner-code' }, code),
    h('span', { class: 'banner-text' }, context ? `${context}: ${message}` : message),
    h('button', { class: 'icon-button', type: 'button', 'aria-label': 'Dismiss', onclick: () => banner.remove() }, '×'));
  banners.append(banner);
}

function clearErrors() {
  banners.replaceChildren();
}

// ---- dialogs

// A modal dialog; resolves to true when confirmed. `body` is a node; `confirmLabel` the button.
export function confirmDialog({ title, body, confirmLabel, tone = 'primary' }) {
  return new Promise((resolve) => {
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': 'dialog-title' },
      h('h2', { id: 'dialog-title' }, title),
      h('div', { class: 'dialog-body' }, body),
      h('div', { class: 'dialog-actions' },
        h('button', { type: 'button', class: 'button', onclick: () => close(false) }, 'Cancel'),
        h('button', { type: 'button', class: ['button', tone], 'data-confirm': true, onclick: () => close(true) }, confirmLabel)));
    dialog.addEventListener('cancel', (ev) => {
      ev.preventDefault();
      close(false);
    });
    modalRoot.append(dialog);
    dialog.showModal();
  });
}

// ---- session

export function me() {
  return identity;
}

async function loadIdentity() {
  try {
    const who = await api.get('/api/v1/whoami');
    identity = {
      name: String(who.name || ''),
      role: String(who.role || ''),
      can: { read: !!who.can?.read, approve: !!who.can?.approve, admin: !!who.can?.admin },
      assumed: false,
    };
  } catch (err) {
    if (err.status !== 404) throw err;
    // A serve without roles: every valid token is the admin token. Check that this one is valid.
    await api.get('/api/v1/stacks');
    identity = { name: 'admin', role: 'admin', can: { read: true, approve: true, admin: true }, assumed: true };
  }
}

function renderSession() {
  if (!identity) {
    session.replaceChildren();
    return;
  }
  fill(session,
    h('span', { class: 'live-state', id: 'live-state', dataset: { state: 'idle' } },
      h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span', { class: 'live-text' }, '')),
    h('span', { class: 'who', id: 'who', title: identity.assumed ? 'this serve has one admin token' : '' },
      h('span', { class: 'who-label' }, 'signed in as '),
      h('strong', {}, identity.name), h('span', { class: 'who-role' }, ` (${identity.role})`)),
    h('button', { type: 'button', class: 'button small', onclick: () => signOut() }, 'Sign out'));
}

// The state of the view's live stream, shown in the session bar.
export function setLive(state) {
  const el = document.getElementById('live-state');
  if (!el) return;
  el.dataset.state = state;
  const text = { live: 'Live', connecting: 'Connecting…', reconnecting: 'Reconnecting…', failed: 'Offline', idle: '' }[state] ?? '';
  el.querySelector('.live-text').textContent = text;
}

function signOut(reason) {
  api.clearToken();
  identity = null;
  stopView();
  renderSession();
  renderSignIn(reason);
}

export function setCrumbs(...parts) {
  fill(crumbs, parts.flatMap((p, i) => (i ? [h('span', { class: 'sep', 'aria-hidden': 'true' }, '/'), p] : [p])));
}

// ---- sign-in

function renderSignIn(reason) {
  clearErrors();
  setCrumbs();
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'bg_…', 'aria-describedby': 'token-help',
  });
  const remember = h('input', { id: 'remember', type: 'checkbox' });
  const error = h('p', { class: 'form-error', id: 'signin-error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'button primary wide' }, 'Sign in');
  if (reason) {
    fill(error, h('span', { class: 'banner-code' }, reason.code || 'error'), ' ',
      reason.status === 401 ? 'The token was not accepted. Sign in again.' : reason.message);
  }
  const form = h('form', { class: 'signin card', novalidate: true },
    h('div', { class: 'signin-brand' }, h('img', { src: '/console/icon.svg', alt: '', width: 40, height: 40 })),
    h('h1', {}, 'Sign in to bluegreen'),
    h('label', { for: 'token' }, 'API token'),
    input,
    h('p', { class: 'hint', id: 'token-help' },
      'The admin token is in ', h('code', {}, 'STATE_DIR/admin.token'),
      ' on the machine that runs ', h('code', {}, 'bluegreen serve'), '.'),
    h('label', { class: 'check' }, remember, ' Keep me signed in on this device'),
    error,
    button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) {
      fill(error, 'Enter a token.');
      input.focus();
      return;
    }
    button.disabled = true;
    button.textContent = 'Signing in…';
    api.setToken(token, remember.checked);
    try {
      await loadIdentity();
      renderSession();
      route();
    } catch (err) {
      api.clearToken();
      fill(error, h('span', { class: 'banner-code' }, err.code || 'error'), ' ',
        err.status === 401 ? 'That token was not accepted.' : err.message);
      button.disabled = false;
      button.textContent = 'Sign in';
      input.select();
    }
  });
  fill(main, h('div', { class: 'signin-page' }, form));
  input.focus();
}

// ---- routing

function stopView() {
  if (current) current.stop();
  current = null;
  setLive('idle');
}

function route() {
  stopView();
  clearErrors();
  if (!api.getToken() || !identity) {
    renderSignIn();
    return;
  }
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/stacks\/([a-z0-9-]{1,32})\/?$/);
  const ctx = { main, showError, setCrumbs, setLive, confirmDialog, me };
  current = m ? stackView(ctx, m[1]) : overviewView(ctx);
}

async function start() {
  window.addEventListener('hashchange', route);
  if (!api.getToken()) {
    renderSignIn();
    return;
  }
  try {
    await loadIdentity();
    renderSession();
    route();
  } catch (err) {
    if (err.status === 401) {
      signOut(err);
    } else {
      renderSignIn(err);
    }
  }
}

start();
