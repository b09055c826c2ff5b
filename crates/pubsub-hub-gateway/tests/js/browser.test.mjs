// The gateway from a real browser: Debian's headless Chromium driven by playwright-core.
// Run by tests/clients/browser.rs as
//
//   node browser.test.mjs PARAMS_JSON
//
// with `origin` (the gateway's http://127.0.0.1:PORT), `secret` (its HMAC secret) and
// `artifacts` (where the screenshot goes). The Rust side embeds the gateway in an app
// that also serves the test page and the SDK bundle under /__client_test__/, so the page's
// WebSocket and EventSource are same-origin, as for a page an app serves next to the
// gateway.
//
// 1. The SDK's browser bundle (dist/centrifuge.js, the file a <script> tag loads) connects
//    over WebSocket, subscribes and receives what `redis-cli PUBLISH` sends.
// 2. A native EventSource on /connection/uni_sse, with the connect request in `cf_connect`
//    and a token whose `channels` claim subscribes it server-side, receives a
//    `redis-cli PUBLISH` as a publication push.

import { join } from 'node:path';

import { chromium } from 'playwright-core';

import {
  assert,
  assertJson,
  fail,
  hs256,
  launchChromium,
  nowSeconds,
  redisPublish,
  run,
  step,
  within,
} from './lib.mjs';

const params = JSON.parse(process.argv[2] ?? '{}');

async function main() {
  const browser = await launchChromium(chromium);
  try {
    await scenario(browser);
  } finally {
    await browser.close();
  }
}

async function scenario(browser) {
  const page = await browser.newPage();
  page.on('console', (message) => console.log(`page: ${message.text()}`));
  page.on('pageerror', (error) => fail(`page error: ${error}`));
  await page.goto(`${params.origin}/__client_test__/index.html`, { timeout: 15000 });
  step('test page loaded');
  assert(await page.evaluate(() => typeof Centrifuge === 'function'), 'the SDK bundle did not load');

  // 1. The SDK over WebSocket.
  const ws = `${params.origin.replace(/^http/, 'ws')}/connection/websocket`;
  const wsToken = hs256(params.secret, { sub: 'browser-user', exp: nowSeconds() + 300 });
  await within(
    page.evaluate(
      async ({ ws, wsToken }) => {
        window.received = [];
        const client = new Centrifuge(ws, { token: wsToken });
        const sub = client.newSubscription('news');
        sub.on('publication', (ctx) => window.received.push(ctx.data));
        sub.subscribe();
        client.connect();
        await sub.ready();
        window.client = client;
      },
      { ws, wsToken },
    ),
    15000,
    'the browser SDK to subscribe to news',
  );
  step('browser SDK subscribed to news');
  assert((await redisPublish('news', '{"from":"redis-cli","n":1}')) >= 1, 'redis-cli PUBLISH news reached nobody');
  await page.waitForFunction(() => window.received.length >= 1, null, { timeout: 10000 });
  assertJson(await page.evaluate(() => window.received), [{ from: 'redis-cli', n: 1 }], 'browser SDK received');
  step('browser SDK received the redis-cli publication');

  // 2. Native EventSource on uni_sse.
  const sseToken = hs256(params.secret, { sub: 'sse-user', exp: nowSeconds() + 300, channels: ['alerts'] });
  await page.evaluate((sseToken) => {
    window.pushes = [];
    window.sseErrors = 0;
    const url = new URL('/connection/uni_sse', location.origin);
    url.searchParams.append('cf_connect', JSON.stringify({ token: sseToken }));
    const source = new EventSource(url);
    source.onmessage = (event) => window.pushes.push(JSON.parse(event.data));
    source.onerror = () => {
      window.sseErrors += 1;
    };
    window.source = source;
  }, sseToken);
  await page
    .waitForFunction(() => window.pushes.some((push) => push && push.connect), null, { timeout: 10000 })
    .catch(async (e) =>
      fail(`no connect push on uni_sse (${e}); pushes ${JSON.stringify(await page.evaluate(() => window.pushes))}, errors ${await page.evaluate(() => window.sseErrors)}`),
    );
  const connect = await page.evaluate(() => window.pushes.find((push) => push && push.connect).connect);
  assert(connect.subs && 'alerts' in connect.subs, `connect push without the alerts subscription: ${JSON.stringify(connect)}`);
  step('EventSource connected, subscribed server-side to alerts');
  assert((await redisPublish('alerts', 'disk almost full')) >= 1, 'redis-cli PUBLISH alerts reached nobody');
  await page
    .waitForFunction(() => window.pushes.some((push) => push && push.channel === 'alerts' && push.pub), null, {
      timeout: 10000,
    })
    .catch(async (e) => fail(`no publication on uni_sse (${e}); pushes ${JSON.stringify(await page.evaluate(() => window.pushes))}`));
  const publication = await page.evaluate(() => window.pushes.find((push) => push && push.pub).pub);
  assertJson(publication.data, 'disk almost full', 'uni_sse publication data');
  step('EventSource received the redis-cli publication');

  await page.evaluate(() => {
    document.getElementById('log').textContent = JSON.stringify(
      { sdk: window.received, uni_sse: window.pushes },
      null,
      2,
    );
    window.source.close();
    window.client.disconnect();
  });
  if (params.artifacts) {
    await page.screenshot({ path: join(params.artifacts, 'gateway-clients.png') });
  }
}

run(main);
