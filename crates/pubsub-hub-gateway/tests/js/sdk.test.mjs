// The gateway driven by the real `centrifuge` SDK in Node, over the `ws` package (Node 20
// has no global WebSocket). Run by tests/clients/sdk.rs as
//
//   node sdk.test.mjs SCENARIO PARAMS_JSON
//
// where PARAMS_JSON carries `ws` (the WebSocket endpoint, or a list of them for
// `two-nodes`), `secret` (the gateway's HMAC secret), and for `two-nodes` `api` (each
// node's base URL) and `apiKey`; `history-kill-9` gets two endpoints of gateway processes
// and puts a fail-over TCP proxy (the load balancer of a real deployment) in front of
// them. The `history-*` scenarios use the `history` namespace, which keeps history; the
// Rust side publishes there durably (`publish-history`, `steady-start`). Each scenario prints its steps, `PASSED` at the end, or
// `FAILED: reason` and exits 1.

import net from 'node:net';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import {
  Inbox,
  assert,
  assertJson,
  control,
  fail,
  hs256,
  next,
  nowSeconds,
  redisPublish,
  run,
  step,
  within,
} from './lib.mjs';

const [scenario, paramsJson] = process.argv.slice(2);
const params = JSON.parse(paramsJson ?? '{}');

/** A connection token for `sub`, valid for `ttl` seconds (negative: already expired). */
function token(sub, ttl = 300, extra = {}) {
  return hs256(params.secret, { sub, exp: nowSeconds() + ttl, ...extra });
}

/** A client of `endpoint` with short reconnect delays, so that faults heal quickly. */
function client(endpoint, options = {}) {
  return new Centrifuge(endpoint, {
    websocket: WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    timeout: 5000,
    // CENTRIFUGE_DEBUG=1 in the test's environment shows the SDK's own log.
    debug: process.env.CENTRIFUGE_DEBUG === '1',
    ...options,
  });
}

/** Connects `c` and subscribes it to `channel`; returns the subscription and its inbox. */
async function subscribed(c, channel, what) {
  const sub = c.newSubscription(channel, { minResubscribeDelay: 50, maxResubscribeDelay: 300 });
  const inbox = new Inbox(sub, 'publication');
  sub.subscribe();
  c.connect();
  await within(sub.ready(), 10000, `${what}: subscribed to ${channel}`);
  return { sub, inbox };
}

/**
 * A subscription to `channel` that asks for recovery (`recoverable`), with inboxes of its
 * publications and of its `subscribed` events (each carries wasRecovering / recovered).
 */
function recoverable(c, channel) {
  const sub = c.newSubscription(channel, {
    recoverable: true,
    minResubscribeDelay: 50,
    maxResubscribeDelay: 300,
  });
  const inbox = new Inbox(sub, 'publication');
  const subscribes = new Inbox(sub, 'subscribed');
  sub.subscribe();
  return { sub, inbox, subscribes };
}

/**
 * Takes `count` publications from `inbox` and fails unless they are `{"n": from}` ...
 * `{"n": from + count - 1}` in that order, with offsets one apart. Returns the last offset.
 */
async function expectNumbered(inbox, from, count, what, ms = 20000) {
  let last = null;
  for (let n = from; n < from + count; n += 1) {
    const ctx = await inbox.take(`${what}: publication ${n}`, ms);
    if (!ctx.data || ctx.data.n !== n) {
      fail(`${what}: expected {"n":${n}}, got ${JSON.stringify(ctx.data)} at offset ${ctx.offset}`);
    }
    if (last !== null && ctx.offset !== last + 1) {
      fail(`${what}: offset ${ctx.offset} after ${last} at n=${n}`);
    }
    last = ctx.offset;
  }
  return last;
}

/**
 * A TCP proxy on a free loopback port that sends each connection to the first of
 * `backends` (`{host, port}`) that accepts it: what a load balancer does when a gateway
 * process dies. Resolves to the server once it listens.
 */
function failoverProxy(backends) {
  const server = net.createServer((socket) => {
    socket.pause();
    socket.on('error', () => {});
    const attempt = (i) => {
      if (i >= backends.length) {
        socket.destroy();
        return;
      }
      let connected = false;
      const upstream = net.connect(backends[i]);
      upstream.on('connect', () => {
        connected = true;
        upstream.pipe(socket);
        socket.pipe(upstream);
        socket.resume();
      });
      upstream.on('error', () => {
        if (!connected) {
          attempt(i + 1);
        } else {
          socket.destroy();
        }
      });
      upstream.on('close', () => {
        if (connected) {
          socket.destroy();
        }
      });
      socket.on('close', () => upstream.destroy());
    };
    attempt(0);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Rejects unless `promise` fails with the protocol error `code`. */
async function refusedWith(promise, code, what) {
  let error = null;
  try {
    await within(promise, 10000, what);
  } catch (e) {
    error = e;
  }
  assert(error !== null, `${what}: expected error ${code}, but it succeeded`);
  assert(error.code === code, `${what}: expected error ${code}, got ${JSON.stringify(error)} (${error})`);
}

const scenarios = {
  // Connect, subscribe, receive what `redis-cli PUBLISH` sends (JSON and plain text),
  // publish where the namespace allows it and be refused where it does not, see a client
  // publish reach a plain Redis subscriber as the raw payload, unsubscribe.
  async basics() {
    const c = client(params.ws, { token: token('alice') });
    const { sub: news, inbox } = await subscribed(c, 'news', 'alice');
    step('subscribed to news');

    assert((await redisPublish('news', '{"price":42,"tags":["a"]}')) >= 1, 'redis-cli PUBLISH news reached nobody');
    assertJson((await inbox.take('the JSON publication')).data, { price: 42, tags: ['a'] }, 'JSON payload');
    await redisPublish('news', 'hello, not JSON');
    assertJson((await inbox.take('the text publication')).data, 'hello, not JSON', 'text payload');
    step('received JSON and text from redis-cli');

    // Channels without a namespace: clients may not publish.
    await refusedWith(news.publish({ from: 'alice' }), 103, 'publish to news from a client');
    await refusedWith(c.publish('news', { from: 'alice' }), 103, 'top-level publish to news');
    step('client publish to news refused with 103');

    // The `chat` namespace allows it; the payload reaches plain Redis subscribers raw.
    const { sub: room, inbox: roomInbox } = await subscribed(c, 'chat:lobby', 'alice');
    await control({ do: 'redis-listen', channel: 'chat:lobby' });
    await within(room.publish({ text: 'hi all' }), 10000, 'publish to chat:lobby');
    assertJson((await roomInbox.take('own publication on chat:lobby')).data, { text: 'hi all' }, 'chat payload');
    const heard = await control({ do: 'redis-heard', channel: 'chat:lobby', count: 1 });
    assertJson(JSON.parse(heard.payloads[0]), { text: 'hi all' }, 'what redis-cli SUBSCRIBE heard');
    step('client publish to chat:lobby delivered through Redis');

    // The chat namespace keeps neither history nor presence: "not available".
    await refusedWith(c.history('chat:lobby', { limit: 10 }), 108, 'history');
    await refusedWith(c.presence('chat:lobby'), 108, 'presence');
    step('history and presence: 108 not available');

    // Unsubscribe: the gateway's Redis subscription goes with its last client, so nothing
    // published afterwards can reach this client.
    // The SDK may emit the event before unsubscribe() returns: listen first.
    const unsubscribed = next(news, 'unsubscribed', 'the unsubscribed event');
    news.unsubscribe();
    await unsubscribed;
    await control({ do: 'wait-numsub', channel: 'news', count: 0 });
    assert((await redisPublish('news', 'after unsubscribe')) === 0, 'news still has a Redis subscriber');
    assert(inbox.length === 0, `publications after unsubscribe: ${inbox.length}`);
    step('unsubscribed');
    c.disconnect();
  },

  // An expired token at connect gets 109 and the SDK retries with a fresh one from
  // getToken; a token signed with another secret is refused for good; a token that expires
  // while connected is refreshed through getToken and the connection stays up past the old
  // expiry.
  async tokens() {
    // Expired at connect: error 109, then getToken and a successful connect.
    const errors = [];
    let fetched = 0;
    const late = client(params.ws, {
      token: token('carol', -10),
      getToken: async () => {
        fetched += 1;
        return token('carol', 300);
      },
    });
    late.on('error', (ctx) => errors.push(ctx.error));
    late.connect();
    await within(late.ready(), 10000, 'carol connected after a token refresh');
    assert(errors.some((e) => e.code === 109), `no 109 error seen: ${JSON.stringify(errors)}`);
    assert(fetched >= 1, 'getToken was not called after 109');
    step('expired token at connect: 109, refreshed, connected');
    late.disconnect();

    // A forged token: refused, and the SDK does not keep trying.
    const forged = client(params.ws, {
      token: hs256('not-the-secret', { sub: 'mallory', exp: nowSeconds() + 300 }),
    });
    const gone = next(forged, 'disconnected', 'a forged token to be refused');
    forged.connect();
    const ctx = await gone;
    assert(forged.state === 'disconnected', `forged token: state ${forged.state}`);
    step(`forged token refused: disconnected ${ctx.code} ${ctx.reason}`);

    // Expiring while connected: the SDK refreshes at the announced ttl; the gateway must
    // keep the connection past the old expiry.
    const firstExp = nowSeconds() + 2;
    let refreshes = 0;
    let refreshed;
    const refreshedOnce = new Promise((resolve) => (refreshed = resolve));
    const c = client(params.ws, {
      token: hs256(params.secret, { sub: 'bob', exp: firstExp }),
      getToken: async () => {
        refreshes += 1;
        refreshed();
        return token('bob', 300);
      },
    });
    const drops = [];
    c.on('connecting', (ctx) => drops.push(`connecting ${ctx.code} ${ctx.reason}`));
    c.on('disconnected', (ctx) => drops.push(`disconnected ${ctx.code} ${ctx.reason}`));
    const { inbox } = await subscribed(c, 'news', 'bob');
    drops.length = 0; // the initial connect's own 'connecting' event
    await within(refreshedOnce, 10000, 'getToken called to refresh the connection token');
    step(`getToken called ${refreshes} time(s)`);
    // The old token's expiry passes: a gateway that did not take the refresh closes the
    // connection as expired then. A round trip after that shows it is still up.
    await within(
      new Promise((resolve) => setTimeout(resolve, Math.max(0, (firstExp + 1) * 1000 - Date.now()))),
      5000,
      'the first token expiry to pass',
    );
    await redisPublish('news', '"after refresh"');
    assertJson((await inbox.take('a publication after the refresh')).data, 'after refresh', 'payload');
    assert(drops.length === 0, `the connection dropped: ${drops.join('; ')}`);
    assert(c.state === 'connected', `state ${c.state}`);
    step('still connected past the first token expiry');
    c.disconnect();
  },

  // The gateway stops (every client is told "shutdown" with reconnect advice) and serves
  // again on the same port: the SDK reconnects and resubscribes by itself.
  async 'gateway-restart'() {
    await survivesFault('restart-gateway');
  },

  // Redis restarts on the same port: clients are told, the SDK resubscribes, and
  // publications flow again once the gateway's Redis subscription is back.
  async 'redis-restart'() {
    await survivesFault('restart-redis');
  },

  // Two gateways with their own hubs on one Redis: a publish through either node's server
  // API, or through redis-cli, reaches subscribers on both.
  // Presence across two gateway processes: a client on node A sees the SDK's `join` event
  // of a client that subscribes on node B, both clients in `presence()` and
  // `presenceStats()` from either side, and the `leave` event when B unsubscribes.
  async presence() {
    const [wsA, wsB] = params.ws;
    const a = client(wsA, { token: token('pres-a', 300, { info: { name: 'Ann' } }) });
    const { sub: subA } = await subscribed(a, 'room:1', 'client of node A');
    const joins = new Inbox(subA, 'join');
    const leaves = new Inbox(subA, 'leave');
    const own = await joins.take('its own join');
    assert(own.info.user === 'pres-a', `own join: ${JSON.stringify(own)}`);
    step('A subscribed and saw its own join');

    const b = client(wsB, { token: token('pres-b') });
    const { sub: subB } = await subscribed(b, 'room:1', 'client of node B');
    const join = await joins.take("B's join");
    assertJson([join.channel, join.info.user], ['room:1', 'pres-b'], 'join event on A');
    step("A's SDK fired join for the client on node B");

    for (const [who, sub] of [['A', subA], ['B', subB]]) {
      const presence = await within(sub.presence(), 10000, `presence from ${who}`);
      const users = Object.values(presence.clients).map((c) => c.user).sort();
      assertJson(users, ['pres-a', 'pres-b'], `presence users seen from ${who}`);
      const stats = await within(sub.presenceStats(), 10000, `presence stats from ${who}`);
      assertJson([stats.numClients, stats.numUsers], [2, 2], `presence stats seen from ${who}`);
    }
    const presence = await subA.presence();
    const ann = Object.values(presence.clients).find((c) => c.user === 'pres-a');
    assertJson(ann.connInfo, { name: 'Ann' }, "A's connection info in presence");
    step('both nodes list both clients');

    subB.unsubscribe();
    const leave = await leaves.take("B's leave");
    assertJson([leave.channel, leave.info.user], ['room:1', 'pres-b'], 'leave event on A');
    const after = await subA.presenceStats();
    assertJson([after.numClients, after.numUsers], [1, 1], 'presence stats after the leave');
    step("A's SDK fired leave, and presence shrank");
    a.disconnect();
    b.disconnect();
  },

  async 'two-nodes'() {
    const [wsA, wsB] = params.ws;
    const [apiA, apiB] = params.api;
    const a = client(wsA, { token: token('on-a') });
    const b = client(wsB, { token: token('on-b') });
    const { inbox: inboxA } = await subscribed(a, 'news', 'client of node A');
    const { inbox: inboxB } = await subscribed(b, 'news', 'client of node B');
    step('one client subscribed on each node');

    for (const [via, api] of [['api-a', apiA], ['api-b', apiB]]) {
      const response = await within(
        fetch(`${api}/api/publish`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-API-Key': params.apiKey },
          body: JSON.stringify({ channel: 'news', data: { via } }),
        }),
        10000,
        `POST /api/publish on ${via}`,
      );
      const body = await response.text();
      assert(response.status === 200, `${via}: /api/publish answered ${response.status}: ${body}`);
      assert('result' in JSON.parse(body), `${via}: /api/publish answered ${body}`);
      assertJson((await inboxA.take(`node A's client: publication via ${via}`)).data, { via }, `A via ${via}`);
      assertJson((await inboxB.take(`node B's client: publication via ${via}`)).data, { via }, `B via ${via}`);
      step(`publish through ${via} reached both nodes`);
    }
    assert((await redisPublish('news', '{"via":"redis-cli"}')) >= 2, 'redis-cli: fewer than 2 Redis subscribers');
    assertJson((await inboxA.take("node A's client: from redis-cli")).data, { via: 'redis-cli' }, 'A via redis-cli');
    assertJson((await inboxB.take("node B's client: from redis-cli")).data, { via: 'redis-cli' }, 'B via redis-cli');
    step('redis-cli PUBLISH reached both nodes');

    // A wrong key is refused, and publishes nothing.
    const refused = await fetch(`${apiA}/api/publish`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-API-Key': 'wrong' },
      body: JSON.stringify({ channel: 'news', data: { via: 'wrong key' } }),
    });
    assert(refused.status === 401 || refused.status === 403, `wrong API key answered ${refused.status}`);
    a.disconnect();
    b.disconnect();
  },

  async 'history-missed-1000'() {
    const channel = 'history:missed';
    const c = client(params.ws, { token: token('erin') });
    const { sub, inbox, subscribes } = recoverable(c, channel);
    c.connect();
    const first = await subscribes.take('the first subscribe');
    assert(first.recoverable && !first.wasRecovering, `first subscribe: ${JSON.stringify(first)}`);
    await control({ do: 'publish-history', channel, from: 1, count: 1 });
    await expectNumbered(inbox, 1, 1, 'live before');
    step('subscribed and receiving');

    const gone = next(c, 'disconnected', 'the client to disconnect');
    c.disconnect();
    await gone;
    await control({ do: 'publish-history', channel, from: 2, count: 1000 });
    step('1,000 published at full speed while the client was away');
    c.connect();
    const back = await subscribes.take('the recovering subscribe', 20000);
    assert(back.wasRecovering && back.recovered, `not recovered: ${JSON.stringify(back)}`);
    await expectNumbered(inbox, 2, 1000, 'recovered');
    step('recovered exactly those 1,000, in order');

    await control({ do: 'publish-history', channel, from: 1002, count: 1 });
    await expectNumbered(inbox, 1002, 1, 'live after');
    assert(inbox.length === 0, `unexpected extra publications: ${inbox.length}`);
    step('then live, once');
    sub.unsubscribe();
    c.disconnect();
  },

  async 'history-100-reconnects'() {
    const channel = 'history:steady';
    const c = client(params.ws, { token: token('frank') });
    const { sub, subscribes } = recoverable(c, channel);
    const received = [];
    sub.on('publication', (ctx) => received.push(ctx));
    c.connect();
    await subscribes.take('the first subscribe');
    await control({ do: 'steady-start', channel, rate: 1000 });
    const started = Date.now();
    let recovered = 0;
    for (let i = 0; i < 100; i += 1) {
      const gone = next(c, 'disconnected', `disconnect ${i + 1}`);
      c.disconnect();
      await gone;
      c.connect();
      const back = await subscribes.take(`resubscribe ${i + 1}`, 20000);
      assert(back.wasRecovering && back.recovered, `reconnect ${i + 1} not recovered: ${JSON.stringify(back)}`);
      if (back.hasRecoveredPublications) {
        recovered += 1;
      }
    }
    const { count } = await control({ do: 'steady-stop' });
    const seconds = (Date.now() - started) / 1000;
    step(`100 reconnects in ${seconds.toFixed(1)} s while ${count} were published (${Math.round(count / seconds)}/s); ${recovered} resubscribes brought missed publications back`);
    assert(count / seconds >= 900, `the publisher managed only ${Math.round(count / seconds)}/s`);
    assert(recovered > 0, 'no resubscribe had anything to recover: nothing was missed');
    // The last offset is the count: all of them were published durably, from 1.
    if (!received.some((ctx) => ctx.offset === count)) {
      await next(sub, 'publication', `offset ${count}`, 20000, (ctx) => ctx.offset === count);
    }
    // Delivery follows the offsets; the numbers may be slightly out of order, since the
    // steady publisher does not wait for one publication before the next.
    const seen = new Set();
    for (let i = 0; i < received.length; i += 1) {
      const n = received[i].data.n;
      assert(Number.isInteger(n) && n >= 1 && n <= count, `unexpected publication ${JSON.stringify(received[i].data)}`);
      assert(!seen.has(n), `publication ${n} delivered twice (offset ${received[i].offset})`);
      seen.add(n);
      if (i > 0 && received[i].offset !== received[i - 1].offset + 1) {
        fail(`offset ${received[i].offset} after ${received[i - 1].offset}: a gap or a repeat`);
      }
    }
    assert(received.length === count, `received ${received.length} of ${count}`);
    step(`received all ${count} exactly once, in offset order`);
    c.disconnect();
  },

  async 'history-redis-restart'() {
    const channel = 'history:restart';
    const c = client(params.ws, { token: token('gina') });
    const { sub, inbox, subscribes } = recoverable(c, channel);
    c.connect();
    const first = await subscribes.take('the first subscribe');
    const epoch = first.streamPosition && first.streamPosition.epoch;
    assert(epoch, `no epoch in the first subscribe: ${JSON.stringify(first)}`);
    await control({ do: 'publish-history', channel, from: 1, count: 3 });
    await expectNumbered(inbox, 1, 3, 'before the restart');
    step(`receiving at epoch ${epoch}`);

    await control({ do: 'restart-redis' });
    const back = await subscribes.take('the subscribe after the Redis restart', 30000);
    assert(back.wasRecovering && !back.recovered, `expected recovered false: ${JSON.stringify(back)}`);
    const now = back.streamPosition && back.streamPosition.epoch;
    assert(now && now !== epoch, `the epoch did not change: ${epoch} then ${now}`);
    step(`resubscribed with recovered false, epoch ${now}`);

    await control({ do: 'publish-history', channel, from: 4, count: 1 });
    const live = await inbox.take('the publication after the restart');
    assertJson(live.data, { n: 4 }, 'after the restart');
    assert(live.offset === 1, `history starts over: offset ${live.offset}`);
    assert(inbox.length === 0, `unexpected extra publications: ${inbox.length}`);
    step('live again, history started over at offset 1');
    sub.unsubscribe();
    c.disconnect();
  },

  async 'history-kill-9'() {
    const backends = params.ws.map((endpoint) => {
      const url = new URL(endpoint);
      return { host: url.hostname, port: Number(url.port) };
    });
    const proxy = await failoverProxy(backends);
    const viaProxy = `ws://127.0.0.1:${proxy.address().port}/connection/websocket`;
    const channel = 'history:failover';
    // `a` reaches the first process through the proxy; `b` is on the second throughout.
    const a = client(viaProxy, { token: token('hank') });
    const b = client(params.ws[1], { token: token('ivy') });
    const sa = recoverable(a, channel);
    const sb = recoverable(b, channel);
    a.connect();
    b.connect();
    await sa.subscribes.take('a subscribed');
    await sb.subscribes.take('b subscribed');
    await control({ do: 'publish-history', channel, from: 1, count: 10 });
    await expectNumbered(sa.inbox, 1, 10, 'a before');
    await expectNumbered(sb.inbox, 1, 10, 'b before');
    step('both receiving; a through the proxy on the first process');

    await control({ do: 'kill-gateway', index: 0 });
    step('first gateway process killed with SIGKILL');
    await control({ do: 'publish-history', channel, from: 11, count: 500 });
    const back = await sa.subscribes.take('a resubscribed on the second process', 30000);
    assert(back.wasRecovering && back.recovered, `a not recovered: ${JSON.stringify(back)}`);
    await expectNumbered(sa.inbox, 11, 500, 'a after the kill');
    await expectNumbered(sb.inbox, 11, 500, 'b after the kill');
    step('a recovered on the second process: every publication once, in order');
    await control({ do: 'publish-history', channel, from: 511, count: 1 });
    await expectNumbered(sa.inbox, 511, 1, 'a live');
    await expectNumbered(sb.inbox, 511, 1, 'b live');
    assert(sa.inbox.length === 0 && sb.inbox.length === 0, 'unexpected extra publications');
    assert(sb.subscribes.length === 0, 'b, on the surviving process, resubscribed');
    step('then live on both');
    a.disconnect();
    b.disconnect();
    proxy.close();
  },
};

/** Shared by the restart scenarios: receive, suffer `fault`, resubscribe, receive again. */
async function survivesFault(fault) {
  const c = client(params.ws, { token: token('dave') });
  const { sub, inbox } = await subscribed(c, 'news', 'dave');
  await redisPublish('news', '{"n":1}');
  assertJson((await inbox.take('the publication before the fault')).data, { n: 1 }, 'before');
  step('receiving before the fault');

  // Listen first, then cause the fault: no event may slip between the two.
  const resubscribing = next(sub, 'subscribing', `the subscription to resubscribe after ${fault}`, 20000);
  const transitions = [];
  c.on('connecting', (ctx) => transitions.push(`connecting ${ctx.code} ${ctx.reason}`));
  sub.on('subscribing', (ctx) => transitions.push(`subscribing ${ctx.code} ${ctx.reason}`));
  await control({ do: fault });
  await resubscribing;
  await within(sub.ready(), 20000, `subscribed again after ${fault}`);
  step(`resubscribed after ${fault} (${transitions.join('; ')})`);

  assert((await redisPublish('news', '{"n":2}')) >= 1, 'no Redis subscriber after the fault');
  assertJson((await inbox.take('the publication after the fault')).data, { n: 2 }, 'after');
  assert(inbox.length === 0, `unexpected extra publications: ${inbox.length}`);
  step('receiving after the fault');
  c.disconnect();
}

const body = scenarios[scenario];
if (body === undefined) {
  fail(`unknown scenario ${scenario}; known: ${Object.keys(scenarios).join(', ')}`);
}
run(body);
