// A native EventSource in headless Chromium resumes a history channel after losing its
// connection, through the browser's own retry with `Last-Event-ID`. Run by
// tests/clients/browser.rs as
//
//   node browser-history.test.mjs PARAMS_JSON
//
// with `origin` (the gateway's http://127.0.0.1:PORT, which also serves the test page)
// and `secret` (its HMAC secret). The page opens one EventSource on /connection/uni_sse
// with a connect request subscribing to `history:feed` (the `history` namespace keeps
// history). The Rust side stops the gateway, publishes while it is down, and serves it
// again on the same port; the browser reconnects by itself, sending the id of the last
// event it saw, and the page must then hold every publication exactly once, in order.

import { chromium } from 'playwright-core';

import { assert, assertJson, control, fail, hs256, launchChromium, nowSeconds, run, step } from './lib.mjs';

const params = JSON.parse(process.argv[2] ?? '{}');
const channel = 'history:feed';

async function main() {
  const browser = await launchChromium(chromium);
  try {
    await scenario(browser);
  } finally {
    await browser.close();
  }
}

/** Waits in the page for `predicate(window.pushes)`, failing with what arrived. */
async function waitPushes(page, what, predicate, timeout = 20000) {
  await page
    .waitForFunction(predicate, null, { timeout, polling: 50 })
    .catch(async (e) =>
      fail(`${what} (${e}); pushes ${JSON.stringify(await page.evaluate(() => window.pushes))}, errors ${await page.evaluate(() => window.sseErrors)}`),
    );
}

async function scenario(browser) {
  const page = await browser.newPage();
  page.on('pageerror', (error) => fail(`page error: ${error}`));
  await page.goto(`${params.origin}/__client_test__/index.html`, { timeout: 15000 });
  const token = hs256(params.secret, { sub: 'sse-history', exp: nowSeconds() + 300 });
  await page.evaluate(
    ({ token, channel }) => {
      window.pushes = [];
      window.ids = [];
      window.sseErrors = 0;
      const url = new URL('/connection/uni_sse', location.origin);
      url.searchParams.append('cf_connect', JSON.stringify({ token, subs: { [channel]: {} } }));
      const source = new EventSource(url);
      source.onmessage = (event) => {
        const push = JSON.parse(event.data);
        if (push && Object.keys(push).length > 0) {
          window.pushes.push(push);
          window.ids.push(event.lastEventId);
        }
      };
      source.onerror = () => {
        window.sseErrors += 1;
      };
      window.source = source;
    },
    { token, channel },
  );
  await waitPushes(page, 'no connect push', () => window.pushes.some((p) => p.connect));
  const connect = await page.evaluate(() => window.pushes.find((p) => p.connect).connect);
  assert(connect.subs && connect.subs[channel] && connect.subs[channel].recoverable, `not recoverable: ${JSON.stringify(connect)}`);
  step('EventSource connected, subscribed to history:feed');

  await control({ do: 'publish-history', channel, from: 1, count: 3 });
  await waitPushes(page, 'the first three', () => window.pushes.filter((p) => p.pub).length >= 3);
  const lastId = await page.evaluate(() => window.ids[window.ids.length - 1]);
  assert(lastId && lastId.includes(channel), `publication events carry no position id: ${JSON.stringify(lastId)}`);
  step(`received 1..3, last event id ${lastId}`);

  // The gateway goes away; what is published meanwhile must come back after the retry.
  await control({ do: 'stop-gateway' });
  await waitPushes(page, 'the browser never noticed the lost connection', () => window.sseErrors >= 1);
  await control({ do: 'publish-history', channel, from: 4, count: 50 });
  await control({ do: 'start-gateway' });
  step('gateway stopped, 50 published, gateway served again on the same port');
  await waitPushes(page, 'no second connect push', () => window.pushes.filter((p) => p.connect).length >= 2);
  const again = await page.evaluate(() => window.pushes.filter((p) => p.connect)[1].connect);
  assert(again.subs && again.subs[channel] && again.subs[channel].recovered === true, `the browser's retry did not recover: ${JSON.stringify(again)}`);
  await waitPushes(page, 'the missed 50', () => window.pushes.filter((p) => p.pub).length >= 53);
  await control({ do: 'publish-history', channel, from: 54, count: 1 });
  await waitPushes(page, 'the live one after', () => window.pushes.some((p) => p.pub && p.pub.data && p.pub.data.n === 54));

  const pubs = await page.evaluate(() => window.pushes.filter((p) => p.pub).map((p) => [p.pub.data.n, p.pub.offset]));
  const expected = Array.from({ length: 54 }, (_, i) => [i + 1, i + 1]);
  assertJson(pubs, expected, 'publications (n, offset) across the lost connection');
  step('the browser retry with Last-Event-ID recovered 4..53 once, in order, then live 54');
  await page.evaluate(() => window.source.close());
}

run(main);
