// Drives the dashboard in Debian's headless Chromium through playwright-core.
//
//   node dashboard.test.mjs <dashboard-url> <artifact-dir>
//
// Run by tests/it/browser.rs, which starts a private Redis and the dashboard first. Prints one
// "ok - ..." line per step; on failure prints the error, saves failure.png and exits 1.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [url, artifacts] = process.argv.slice(2);
if (!url || !artifacts) {
  console.error('usage: node dashboard.test.mjs <dashboard-url> <artifact-dir>');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Generous: a first paint in a cold Chromium on a loaded 2-core machine can take seconds.
const STEP_TIMEOUT = 15000;
const XSS_IMG = '<img src=x onerror=alert(1)>';
const XSS_SCRIPT = '<script>window.__xss=1</script>';

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
});

let page;
const problems = [];

// Requests to tests/it/browser.rs go out on stdout as `control: <request>`; its answers come
// back one line each on stdin.
const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function control(request) {
  console.log(`control: ${request}`);
  const { value, done } = await answers.next();
  if (done) throw new Error(`no answer to control request ${request}`);
  return value;
}

function step(name) {
  console.log(`ok - ${name}`);
}

/** Watches a page for anything that must never happen: dialogs, script errors, CSP hits. */
function watch(p) {
  p.on('dialog', async (dialog) => {
    problems.push(`dialog fired: ${dialog.type()} ${JSON.stringify(dialog.message())}`);
    await dialog.dismiss().catch(() => {});
  });
  p.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  p.on('console', (msg) => {
    if (msg.type() === 'error' && !/Failed to load resource|net::ERR_FAILED/.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
}

const card = (name) => page.locator('.card').filter({
  has: page.locator('.card-title', { hasText: new RegExp(`^${escapeRegExp(name)}$`) }),
});

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function publish(channel, message, count = 1, command = 'PUBLISH') {
  const form = page.locator('#publish-form');
  await form.locator('.segmented label', { hasText: new RegExp(`^${command}$`) }).click();
  await form.locator('input[name="channel"]').fill(channel);
  await form.locator('textarea[name="message"]').fill(message);
  await form.locator('input[name="count"]').fill(String(count));
  await page.locator('#publish-result').evaluate((el) => { el.textContent = ''; });
  await form.locator('button[type="submit"]').click();
  await page.locator('#publish-result', { hasText: `to ${channel}:` }).waitFor({ timeout: STEP_TIMEOUT });
}

async function subscribe(name, kind, targets) {
  const form = page.locator('#subscribe-form');
  await form.locator('input[name="name"]').fill(name);
  const label = { channel: 'Channel', pattern: 'Pattern', shard: 'Shard' }[kind];
  await form.locator('.segmented label', { hasText: label }).click();
  await form.locator('input[name="target"]').fill(targets);
  await form.locator('button[type="submit"]').click();
  await card(name).waitFor({ timeout: STEP_TIMEOUT });
}

async function messageIn(name, text) {
  const item = card(name).locator('.msg', { hasText: text }).first();
  await item.waitFor({ timeout: STEP_TIMEOUT });
  return item;
}

try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  page = await context.newPage();
  watch(page);

  // -- the page loads, gets the seeded state and the live stream --------------------------
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  for (const name of ['orders-listener', 'billing-listener', 'all-notifications']) {
    await card(name).waitFor({ timeout: STEP_TIMEOUT });
  }
  await page.locator('#link-status', { hasText: 'live' }).waitFor({ timeout: STEP_TIMEOUT });
  assert.equal(await page.locator('.card').count(), 3);
  assert.equal(await card('all-notifications').locator('.chip-pattern').textContent(), 'notifications:*');
  assert.equal(await card('orders-listener').locator('.badge').textContent(), 'live');
  assert.equal(await page.locator('#redis-banner').isVisible(), false);
  assert.equal(await page.locator('#numpat').textContent(), '1');
  step('page loads with the three seeded subscribers, live push and the PUBSUB view');

  // -- publish through the form; the card updates without a reload -----------------------
  await page.evaluate(() => { window.__sameDocument = true; });
  await publish('orders:new', 'hello from the browser', 2);
  // Both messages first: the page may well show the first one alone for a moment.
  await page.waitForFunction(
    () => document.querySelectorAll('.card[data-name="orders-listener"] .msg').length === 2,
    null, { timeout: STEP_TIMEOUT });
  const first = await messageIn('orders-listener', 'hello from the browser');
  assert.match(await first.textContent(), /2\/2/, 'the newest message is listed first');
  assert.equal(await card('orders-listener').locator('.counter-value').first().textContent(), '2');
  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload happened');
  step('publish through the form shows up in the orders-listener card without a reload');

  // -- a late form answer does not paint over what the stream showed ------------------------
  // The answer to POST /publish is held until the stream has put the message on the page,
  // and then given a document from before the publish: the page must keep the newer one.
  const older = await (await page.request.get(new URL('/state', url).href)).json();
  await page.route('**/publish', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    try {
      await card('orders-listener').locator('.msg', { hasText: 'pushed before the answer' })
        .first().waitFor({ timeout: STEP_TIMEOUT });
    } catch (err) {
      problems.push(`the stream did not show the message before the held answer: ${err.message}`);
    }
    await route.fulfill({ response, json: { ...body, state: older } });
  });
  await publish('orders:new', 'pushed before the answer');
  await page.unroute('**/publish');
  assert.equal(
    await card('orders-listener').locator('.msg', { hasText: 'pushed before the answer' }).count(), 1,
    'the older document in the late answer did not replace the newer one on screen');
  assert.equal(await card('orders-listener').locator('.counter-value').first().textContent(), '3');
  step('a form answer older than what the stream showed does not paint over it');

  // -- a pattern subscriber, and the "via pattern" marker ----------------------------------
  await subscribe('browser-pattern', 'pattern', 'orders:*, audit:*');
  const chips = await card('browser-pattern').locator('.chip-pattern').allTextContents();
  assert.deepEqual(chips, ['orders:*', 'audit:*']);
  await page.locator('#numpat', { hasText: '3' }).waitFor({ timeout: STEP_TIMEOUT });
  await publish('orders:new', 'seen twice');
  const via = await messageIn('browser-pattern', 'seen twice');
  assert.match(await via.textContent(), /via pattern orders:\*/);
  const exact = await messageIn('orders-listener', 'seen twice');
  assert.doesNotMatch(await exact.textContent(), /via pattern/);
  step('pattern subscriber added; a message matching exact and pattern shows in both, marked "via pattern"');

  // -- unsubscribe -------------------------------------------------------------------------
  await card('browser-pattern').locator('button', { hasText: 'Unsubscribe' }).click();
  await card('browser-pattern').waitFor({ state: 'detached', timeout: STEP_TIMEOUT });
  await page.locator('#numpat', { hasText: '1' }).waitFor({ timeout: STEP_TIMEOUT });
  step('unsubscribe removes the card and the pattern subscription');

  // -- the mode, a shard subscriber and SPUBLISH ------------------------------------------
  assert.match(await page.locator('#mode-name').textContent(), /^dedicated/);
  assert.match(await page.locator('#mode-explanation').textContent(), /NUMSUB counts/);
  await subscribe('browser-shard', 'shard', 'orders:new');
  assert.equal(await card('browser-shard').locator('.kind').textContent(), 'shard');
  assert.equal(await card('browser-shard').locator('.chip-shard').textContent(), 'orders:new');
  assert.equal(await card('browser-shard').locator('.chip').getAttribute('title'), 'SSUBSCRIBE orders:new');
  assert.equal(await card('orders-listener').locator('.kind').textContent(), 'channel');
  await page.locator('#shard-numsub td', { hasText: 'orders:new' }).waitFor({ timeout: STEP_TIMEOUT });
  const plainBefore = await card('orders-listener').locator('.counter-value').first().textContent();
  await publish('orders:new', 'sharded hello', 1, 'SPUBLISH');
  assert.match(await page.locator('#publish-result').textContent(), /\(SPUBLISH\)/);
  await messageIn('browser-shard', 'sharded hello');
  // SPUBLISH never reaches a plain subscriber: its count is what it was.
  assert.equal(await card('orders-listener').locator('.counter-value').first().textContent(), plainBefore);
  await publish('orders:new', 'plain again');
  await messageIn('orders-listener', 'plain again');
  step('the mode and what NUMSUB counts are shown; a shard subscriber shows its kind and gets SPUBLISH only');

  // -- reset -------------------------------------------------------------------------------
  await subscribe('temporary', 'channel', 'temp:one');
  await page.locator('#reset').click();
  await card('temporary').waitFor({ state: 'detached', timeout: STEP_TIMEOUT });
  await card('orders-listener').locator('.messages-empty').waitFor({ timeout: STEP_TIMEOUT });
  assert.equal(await page.locator('.card').count(), 3);
  assert.equal(await card('orders-listener').locator('.counter-value').first().textContent(), '0');
  step('reset drops extra subscribers, clears messages and reseeds the three defaults');

  // -- errors from the server are shown, not swallowed -------------------------------------
  const subscribeForm = page.locator('#subscribe-form');
  await subscribeForm.locator('input[name="name"]').fill('orders-listener');
  await subscribeForm.locator('input[name="target"]').fill('x');
  await subscribeForm.locator('button[type="submit"]').click();
  await page.locator('#toast', { hasText: 'already exists' }).waitFor({ timeout: STEP_TIMEOUT });
  step('a duplicate name shows the server\'s error message');

  // -- a binary payload (published by the test's Rust side) is shown as hex -----------------
  assert.equal(await control('publish-binary'), 'published');
  const binary = card('orders-listener').locator('.msg', { hasText: 'binary' }).first();
  await binary.waitFor({ timeout: STEP_TIMEOUT });
  assert.equal(await binary.locator('.tag-binary').textContent(), 'binary · 5 B');
  assert.equal(await binary.locator('.payload-text').textContent(), 'ff 00 80 68 69  |...hi|');
  assert.equal(await binary.locator('.payload-raw').textContent(), 'base64 /wCAaGk=');
  step('a binary payload shows its size, a hex and ASCII preview, and the exact base64');

  // -- a representative screenshot ---------------------------------------------------------
  await subscribe('audit-log', 'pattern', 'orders:*, billing:*');
  await publish('orders:new', '{"order_id": 42, "total": 199.0}', 3);
  await publish('billing:invoice', 'Invoice INV-1007 issued to ACME Corp');
  await publish('notifications:billing', 'Payment received for INV-1007');
  await messageIn('all-notifications', 'Payment received');
  await messageIn('audit-log', 'INV-1007 issued');
  await page.locator('#toast').evaluate((el) => { el.hidden = true; });
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(artifacts, 'dashboard.png'), fullPage: true, animations: 'disabled' });
  step(`screenshot saved to ${join(artifacts, 'dashboard.png')}`);

  // -- hostile strings are text --------------------------------------------------------------
  const hostile = `${XSS_SCRIPT}${XSS_IMG}`;
  await subscribe(`xss ${XSS_IMG}`, 'channel', XSS_IMG);
  await publish(XSS_IMG, hostile);
  const shown = await messageIn(`xss ${XSS_IMG}`, XSS_SCRIPT);
  assert.equal(await shown.locator('.msg-channel').textContent(), XSS_IMG);
  assert.equal(await shown.locator('.payload-text').textContent(), hostile);
  assert.equal(await card(`xss ${XSS_IMG}`).locator('.chip').textContent(), XSS_IMG);
  await page.locator('#numsub td', { hasText: XSS_IMG }).first().waitFor({ timeout: STEP_TIMEOUT });
  const injected = await page.evaluate(() => ({
    xss: typeof window.__xss,
    images: document.querySelectorAll('main img, #subscriptions img').length,
    scripts: [...document.scripts].map((s) => s.getAttribute('src')),
  }));
  assert.equal(injected.xss, 'undefined', 'window.__xss was never set');
  assert.equal(injected.images, 0, 'no <img> element was created from data');
  assert.deepEqual(injected.scripts, ['/app.js'], 'no script element was created from data');
  await page.screenshot({ path: join(artifacts, 'dashboard-xss.png'), fullPage: true, animations: 'disabled' });
  step('a channel, a name and a message with <img onerror> and <script> are shown as text; nothing runs');

  // -- without the push stream the page polls -----------------------------------------------
  const polling = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const pollPage = await polling.newPage();
  watch(pollPage);
  await pollPage.route('**/events', (route) => route.abort());
  await pollPage.goto(url, { waitUntil: 'domcontentloaded' });
  await pollPage.locator('#link-status', { hasText: 'polling' }).waitFor({ timeout: STEP_TIMEOUT });
  await page.bringToFront();
  await publish('orders:new', 'delivered by polling');
  await pollPage.locator('.card[data-name="orders-listener"] .msg', { hasText: 'delivered by polling' })
    .first().waitFor({ timeout: STEP_TIMEOUT });
  await polling.close();
  step('with /events blocked the page falls back to polling /state and still updates');

  // -- the push stream drops mid-session: polling, then push again ------------------------
  const dropping = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const dropPage = await dropping.newPage();
  watch(dropPage);
  let eventsBlocked = false;
  let eventsRequests = 0;
  await dropPage.route('**/events', (route) => {
    eventsRequests += 1;
    return eventsBlocked ? route.abort() : route.continue();
  });
  const dropStatus = dropPage.locator('#link-status');
  await dropPage.goto(url, { waitUntil: 'domcontentloaded' });
  await dropPage.locator('#link-status', { hasText: 'live' }).waitFor({ timeout: STEP_TIMEOUT });
  await page.bringToFront();
  await publish('orders:new', 'pushed before the drop');
  await dropPage.locator('.card[data-name="orders-listener"] .msg', { hasText: 'pushed before the drop' })
    .first().waitFor({ timeout: STEP_TIMEOUT });
  // The server goes away under the open stream (tests/it/browser.rs stops serving, which ends
  // every stream, and serves again on the same port); /events stays refused meanwhile.
  eventsBlocked = true;
  assert.equal(await control('restart-server'), 'restarted');
  await dropPage.locator('#link-status', { hasText: 'polling' }).waitFor({ timeout: 3 * STEP_TIMEOUT });
  await publish('orders:new', 'polled after the drop');
  await dropPage.locator('.card[data-name="orders-listener"] .msg', { hasText: 'polled after the drop' })
    .first().waitFor({ timeout: STEP_TIMEOUT });
  assert.equal(await dropStatus.textContent(), 'polling');
  const refused = eventsRequests;
  // Let the stream back: the page reconnects on its own and stops polling.
  eventsBlocked = false;
  await dropPage.locator('#link-status', { hasText: 'live' }).waitFor({ timeout: 3 * STEP_TIMEOUT });
  assert.ok(eventsRequests > refused, 'the page asked for /events again');
  await publish('orders:new', 'pushed after recovery');
  await dropPage.locator('.card[data-name="orders-listener"] .msg', { hasText: 'pushed after recovery' })
    .first().waitFor({ timeout: STEP_TIMEOUT });
  assert.equal(await dropStatus.textContent(), 'live');
  await dropping.close();
  step('when the push stream drops mid-session the page polls, then recovers to push');

  assert.deepEqual(problems, [], 'no dialogs, page errors or console errors');
  step('no dialog, page error or console error at any point');
  await browser.close();
  console.log('browser test passed');
  process.exit(0);
} catch (err) {
  console.error(`not ok - ${err.stack || err}`);
  if (problems.length) console.error(`also seen:\n  ${problems.join('\n  ')}`);
  if (page) {
    await page.screenshot({ path: join(artifacts, 'failure.png'), fullPage: true }).catch(() => {});
    console.error(`failure screenshot: ${join(artifacts, 'failure.png')}`);
  }
  await browser.close().catch(() => {});
  process.exit(1);
}
