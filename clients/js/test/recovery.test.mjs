// Positions and recovery (ext; docs/protocol.md, "Positions and recovery")
// against a real rtm-fixture that keeps history for every event
// (`--history-events '*'`, kept in memory: no Redis), with both APIs. The
// client reaches the fixture through a TCP forwarder (`tcpProxy`) that the
// tests cut, so the client loses its connection while the server stays up
// and another client pushes: it comes back, sends its position, and gets
// what it missed, in order, each once, then the live events; or, away longer
// than the history (100 events), is told `trimmed` and goes on live. The
// Rust client's tests of the same: conformance/tests/redis_recovery.rs.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Client, connect } from '../dist/esm/index.js';
import { closeTracked, eventually, Fixture, sleep, tcpProxy, track, within } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { RtmClient } = require('..'); // the CommonJS entry, as an app would require it
const WebSocket = require('ws');

afterEach(closeTracked);

const HISTORY = ['--history-events', '*'];

/** A WebSocket class that records every frame sent (parsed). */
function spy(sent) {
  return class SpyWebSocket extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** `push('score', tags, n)` for n in from..=to, one after the other, through the fixture's `push` function. */
async function push(pusher, from, to, tags = ['m1']) {
  for (let n = from; n <= to; n++) await within(`push ${n}`, pusher.call('push', 'score', tags, n));
}

/**
 * A client of `url` holding `score [m1]`, with the typed API or `RtmClient`:
 * what it got (each event's first argument, in order), the resyncs it was
 * told, the frames it sent and received, and whether it is open.
 */
async function watcher(api, url, options = {}) {
  const w = { got: [], resyncs: [], sent: [], received: [], opens: 0, closes: 0 };
  if (api === 'typed') {
    const client = track(new Client(url, { reconnect: { delayMs: 50 }, WebSocket: spy(w.sent), ...options }));
    client.on('message', (raw) => w.received.push(JSON.parse(raw)));
    client.on('resync', (event, tag, reason) => w.resyncs.push([event, tag, reason]));
    client.on('open', () => (w.opens += 1));
    client.on('close', () => (w.closes += 1));
    await within('open', client.waitOpen());
    await within('subscribed', client.subscribePush('score', ['m1'], (n) => w.got.push(n)));
    w.client = client;
    w.isOpen = () => client.state === 'open';
    w.position = () => client.position('score', 'm1');
  } else {
    // The drop-in, with its 2.x options only (plus the test's WebSocket spy
    // and, to hear about resyncs, the onResync extension): tracking is on by default.
    const rtm = track(new RtmClient(url, {
      reconnectDelayMs: 50,
      WebSocket: spy(w.sent),
      onMessage: (raw) => w.received.push(JSON.parse(raw)),
      onOpen: () => (w.opens += 1),
      onClose: () => (w.closes += 1),
      onResync: (event, tag, reason) => w.resyncs.push([event, tag, reason]),
      ...options,
    }));
    await within('SubscribePush', rtm.SubscribePush('score', ['m1'], (n) => w.got.push(n)));
    w.client = rtm;
    w.isOpen = () => rtm.client.state === 'open';
    w.position = () => rtm.client.position('score', 'm1');
  }
  return w;
}

/** Cuts `proxy` and keeps it refusing until `whileAway` is done, then lets `w` back in. */
async function away(w, proxy, port, whileAway) {
  const opens = w.opens;
  const closes = w.closes;
  proxy.pointTo(null);
  proxy.cut();
  await eventually('the client to see the drop', () => w.closes > closes && !w.isOpen());
  await whileAway();
  w.sent.length = 0;
  w.received.length = 0;
  proxy.pointTo(port);
  await eventually('the client back open', () => w.opens > opens && w.isOpen());
}

for (const api of ['typed', 'RtmClient']) {
  test(`${api}: a client that was away gets the 30 events pushed meanwhile, then the live ones: 1..50, each once, in order`, async () => {
    const fixture = await Fixture.start(HISTORY);
    try {
      const proxy = await tcpProxy(fixture.port);
      const w = await watcher(api, proxy.url);
      const pusher = track(await connect(fixture.url));
      const subscribe = w.sent.find((f) => f.type === 'subscribe');
      assert.deepEqual(subscribe.since, { m1: null }, 'the first subscribe asks where the stream is');
      const reply = w.received.find((f) => f.id === subscribe.id);
      assert.equal(reply.streams.m1.offset, 0, JSON.stringify(reply));
      const epoch = reply.streams.m1.epoch;

      await push(pusher, 1, 10);
      await eventually('1..10', () => w.got.length >= 10);
      assert.deepEqual(w.position(), { offset: 10, epoch });

      await away(w, proxy, fixture.port, () => push(pusher, 11, 40));
      await eventually('11..40, recovered', () => w.got.length >= 40);
      // Recovered: the subscribe was re-sent with the position, and the
      // missed events came before its reply, which says so.
      const again = w.sent.find((f) => f.type === 'subscribe');
      assert.deepEqual(again.since, { m1: { offset: 10, epoch } });
      const recovered = await eventually('the reply', () => w.received.find((f) => f.id === again.id));
      assert.deepEqual(recovered, { id: again.id, data: true, streams: { m1: { offset: 40, epoch, recovered: true } } });
      const before = w.received.slice(0, w.received.indexOf(recovered));
      assert.deepEqual(before.map((f) => f.data[0]), range(11, 40), 'the missed events, before the reply');
      assert.deepEqual(before.map((f) => f.offset), range(11, 40));

      await push(pusher, 41, 50);
      await eventually('41..50, live', () => w.got.length >= 50);
      await sleep(200); // nothing more comes
      assert.deepEqual(w.got, range(1, 50));
      assert.deepEqual(w.resyncs, []);
      assert.deepEqual(w.position(), { offset: 50, epoch });
    } finally {
      await fixture.kill();
    }
  });

  test(`${api}: a client away longer than the history is told 'trimmed', gets none of the missed ones, then the live ones`, async () => {
    const fixture = await Fixture.start(HISTORY);
    try {
      const proxy = await tcpProxy(fixture.port);
      const w = await watcher(api, proxy.url);
      const pusher = track(await connect(fixture.url));
      await push(pusher, 1, 10);
      await eventually('1..10', () => w.got.length >= 10);
      const { epoch } = w.position();
      // 150 missed; the history keeps the newest 100 (61..160).
      await away(w, proxy, fixture.port, () => push(pusher, 11, 160));
      await eventually('a resync', () => w.resyncs.length > 0);
      assert.deepEqual(w.resyncs, [['score', 'm1', 'trimmed']]);
      const again = w.sent.find((f) => f.type === 'subscribe');
      assert.deepEqual(again.since, { m1: { offset: 10, epoch } });
      const reply = w.received.find((f) => f.id === again.id);
      assert.deepEqual(reply.streams, { m1: { offset: 160, epoch, recovered: false, reason: 'trimmed' } });
      // The application reloads from its own store, and goes on from 160.
      assert.deepEqual(w.position(), { offset: 160, epoch });
      await push(pusher, 161, 165);
      await eventually('161..165, live', () => w.got.length >= 15);
      await sleep(200);
      assert.deepEqual(w.got, [...range(1, 10), ...range(161, 165)]);
      assert.equal(w.resyncs.length, 1);
    } finally {
      await fixture.kill();
    }
  });
}

// ----- the user's stream (the events with history Published to a user) -----

/** `publish('alice', 'dm', n)` for n in from..=to, one after the other, through the fixture's `publish` function. */
async function publish(publisher, from, to, user = 'alice') {
  for (let n = from; n <= to; n++) await within(`publish ${n}`, publisher.call('publish', user, 'dm', n));
}

/**
 * A client of `url` signed in as alice, with `dm` handled by a plain
 * `subscribe` (`Subscribe`): what it got, the resyncs, the frames sent and
 * received, and whether it is open.
 */
async function userWatcher(api, url) {
  const w = { got: [], resyncs: [], sent: [], received: [], opens: 0, closes: 0 };
  if (api === 'typed') {
    const client = track(new Client(url, { auth: 'user:alice', reconnect: { delayMs: 50 }, WebSocket: spy(w.sent) }));
    client.on('message', (raw) => w.received.push(JSON.parse(raw)));
    client.on('resync', (event, tag, reason) => w.resyncs.push([event, tag, reason]));
    client.on('open', () => (w.opens += 1));
    client.on('close', () => (w.closes += 1));
    client.subscribe('dm', (n) => w.got.push(n));
    await within('open', client.waitOpen());
    w.isOpen = () => client.state === 'open';
    w.position = () => client.position('', 'user');
  } else {
    const rtm = track(new RtmClient(url, {
      authenticationData: 'user:alice',
      reconnectDelayMs: 50,
      WebSocket: spy(w.sent),
      onMessage: (raw) => w.received.push(JSON.parse(raw)),
      onOpen: () => (w.opens += 1),
      onClose: () => (w.closes += 1),
      onResync: (event, tag, reason) => w.resyncs.push([event, tag, reason]),
    }));
    rtm.Subscribe('dm', (n) => w.got.push(n));
    await eventually('open', () => rtm.client.state === 'open');
    w.isOpen = () => rtm.client.state === 'open';
    w.position = () => rtm.client.position('', 'user');
  }
  return w;
}

for (const api of ['typed', 'RtmClient']) {
  test(`${api}: the user's stream: DMs Published while away come after the reconnect, then the live ones: 1..25, each once, in order`, async () => {
    const fixture = await Fixture.start(['--auth', ...HISTORY]);
    try {
      const proxy = await tcpProxy(fixture.port);
      const w = await userWatcher(api, proxy.url);
      const publisher = track(await connect(fixture.url, { auth: 'user:bob' }));
      const auth = w.sent.find((f) => f.type === 'auth');
      assert.deepEqual(auth.since, { user: null }, "the first auth asks where the user's stream is");
      const reply = w.received.find((f) => f.id === auth.id);
      assert.equal(reply.streams?.user?.offset, 0, JSON.stringify(reply));
      const epoch = reply.streams.user.epoch;

      await publish(publisher, 1, 5);
      await eventually('1..5', () => w.got.length >= 5);
      assert.deepEqual(w.position(), { offset: 5, epoch });

      await away(w, proxy, fixture.port, () => publish(publisher, 6, 20));
      await eventually('6..20, recovered', () => w.got.length >= 20);
      // Recovered by the auth: it carried the position, and the missed
      // events came before its reply, which says so.
      const again = w.sent.find((f) => f.type === 'auth');
      assert.deepEqual(again.since, { user: { offset: 5, epoch } });
      const recovered = await eventually('the reply', () => w.received.find((f) => f.id === again.id));
      assert.deepEqual(recovered.streams, { user: { offset: 20, epoch, recovered: true } });
      const before = w.received.slice(0, w.received.indexOf(recovered));
      assert.deepEqual(before.map((f) => f.data[0]), range(6, 20), 'the missed events, before the reply');
      assert.deepEqual(before.map((f) => [f.offset, 'tag' in f]), range(6, 20).map((n) => [n, false]));

      await publish(publisher, 21, 25);
      await eventually('21..25, live', () => w.got.length >= 25);
      await sleep(200); // nothing more comes
      assert.deepEqual(w.got, range(1, 25));
      assert.deepEqual(w.resyncs, []);
      assert.deepEqual(w.position(), { offset: 25, epoch });
    } finally {
      await fixture.kill();
    }
  });
}

test('typed: pushes racing the reconnect (the client comes back while they are sent) arrive each once, in order', async () => {
  const fixture = await Fixture.start(HISTORY);
  try {
    const proxy = await tcpProxy(fixture.port);
    const w = await watcher('typed', proxy.url, { reconnect: { delayMs: 5 } });
    const pusher = track(await connect(fixture.url));
    await push(pusher, 1, 10);
    await eventually('1..10', () => w.got.length >= 10);
    const opens = w.opens;
    proxy.cut();
    // The client reconnects at once while these are sent: some are
    // recovered, some come live, some both ways (dropped as seen).
    await push(pusher, 11, 60);
    await eventually('back open', () => w.opens > opens && w.isOpen());
    await push(pusher, 61, 70);
    await eventually('1..70', () => w.got.length >= 70);
    await sleep(200);
    assert.deepEqual(w.got, range(1, 70));
    assert.deepEqual(w.resyncs, []);
  } finally {
    await fixture.kill();
  }
});

test('typed: a push to two tracked tags comes once per stream on the wire and is handled once', async () => {
  const fixture = await Fixture.start(HISTORY);
  try {
    const client = track(await connect(fixture.url));
    const frames = [];
    client.on('message', (raw) => frames.push(JSON.parse(raw)));
    const got = [];
    await client.subscribePush('score', ['m1', 'm2'], (n) => got.push(n));
    const pusher = track(await connect(fixture.url));
    for (let n = 1; n <= 5; n++) await pusher.call('push', 'score', ['m1', 'm2'], n);
    await eventually('two copies of each on the wire', () => frames.filter((f) => f.event === 'score').length >= 10);
    await sleep(100);
    const copies = frames.filter((f) => f.event === 'score');
    assert.equal(copies.length, 10);
    assert.ok(copies.every((f) => typeof f.push === 'string'), 'each names its push');
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
    assert.equal(client.position('score', 'm1').offset, 5);
    assert.equal(client.position('score', 'm2').offset, 5);
  } finally {
    await fixture.kill();
  }
});

test('typed: with trackPositions false the subscribe carries no since, and what was pushed while away is missed', async () => {
  const fixture = await Fixture.start(HISTORY);
  try {
    const proxy = await tcpProxy(fixture.port);
    const w = await watcher('typed', proxy.url, { trackPositions: false });
    const pusher = track(await connect(fixture.url));
    assert.ok(w.sent.filter((f) => f.type === 'subscribe').every((f) => !('since' in f)));
    await push(pusher, 1, 3);
    await eventually('1..3', () => w.got.length >= 3);
    assert.ok(w.received.filter((f) => f.event).every((f) => !('offset' in f)), 'no positions asked, none given');
    await away(w, proxy, fixture.port, () => push(pusher, 4, 6));
    // The re-sent subscribe, as before positions: acknowledged, nothing recovered.
    const again = w.sent.find((f) => f.type === 'subscribe');
    assert.ok(!('since' in again));
    await eventually('the re-sent subscribe acknowledged', () => w.received.some((f) => f.id === again.id));
    await push(pusher, 7, 8);
    await eventually('7, 8', () => w.got.length >= 5);
    await sleep(100);
    assert.deepEqual(w.got, [1, 2, 3, 7, 8]);
    assert.equal(w.position(), null);
  } finally {
    await fixture.kill();
  }
});

// ----- the events and callbacks, against a scripted server -----

/**
 * A WebSocket class whose "server" is `answer(frame, n)` (n: how many frames
 * of that type came so far): the frames it returns are received after the
 * frame is sent. `sockets` are the sockets made; `socket.serverSends(frame)`
 * sends one more, `socket.drop()` loses the connection (1006). No ping: no heartbeat.
 */
function scriptedServer(answer) {
  const sent = [];
  const sockets = [];
  const counts = {};
  class ScriptedWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.bufferedAmount = 0;
      this.listeners = {};
      sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.fire('open', {});
      }, 1);
    }
    addEventListener(type, listener) {
      (this.listeners[type] ??= []).push(listener);
    }
    fire(type, event) {
      for (const listener of this.listeners[type] ?? []) listener(event);
    }
    send(data) {
      const frame = JSON.parse(data);
      sent.push(frame);
      counts[frame.type] = (counts[frame.type] ?? 0) + 1;
      for (const reply of answer(frame, counts[frame.type]) ?? []) this.serverSends(reply);
    }
    serverSends(frame) {
      setTimeout(() => {
        if (this.readyState === 1) this.fire('message', { data: JSON.stringify(frame) });
      }, 1);
    }
    drop() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.fire('close', { code: 1006, reason: '' });
    }
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.fire('close', { code: 1000, reason: '' }), 1);
    }
  }
  return { WebSocket: ScriptedWebSocket, sent, sockets, last: () => sockets[sockets.length - 1] };
}

const SCRIPTED_URL = 'ws://127.0.0.1:9/';
const unavailable = (id) => ({ id, data: { error: { code: 'rtm/broker-unavailable', message: 'the broker is down' } } });

/** Subscribe 1: taken at 0; 2 (after a reconnect): refused for a while; 3 (the retry): taken, but 'trimmed'. */
function refusedThenTrimmed(frame, n) {
  if (frame.type !== 'subscribe') return [{ id: frame.id, data: true }];
  if (n === 1) return [{ id: frame.id, data: true, streams: { m1: { offset: 0, epoch: 'e' } } }];
  if (n === 2) return [unavailable(frame.id)];
  return [{ id: frame.id, data: true, streams: { m1: { offset: 5, epoch: 'e', recovered: false, reason: 'trimmed' } } }];
}

test("typed: 'subscribe-retry' when a re-sent subscription is refused for a while, 'resync' when the retry cannot recover", async () => {
  const server = scriptedServer(refusedThenTrimmed);
  const client = track(new Client(SCRIPTED_URL, { WebSocket: server.WebSocket, reconnect: { delayMs: 20 } }));
  const retries = [];
  const resyncs = [];
  const errors = [];
  client.on('subscribe-retry', (info) => retries.push(info));
  client.on('resync', (event, tag, reason) => resyncs.push([event, tag, reason]));
  client.on('error', (err) => errors.push(err));
  await within('open', client.waitOpen());
  const got = [];
  await within('subscribed', client.subscribePush('score', ['m1'], (n) => got.push(n)));
  server.last().drop();
  await eventually('a subscribe-retry', () => retries.length === 1);
  assert.equal(retries[0].event, 'score');
  assert.deepEqual(retries[0].tags, ['m1']);
  assert.equal(retries[0].attempt, 1);
  assert.equal(retries[0].delayMs, 20, "the reconnect schedule's delay");
  assert.equal(retries[0].error.code, 'rtm/broker-unavailable');
  await eventually('a resync', () => resyncs.length === 1);
  assert.deepEqual(resyncs, [['score', 'm1', 'trimmed']]);
  const subscribes = server.sent.filter((f) => f.type === 'subscribe');
  assert.equal(subscribes.length, 3);
  assert.deepEqual(subscribes.map((f) => f.since), [{ m1: null }, { m1: { offset: 0, epoch: 'e' } }, { m1: { offset: 0, epoch: 'e' } }]);
  assert.deepEqual(errors, [], 'a retry is not an error');
  // Then on from the position given: 6 is next; 5 (at the position) is dropped.
  server.last().serverSends({ event: 'score', data: [5], tag: 'm1', offset: 5, epoch: 'e' });
  server.last().serverSends({ event: 'score', data: [6], tag: 'm1', offset: 6, epoch: 'e' });
  await eventually('6', () => got.length >= 1);
  await sleep(20);
  assert.deepEqual(got, [6]);
  assert.deepEqual(client.position('score', 'm1'), { offset: 6, epoch: 'e' });
  assert.equal(client.pushSubscriptions, 1);
});

test('typed: a subscribePush refused for a while rejects, and is then dropped, not retried', async () => {
  const server = scriptedServer((frame) => (frame.type === 'subscribe' ? [unavailable(frame.id)] : [{ id: frame.id, data: true }]));
  const client = track(new Client(SCRIPTED_URL, { WebSocket: server.WebSocket, reconnect: { delayMs: 20 } }));
  await within('open', client.waitOpen());
  const got = [];
  const err = await client.subscribePush('score', ['m1'], (n) => got.push(n)).catch((e) => e);
  assert.equal(err.code, 'rtm/broker-unavailable');
  await eventually('the unsubscribe', () => server.sent.some((f) => f.type === 'unsubscribe'));
  await sleep(100); // past the retry's delay
  assert.deepEqual(server.sent.map((f) => f.type), ['subscribe', 'unsubscribe'], 'told it failed: dropped, as the Rust client does');
  assert.equal(client.pushSubscriptions, 0);
});

test('RtmClient: onSubscribeRetry and onResync (extensions) are called, and push events still reach the SubscribePush callback', async () => {
  const server = scriptedServer(refusedThenTrimmed);
  const retries = [];
  const resyncs = [];
  const log = [];
  const rtm = track(new RtmClient(SCRIPTED_URL, {
    reconnectDelayMs: 20,
    WebSocket: server.WebSocket,
    onOpen: () => log.push('open'),
    onClose: () => log.push('close'),
    onError: (e) => log.push(`error ${e.code}`),
    onSubscribeRetry: (info) => retries.push([info.event, info.tags, info.attempt, info.delayMs, info.error.code]),
    onResync: (event, tag, reason) => resyncs.push([event, tag, reason]),
  }));
  const got = [];
  await within('SubscribePush', rtm.SubscribePush('score', ['m1'], (n) => got.push(n)));
  server.last().drop();
  await eventually('onResync', () => resyncs.length === 1);
  assert.deepEqual(retries, [['score', ['m1'], 1, 20, 'rtm/broker-unavailable']]);
  assert.deepEqual(resyncs, [['score', 'm1', 'trimmed']]);
  assert.deepEqual(log, ['open', 'close', 'open'], 'no onError for a retry nor a resync');
  server.last().serverSends({ event: 'score', data: [6], tag: 'm1', offset: 6, epoch: 'e' });
  server.last().serverSends({ event: 'score', data: [6], tag: 'm1', offset: 6, epoch: 'e' });
  await eventually('6', () => got.length >= 1);
  await sleep(20);
  assert.deepEqual(got, [6]);
});

/** Auth 1: the user's stream at 3; auth 2 (after a reconnect): 'epoch-changed'. */
function userStreamLost(frame, n) {
  if (frame.type !== 'auth') return [{ id: frame.id, data: true }];
  if (n === 1) return [{ id: frame.id, data: true, streams: { user: { offset: 3, epoch: 'u1' } } }];
  return [{ id: frame.id, data: true, streams: { user: { offset: 40, epoch: 'u2', recovered: false, reason: 'epoch-changed' } } }];
}

for (const api of ['typed', 'RtmClient']) {
  test(`${api}: the user's stream that cannot be recovered is told as resync ('', 'user', reason), before the open`, async () => {
    const server = scriptedServer(userStreamLost);
    const log = [];
    const got = [];
    if (api === 'typed') {
      const client = track(new Client(SCRIPTED_URL, { auth: 'user:alice', WebSocket: server.WebSocket, reconnect: { delayMs: 20 } }));
      client.on('resync', (event, tag, reason) => log.push(['resync', event, tag, reason]));
      client.on('open', () => log.push('open'));
      client.subscribe('dm', (n) => got.push(n));
      await within('open', client.waitOpen());
    } else {
      const rtm = track(new RtmClient(SCRIPTED_URL, {
        authenticationData: 'user:alice',
        reconnectDelayMs: 20,
        WebSocket: server.WebSocket,
        onOpen: () => log.push('open'),
        onResync: (event, tag, reason) => log.push(['resync', event, tag, reason]),
      }));
      rtm.Subscribe('dm', (n) => got.push(n));
    }
    await eventually('open', () => log.length === 1);
    server.last().drop();
    await eventually('the resync and the open', () => log.length === 3);
    assert.deepEqual(log, ['open', ['resync', '', 'user', 'epoch-changed'], 'open']);
    assert.deepEqual(server.sent.filter((f) => f.type === 'auth').map((f) => f.since), [{ user: null }, { user: { offset: 3, epoch: 'u1' } }]);
    // On from the position given: 40 (at it) dropped, 41 next.
    server.last().serverSends({ event: 'dm', data: [40], offset: 40, epoch: 'u2' });
    server.last().serverSends({ event: 'dm', data: [41], offset: 41, epoch: 'u2' });
    await eventually('41', () => got.length >= 1);
    await sleep(20);
    assert.deepEqual(got, [41]);
  });
}
