// Reconnect through a server restart (rtm-fixture killed, then started again
// on the same port), with both APIs: the call in flight is rejected
// (rtm/disconnected), calls made while down wait in the offline queue, and on
// the new connection the client re-authenticates, re-sends its push
// subscriptions, then flushes the queue, in that order.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Client } from '../dist/esm/index.js';
import { closeTracked, eventually, failure, Fixture, Inbox, next, sleep, track, within } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { RtmClient } = require('..');
const WebSocket = require('ws');

afterEach(closeTracked);

/** A WebSocket class that records every frame sent (parsed) and received (raw). */
function spy(sent) {
  return class SpyWebSocket extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  };
}

const kinds = (frames) => frames.map((f) => (f.type === 'invoke' ? `invoke ${f.function}` : f.type));

test('typed API: through a server restart, re-auth, push re-subscribed, offline queue flushed, in-flight rejected', async () => {
  const fixture = await Fixture.start(['--auth']);
  try {
    const sent = [];
    const client = track(new Client(fixture.url, {
      auth: 'user:alice',
      reconnect: { initialMs: 20, maxMs: 100, jitter: 'full' },
      WebSocket: spy(sent),
    }));
    const opens = [];
    const replies = [];
    client.on('open', (info) => opens.push(info));
    client.on('message', (raw) => replies.push(JSON.parse(raw)));
    await client.waitOpen(5000);
    const scores = new Inbox();
    const dms = new Inbox();
    await client.subscribePush('score', ['m1', 'm2'], scores.push);
    client.subscribe('dm', dms.push);

    const inFlight = failure('the in-flight call', client.call('sleep', 10_000));
    await eventually('the sleep sent', () => sent.some((f) => f.function === 'sleep'));
    const closed = next(client, 'close');
    const reconnecting = next(client, 'reconnecting');
    await fixture.kill();
    assert.equal((await within('the in-flight call', inFlight)).code, 'rtm/disconnected');
    assert.equal((await closed).final, false);
    assert.equal((await reconnecting).attempt, 1);
    assert.notEqual(client.state, 'open');

    // While down: calls wait in the offline queue.
    const queued = client.call('add', 1, 2);
    client.invoke('publish', 'alice', 'dm', 'queued while down');
    const whoami = client.call('whoami');
    assert.equal(client.queuedCalls, 3);
    assert.equal(client.pushSubscriptions, 1);
    sent.length = 0;

    await fixture.start();
    await eventually('open again', () => opens.length === 2);
    assert.deepEqual(opens[1], { authenticated: true, authData: { user: 'alice' } });
    // On the new connection: auth, the subscription, then the queue in order.
    assert.deepEqual(kinds(sent).slice(0, 5), ['auth', 'subscribe', 'invoke add', 'invoke publish', 'invoke whoami']);
    assert.deepEqual(sent[0].data, ['user:alice']);
    assert.deepEqual(sent[1].tags, ['m1', 'm2']);
    assert.equal(await within('the queued add', queued), 3);
    assert.deepEqual(await within('the queued whoami', whoami), { user: 'alice' }, 're-authenticated as alice');
    assert.equal(await dms.take('the queued publish'), 'queued while down');
    assert.equal(client.queuedCalls, 0);
    // The re-sent subscription holds (once acknowledged: the server decides subscribes asynchronously).
    await eventually('the re-sent subscribe acknowledged', () => replies.some((r) => r.id === sent[1].id && r.data === true));
    await client.call('push', 'score', ['m2'], 7);
    assert.equal(await scores.take('a push after the restart'), 7);
  } finally {
    await fixture.kill();
  }
});

test('RtmClient: through a server restart, re-auth, push re-subscribed, offline queue flushed, in-flight rejected', async () => {
  const fixture = await Fixture.start(['--auth']);
  try {
    const sent = [];
    const replies = [];
    const log = [];
    const rtm = track(new RtmClient(fixture.url, {
      authenticationData: 'user:bob',
      reconnectDelayMs: 30,
      WebSocket: spy(sent),
      onAuthenticating: () => log.push('authenticating'),
      onOpen: () => log.push('open'),
      onClose: () => log.push('close'),
      onReconnecting: (n) => log.push(`reconnecting ${n}`),
      onMessage: (raw) => replies.push(JSON.parse(raw)),
    }));
    const scores = new Inbox();
    await rtm.SubscribePush('score', ['m1'], scores.push);
    const dms = new Inbox();
    rtm.Subscribe('dm', dms.push);
    assert.equal(rtm.Authenticated, true);

    const inFlight = failure('the in-flight CallWait', rtm.CallWait('sleep', 10_000));
    await eventually('the sleep sent', () => sent.some((f) => f.function === 'sleep'));
    await fixture.kill();
    assert.equal((await within('the in-flight CallWait', inFlight)).code, 'rtm/disconnected');
    await eventually('onClose', () => log.includes('close'));
    assert.equal(rtm.Authenticated, false);

    const queued = rtm.CallWait('add', 2, 3);
    await rtm.Call('publish', 'bob', 'dm', 'queued while down');
    sent.length = 0;
    await fixture.start();
    await eventually('onOpen again', () => log.filter((e) => e === 'open').length === 2);
    assert.equal(await within('the queued CallWait', queued), 5);
    assert.equal(await dms.take('the queued Call'), 'queued while down');
    assert.deepEqual(kinds(sent).slice(0, 4), ['auth', 'subscribe', 'invoke add', 'invoke publish']);
    await eventually('the re-sent subscribe acknowledged', () => replies.some((r) => r.id === sent[1].id && r.data === true));
    await rtm.CallWait('push', 'score', ['m1'], 11);
    assert.equal(await scores.take('a push after the restart'), 11);
    // The callbacks, in order: each attempt while down is one onReconnecting and one onClose.
    const firstOpen = log.indexOf('open');
    const secondOpen = log.lastIndexOf('open');
    assert.deepEqual(log.slice(0, firstOpen + 1), ['authenticating', 'open']);
    assert.equal(log[firstOpen + 1], 'close');
    assert.equal(log[firstOpen + 2], 'reconnecting 1');
    assert.equal(log[secondOpen - 1], 'authenticating');
    assert.equal(log.filter((e) => e === 'authenticating').length, 2);
  } finally {
    await fixture.kill();
  }
});

test('a server down for several attempts: the attempts back off, then the client resumes', async () => {
  const fixture = await Fixture.start();
  try {
    const client = track(new Client(fixture.url, { reconnect: { initialMs: 20, maxMs: 80, factor: 2, jitter: 'none' } }));
    await client.waitOpen(5000);
    const delays = [];
    client.on('reconnecting', ({ attempt, delayMs }) => delays.push([attempt, delayMs]));
    await fixture.kill();
    await eventually('five attempts', () => delays.length >= 5);
    assert.deepEqual(delays.slice(0, 5), [[1, 20], [2, 40], [3, 80], [4, 80], [5, 80]]);
    await fixture.start();
    await within('open again', client.waitOpen());
    await sleep(10);
    assert.equal(await client.call('add', 1, 2), 3);
  } finally {
    await fixture.kill();
  }
});
