// The web console in a real browser (issue 5): a real `bluegreen serve` on loopback with a temp
// state directory, a real git repository whose commits go through the real pipeline (build,
// deploy on the test side, review, swap in the real proxy, tasks running test_backend), and
// Debian's Chromium, headless, driven by playwright-core. Nothing is mocked.
//
//   node console_test.mjs --bluegreen PATH --backend PATH --screenshots DIR
//
// It signs in (a wrong token first: the API's error is shown), sees the stacks overview, pushes
// a commit and watches its execution reach "Waiting for approval", approves it with a comment,
// sees production switch to the new version (on the page, and from the production listener
// itself) and the history entry with the approver and the comment, then rolls back through the
// confirmation dialog and rejects a third commit. Last, a second stack on a container engine that
// does not answer (serve's engine socket has nothing behind it) shows its warning. Screenshots of each step, laptop (1366x850)
// and phone (390x844), go to DIR. Any error in the page's console fails the test (except the
// HTTP errors a step expects).
// Prints one line per check and closes with "N passed, N failed".

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

// ---------------------------------------------------------------------------------------------
// Arguments and small helpers

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || !process.argv[i + 1]) {
    console.error(`usage: node console_test.mjs --bluegreen PATH --backend PATH --screenshots DIR (missing --${name})`);
    process.exit(2);
  }
  return path.resolve(process.argv[i + 1]);
}

const BLUEGREEN = arg('bluegreen');
const BACKEND = arg('backend');
const SHOTS = arg('screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TEST_TIMEOUT_MS = 240_000;
const STEP_TIMEOUT_MS = 90_000;

let playwright;
try {
  playwright = (await import('playwright-core')).default;
} catch (err) {
  console.error(`playwright-core is not installed: run scripts/install-deps.sh (npm ci in tests/browser): ${err.message}`);
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) {
  console.error(`${CHROMIUM} is missing: run scripts/install-deps.sh (apt-get install chromium)`);
  process.exit(1);
}

const started = Date.now();
let passed = 0;
let failed = 0;
function ok(what) {
  passed++;
  console.log(`ok ${passed + failed} - ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
function fail(what) {
  failed++;
  console.log(`not ok ${passed + failed} - ${what}`);
}
class TestFailure extends Error {
  constructor(message, counted = false) {
    super(message);
    this.counted = counted; // already printed as "not ok"
  }
}
function check(cond, what, detail = '') {
  if (cond) {
    ok(what);
    return;
  }
  fail(`${what}${detail ? `: ${detail}` : ''}`);
  throw new TestFailure(what, true);
}

async function waitFor(what, fn, timeoutMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      if (err instanceof TestFailure) throw err;
      last = err;
    }
    if (Date.now() > deadline) {
      throw new TestFailure(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await sleep(200); // polling: serve offers no notification to a test that is not a browser
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// GET http://127.0.0.1:PORT/ on a fresh connection: the body, or "error: ...".
function fetchBody(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve(res.statusCode === 200 ? body : `status ${res.statusCode}: ${body}`));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve(`error: ${err.message}`));
  });
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...opts });
  if (r.status !== 0) {
    throw new TestFailure(`\`${cmd} ${args.join(' ')}\` failed (${r.status ?? r.signal}): ${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------
// The world: serve, a git repository, the stack

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bg-console-'));
const stateDir = path.join(root, 'state');
const bare = path.join(root, 'repo.git');
const work = path.join(root, 'clone');
fs.mkdirSync(SHOTS, { recursive: true });
for (const f of fs.readdirSync(SHOTS)) if (f.endsWith('.png')) fs.rmSync(path.join(SHOTS, f));

let serve = null;
let serveLog = '';
let apiPort = 0;
let token = '';
let api = '';
const noEngine = path.join(root, 'no-engine.sock');

async function startServe() {
  apiPort = await freePort();
  api = `http://127.0.0.1:${apiPort}`;
  // Container stacks talk to an engine socket that nothing listens on: the last step's stack
  // runs on a container engine that does not answer.
  const env = { ...process.env, BLUEGREEN_CONTAINER_SOCKET: noEngine };
  delete env.DOCKER_HOST;
  serve = spawn(BLUEGREEN, ['serve', '--state-dir', stateDir, '--api', `127.0.0.1:${apiPort}`],
    { stdio: ['ignore', 'pipe', 'pipe'], env });
  serve.stdout.on('data', (d) => { serveLog += d; });
  serve.stderr.on('data', (d) => { serveLog += d; });
  await waitFor('serve to answer', async () => (await fetch(`${api}/api/v1/healthz`)).ok, 20_000);
  token = fs.readFileSync(path.join(stateDir, 'admin.token'), 'utf8').trim();
}

async function apiGet(p) {
  const r = await fetch(`${api}${p}`, { headers: { Authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`GET ${p}: ${r.status} ${await r.text()}`);
  return r.json();
}

function git(args, dir) {
  return run('git', ['-C', dir, '-c', 'user.name=Ann Example', '-c', 'user.email=ann@example.com',
    '-c', 'init.defaultBranch=main', ...args]).trim();
}

// Commits an app answering `colour` and pushes it; returns the commit.
function commitApp(colour, message) {
  const files = {
    'run.sh': `#!/bin/sh\nexec ${BACKEND} --listen 127.0.0.1:$PORT --name "$(cat name.txt)"\n`,
    'name.txt': `${colour}\n`,
    'build.sh': '#!/bin/sh\necho "building $BLUEGREEN_VERSION"\nfor step in compile test package; do echo "  $step: ok"; sleep 0.3; done\n',
  };
  for (const [name, content] of Object.entries(files)) {
    fs.writeFileSync(path.join(work, name), content, { mode: name.endsWith('.sh') ? 0o755 : 0o644 });
  }
  git(['add', '-A'], work);
  git(['commit', '-q', '-m', message], work);
  git(['push', '-q', 'origin', 'HEAD:refs/heads/main'], work);
  return git(['rev-parse', 'HEAD'], work);
}

function stackFile(prodPort, testPort) {
  return [
    'name: app',
    `source: {repo: ${JSON.stringify(bare)}, branch: main, poll_interval: 1s}`,
    'build:',
    '  commands: ["./build.sh"]',
    '  timeout: 2m',
    'service:',
    '  runtime: process',
    '  command: ["./run.sh"]',
    '  desired_count: 2',
    '  health_check: {path: /health, interval: 1s, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2}',
    'load_balancer:',
    `  production: {port: ${prodPort}}`,
    `  test: {port: ${testPort}, allow: [127.0.0.0/8]}`,
    '  deregistration_delay: 2s',
    'approval:',
    '  mode: manual',
    '',
  ].join('\n');
}

function cli(args) {
  return run(BLUEGREEN, args, {
    env: { ...process.env, BLUEGREEN_API: api, BLUEGREEN_TOKEN: token, BLUEGREEN_STATE_DIR: stateDir },
  });
}

async function execution(id) {
  return apiGet(`/api/v1/stacks/app/executions/${id}`).catch(() => null);
}

// Processes of this test still alive (tasks run in the state dir; the proxy names it), by /proc.
function leftovers() {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ');
      let cwd = '';
      try { cwd = fs.readlinkSync(`/proc/${d}/cwd`); } catch { /* gone or not ours */ }
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const zombie = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
      if (!zombie && (cmd.includes(root) || cwd.startsWith(root))) out.push(Number(d));
    } catch { /* the process ended while we looked */ }
  }
  return out;
}

// A steady trickle of requests on the production listener (about 25 a second, bounded), so the
// chart has traffic to show moving at the swap.
function startLoad(port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const totals = { requests: 0, failures: 0, bodies: {} };
  let stop = false;
  const until = Date.now() + 180_000;
  const loop = async () => {
    while (!stop && Date.now() < until) {
      await new Promise((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 5000 }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c) => { body += c; });
          res.on('end', () => {
            totals.requests++;
            if (res.statusCode === 200) totals.bodies[body.trim()] = (totals.bodies[body.trim()] || 0) + 1;
            else totals.failures++;
            resolve();
          });
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', () => { totals.requests++; totals.failures++; resolve(); });
      });
      await sleep(40);
    }
  };
  const done = Promise.all([loop(), loop()]);
  return { totals, stop: async () => { stop = true; await done; agent.destroy(); } };
}

// ---------------------------------------------------------------------------------------------
// The browser

const consoleErrors = [];
const allowedHttpErrors = new Set(); // "STATUS PATH" a step expects the browser to log

function watchPage(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const url = msg.location()?.url || '';
    const status = (msg.text().match(/status of (\d{3})/) || [])[1];
    const p = url.startsWith(api) ? new URL(url).pathname : url;
    // A serve without roles answers 404 to whoami; the console then assumes the admin token.
    if (status && (allowedHttpErrors.has(`${status} ${p}`) || (status === '404' && p === '/api/v1/whoami'))) return;
    consoleErrors.push(`[${label}] console: ${msg.text()} (${url})`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`[${label}] page error: ${err.message}`));
}

// A screenshot of the whole page, or of the screen with `scrollTo` (a locator) at its top.
async function shot(page, name, { fullPage = true, scrollTo = null } = {}) {
  const file = path.join(SHOTS, `${name}.png`);
  if (scrollTo) await scrollTo.evaluate((el) => el.scrollIntoView({ block: 'start' }));
  await page.screenshot({ path: file, fullPage: fullPage && !scrollTo });
  console.log(`# screenshot ${file}`);
}

async function signIn(page) {
  await page.goto(`${api}/`);
  await page.locator('#token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who').waitFor();
}

// ---------------------------------------------------------------------------------------------
// The test

async function main() {
  await startServe();
  ok(`serve answers on ${api}`);

  fs.mkdirSync(bare);
  fs.mkdirSync(work);
  git(['init', '-q', '--bare', '-b', 'main'], bare);
  git(['init', '-q', '-b', 'main'], work);
  git(['remote', 'add', 'origin', bare], work);
  const first = commitApp('blue', 'Make the background blue');

  const prodPort = await freePort();
  const testPort = await freePort();
  const stackPath = path.join(root, 'app.yaml');
  fs.writeFileSync(stackPath, stackFile(prodPort, testPort));
  cli(['up', '-f', stackPath]);
  const e1 = await waitFor('the first execution to succeed', async () => {
    const e = await execution(1);
    if (e && ['Failed', 'Rejected'].includes(e.status)) throw new TestFailure(`execution 1 ${e.status}: ${e.reason}`);
    return e && e.status === 'Succeeded' ? e : null;
  });
  check(e1.commit === first, 'bluegreen up: the first commit runs on both sides');
  await waitFor('production to answer blue', async () => (await fetchBody(prodPort)) === 'blue\n');

  const browser = await playwright.chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  try {
    const laptop = await browser.newContext({ viewport: { width: 1366, height: 850 } });
    const page = await laptop.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    watchPage(page, 'laptop');

    // Sign-in: a wrong token is refused with the API's error, the right one is kept.
    await page.goto(`${api}/`);
    await page.locator('#token').waitFor();
    await shot(page, '01-sign-in', { fullPage: false });
    allowedHttpErrors.add('401 /api/v1/whoami');
    await page.locator('#token').fill('bg_not-the-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#signin-error .banner-code').waitFor();
    const refused = await page.locator('#signin-error').textContent();
    check(/unauthenticated/.test(refused) && /not accepted/.test(refused),
      'a wrong token is refused and the API error code is shown', refused);
    await shot(page, '02-sign-in-refused', { fullPage: false });
    allowedHttpErrors.delete('401 /api/v1/whoami');
    await page.locator('#token').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#who').waitFor();
    const who = await page.locator('#who').textContent();
    check(/admin \(admin\)/.test(who), 'signed in: the session bar says who', who);

    // The overview.
    const card = page.locator('.stack-card[data-stack="app"]');
    await card.waitFor();
    await page.locator('.live-state[data-state="live"]').waitFor();
    const cardText = await card.textContent();
    check(cardText.includes(e1.version) && cardText.includes('Make the background blue') &&
      cardText.includes(`:${prodPort}/`) && cardText.includes(`:${testPort}/`),
    'overview: the stack, its versions, commit message and URLs', cardText);
    await shot(page, '03-overview');

    // A new commit; watch it go through the stages on the stack page.
    await card.click();
    await page.locator('#side-production').waitFor();
    const load = startLoad(prodPort);
    const second = commitApp('green', 'Make the background green');
    const e2 = await waitFor('execution 2 to start', async () => {
      const list = await apiGet('/api/v1/stacks/app/executions');
      return list.executions.find((e) => e.commit === second) || null;
    });
    await page.locator(`.history-table tr[data-execution="${e2.id}"]`).waitFor();
    await page.locator('#execution h2', { hasText: `Execution #${e2.id}` }).waitFor();
    ok(`the new commit's execution #${e2.id} appears without a reload`);
    const building = page.locator('.stage[data-stage="Build"][data-status="InProgress"]');
    // The build takes about a second: catch it in progress when we can (not a check).
    if (await building.waitFor({ timeout: 3000 }).then(() => true, () => false)) await shot(page, '04-building');

    // Waiting for approval: the Review panel.
    const review = page.locator('#review');
    await review.waitFor({ state: 'visible' });
    const waiting = await waitFor('execution 2 to wait for approval', async () => {
      const e = await execution(e2.id);
      return e && e.status === 'WaitingForApproval' ? e : null;
    });
    const reviewText = await review.textContent();
    check(reviewText.includes(waiting.version) && reviewText.includes('Make the background green') &&
      reviewText.includes('may approve'), 'the Review panel shows the version waiting and who may act', reviewText);
    check(await page.locator('.stage[data-stage="Review"][data-status="WaitingForApproval"]').isVisible(),
      'the pipeline shows Review waiting for approval');
    await page.locator('#log-text', { hasText: `building ${waiting.version}` }).waitFor();
    await page.locator('.log-state[data-state="done"]').waitFor();
    ok('the build log streamed into the page');
    await page.locator('.targets li', { hasText: 'healthy' }).first().waitFor();
    check(await fetchBody(testPort) === 'green\n', 'the test listener serves the new version');
    check(await fetchBody(prodPort) === 'blue\n', 'production still serves the old version');
    await waitFor('traffic samples in the chart', async () => (await page.locator('#traffic-chart svg path.series').count()) > 0);
    await shot(page, '05-waiting-for-approval');

    // The phone, at the same moment.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const phonePage = await phone.newPage();
    phonePage.setDefaultTimeout(STEP_TIMEOUT_MS);
    watchPage(phonePage, 'phone');
    await signIn(phonePage);
    await phonePage.locator('.stack-card[data-stack="app"] [data-status="WaitingForApproval"]').waitFor();
    await shot(phonePage, '06-phone-overview', { fullPage: false });
    await phonePage.goto(`${api}/#/stacks/app`);
    await phonePage.locator('#review').waitFor({ state: 'visible' });
    await phonePage.locator('#traffic-chart svg').waitFor();
    await shot(phonePage, '07-phone-waiting-for-approval', { scrollTo: phonePage.locator('#review') });
    const overflow = await phonePage.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, 'phone: nothing is wider than the screen', `${overflow}px too wide`);

    // Approve with a comment.
    const comment = 'Checked the test URL: the background is green.';
    await page.locator('#review-comment').fill(comment);
    await page.getByRole('button', { name: 'Approve and swap' }).click();
    const notice = page.locator('#notice', { hasText: 'approved' });
    await notice.waitFor();
    check((await notice.textContent()).includes(`production now serves ${waiting.version}`),
      'approve answers once the swap is done, and the page says so', await notice.textContent());
    const body = await fetchBody(prodPort);
    check(body === 'green\n', 'the production listener serves the new version', JSON.stringify(body));
    await page.locator('#side-production[data-side="Code2"]').waitFor();
    const prodCard = await page.locator('#side-production').textContent();
    check(prodCard.includes(waiting.version) && prodCard.includes('Make the background green'),
      'the page shows production on Code2 with the new version', prodCard);
    const row = page.locator(`.history-table tr[data-execution="${e2.id}"]`);
    await row.locator('[data-status="Succeeded"]').waitFor();
    const rowText = await row.textContent();
    check(rowText.includes('admin approved') && rowText.includes(comment),
      'the history entry shows who approved and the comment', rowText);
    check(!(await page.locator('#review').isVisible()), 'the Review panel is gone once approved');

    // Traffic moves: the production line turns green (Code2) in the chart.
    await waitFor('the chart to show production on Code2', async () =>
      (await page.locator('#traffic-stats .stat').first().textContent()).includes('Code2'), 20_000);
    await sleep(3000); // a few more samples after the swap, for the screenshot
    ok('the traffic chart shows production traffic on Code2 after the swap');
    await shot(page, '08-approved');
    await page.emulateMedia({ colorScheme: 'dark' });
    await shot(page, '08-approved-dark', { fullPage: false });
    await page.emulateMedia({ colorScheme: 'light' });
    await phonePage.locator('#side-production[data-side="Code2"]').waitFor();
    await phonePage.locator('.history-table tr[data-status="Succeeded"] q', { hasText: comment }).waitFor();
    await shot(phonePage, '09-phone-approved', { fullPage: false });
    await shot(phonePage, '09-phone-approved-traffic', { scrollTo: phonePage.locator('#traffic') });
    await shot(phonePage, '09-phone-approved-history', { scrollTo: phonePage.locator('#history') });

    // Rollback: the confirmation names the version that will go live.
    await page.locator('#rollback:not([disabled])').click();
    const dialog = page.locator('dialog.dialog');
    await dialog.waitFor();
    const target = await dialog.locator('#rollback-target').textContent();
    check(target === e1.version, 'the rollback confirmation names the version that will go live', target);
    await shot(page, '10-rollback-confirmation', { fullPage: false });
    await dialog.locator('#rollback-comment').fill('Rolling back to compare.');
    await dialog.locator('button[data-confirm]').click();
    await page.locator('#notice', { hasText: 'Rolled back' }).waitFor();
    check(await fetchBody(prodPort) === 'blue\n', 'after the rollback production serves the previous version again');
    await page.locator('#side-production[data-side="Code1"]').waitFor();
    await page.locator('.history-table tr', { hasText: 'Rolling back to compare.' }).waitFor();
    ok('the rollback is in the history with its comment');
    await shot(page, '11-rolled-back');

    // A third commit, rejected with a comment: production keeps its version.
    const third = commitApp('red', 'Make the background red');
    const e4 = await waitFor('the red commit to wait for approval', async () => {
      const list = await apiGet('/api/v1/stacks/app/executions');
      const e = list.executions.find((x) => x.commit === third);
      return e && e.status === 'WaitingForApproval' ? e : null;
    });
    await page.locator('#review').waitFor({ state: 'visible' });
    await page.locator('#review-comment').fill('Red is too loud.');
    await page.getByRole('button', { name: 'Reject' }).click();
    await page.locator('#notice', { hasText: 'rejected' }).waitFor();
    const rejected = page.locator(`.history-table tr[data-execution="${e4.id}"]`);
    await rejected.locator('[data-status="Rejected"]').waitFor();
    const rejectedText = await rejected.textContent();
    check(rejectedText.includes('admin rejected') && rejectedText.includes('Red is too loud.'),
      'a rejection is in the history with who and the comment', rejectedText);
    check(await fetchBody(prodPort) === 'blue\n', 'after the rejection production still serves its version');
    await page.locator('#rollback[disabled]').waitFor();
    const why = await page.locator('#rollback-why').textContent();
    check(why.includes(e4.version) && why.includes('unapproved'),
      'rollback is offered no more: the test side runs the rejected version', why);
    await shot(page, '12-rejected');

    // A second stack, on a container engine that does not answer: its overview card and its
    // page say so, with serve's error (which names the socket).
    fs.writeFileSync(path.join(root, 'box.yaml'), [
      'name: box',
      'service:',
      '  runtime: podman',
      '  image: localhost/bluegreen-test/box:v1',
      '  port: 8080',
      `load_balancer: {production: {port: ${await freePort()}}, test: {port: ${await freePort()}}}`,
      '',
    ].join('\n'));
    cli(['up', '-f', path.join(root, 'box.yaml'), '--no-wait']);
    await page.goto(`${api}/#/`);
    const boxWarning = page.locator('.stack-card[data-stack="box"] .runtime-down');
    await boxWarning.waitFor();
    const boxText = await boxWarning.textContent();
    check(boxText.includes('The podman runtime does not answer') && boxText.includes(noEngine),
      'the overview says which stack\'s container engine does not answer, and why', boxText);
    check(await page.locator('.stack-card[data-stack="app"] .runtime-down').count() === 0,
      'a stack on a runtime that answers gets no such warning');
    await shot(page, '13-runtime-down');
    await page.goto(`${api}/#/stacks/box`);
    const pageWarning = page.locator('#stack-head .runtime-down');
    await pageWarning.waitFor();
    check((await pageWarning.textContent()).includes(noEngine),
      'the stack page says that its container engine does not answer');
    await shot(page, '14-runtime-down-stack', { fullPage: false });
    cli(['down', 'box']);

    await load.stop();
    console.log(`# production load during the test: ${JSON.stringify(load.totals)}`);
    await phone.close();
    await laptop.close();
  } finally {
    await browser.close();
  }
  check(consoleErrors.length === 0, 'no errors in the pages\' consoles', consoleErrors.join('\n'));
}

// Stops what the test started; returns false when serve did not stop cleanly.
async function cleanup(ok) {
  let success = ok;
  if (serve && serve.exitCode === null) {
    try {
      cli(['down', 'app']);
    } catch (err) {
      console.log(`# bluegreen down app: ${err.message}`);
    }
    serve.kill('SIGTERM');
    await Promise.race([new Promise((r) => serve.once('exit', r)), sleep(10_000)]);
    if (serve.exitCode === null) serve.kill('SIGKILL');
    // A clean stop is part of the test (under ASan a leak or a late error shows here).
    if (serve.exitCode !== 0) {
      fail(`serve did not stop cleanly on SIGTERM (exit ${serve.exitCode ?? serve.signalCode})`);
      console.log(serveLog.slice(-6000));
      success = false;
    }
  }
  for (let i = 0; i < 50; i++) {
    const pids = leftovers();
    if (!pids.length) break;
    for (const pid of pids) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    await sleep(100); // nothing to wait on for processes we did not fork
  }
  if (success) {
    fs.rmSync(root, { recursive: true, force: true });
  } else {
    console.log(`# kept ${root} for a look`);
  }
  return success;
}

const watchdog = setTimeout(() => {
  fail(`the test ran longer than ${TEST_TIMEOUT_MS / 1000} s`);
  cleanup(false).finally(() => process.exit(1));
}, TEST_TIMEOUT_MS);

let success = false;
try {
  await main();
  success = failed === 0;
} catch (err) {
  if (!(err instanceof TestFailure)) fail(`unexpected error: ${err.stack || err}`);
  else if (!err.counted) fail(err.message);
  console.log('# ----- serve log (tail) -----');
  console.log(serveLog.slice(-6000));
} finally {
  clearTimeout(watchdog);
  success = await cleanup(success);
}
console.log(`# ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(success ? 0 : 1);
