// pubsub-hub dashboard.
//
// Updates arrive as server-sent events on /events: one `event: state` (the whole /state
// document) when the stream opens, then `event: delta` with only what changed, which the
// page applies to its copy (the protocol is in docs/http-api.md). If that stream fails,
// the page polls /state every 800 ms, as the guide's page does, and keeps trying to get the
// stream back. Every string from Redis or a user goes into the page through textContent or
// an attribute: nothing is ever parsed as HTML.
'use strict';

(() => {
  const POLL_MS = 800;
  const RECONNECT_MS = 3000;
  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers --------------------------------------------------------------

  /** Creates an element with a class and optional text (set as text, never as HTML). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function formatTime(ms) {
    const d = new Date(ms);
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  const number = new Intl.NumberFormat();

  // ---- connection state ---------------------------------------------------------------

  let source = null;
  // The document the push stream built: its first `state` with every `delta` applied.
  let pushed = null;
  let pollTimer = null;
  let reconnectTimer = null;

  function setLink(kind, text, title) {
    const pill = $('link-status');
    pill.className = `pill pill-${kind}`;
    pill.textContent = text;
    pill.title = title;
  }

  function connect() {
    if (!('EventSource' in window)) {
      startPolling();
      return;
    }
    pushed = null;
    source = new EventSource('/events');
    source.addEventListener('state', (event) => {
      stopPolling();
      setLink('live', 'live', 'Updates are pushed by the server as they happen');
      try {
        pushed = JSON.parse(event.data);
        show(pushed);
      } catch (err) {
        console.error('bad state event', err);
      }
    });
    source.addEventListener('delta', (event) => {
      let delta;
      try {
        delta = JSON.parse(event.data);
      } catch (err) {
        console.error('bad delta event', err);
        return;
      }
      if (!pushed || delta.base !== pushed.version) {
        // Out of step with the stream: start over from a whole state.
        source.close();
        connect();
        return;
      }
      applyDelta(pushed, delta);
      show(pushed);
    });
    source.addEventListener('error', () => {
      setLink('wait', 'polling', 'The push stream is down: polling /state every 800 ms');
      startPolling();
      if (source && source.readyState === EventSource.CLOSED) {
        // The browser gave up on this stream: open a new one later.
        source = null;
        clearTimeout(reconnectTimer);
        reconnectTimer = setTimeout(connect, RECONNECT_MS);
      }
    });
  }

  /**
   * Applies one `delta` event to `state` (a document with the delta's `base` as version):
   * changed top-level fields are replaced whole, removed subscribers dropped, whole
   * subscribers (with `messages`) put in place, changed ones get their other fields and
   * `messages_new` on top of their old messages, cut to `messages_kept`.
   */
  function applyDelta(state, delta) {
    Object.assign(state, delta.set || {});
    const byName = new Map((state.subscriptions || []).map((s) => [s.name, s]));
    for (const name of delta.removed || []) byName.delete(name);
    for (const entry of delta.subscriptions || []) {
      if ('messages' in entry) {
        byName.set(entry.name, entry);
        continue;
      }
      const { messages_new: fresh, messages_kept: kept, ...fields } = entry;
      const before = byName.get(entry.name);
      fields.messages = fresh.concat(before ? before.messages : []).slice(0, kept);
      byName.set(entry.name, fields);
    }
    const order = delta.order || (state.subscriptions || []).map((s) => s.name);
    state.subscriptions = order.filter((name) => byName.has(name)).map((name) => byName.get(name));
  }

  function startPolling() {
    if (pollTimer) return;
    pollTimer = setInterval(refresh, POLL_MS);
    refresh();
  }

  function stopPolling() {
    if (!pollTimer) return;
    clearInterval(pollTimer);
    pollTimer = null;
  }

  async function refresh() {
    try {
      const res = await fetch('/state', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      show(await res.json());
      if (pollTimer) setLink('wait', 'polling', 'The push stream is down: polling /state every 800 ms');
    } catch (err) {
      setLink('down', 'offline', `The dashboard server does not answer (${err.message})`);
    }
  }

  // ---- requests -----------------------------------------------------------------------

  async function post(path, fields) {
    const res = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields),
    });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      throw new Error((body && body.error) || `HTTP ${res.status}`);
    }
    return body;
  }

  let toastTimer = null;
  function toast(message, kind = 'error') {
    const box = $('toast');
    box.textContent = message;
    box.className = `toast toast-${kind}`;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  async function withButton(form, action) {
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try {
      await action();
    } catch (err) {
      toast(err.message);
    } finally {
      if (button) button.disabled = false;
    }
  }

  // ---- rendering ----------------------------------------------------------------------

  // What is on screen: the dashboard process (`other_dashboards.instance`) and the hub
  // version of the document rendered last. The answer to a form is built when its request
  // ends and may be older than what the push stream has shown meanwhile (a message that
  // arrived in between, whose delta came first); it must not paint over it, since no later
  // delta would repair that. A restarted dashboard counts its versions from the start
  // again, so a document of another process is always shown.
  let shown = null;

  function show(state) {
    const instance = state.other_dashboards ? state.other_dashboards.instance : null;
    if (shown && shown.instance === instance && state.version < shown.version) return;
    shown = { instance, version: state.version };
    render(state);
  }

  function render(state) {
    renderBanner(state.redis);
    renderSubscriptions(state.subscriptions || []);
    renderServerView(state);
    renderStats(state.stats || {});
  }

  function renderBanner(redis) {
    const down = redis && redis.available === false;
    $('redis-banner').hidden = !down;
    $('redis-error').textContent = down ? `${redis.error || 'no answer'}.` : '';
  }

  const cards = new Map();

  function renderSubscriptions(subs) {
    const container = $('subscriptions');
    const seen = new Set();
    subs.forEach((sub, index) => {
      seen.add(sub.name);
      let card = cards.get(sub.name);
      if (!card) {
        card = createCard(sub.name);
        cards.set(sub.name, card);
      }
      updateCard(card, sub);
      // Keep the server's (sorted) order, moving a card only when it is out of place:
      // re-inserting an element restarts its animations.
      const at = container.children[index] || null;
      if (at !== card.root) container.insertBefore(card.root, at);
    });
    for (const [name, card] of cards) {
      if (!seen.has(name)) {
        card.root.remove();
        cards.delete(name);
      }
    }
    $('sub-count').textContent = subs.length ? String(subs.length) : '';
    $('no-subscribers').hidden = subs.length > 0;
  }

  function createCard(name) {
    const root = el('article', 'card');
    root.dataset.name = name;

    const head = el('header', 'card-head');
    const titles = el('div', 'card-titles');
    const title = el('h3', 'card-title', name);
    const kind = el('span', 'kind');
    const targets = el('div', 'chips');
    titles.append(title, kind, targets);
    const badge = el('span', 'badge');
    head.append(titles, badge);

    const counters = el('div', 'counters');
    const received = counter('received');
    const dropped = counter('dropped');
    const reconnects = counter('reconnects');
    counters.append(received.root, dropped.root, reconnects.root);

    const list = el('ol', 'messages');
    const empty = el('p', 'messages-empty', 'No messages yet.');

    const foot = el('footer', 'card-foot');
    const unsubscribe = el('button', 'btn btn-small btn-danger', 'Unsubscribe');
    unsubscribe.type = 'button';
    unsubscribe.addEventListener('click', async () => {
      unsubscribe.disabled = true;
      try {
        const body = await post('/unsubscribe', { name });
        show(body.state);
      } catch (err) {
        toast(err.message);
        unsubscribe.disabled = false;
      }
    });
    foot.append(unsubscribe);

    root.append(head, counters, list, empty, foot);
    return { root, kind, targets, badge, received, dropped, reconnects, list, empty, key: '' };
  }

  function counter(label) {
    const root = el('span', 'counter');
    const value = el('strong', 'counter-value', '0');
    root.append(value, el('span', 'counter-label', label));
    return { root, value };
  }

  const SUBSCRIBE_COMMANDS = { channel: 'SUBSCRIBE', pattern: 'PSUBSCRIBE', shard: 'SSUBSCRIBE' };

  function updateCard(card, sub) {
    // `kind` is additive; a server without it knows only channels and patterns.
    const kind = SUBSCRIBE_COMMANDS[sub.kind] ? sub.kind : (sub.is_pattern ? 'pattern' : 'channel');
    const targetsKey = `${kind}|${sub.targets.join('\u0000')}`;
    if (card.targetsKey !== targetsKey) {
      card.targetsKey = targetsKey;
      card.kind.textContent = kind;
      card.kind.className = `kind kind-${kind}`;
      card.targets.replaceChildren(...sub.targets.map((t) => {
        const chip = el('span', `chip chip-${kind}`, t);
        chip.title = `${SUBSCRIBE_COMMANDS[kind]} ${t}`;
        return chip;
      }));
    }

    const status = (sub.status && sub.status.state) || (sub.alive ? 'live' : 'closed');
    card.badge.className = `badge badge-${status}`;
    card.badge.textContent = status;
    card.badge.title = status === 'reconnecting'
      ? `Reconnecting (attempt ${sub.status.attempts}): ${sub.status.last_error}`
      : status === 'live' ? 'Subscribed on a working connection' : 'Closed';
    card.root.classList.toggle('card-down', status !== 'live');

    card.received.value.textContent = number.format(sub.received_total || 0);
    card.dropped.value.textContent = number.format(sub.dropped_total || 0);
    card.reconnects.value.textContent = number.format(sub.reconnects_total || 0);
    card.dropped.root.classList.toggle('counter-warn', (sub.dropped_total || 0) > 0);

    // Rebuild the list only when its content changed, and keep the reader's scroll position.
    const messages = sub.messages || [];
    const key = messages.length
      ? `${messages.length}|${messages[0].received_at_ms}|${messages[0].channel}|${sub.received_total}`
      : '';
    if (card.key !== key) {
      card.key = key;
      const scroll = card.list.scrollTop;
      card.list.replaceChildren(...messages.map(renderMessage));
      card.list.scrollTop = scroll;
    }
    card.empty.hidden = messages.length > 0;
    card.list.hidden = messages.length === 0;
  }

  function renderMessage(m) {
    const item = el('li', 'msg');
    const meta = el('div', 'msg-meta');
    const where = el('span', 'msg-where');
    where.append(el('span', 'msg-channel mono', m.channel));
    if (m.pattern !== null && m.pattern !== undefined) {
      const via = el('span', 'msg-via');
      via.append('via pattern ', el('span', 'mono', m.pattern));
      where.append(via);
    }
    const time = el('time', 'msg-time', formatTime(m.received_at_ms));
    time.dateTime = new Date(m.received_at_ms).toISOString();
    meta.append(where, time);
    item.append(meta, renderPayload(m));
    return item;
  }

  // Binary payloads come as base64: show their first bytes as hex with a printable-ASCII
  // column, like `xxd`, so a reader can tell what they are.
  const HEX_PREVIEW_BYTES = 32;
  function hexPreview(b64) {
    let bin;
    try {
      bin = atob(b64);
    } catch {
      return b64; // cut mid-group by the display limit: show it as it is
    }
    const head = bin.slice(0, HEX_PREVIEW_BYTES);
    const hex = Array.from(head, c => c.charCodeAt(0).toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(head, c => {
      const code = c.charCodeAt(0);
      return code >= 0x20 && code < 0x7f ? c : '.';
    }).join('');
    return `${hex}${bin.length > HEX_PREVIEW_BYTES ? ' …' : ''}  |${ascii}|`;
  }

  function renderPayload(m) {
    const box = el('div', 'payload');
    const p = m.payload;
    const isEnvelope = !m.truncated && m.encoding === 'json' && p && typeof p === 'object'
      && !Array.isArray(p) && 'body' in p && 'seq' in p && 'of' in p
      && Object.keys(p).length === 3;

    if (m.encoding === 'base64') {
      box.append(el('span', 'tag tag-binary', `binary · ${formatBytes(m.size ?? 0)}`));
      box.append(el('code', 'payload-text mono', hexPreview(p)));
      box.append(el('code', 'payload-raw mono', `base64 ${p}`));
    } else if (isEnvelope) {
      const body = typeof p.body === 'string' ? p.body : JSON.stringify(p.body);
      box.append(el('span', 'payload-text', body));
      box.append(el('span', 'tag', `${p.seq}/${p.of}`));
    } else if (m.encoding === 'json' && !m.truncated) {
      box.append(el('code', 'payload-text mono', JSON.stringify(p)));
    } else {
      box.append(el('span', 'payload-text', p));
    }
    if (m.truncated) {
      box.append(el('span', 'tag tag-warn', `truncated · ${formatBytes(m.size)} received`));
    }
    return box;
  }

  function renderServerView(state) {
    const stats = state.stats || {};
    $('numpat').textContent = state.redis && state.redis.available === false
      ? '–' : number.format(stats.pattern_subscriptions || 0);

    renderMode(state.mode);
    renderChannels('active-channels', 'chip-channel', state.active_channels,
      state.active_channels_truncated, state.active_channels_total);
    renderCounts('numsub', state.numsub, 'no exact-channel subscribers');
    renderChannels('shard-channels', 'chip-shard', state.shard_channels,
      state.shard_channels_truncated, state.shard_channels_total);
    renderCounts('shard-numsub', state.shard_numsub, 'no shard subscribers');
  }

  function renderMode(mode) {
    $('mode').hidden = !mode;
    if (!mode) return;
    let name = mode.name === 'shared'
      ? `shared · ${number.format(mode.shared_connections)} conn.`
      : 'dedicated';
    if (mode.cluster) name += ' · cluster';
    $('mode-name').textContent = name;
    $('mode-name').title = `${number.format(mode.subscriber_connections)} subscriber connection(s) to Redis now`;
    $('mode-explanation').textContent = mode.numsub_explanation || '';
  }

  /** A server-wide channel list, with a note when the server cut it. */
  function renderChannels(id, chipClass, names, truncated, total) {
    const chips = (names || []).map((c) => el('span', `chip ${chipClass}`, c));
    if (!chips.length) chips.push(el('span', 'muted', 'none'));
    $(id).replaceChildren(...chips);
    const cut = $(`${id}-cut`);
    cut.hidden = !truncated;
    cut.textContent = truncated
      ? `showing ${number.format(names.length)} of ${number.format(total)} (the list is cut at max_listed_channels)`
      : '';
  }

  function renderCounts(id, counts, emptyText) {
    const entries = Object.entries(counts || {});
    $(id).replaceChildren(...(entries.length
      ? entries.map(([channel, n]) => row(channel, number.format(n)))
      : [emptyRow(emptyText)]));
  }

  const STAT_LABELS = [
    ['published_total', 'published'],
    ['delivered_total', 'delivered', 'Sum of what Redis returned for each PUBLISH'],
    ['received_total', 'received', 'Messages this process\u2019s subscribers received'],
    ['active_subscriptions', 'subscribers'],
    ['pattern_subscriptions', 'NUMPAT', 'Pattern subscriptions on the whole server'],
    ['dropped_total', 'dropped', 'Events dropped for consumers that fell behind'],
    ['reconnects_total', 'reconnects'],
    ['publish_errors_total', 'publish errors'],
  ];

  function renderStats(stats) {
    $('stats').replaceChildren(...STAT_LABELS.map(([key, label, title]) => {
      const tile = el('div', 'stat');
      tile.append(el('strong', 'stat-value', number.format(stats[key] || 0)), el('span', 'stat-label', label));
      if (title) tile.title = title;
      return tile;
    }));
    const perChannel = Object.entries(stats.channel_published || {})
      .sort((a, b) => b[1] - a[1]);
    const rows = perChannel.map(([channel, n]) => row(channel, number.format(n)));
    if (stats.channel_published_other) {
      rows.push(row('(other channels)', number.format(stats.channel_published_other)));
    }
    $('channel-published').replaceChildren(...(rows.length ? rows : [emptyRow('nothing published yet')]));
  }

  function row(key, value) {
    const tr = el('tr');
    tr.append(el('td', 'mono', key), el('td', 'num', value));
    return tr;
  }

  function emptyRow(text) {
    const tr = el('tr');
    const td = el('td', 'muted', text);
    td.colSpan = 2;
    tr.append(td);
    return tr;
  }

  // ---- forms --------------------------------------------------------------------------

  function wireForms() {
    const publishForm = $('publish-form');
    publishForm.addEventListener('submit', (event) => {
      event.preventDefault();
      withButton(publishForm, async () => {
        const data = new FormData(publishForm);
        const body = await post('/publish', data);
        show(body.state);
        const total = body.delivered.reduce((a, b) => a + b, 0);
        const command = body.kind === 'shard' ? 'SPUBLISH' : 'PUBLISH';
        $('publish-result').textContent =
          `Published ${body.publishes}\u00d7 to ${body.channel}: Redis delivered to ${total} subscriber connection(s) in total (${command}).`;
      });
    });

    const subscribeForm = $('subscribe-form');
    subscribeForm.addEventListener('submit', (event) => {
      event.preventDefault();
      withButton(subscribeForm, async () => {
        const body = await post('/subscribe', new FormData(subscribeForm));
        show(body);
        subscribeForm.elements.name.value = '';
        subscribeForm.elements.target.value = '';
      });
    });

    const reset = $('reset');
    reset.addEventListener('click', async () => {
      reset.disabled = true;
      try {
        show(await post('/reset', {}));
        $('publish-result').textContent = '';
        toast('Reset: the three default subscribers are back and the counters are zero.', 'info');
      } catch (err) {
        toast(err.message);
      } finally {
        reset.disabled = false;
      }
    });
  }

  wireForms();
  refresh();
  connect();
})();
