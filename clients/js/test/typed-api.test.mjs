// The typed API (connect, Client) against rtm-fixture: calls, errors,
// timeouts, abort, events, push subscriptions, auth, the offline queue, close,
// bad URLs (and a wrong path: HTTP 404 to the upgrade), a silent server and
// one that stops reading. The Rust adapter's client tests
// (conformance/tests/adapter_client.rs) name the same rules.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as rtm from '../dist/esm/index.js';
import { closeTracked, DEAD_URL, eventually, failure, Fixture, httpServer, Inbox, next, rawServer, rejection, sleep, track, within } from './helpers.mjs';

const require = createRequire(import.meta.url);

const { ErrorCodes, RtmError } = rtm;
// Every client a test makes is closed after it, pass or fail.
class Client extends rtm.Client {
  constructor(...args) {
    super(...args);
    track(this);
  }
}
const connect = async (url, options) => {
  const client = await rtm.connect(url, options);
  return track(client);
};

let plain; // no auth
let authed; // --auth: "user:<id>" tokens, "private-" tags denied

const fast = { reconnect: { delayMs: 50 }, connectTimeoutMs: 5000 };

before(async () => {
  [plain, authed] = await Promise.all([Fixture.start(), Fixture.start(['--auth'])]);
});

afterEach(closeTracked);

after(async () => {
  await Promise.all([plain?.stop(), authed?.stop()]);
});

test('call resolves with the result, typed by the caller', async () => {
  const client = await connect(plain.url, fast);
  assert.equal(client.state, 'open');
  assert.equal(await client.call('add', 1, 2), 3);
  const value = { nested: [1, 'two', { three: 3 }], unicode: 'é ✓', nothing: null };
  assert.deepEqual(await client.call('echo', value), value);
  assert.equal(await client.call('echo'), null);
  // Arguments that JSON cannot carry fail the call at once.
  const err = await rejection('a BigInt argument', client.call('echo', 10n));
  assert.equal(err.code, ErrorCodes.BadRequest);
  client.close();
});

test('invoke is fire-and-forget and reaches the server', async () => {
  const client = await connect(plain.url, fast);
  const notes = new Inbox();
  client.subscribe('note', notes.push);
  assert.equal(client.invoke('emit', 'note', 'written'), undefined);
  assert.equal(await notes.take('the emitted note'), 'written');
  assert.equal(client.pendingCalls, 0, 'nothing waits for the reply');
  client.close();
  assert.throws(() => client.invoke('emit', 'note', 'late'), (e) => e instanceof RtmError && e.code === 'rtm/closed');
});

test('server errors reject with their wire code and message', async () => {
  const client = await connect(plain.url, fast);
  let err = await rejection('fail', client.call('fail', 'out of stock'));
  assert.ok(err instanceof RtmError);
  assert.equal(err.code, 'rtm/handler-error');
  assert.equal(err.message, 'out of stock');
  err = await rejection('missing', client.call('missing'));
  assert.equal(err.code, 'rtm/function-not-found');
  assert.match(err.message, /missing/);
  err = await rejection('panic', client.call('panic'));
  assert.equal(err.code, 'rtm/internal');
  err = await rejection('add of strings', client.call('add', 'a', 'b'));
  assert.equal(err.code, 'rtm/handler-error');
  // The connection is still usable.
  assert.equal(await client.call('add', 20, 22), 42);
  client.close();
});

test('a call without reply within its timeout fails with rtm/timeout; the connection stays usable', async () => {
  const client = await connect(plain.url, { ...fast, callTimeoutMs: 200 });
  const started = Date.now();
  const err = await rejection('the call timeout', client.call('sleep', 2000));
  assert.equal(err.code, 'rtm/timeout');
  assert.ok(Date.now() - started >= 190, `timed out after ${Date.now() - started} ms`);
  assert.equal(await client.call('add', 1, 2), 3);
  // One call's own timeout.
  const own = await rejection('callWith timeoutMs', client.callWith({ timeoutMs: 50 }, 'sleep', 1000));
  assert.equal(own.code, 'rtm/timeout');
  assert.equal(await client.callWith({ timeoutMs: null }, 'sleep', 300), 300);
  client.close();
});

test('an AbortSignal aborts a call with rtm/aborted', async () => {
  const client = await connect(plain.url, fast);
  const controller = new AbortController();
  const call = failure('the aborted call', client.callWith({ signal: controller.signal }, 'sleep', 5000));
  await sleep(20);
  controller.abort(new Error('user left'));
  const err = await within('the aborted call', call, 1000);
  assert.equal(err.code, 'rtm/aborted');
  assert.match(err.message, /user left/);
  assert.equal(client.pendingCalls, 0);
  // Already aborted: rejects at once, nothing sent.
  const done = await rejection('a pre-aborted call', client.callWith({ signal: AbortSignal.abort() }, 'add', 1, 2), 100);
  assert.equal(done.code, 'rtm/aborted');
  assert.equal(await client.call('add', 1, 2), 3);
  client.close();
});

test('subscribe gets events; its unsubscribe function stops them', async () => {
  const client = await connect(plain.url, fast);
  const alerts = new Inbox();
  const markers = new Inbox();
  const off = client.subscribe('alert', alerts.push);
  client.subscribe('marker', markers.push);
  assert.equal(await client.call('emit', 'alert', 'hello', 1), await client.call('count'));
  assert.deepEqual(await alerts.take('the first alert'), ['hello', 1]);
  off();
  off(); // twice is harmless
  await client.call('emit', 'alert', 'again', 2);
  await client.call('emit', 'marker', 1);
  // Events arrive in order: once the marker is here, the second alert was dispatched too, to no one.
  assert.equal(await markers.take('the marker'), 1);
  assert.equal(alerts.items.length, 0, 'an unsubscribed handler got an event');
  client.close();
});

test('a handler that throws is reported and does not stop the others', async () => {
  const client = await connect(plain.url, fast);
  const seen = new Inbox();
  const errors = [];
  const original = console.error;
  console.error = (...args) => errors.push(args);
  try {
    client.subscribe('boom', () => {
      throw new Error('handler bug');
    });
    client.subscribe('boom', seen.push);
    await client.call('emit', 'boom', 'x');
    assert.equal(await seen.take('the second handler'), 'x');
  } finally {
    console.error = original;
  }
  assert.ok(errors.some((args) => args.some((a) => a instanceof Error && a.message === 'handler bug')));
  assert.equal(await client.call('add', 1, 1), 2);
  client.close();
});

test('subscribePush is allowed or forbidden by the server; its undo tells the server', async () => {
  const client = await connect(authed.url, { ...fast, auth: 'user:pat' });
  const scores = new Inbox();
  const markers = new Inbox();
  client.subscribe('marker', markers.push);
  const undo = await client.subscribePush('score', ['public-7'], scores.push);
  assert.equal(client.pushSubscriptions, 1);
  await client.call('push', 'score', ['public-7'], 3);
  assert.equal(await scores.take('the pushed score'), 3);

  const denied = await rejection('a denied subscription', client.subscribePush('score', ['private-x'], scores.push));
  assert.equal(denied.code, 'rtm/forbidden');
  assert.equal(client.pushSubscriptions, 1, 'a denied subscription is not held');

  await undo();
  assert.equal(client.pushSubscriptions, 0);
  await client.call('push', 'score', ['public-7'], 4);
  await client.call('emit', 'marker', 'after');
  assert.equal(await markers.take('the marker'), 'after');
  assert.equal(scores.items.length, 0, 'an undone push subscription got a push');
  // Bad arguments are refused at once.
  assert.equal((await rejection('empty event', client.subscribePush('', ['t']))).code, 'rtm/bad-request');
  assert.equal((await rejection('tags not strings', client.subscribePush('e', [1]))).code, 'rtm/bad-request');
  client.close();
});

test('undoing one of two equal push subscriptions keeps the other', async () => {
  const client = await connect(plain.url, fast);
  const first = new Inbox();
  const second = new Inbox();
  const undoFirst = await client.subscribePush('score', ['m1'], first.push);
  await client.subscribePush('score', ['m1'], second.push);
  await undoFirst();
  await client.call('push', 'score', ['m1'], 5);
  assert.equal(await second.take('a push to the remaining subscription'), 5);
  assert.equal(first.items.length, 0);
  // unsubscribePush drops it for everyone.
  await client.unsubscribePush('score', ['m1']);
  assert.equal(client.pushSubscriptions, 0);
  client.close();
});

test('accepted auth opens the client with its identity', async () => {
  const client = new Client(authed.url, { ...fast, auth: 'user:alice' });
  const opened = next(client, 'open');
  assert.notEqual(client.state, 'open');
  const info = await opened;
  assert.deepEqual(info, { authenticated: true, authData: { user: 'alice' } });
  assert.equal(client.state, 'open');
  await within('waitOpen when open', client.waitOpen(1000));
  assert.deepEqual(await client.call('whoami'), { user: 'alice' });
  client.close();
});

test('a rejected auth fails connect with rtm/auth-rejected and never reconnects', async () => {
  const err = await rejection('connect with a bad token', connect(authed.url, { ...fast, auth: 'alice' }));
  assert.equal(err.code, 'rtm/auth-rejected');
  assert.equal(err.message, 'bad token');

  // The same through a started client: it ends closed and refuses calls.
  const client = new Client(authed.url, { ...fast, auth: 'nope' });
  const attempts = [];
  const errors = [];
  client.on('connecting', ({ attempt }) => attempts.push(attempt));
  client.on('error', (e) => errors.push(e.code));
  const closed = next(client, 'close');
  const open = await rejection('waitOpen', client.waitOpen(5000));
  assert.equal(open.code, 'rtm/auth-rejected');
  assert.equal((await closed).final, true);
  assert.equal(client.state, 'closed');
  assert.deepEqual(errors, ['rtm/auth-rejected']);
  const after = await rejection('a call after rejection', client.call('add', 1, 2));
  assert.equal(after.code, 'rtm/closed');
  assert.match(after.message, /bad token/);
  // Proving an absence needs some time to pass: ten reconnect delays.
  await sleep(500);
  assert.deepEqual(attempts, [0], 'a rejected client reconnected');
  // waitOpen after the rejection already happened still says why.
  assert.equal((await rejection('a late waitOpen', client.waitOpen(1000))).code, 'rtm/auth-rejected');
});

test('a URL that is not ws:// or wss:// fails at once with rtm/bad-request', async () => {
  for (const url of ['http://127.0.0.1:7070/', 'ftp://127.0.0.1:7070/', 'ws://', 'ws:///no-host', 'not a url', '']) {
    const err = await rejection(url, connect(url, { connectTimeoutMs: 60_000 }), 1000);
    assert.equal(err.code, 'rtm/bad-request', `${url}: ${err}`);
    assert.ok(err.message.includes(url), `${url}: ${err.message}`);
  }
  // A call on a started client fails with the reason, queued before the attempt or made after it.
  const client = new Client('http://127.0.0.1:7070/');
  const err = await rejection('a queued call', client.call('add', 1, 2), 1000);
  assert.equal(err.code, 'rtm/bad-request');
  assert.match(err.message, /only ws:\/\/ and wss:\/\//);
  assert.equal(client.state, 'closed');
  const later = await rejection('a later call', client.call('add', 1, 2), 1000);
  assert.equal(later.code, 'rtm/closed');
  assert.match(later.message, /only ws:\/\/ and wss:\/\//);
});

test('a client that never opens says why its last attempt failed', async () => {
  const giveUp = await rejection('connect, never reconnecting', connect(DEAD_URL, { reconnect: false }));
  assert.equal(giveUp.code, 'rtm/closed');
  assert.match(giveUp.message, /ECONNREFUSED 127\.0\.0\.1:1/);
  const impatient = await rejection('connect, 300 ms', connect(DEAD_URL, { reconnect: { delayMs: 20 }, connectTimeoutMs: 300 }));
  assert.equal(impatient.code, 'rtm/timeout');
  assert.match(impatient.message, /not open within 300 ms: .*127\.0\.0\.1:1/);
});

// The status of a refused upgrade is visible with `ws` (the default in Node
// without a global WebSocket, i.e. up to Node 21), not with a browser's
// WebSocket nor Node 22's global one: there, `ws` is given.
const withWs = globalThis.WebSocket ? { WebSocket: require('ws') } : {};

test('a wrong path (HTTP 404 to the first upgrade) fails connect at once with rtm/bad-request naming the status and URL', async () => {
  const server = await httpServer(404);
  const url = `${server.url}no/such/path`;
  const client = new Client(url, { ...withWs, reconnect: { delayMs: 20 } });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const started = Date.now();
  const err = await rejection('waitOpen on a 404', client.waitOpen(60_000), 2000);
  assert.ok(err instanceof RtmError);
  assert.equal(err.code, 'rtm/bad-request');
  assert.ok(err.message.includes(url), err.message);
  assert.match(err.message, /HTTP 404 Not Found/);
  assert.ok(Date.now() - started < 1000, `failed after ${Date.now() - started} ms`);
  assert.equal(client.state, 'closed');
  assert.deepEqual(errors.map((e) => e.code), ['rtm/bad-request']);
  await sleep(100);
  assert.equal(server.upgrades, 1, 'the 404 was retried');
  const later = await rejection('a call after', client.call('add', 1, 2), 1000);
  assert.equal(later.code, 'rtm/closed');
  assert.match(later.message, /HTTP 404/);
  // connect() says the same, long before its timeout; other 4xx too.
  for (const status of [404, 400, 401, 403, 410]) {
    server.answer = status;
    const failed = await rejection(`connect to a ${status}`, connect(url, { ...withWs, reconnect: { delayMs: 20 }, connectTimeoutMs: 60_000 }), 2000);
    assert.equal(failed.code, 'rtm/bad-request', `${status}: ${failed}`);
    assert.match(failed.message, new RegExp(`HTTP ${status}`));
  }
  assert.equal(server.upgrades, 6);
  await server.close();
});

test('HTTP 408, 429 and 5xx to the first upgrade are retried, as other failed attempts', async () => {
  const server = await httpServer(503);
  for (const status of [503, 429, 408, 502]) {
    server.answer = status;
    const before = server.upgrades;
    const err = await rejection(`connect to a ${status}`, connect(server.url, { ...withWs, reconnect: { delayMs: 20 }, connectTimeoutMs: 300 }));
    assert.equal(err.code, 'rtm/timeout', `${status}: ${err}`);
    assert.match(err.message, new RegExp(`not open within 300 ms: the server answered the WebSocket upgrade with HTTP ${status}`));
    assert.ok(server.upgrades - before >= 2, `${status}: ${server.upgrades - before} attempts`);
  }
  // Retried until the server takes it.
  server.answer = 503;
  const client = new Client(server.url, { ...withWs, reconnect: { delayMs: 20 }, heartbeat: null });
  await eventually('two refused attempts', () => server.upgrades >= 2);
  server.answer = 'websocket';
  await within('open once the server takes it', client.waitOpen());
  client.close();
  await server.close();
});

test('a 404 after the URL once worked is retried (a server restarting), until it works again', async () => {
  const server = await httpServer('websocket');
  const client = await connect(server.url, { ...withWs, reconnect: { delayMs: 20 }, heartbeat: null });
  server.answer = 404;
  const reasons = [];
  client.on('close', (info) => reasons.push(info.reason));
  const before = server.upgrades;
  server.dropAll();
  await eventually('three refused reconnects', () => server.upgrades - before >= 3);
  assert.notEqual(client.state, 'closed');
  assert.ok(reasons.slice(1).every((r) => /\b404\b/.test(r)), JSON.stringify(reasons)); // `ws`: "Unexpected server response: 404"
  server.answer = 'websocket';
  await within('open again', client.waitOpen());
  client.close();
  await server.close();
});

test("where the status is hidden (a browser's WebSocket), a 404 is retried until the connect timeout, as before", async () => {
  const WS = require('ws');
  // The standard WebSocket API only, as a browser has it (no `on`).
  class BrowserWebSocket {
    constructor(url) {
      this.ws = new WS(url);
    }
    get readyState() { return this.ws.readyState; }
    get bufferedAmount() { return this.ws.bufferedAmount; }
    send(data) { this.ws.send(data); }
    close(code, reason) { this.ws.close(code, reason); }
    addEventListener(type, listener) { this.ws.addEventListener(type, listener); }
  }
  const server = await httpServer(404);
  const err = await rejection('connect to a 404', connect(server.url, { WebSocket: BrowserWebSocket, reconnect: { delayMs: 20 }, connectTimeoutMs: 300 }));
  assert.equal(err.code, 'rtm/timeout');
  assert.ok(server.upgrades >= 2, `${server.upgrades} attempts`);
  await server.close();
});

test('a URL without a path means the root', async () => {
  const client = await connect(plain.url.replace(/\/$/, ''), fast);
  assert.equal(await client.call('add', 1, 2), 3);
  client.close();
});

test('calls made before open are queued, then sent in order after auth', async () => {
  const client = new Client(authed.url, { ...fast, auth: 'user:bob' });
  const first = client.call('whoami');
  client.invoke('emit_to', 'bob', 'note', 7);
  const second = client.call('add', 3, 4);
  assert.equal(client.queuedCalls, 3);
  assert.notEqual(client.state, 'open');
  const notes = new Inbox();
  client.subscribe('note', notes.push);
  // whoami answers as bob: the queued calls waited for the auth.
  assert.deepEqual(await within('the first queued call', first), { user: 'bob' });
  assert.equal(await within('the second queued call', second), 7);
  assert.equal(await notes.take('the queued note'), 7);
  client.close();
});

test('calls refused when offline if asked: whenOffline "fail"', async () => {
  const client = new Client(DEAD_URL, fast);
  const err = await rejection('a fail-fast call', client.callWith({ whenOffline: 'fail' }, 'add', 1, 2), 200);
  assert.equal(err.code, 'rtm/disconnected');
  assert.equal(client.queuedCalls, 0);
  client.close();
});

test('close fails pending calls with rtm/closed, and every later call', async () => {
  const client = await connect(plain.url, fast);
  const pending = failure('the pending call', client.call('sleep', 5000));
  const held = client.subscribePush('score', ['m9']).catch(() => {});
  await sleep(20);
  const closes = [];
  client.on('close', (info) => closes.push(info));
  client.close();
  assert.equal((await within('the pending call', pending, 1000)).code, 'rtm/closed');
  await within('the subscription to settle', held); // acked or closed: it settles
  assert.equal((await rejection('a call after close', client.call('add', 1, 2), 1000)).code, 'rtm/closed');
  assert.equal(client.state, 'closed');
  assert.deepEqual(closes, [{ code: 1000, reason: 'closed by the application', final: true }]);
  client.close(); // twice is harmless
});

test('connection events and the state getter follow the connection', async () => {
  const client = new Client(plain.url, fast);
  const states = [];
  client.on('state', (s) => states.push(s));
  assert.equal(client.state, 'connecting');
  await next(client, 'open');
  client.close();
  assert.deepEqual(states, ['open', 'closed']);
  // off() removes a listener.
  const other = new Client(plain.url, fast);
  const seen = [];
  const listener = (s) => seen.push(s);
  other.on('state', listener);
  other.off('state', listener);
  await other.waitOpen(5000);
  other.close();
  assert.deepEqual(seen, []);
});

test('the call timeout fires even when the server stops reading', async () => {
  const server = await rawServer('stalled');
  const client = await connect(server.url, { ...fast, callTimeoutMs: 300, maxBufferedBytes: null });
  const big = 'x'.repeat(512 * 1024);
  const calls = Array.from({ length: 40 }, () => failure('a call to a stalled server', client.call('f', big)));
  for (const call of calls) assert.equal((await within('a call to a stalled server', call)).code, 'rtm/timeout');
  client.close();
  assert.equal((await rejection('a call after close', client.call('f'))).code, 'rtm/closed');
  await server.close();
});

test('bytes for a server that stopped reading are bounded: past maxBufferedBytes the connection counts as lost', async () => {
  const server = await rawServer('stalled');
  const client = await connect(server.url, { reconnect: { delayMs: 20 }, maxBufferedBytes: 1024 * 1024, callTimeoutMs: 20_000 });
  const closed = next(client, 'close');
  // 16 MiB of arguments: more than the socket buffers hold, so bytes pile up unsent.
  const big = 'x'.repeat(256 * 1024);
  const calls = Array.from({ length: 64 }, () => client.call('f', big).catch((e) => e.code));
  const codes = await within('every call to fail', Promise.all(calls));
  assert.ok(codes.includes('rtm/disconnected'), `the stalled connection was not dropped: ${codes}`);
  assert.match((await closed).reason, /the server stopped reading/);
  client.close();
  await server.close();
});

test('a server silent past the heartbeat timeout is dropped and reconnected', async () => {
  const server = await rawServer('silent');
  const client = await connect(server.url, { reconnect: { delayMs: 50 }, heartbeat: { intervalMs: 100, timeoutMs: 300 }, callTimeoutMs: 60_000 });
  const inFlight = failure('the in-flight call', client.call('f'));
  const closed = next(client, 'close');
  const started = Date.now();
  assert.equal((await within('the in-flight call', inFlight)).code, 'rtm/disconnected');
  const info = await closed;
  assert.match(info.reason, /nothing from the server for 300 ms/);
  assert.ok(Date.now() - started >= 250, `dropped after ${Date.now() - started} ms`);
  assert.equal((await next(client, 'connecting')).attempt, 1);
  client.close();
  await server.close();
});

test('a quiet server that answers pings stays connected', async () => {
  const client = await connect(plain.url, { ...fast, heartbeat: { intervalMs: 50, timeoutMs: 600 } });
  const closes = [];
  client.on('close', (info) => closes.push(info));
  await sleep(900);
  assert.deepEqual(closes, []);
  assert.equal(client.state, 'open');
  assert.equal(await client.call('add', 1, 2), 3);
  client.close();
});

test('not authenticated in time: calls get rtm/unauthenticated, the server closes with 4008, the client reconnects', async () => {
  const fixture = await Fixture.start(['--auth', '--auth-timeout-ms', '300']);
  try {
    const client = await connect(fixture.url, fast); // no auth given
    assert.equal((await rejection('a call before auth', client.call('add', 1, 2))).code, 'rtm/unauthenticated');
    const closed = await next(client, 'close');
    assert.equal(closed.code, 4008);
    assert.equal(closed.final, false);
    assert.equal((await next(client, 'connecting')).attempt, 1);
    client.close();
  } finally {
    await fixture.stop();
  }
});

test('the connect timeout of a socket that never opens retries it', async () => {
  // A listener that accepts TCP but never answers the handshake.
  const net = await import('node:net');
  const sockets = [];
  const server = net.createServer((s) => sockets.push(s));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new Client(`ws://127.0.0.1:${server.address().port}/`, { openTimeoutMs: 150, reconnect: { delayMs: 10 } });
  const closed = await next(client, 'close');
  assert.match(closed.reason, /not open within 150 ms/);
  await eventually('a second attempt', () => sockets.length >= 2);
  client.close();
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => server.close(resolve));
});
