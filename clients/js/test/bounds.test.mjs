// Bounds at their edge, over real sockets: the server's frame size and
// in-flight limits (rtm-fixture --max-frame-bytes, --max-in-flight), the
// client's offline queue, call timeout and reconnect attempts.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, connect, RtmError } from '../dist/esm/index.js';
import { closeTracked, DEAD_URL, failure, Fixture, next, rejection, track, within } from './helpers.mjs';

afterEach(closeTracked);

test('a frame of exactly --max-frame-bytes is served; one byte more closes the connection (1009), which the client survives', async () => {
  const LIMIT = 300;
  const fixture = await Fixture.start(['--max-frame-bytes', String(LIMIT)]);
  try {
    const client = track(await connect(fixture.url, { reconnect: { delayMs: 20 } }));
    // No auth, nothing else sent: request ids are "1", "2", … (one digit here).
    const overhead = JSON.stringify({ id: '1', type: 'invoke', function: 'echo', data: [''] }).length;
    const exact = 'x'.repeat(LIMIT - overhead);
    assert.equal(await client.call('echo', exact), exact, 'a frame of exactly the limit');
    const closed = next(client, 'close');
    const over = failure('a frame over the limit', client.call('echo', exact + 'x'));
    const err = await within('a frame over the limit', over);
    assert.equal(err.code, 'rtm/disconnected');
    assert.equal((await closed).code, 1009);
    await within('open again', client.waitOpen());
    assert.equal(await client.call('add', 1, 2), 3);
  } finally {
    await fixture.stop();
  }
});

test('exactly --max-in-flight calls run at once; one more gets rtm/too-many-requests', async () => {
  const fixture = await Fixture.start(['--max-in-flight', '4']);
  try {
    const client = track(await connect(fixture.url));
    const running = [1, 2, 3, 4].map(() => client.call('sleep', 1000));
    const err = await rejection('the fifth call', client.call('add', 1, 2), 900);
    assert.ok(err instanceof RtmError);
    assert.equal(err.code, 'rtm/too-many-requests');
    assert.deepEqual(await within('the four calls', Promise.all(running)), [1000, 1000, 1000, 1000]);
    assert.equal(await client.call('add', 1, 2), 3, 'room again once they finished');
  } finally {
    await fixture.stop();
  }
});

test('the offline queue takes exactly its bound, calls and invokes alike', async () => {
  const client = track(new Client(DEAD_URL, { offlineQueue: 5, reconnect: { delayMs: 10_000 } }));
  const calls = [1, 2, 3].map((i) => failure(`queued call ${i}`, client.call('add', i, i)));
  client.invoke('echo', 4);
  client.invoke('echo', 5);
  assert.equal(client.queuedCalls, 5);
  assert.throws(() => client.invoke('echo', 6), (e) => e.code === 'rtm/queue-full');
  assert.equal((await rejection('call 6', client.call('add', 6, 6), 100)).code, 'rtm/queue-full');
  assert.equal(client.queuedCalls, 5);
  client.close();
  for (const call of calls) assert.equal((await within('a queued call', call)).code, 'rtm/closed');
});

test('the call timeout: a reply just inside it resolves, one past it rejects, not before', async () => {
  const fixture = await Fixture.start();
  try {
    const client = track(await connect(fixture.url, { callTimeoutMs: 400 }));
    assert.equal(await client.call('sleep', 150), 150);
    const started = Date.now();
    const err = await rejection('a call past the timeout', client.call('sleep', 2000), 2000);
    const elapsed = Date.now() - started;
    assert.equal(err.code, 'rtm/timeout');
    assert.ok(elapsed >= 395 && elapsed < 1500, `timed out after ${elapsed} ms`);
    // The timeout runs from the call, also while it waits in the queue.
    const offline = track(new Client(DEAD_URL, { callTimeoutMs: 100, reconnect: { delayMs: 10_000 } }));
    const queuedAt = Date.now();
    assert.equal((await rejection('a queued call', offline.call('add', 1, 2), 1000)).code, 'rtm/timeout');
    assert.ok(Date.now() - queuedAt >= 95);
    assert.equal(offline.queuedCalls, 0, 'a timed-out call leaves the queue');
  } finally {
    await fixture.stop();
  }
});

test('maxReconnectAttempts: exactly that many attempts, then the client closes saying why', async () => {
  const client = track(new Client(DEAD_URL, { maxReconnectAttempts: 3, reconnect: { delayMs: 10 } }));
  const attempts = [];
  client.on('connecting', ({ attempt }) => attempts.push(attempt));
  const closed = failure('waitOpen', client.waitOpen());
  const err = await within('the client to give up', closed);
  assert.deepEqual(attempts, [0, 1, 2, 3]);
  assert.equal(err.code, 'rtm/closed');
  assert.match(err.message, /not reconnecting.*ECONNREFUSED/);
  assert.equal(client.state, 'closed');
});
