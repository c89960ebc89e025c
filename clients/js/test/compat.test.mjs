// RtmClient, the drop-in for @zexcore/rtm-client 2.x, loaded through the
// package's CommonJS entry (package.json `main`) as an app would `require` it,
// against rtm-fixture. First the original's API and callback semantics, then
// one test per fault of the original ("fault N: …"), each showing ours right.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { closeTracked, DEAD_URL, eventually, failure, Fixture, httpServer, Inbox, rejection, sleep, track, within, WAIT_MS } from './helpers.mjs';

const require = createRequire(import.meta.url);
const pkg = require('../package.json');
const cjs = require('..'); // package.json "main": what `require('@rtm/client')` loads
const WebSocket = require('ws');

/** `new RtmClient(...)`, closed after the test. */
const client = (address, options) => track(new cjs.RtmClient(address, options));

/** A WebSocket class that records every frame sent, parsed. */
function spy(frames) {
  return class SpyWebSocket extends WebSocket {
    send(data, ...rest) {
      frames.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  };
}

/** Resolves when `options[name]` is next called; wraps what was there. */
function called(options, name) {
  return within(
    `${name} to be called`,
    new Promise((resolve) => {
      const before = options[name];
      options[name] = (...args) => {
        options[name] = before;
        before?.(...args);
        resolve(args);
      };
    }),
  );
}

let plain;
let authed;

before(async () => {
  [plain, authed] = await Promise.all([Fixture.start(), Fixture.start(['--auth'])]);
});

afterEach(closeTracked);

after(async () => {
  await Promise.all([plain?.stop(), authed?.stop()]);
});

test('the CommonJS entry exports RtmClient with the original method names', () => {
  assert.match(pkg.main, /index\.js$/);
  assert.equal(typeof cjs.RtmClient, 'function');
  for (const method of ['Call', 'CallWait', 'Subscribe', 'SubscribePush', 'Close']) {
    assert.equal(typeof cjs.RtmClient.prototype[method], 'function', method);
  }
  assert.equal(typeof cjs.RTMMessageResponse, 'function');
  const response = new cjs.RTMMessageResponse('{"id":"1","data":3}');
  assert.deepEqual({ id: response.id, data: response.data }, { id: '1', data: 3 });
});

test('CallWait resolves with the result; Call is fire-and-forget; errors carry code and message', async () => {
  const options = { authenticationData: 'user:ann' };
  const opened = called(options, 'onOpen');
  const rtm = client(authed.url, options);
  assert.equal(rtm.Address, authed.url);
  assert.equal(rtm.Options, options);
  await opened;
  assert.equal(rtm.Authenticated, true);
  assert.equal(await rtm.CallWait('add', 1, 2), 3);
  assert.deepEqual(await rtm.CallWait('whoami'), { user: 'ann' });
  const notes = new Inbox();
  rtm.Subscribe('note', notes.push);
  assert.equal(await rtm.Call('emit', 'note', 'hello', 2), undefined);
  assert.deepEqual(await notes.take('the note'), ['hello', 2]);
  const err = await rejection('fail', rtm.CallWait('fail', 'nope'));
  assert.equal(err.code, 'rtm/handler-error');
  assert.equal(err.message, 'nope');
  assert.deepEqual(JSON.parse(JSON.stringify(err)), { code: 'rtm/handler-error', message: 'nope' });
});

test('Subscribe returns an unsubscribe hook; SubscribePush resolves with one', async () => {
  const rtm = client(plain.url, { reconnectDelayMs: 50 });
  const alerts = new Inbox();
  const off = rtm.Subscribe('alert', alerts.push);
  await rtm.CallWait('broadcast', 'one');
  assert.equal(await alerts.take('an alert'), 'one');
  assert.equal(off(), true);
  assert.equal(off(), false);
  const scores = new Inbox();
  const unsubscribe = await rtm.SubscribePush('score', ['m1'], scores.push);
  assert.equal(typeof unsubscribe, 'function');
  await rtm.CallWait('push', 'score', ['m1'], 1, 2);
  assert.deepEqual(await scores.take('a push'), [1, 2]);
  assert.equal(unsubscribe(), true);
  const markers = new Inbox();
  rtm.Subscribe('marker', markers.push);
  await rtm.CallWait('push', 'score', ['m1'], 3);
  await rtm.CallWait('emit', 'marker', 'm');
  assert.equal(await markers.take('the marker'), 'm');
  assert.equal(scores.items.length, 0);
});

test('callbacks: onAuthenticating, onOpen after auth, onMessage with every frame', async () => {
  const order = [];
  const messages = [];
  const options = {
    authenticationData: 'user:cid',
    onAuthenticating: () => order.push('authenticating'),
    onOpen: () => order.push('open'),
    onMessage: (raw) => messages.push(raw),
    onClose: () => order.push('close'),
  };
  const opened = called(options, 'onOpen');
  const rtm = client(authed.url, options);
  await opened;
  assert.deepEqual(order, ['authenticating', 'open']);
  assert.equal(typeof messages[0], 'string');
  assert.deepEqual(JSON.parse(messages[0]).data, { user: 'cid' });
  await rtm.CallWait('add', 2, 2);
  assert.ok(messages.some((m) => JSON.parse(m).data === 4));
  rtm.Close();
  await sleep(50);
  assert.deepEqual(order, ['authenticating', 'open'], 'no onClose after Close(), as in the original');
});

test('a rejected authentication: onError rtm/auth-error, no reconnect', async () => {
  const errors = [];
  const reconnects = [];
  const options = { authenticationData: 'not-a-user', reconnectDelayMs: 20, onReconnecting: (n) => reconnects.push(n) };
  options.onError = (e) => errors.push(e);
  const rtm = client(authed.url, options);
  await eventually('onError', () => errors.length > 0);
  assert.deepEqual(errors[0], { code: 'rtm/auth-error', data: 'bad token' });
  await sleep(200);
  assert.deepEqual(reconnects, []);
  assert.equal(rtm.Authenticated, false);
  assert.equal((await rejection('a call after rejection', rtm.CallWait('add', 1, 2))).code, 'rtm/closed');
});

test('socket errors reach onError as rtm/network-error; onClose and onReconnecting(attempt) follow', async () => {
  const errors = [];
  const closes = [];
  const attempts = [];
  client(DEAD_URL, {
    reconnectDelayMs: 20,
    onError: (e) => errors.push(e),
    onClose: () => closes.push(1),
    onReconnecting: (n) => attempts.push(n),
  });
  await eventually('three reconnect attempts', () => attempts.length >= 3);
  assert.deepEqual(attempts.slice(0, 3), [1, 2, 3]);
  assert.ok(errors.length >= 3 && errors.every((e) => e.code === 'rtm/network-error' && e.data), JSON.stringify(errors.map((e) => e.code)));
  assert.ok(closes.length >= 3);
});

test('Socket is the last WebSocket, closed or not, as the original\'s field: readyState can be read after a disconnect', async () => {
  const fixture = await Fixture.start();
  try {
    const states = [];
    const options = { reconnectDelayMs: 50, onClose: () => states.push(rtm.Socket.readyState) };
    const opened = called(options, 'onOpen');
    const rtm = client(fixture.url, options);
    assert.equal(rtm.Socket, undefined, 'no socket before the first attempt');
    await opened;
    const first = rtm.Socket;
    assert.equal(first.readyState, WebSocket.OPEN);
    await fixture.stop();
    await eventually('onClose', () => states.length > 0);
    assert.equal(states[0], WebSocket.CLOSED, 'onClose sees the closed socket');
    // While waiting to reconnect, and while attempts fail: the last one, closed.
    await eventually('a failed reconnect', () => states.length >= 2);
    assert.ok([WebSocket.CONNECTING, WebSocket.CLOSED].includes(rtm.Socket.readyState), `readyState ${rtm.Socket.readyState}`);
    const reopened = called(options, 'onOpen');
    await fixture.start();
    await reopened;
    assert.notEqual(rtm.Socket, first, 'the reconnect replaced it');
    assert.equal(rtm.Socket.readyState, WebSocket.OPEN);
    assert.equal(first.readyState, WebSocket.CLOSED);
    const last = rtm.Socket;
    rtm.Close();
    assert.equal(rtm.Socket, last, 'Close() keeps it, as the original');
    await eventually('the socket closed', () => rtm.Socket.readyState === WebSocket.CLOSED);
  } finally {
    await fixture.kill();
  }
});

test('an HTTP 404 to the upgrade is retried as the original does (onError, onClose, onReconnecting); Socket stays readable', async () => {
  const server = await httpServer(404);
  const errors = [];
  const attempts = [];
  const closedStates = [];
  const rtm = client(`${server.url}wrong`, {
    reconnectDelayMs: 20,
    onError: (e) => errors.push(e.code),
    onClose: () => closedStates.push(rtm.Socket.readyState),
    onReconnecting: (n) => attempts.push(n),
  });
  await eventually('three reconnect attempts', () => attempts.length >= 3 && closedStates.length >= 3);
  assert.ok(server.upgrades >= 3);
  assert.ok(errors.length >= 3 && errors.every((c) => c === 'rtm/network-error'), JSON.stringify(errors));
  assert.ok(closedStates.every((s) => s === WebSocket.CLOSED), JSON.stringify(closedStates));
  assert.equal(rtm.client.state === 'closed', false);
  rtm.Close();
  await server.close();
});

test('a URL that is not ws:// or wss:// throws, as new WebSocket does', () => {
  assert.throws(() => new cjs.RtmClient('http://127.0.0.1:7070/'), (e) => e.code === 'rtm/bad-request' && /only ws:\/\/ and wss:\/\//.test(e.message));
});

// ----- the original's faults, each fixed -----

test('fault 1: a call in flight when the socket drops rejects with rtm/disconnected (the original never settles it)', async () => {
  const fixture = await Fixture.start();
  try {
    const options = { reconnectDelayMs: 50 };
    const opened = called(options, 'onOpen');
    const rtm = client(fixture.url, options);
    await opened;
    const inFlight = failure('the in-flight call', rtm.CallWait('sleep', 10_000));
    await sleep(50);
    await fixture.kill();
    const err = await within('the in-flight call', inFlight, 2000);
    assert.equal(err.code, 'rtm/disconnected');
    assert.match(err.message, /connection lost/);
  } finally {
    await fixture.kill();
  }
});

test('fault 2: push subscriptions are re-sent after every reconnect, after re-auth (the original drops them)', async () => {
  const fixture = await Fixture.start(['--auth']);
  try {
    const frames = [];
    const replies = [];
    const options = { authenticationData: 'user:dee', reconnectDelayMs: 30, WebSocket: spy(frames), onMessage: (raw) => replies.push(JSON.parse(raw)) };
    const rtm = client(fixture.url, options);
    const scores = new Inbox();
    await rtm.SubscribePush('score', ['m1'], scores.push);
    for (let round = 1; round <= 2; round++) {
      await fixture.kill();
      const reopened = called(options, 'onOpen');
      frames.length = 0;
      await fixture.start();
      await reopened;
      assert.deepEqual(frames.slice(0, 2).map((f) => f.type), ['auth', 'subscribe'], `round ${round}`);
      assert.deepEqual(frames[1].tags, ['m1']);
      // The server decides subscribes asynchronously: a push before its ack could miss it.
      await eventually('the re-sent subscribe acknowledged', () => replies.some((r) => r.id === frames[1].id && r.data === true));
      await rtm.CallWait('push', 'score', ['m1'], round);
      assert.equal(await scores.take(`the push after restart ${round}`), round);
    }
  } finally {
    await fixture.kill();
  }
});

test('fault 3: the offline queue is bounded, rtm/queue-full past it (the original grows without bound)', async () => {
  const small = client(DEAD_URL, { reconnectDelayMs: 10_000, offlineQueue: 3 });
  const queued = [small.CallWait('add', 1, 1), small.CallWait('add', 2, 2)].map((call) => failure('a queued call at Close', call));
  await small.Call('echo', 1); // fire-and-forget: queued too
  assert.equal((await rejection('the 4th CallWait', small.CallWait('add', 3, 3), 100)).code, 'rtm/queue-full');
  assert.equal((await rejection('the 4th Call', small.Call('echo', 2), 100)).code, 'rtm/queue-full');
  assert.equal(small.client.queuedCalls, 3);
  small.Close();
  for (const call of queued) assert.equal((await within('a queued call at Close', call, 100)).code, 'rtm/closed');
  // The default bound, 1024, at its edge.
  const big = client(DEAD_URL, { reconnectDelayMs: 10_000 });
  const waiting = [];
  for (let i = 0; i < 1024; i++) waiting.push(big.CallWait('add', i, 1).catch((e) => e.code));
  const refused = await rejection('call 1025', big.CallWait('add', 0, 0), 100);
  assert.equal(refused.code, 'rtm/queue-full');
  assert.match(refused.message, /1024/);
  assert.equal(big.client.queuedCalls, 1024);
  big.Close();
  assert.deepEqual(new Set(await Promise.all(waiting)), new Set(['rtm/closed']));
});

test('fault 4: calls time out with rtm/timeout (the original waits forever)', async () => {
  const rtm = client(plain.url, { reconnectDelayMs: 50, callTimeoutMs: 200 });
  const started = Date.now();
  const err = await rejection('a call past its timeout', rtm.CallWait('sleep', 5000), 2000);
  assert.equal(err.code, 'rtm/timeout');
  assert.ok(Date.now() - started >= 190);
  assert.equal(await rtm.CallWait('sleep', 50), 50);
  // Without the option: the default, 30 s.
  assert.equal(client(plain.url).client.core.config.callTimeoutMs, 30_000);
});

test('fault 5: backoff with jitter and a cap is available (the original only has a fixed delay)', async () => {
  const rtm = client(DEAD_URL, { reconnect: { initialMs: 10, maxMs: 40, factor: 2, jitter: 'full' }, jitterSeed: 7 });
  const delays = [];
  rtm.client.on('reconnecting', ({ attempt, delayMs }) => delays.push([attempt, delayMs]));
  await eventually('eight reconnect delays', () => delays.length >= 8);
  for (const [attempt, delay] of delays) {
    const cap = Math.min(10 * 2 ** (attempt - 1), 40);
    assert.ok(delay >= 0 && delay <= cap, `attempt ${attempt}: ${delay} ms > ${cap} ms`);
  }
  assert.ok(new Set(delays.map(([, d]) => d)).size > 4, `no jitter: ${JSON.stringify(delays)}`);
  // reconnectDelayMs alone is still a fixed delay, as the original's.
  const fixed = client(DEAD_URL, { reconnectDelayMs: 15 });
  const fixedDelays = [];
  fixed.client.on('reconnecting', ({ delayMs }) => fixedDelays.push(delayMs));
  await eventually('three fixed delays', () => fixedDelays.length >= 3);
  assert.deepEqual(new Set(fixedDelays), new Set([15]));
});

test('fault 6: Close() rejects what is pending with rtm/closed (the original leaves it hanging)', async () => {
  const options = { reconnectDelayMs: 50 };
  const opened = called(options, 'onOpen');
  const rtm = client(plain.url, options);
  await opened;
  const inFlight = failure('the in-flight call', rtm.CallWait('sleep', 5000));
  const queuedElsewhere = client(DEAD_URL, { reconnectDelayMs: 10_000 });
  const queued = failure('the queued call', queuedElsewhere.CallWait('add', 1, 2));
  const push = failure('the waiting SubscribePush', queuedElsewhere.SubscribePush('score', ['m1'], () => {}));
  await sleep(20);
  rtm.Close();
  queuedElsewhere.Close();
  assert.equal((await within('the in-flight call', inFlight, 500)).code, 'rtm/closed');
  assert.equal((await within('the queued call', queued, 500)).code, 'rtm/closed');
  assert.equal((await within('the waiting SubscribePush', push, 500)).code, 'rtm/closed');
  assert.equal((await rejection('a call after Close', rtm.CallWait('add', 1, 2), 500)).code, 'rtm/closed');
});

test('fault 7: nothing polls; a SubscribePush made offline is sent the moment the connection is ready (the original polls every 100 ms)', async () => {
  // Offline: the client waits for its reconnect timer, armed once; no timer is armed meanwhile.
  const offline = client(DEAD_URL, { reconnectDelayMs: 5000 });
  await eventually('the first attempt to fail', () => offline.client.state === 'reconnecting');
  const pending = offline.SubscribePush('score', ['m1'], () => {});
  const original = globalThis.setTimeout;
  let armed = 0;
  globalThis.setTimeout = (...args) => {
    armed += 1;
    return original(...args);
  };
  try {
    await new Promise((resolve) => original(resolve, 1000));
  } finally {
    globalThis.setTimeout = original;
  }
  assert.equal(armed, 0, `timers armed while waiting offline: ${armed}`);
  offline.Close();
  await pending.catch(() => {});

  // Online: the subscribe goes out right after the auth reply, before onOpen runs.
  const frames = [];
  const options = { authenticationData: 'user:eve', WebSocket: spy(frames) };
  const seenAtOpen = [];
  options.onOpen = () => seenAtOpen.push(...frames.map((f) => f.type));
  const rtm = client(authed.url, options);
  const subscribed = rtm.SubscribePush('score', ['m2'], () => {});
  await within('the SubscribePush', subscribed);
  assert.deepEqual(seenAtOpen, ['auth', 'subscribe']);
});

test('fault 8: SubscribePush and calls made while the auth is in progress wait for it (the original sends them first: rtm/unauthenticated)', async () => {
  // onAuthenticating runs with the socket open and the auth not yet answered:
  // the original sends what is asked there at once, before the auth.
  let during = null;
  const options = { authenticationData: 'user:fay' };
  options.onAuthenticating = () => {
    during = [rtm.CallWait('whoami'), rtm.SubscribePush('score', ['m4'], () => {})];
  };
  const rtm = client(authed.url, options);
  const scores = new Inbox();
  await within('the SubscribePush', rtm.SubscribePush('score', ['m3'], scores.push));
  await rtm.CallWait('push', 'score', ['m3'], 9);
  assert.equal(await scores.take('the push'), 9);
  assert.ok(during, 'onAuthenticating was called');
  assert.deepEqual(await within('the call made during the auth', during[0]), { user: 'fay' });
  assert.equal(typeof (await within('the SubscribePush made during the auth', during[1])), 'function');
});

test('fault 9: a denied SubscribePush removes its callback (the original keeps it, so it hears that event anyway)', async () => {
  const rtm = client(authed.url, { authenticationData: 'user:gus' });
  const heard = new Inbox();
  const markers = new Inbox();
  rtm.Subscribe('marker', markers.push);
  const err = await rejection('a denied SubscribePush', rtm.SubscribePush('score', ['private-1'], heard.push));
  assert.equal(err.code, 'rtm/forbidden');
  await rtm.CallWait('emit', 'score', 'emitted to everyone');
  await rtm.CallWait('emit', 'marker', 'm');
  assert.equal(await markers.take('the marker'), 'm');
  assert.equal(heard.items.length, 0, 'the denied callback was called');
});

test('fault 10: replies settle and are forgotten (the original keeps every call in InvokeQueue forever)', async () => {
  const options = {};
  const opened = called(options, 'onOpen');
  const rtm = client(plain.url, options);
  await opened;
  const calls = [];
  for (let i = 0; i < 1000; i++) calls.push(rtm.CallWait('add', i, 1));
  for (let i = 0; i < 1000; i++) rtm.Call('echo', i);
  assert.equal((await Promise.all(calls)).at(-1), 1000);
  assert.equal(rtm.client.pendingCalls, 0);
  assert.equal(rtm.client.queuedCalls, 0);
});

test('fault 11: options without reconnectDelayMs still reconnect, after 1000 ms (the original then never reconnects)', async () => {
  const fixture = await Fixture.start();
  try {
    const options = {};
    const opened = called(options, 'onOpen');
    client(fixture.url, options);
    await opened;
    await fixture.kill();
    const reopened = called(options, 'onOpen');
    await fixture.start();
    const started = Date.now();
    await within('the reconnect', reopened, 3000);
    assert.ok(Date.now() - started < 2500);
  } finally {
    await fixture.kill();
  }
});

test('a graceful server stop (1001) and restart: onClose, onReconnecting, onOpen again', async () => {
  const fixture = await Fixture.start();
  try {
    const events = [];
    const options = {
      reconnectDelayMs: 30,
      onOpen: () => events.push('open'),
      onClose: () => events.push('close'),
      onReconnecting: (n) => events.push(`reconnecting ${n}`),
    };
    const rtm = client(fixture.url, options);
    await eventually('open', () => events.includes('open'));
    const closed = rtm.client.on('close', (info) => events.push(`code ${info.code}`));
    await fixture.stop();
    await eventually('the close', () => events.includes('close'));
    assert.ok(events.includes('code 1001'), JSON.stringify(events));
    await fixture.start();
    await eventually('open again', () => events.filter((e) => e === 'open').length === 2, WAIT_MS);
    closed();
    assert.ok(events.includes('reconnecting 1'), JSON.stringify(events));
    assert.equal(await rtm.CallWait('add', 1, 2), 3);
  } finally {
    await fixture.kill();
  }
});
