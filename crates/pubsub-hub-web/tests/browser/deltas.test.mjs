// The page kept current by `/events` deltas equals the page built from a fresh `/state`.
//
//   node deltas.test.mjs <dashboard-url> <artifact-dir>
//
// Run by tests/it/browser.rs, which starts a private Redis and the dashboard first.
// Page A follows the push stream: one `state` event, then at least a hundred `delta`
// events caused by publishes (text, JSON, long, many at once), new and removed
// subscribers. Page B has no EventSource, so it falls back to polling `/state` and renders
// that. Once the hub is idle both pages must show the same thing, and page A must have
// received exactly one whole state (a page that fell out of step reconnects for a new
// one, which would hide a wrong delta).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node deltas.test.mjs <dashboard-url> <artifact-dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const STEP_TIMEOUT = 15000;
const DELTAS = 100;
// What render() fills: every region that shows part of the document.
const REGIONS = ['redis-banner', 'mode', 'numpat', 'active-channels', 'active-channels-cut',
  'numsub', 'shard-channels', 'shard-channels-cut', 'shard-numsub', 'stats',
  'channel-published', 'sub-count', 'subscriptions', 'no-subscribers'];

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});
const problems = [];
let pushedPage;

function step(name) {
  console.log(`ok - ${name}`);
}

function watch(p) {
  p.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  p.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
}

async function post(path, fields) {
  const res = await fetch(new URL(path, url), {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  assert.equal(res.status, 200, `${path} ${JSON.stringify(fields)}: ${await res.text()}`);
}

/** The HTML of every region render() fills, by id. */
function regions(p) {
  return p.evaluate((ids) => Object.fromEntries(ids.map((id) => {
    const node = document.getElementById(id);
    return [id, node ? `${node.hidden}|${node.outerHTML}` : null];
  })), REGIONS);
}

try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });

  // -- page A: counts the push events it gets (listeners run in the order added, so the
  //    count moves just before the page applies the event, in the same task) -------------
  pushedPage = await context.newPage();
  watch(pushedPage);
  await pushedPage.addInitScript(() => {
    window.__events = { state: 0, delta: 0 };
    const Original = window.EventSource;
    window.EventSource = class extends Original {
      constructor(...args) {
        super(...args);
        this.addEventListener('state', () => { window.__events.state += 1; });
        this.addEventListener('delta', () => { window.__events.delta += 1; });
      }
    };
  });
  await pushedPage.goto(url, { waitUntil: 'domcontentloaded' });
  await pushedPage.locator('#link-status', { hasText: 'live' }).waitFor({ timeout: STEP_TIMEOUT });
  await pushedPage.waitForFunction(() => window.__events.state === 1, null, { timeout: STEP_TIMEOUT, polling: 50 });
  step('page A is live on the push stream with one whole state');

  // -- at least a hundred deltas: one change at a time, each waited for --------------------
  const deltas = () => pushedPage.evaluate(() => window.__events.delta);
  const changes = [
    (i) => post('/publish', { channel: 'orders:new', message: `plain text ${i}` }),
    (i) => post('/publish', { channel: 'billing:invoice', message: JSON.stringify({ n: i, items: [i, i + 1] }) }),
    (i) => post('/publish', { channel: 'notifications:mail', message: 'x'.repeat(3000 + i) }),
    (i) => post('/publish', { channel: 'orders:new', message: `burst ${i}`, count: '4' }),
    (i) => post('/subscribe', { name: `extra-${i}`, target: `extra:${i}, orders:*` }),
    (i) => post('/publish', { channel: 'orders:new', message: `after subscribe ${i}` }),
    (i) => post('/unsubscribe', { name: `extra-${i - 10}` }),
    (i) => post('/publish', { channel: `extra:${i - 3}`, message: `to a new one ${i}` }),
  ];
  let i = 0;
  while ((await deltas()) < DELTAS) {
    const before = await deltas();
    // The unsubscribe step removes the subscriber the subscribe step added a round before,
    // so the first round skips it. Every other change moves at least a counter. (Waits
    // poll: the default, animation frames, may not run in a headless tab.)
    if (!(i % changes.length === 6 && i < changes.length)) {
      await changes[i % changes.length](i);
      await pushedPage.waitForFunction((n) => window.__events.delta > n, before, { timeout: STEP_TIMEOUT, polling: 50 });
    }
    i += 1;
  }
  const pushed = await pushedPage.evaluate(() => ({ ...window.__events }));
  assert.ok(pushed.delta >= DELTAS, JSON.stringify(pushed));
  assert.equal(pushed.state, 1, 'page A never fell out of step (it would have asked for a whole state again)');
  step(`${pushed.delta} deltas applied after ${i} changes, still one whole state`);

  // -- page B: no EventSource, so it polls /state and renders that ---------------------------
  const polledPage = await context.newPage();
  watch(polledPage);
  await polledPage.addInitScript(() => { delete window.EventSource; });
  await polledPage.goto(url, { waitUntil: 'domcontentloaded' });
  await polledPage.locator('#link-status', { hasText: 'polling' }).waitFor({ timeout: STEP_TIMEOUT });

  // The hub is idle now: the newest push and the next poll show the same version.
  const deadline = Date.now() + STEP_TIMEOUT;
  let a;
  let b;
  for (;;) {
    [a, b] = [await regions(pushedPage), await regions(polledPage)];
    if (JSON.stringify(a) === JSON.stringify(b)) break;
    if (Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.deepEqual(a, b, 'the page built from deltas equals the page built from /state');
  assert.ok(a.subscriptions.includes('card'), 'the subscribers are shown');
  assert.equal(await pushedPage.evaluate(() => window.__events.state), 1);
  await pushedPage.screenshot({ path: join(artifacts, 'deltas.png'), fullPage: true });
  step('page A (state + deltas) equals page B (fresh /state), region by region');

  assert.deepEqual(problems, [], 'no page errors');
  await browser.close();
  console.log('PASS');
} catch (err) {
  console.error(err);
  if (pushedPage) await pushedPage.screenshot({ path: join(artifacts, 'deltas-failure.png'), fullPage: true }).catch(() => {});
  await browser.close().catch(() => {});
  process.exit(1);
}
