// Helpers shared by the real-client scenarios (sdk.test.mjs, browser.test.mjs,
// browser-history.test.mjs).
//
// The Rust side (tests/clients/) owns everything a client cannot do to itself: it runs
// `redis-cli`, restarts the gateway or Redis, and answers each `control:` line this side
// prints with exactly one line of JSON on stdin. Every wait here has a deadline, and every
// wait is for a fact the client saw (an event, a reply), never for time to pass.

import { createHmac } from 'node:crypto';
import { createInterface } from 'node:readline';

const answers = createInterface({ input: process.stdin });
const pending = [];
answers.on('line', (line) => {
  const waiter = pending.shift();
  if (waiter === undefined) {
    fail(`an answer nobody asked for: ${line}`);
  }
  waiter(line);
});

/** Prints a step of the scenario (the Rust side echoes it into the test's output). */
export function step(text) {
  console.log(`step: ${text}`);
}

/** Ends the scenario as failed, with a reason the Rust side shows. */
export function fail(reason) {
  console.log(`FAILED: ${reason}`);
  process.exit(1);
}

/**
 * Asks the Rust side for `request` (an object with a `do` field) and returns its parsed answer.
 * An answer `{"error": ...}` fails the scenario.
 */
export async function control(request, timeoutMs = 20000) {
  const answer = new Promise((resolve) => pending.push(resolve));
  console.log(`control: ${JSON.stringify(request)}`);
  const line = await within(answer, timeoutMs, `the answer to ${JSON.stringify(request)}`);
  const parsed = JSON.parse(line);
  if (parsed !== null && typeof parsed === 'object' && 'error' in parsed) {
    fail(`control ${JSON.stringify(request)} failed: ${parsed.error}`);
  }
  return parsed;
}

/** `PUBLISH channel payload` through the real `redis-cli`; returns its receiver count. */
export async function redisPublish(channel, payload) {
  const answer = await control({ do: 'redis-publish', channel, payload });
  return answer.receivers;
}

/** Resolves `promise` or fails the scenario after `ms` milliseconds, naming `what`. */
export function within(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * The next `event` of `emitter` whose context satisfies `accept`, within `ms`. Events
 * that do not satisfy it are passed over.
 */
export function next(emitter, event, what, ms = 10000, accept = () => true) {
  return within(
    new Promise((resolve) => {
      const listener = (ctx) => {
        if (accept(ctx)) {
          emitter.off(event, listener);
          resolve(ctx);
        }
      };
      emitter.on(event, listener);
    }),
    ms,
    what,
  );
}

/**
 * A queue of an emitter's events, so that a scenario can first trigger something and
 * then take what arrived in order, without missing an event that came early.
 */
export class Inbox {
  constructor(emitter, event) {
    this.items = [];
    this.waiters = [];
    emitter.on(event, (ctx) => {
      const waiter = this.waiters.shift();
      if (waiter) {
        waiter(ctx);
      } else {
        this.items.push(ctx);
      }
    });
  }

  /** The next item, within `ms`. */
  take(what, ms = 10000) {
    if (this.items.length > 0) {
      return Promise.resolve(this.items.shift());
    }
    return within(new Promise((resolve) => this.waiters.push(resolve)), ms, what);
  }

  /** How many items arrived and were not taken. */
  get length() {
    return this.items.length;
  }
}

function base64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/**
 * An HS256 JWT for `claims`, made here with node:crypto, independently of the gateway's
 * own JWT library, so that the two must agree on the format to pass.
 */
export function hs256(secret, claims) {
  const head = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = base64url(JSON.stringify(claims));
  const signature = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${base64url(signature)}`;
}

/** Seconds since the epoch, as JWT `exp` counts them. */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/** Asserts that `actual` and `expected` have the same JSON form. */
export function assertJson(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) {
    fail(`${what}: expected ${e}, got ${a}`);
  }
}

/** Fails the scenario with `what` unless `condition` holds. */
export function assert(condition, what) {
  if (!condition) {
    fail(what);
  }
}

/** Runs `main`, turning any exception into a failed scenario, and exits 0 when it returns. */
export function run(main) {
  main().then(
    () => {
      console.log('PASSED');
      process.exit(0);
    },
    (e) => fail(e && e.stack ? e.stack : String(e)),
  );
}

/** Chromium's flags here: no sandbox (root in CI), no GPU, no calls home. */
const BROWSER_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
];

/**
 * Starts headless Chromium (`CHROMIUM_PATH`, else Debian's) within 60 s and reports how long
 * it took: a first start on a fresh, loaded machine builds its caches and can take seconds.
 */
export async function launchChromium(chromium) {
  const started = Date.now();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: BROWSER_ARGS,
    timeout: 60000,
  });
  step(`chromium started in ${Date.now() - started} ms`);
  return browser;
}
