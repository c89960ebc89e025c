// The client core's rules, one test per rule of the Rust client core's
// tests (rtm-core/tests/client_rules.rs, same names), driven with synthetic
// server frames and jumped time: no socket, no clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientCore } from '../dist/esm/index.js';

const SEC = 1000;
const MS = 1;

/** A core, the current time, and helpers that return what each step output. */
class Harness {
  constructor(config = {}) {
    this.now = 1_000_000;
    // Rust's defaults, with no open timeout (the Rust core has none; tested on its own below).
    this.core = new ClientCore({ openTimeoutMs: null, jitterSeed: 0x5eed7e57, ...config }, this.now);
    const first = this.drain();
    assert.equal(first[0].type, 'connect', JSON.stringify(first));
  }

  drain() {
    const out = [];
    for (let o = this.core.pollOutput(); o; o = this.core.pollOutput()) out.push(o);
    return out;
  }

  open() {
    this.core.handleOpen(this.now);
    return this.drain();
  }

  server(frame) {
    this.core.handleText(typeof frame === 'string' ? frame : JSON.stringify(frame), this.now);
    return this.drain();
  }

  lose(code = null) {
    this.core.handleClose(code, 'lost', this.now);
    return this.drain();
  }

  advance(ms) {
    this.now += ms;
    this.core.handleTimeout(this.now);
    return this.drain();
  }

  /** Jumps to the next deadline. */
  jump() {
    const at = this.core.pollTimeout();
    assert.notEqual(at, null, 'a deadline');
    this.now = at;
    this.core.handleTimeout(at);
    return this.drain();
  }

  callWait(fn, args = []) {
    return this.core.callWait(fn, args, this.now);
  }

  /** Opens and, if configured, authenticates, answering the auth with `true`. */
  ready() {
    const out = this.open();
    const auth = sent(out).find((f) => f.type === 'auth');
    if (auth) out.push(...this.server({ id: auth.id, data: true }));
    assert.equal(this.core.state.kind, 'open');
    return out;
  }
}

const noAuth = () => ({});
const withAuth = () => ({ auth: true, authData: { token: 't' } });
const sent = (out) => out.filter((o) => o.type === 'transmit').map((o) => JSON.parse(o.frame));
const done = (out) => out.filter((o) => o.type === 'done').map((o) => [o.call, o.ok ? { ok: o.value } : { err: o.error.code }]);
const events = (out) => out.filter((o) => o.type === 'lifecycle').map((o) => o.event);
const connects = (out) => out.filter((o) => o.type === 'connect').length;
const pings = (out) => out.filter((o) => o.type === 'ping').length;
const disconnects = (out) => out.filter((o) => o.type === 'disconnect').length;
const reconnectDelays = (out) => events(out).filter((e) => e.type === 'reconnecting').map((e) => [e.attempt, e.delayMs]);
const functions = (frames) => frames.filter((f) => f.type === 'invoke').map((f) => f.function);
const code = (fn) => {
  try {
    fn();
  } catch (err) {
    return err.code;
  }
  assert.fail('did not throw');
};

test('a_new_client_first_asks_to_connect', () => {
  const core = new ClientCore({}, 0);
  assert.equal(core.pollOutput().type, 'connect');
  assert.equal(core.state.kind, 'connecting');
});

test('request_ids_are_unique_on_a_connection', () => {
  const h = new Harness(noAuth());
  h.ready();
  const ids = new Set();
  for (let round = 0; round < 3; round++) {
    const frames = [];
    for (let i = 0; i < 50; i++) {
      h.core.call('f', [], h.now);
      h.callWait('g');
    }
    frames.push(...sent(h.drain()));
    h.core.subscribePush('e', [`t${round}`], h.now);
    frames.push(...sent(h.drain()));
    assert.equal(frames.length, 101);
    for (const f of frames) {
      assert.equal(typeof f.id, 'string');
      assert.ok(f.id.length >= 1 && Buffer.byteLength(f.id) <= 128);
      assert.ok(!ids.has(f.id), `duplicate id in ${JSON.stringify(f)}`);
      ids.add(f.id);
    }
    h.lose(1006);
    h.jump();
    h.ready();
  }
});

test('calls_made_while_connecting_are_sent_in_order_after_open', () => {
  const h = new Harness(noAuth());
  h.callWait('first');
  h.core.call('second', [], h.now);
  h.callWait('third');
  assert.deepEqual(sent(h.drain()), []);
  assert.equal(h.core.queuedCalls, 3);
  const out = h.open();
  assert.deepEqual(functions(sent(out)), ['first', 'second', 'third']);
  assert.equal(h.core.queuedCalls, 0);
  assert.equal(h.core.pendingCalls, 2);
});

test('offline_queue_accepts_exactly_its_bound_then_fails_queue_full', () => {
  const h = new Harness({ offlineQueue: 3 });
  h.callWait('a');
  h.core.call('b', [], h.now);
  h.callWait('c');
  assert.equal(h.core.queuedCalls, 3);
  assert.equal(code(() => h.callWait('d')), 'rtm/queue-full');
  assert.equal(code(() => h.core.call('d', [], h.now)), 'rtm/queue-full');
  assert.equal(h.core.queuedCalls, 3);
  assert.deepEqual(done(h.drain()), [], 'a refused call never completes');
  assert.deepEqual(functions(sent(h.open())), ['a', 'b', 'c']);
});

test('auth_is_sent_on_open_and_on_every_reopen', () => {
  const h = new Harness(withAuth());
  for (let i = 0; i < 3; i++) {
    const frames = sent(h.open());
    assert.equal(frames.length, 1);
    assert.equal(frames[0].type, 'auth');
    assert.deepEqual(frames[0].data, [{ token: 't' }]);
    assert.deepEqual(frames[0].since, { user: null }, "positions tracked (the default): the user's stream");
    assert.equal(h.core.state.kind, 'authenticating');
    const out = h.server({ id: frames[0].id, data: { user: 'alice' } });
    assert.ok(events(out).some((e) => e.type === 'ready' && e.authenticated && e.authData.user === 'alice'));
    assert.equal(h.core.state.kind, 'open');
    h.lose(1006);
    h.jump();
  }
});

test('calls_wait_for_a_successful_auth_before_being_sent', () => {
  const h = new Harness(withAuth());
  h.callWait('f');
  const out = h.open();
  assert.deepEqual(functions(sent(out)), []);
  h.callWait('g');
  assert.equal(h.core.queuedCalls, 2);
  const authId = sent(out)[0].id;
  assert.deepEqual(functions(sent(h.server({ id: authId, data: true }))), ['f', 'g']);
});

test('auth_rejected_is_terminal', () => {
  const h = new Harness(withAuth());
  const queued = h.callWait('f');
  const authId = sent(h.open())[0].id;
  const out = h.server({ id: authId, data: false, error: { code: 'rtm/auth-rejected', message: 'bad token' } });
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/auth-rejected' && e.error.message === 'bad token'));
  assert.deepEqual(done(out), [[queued, { err: 'rtm/auth-rejected' }]]);
  assert.equal(disconnects(out), 1);
  assert.equal(h.core.state.kind, 'closed');
  // The server's 4003 close that follows changes nothing: no reconnect, ever.
  assert.deepEqual(h.lose(4003), []);
  assert.equal(h.core.pollTimeout(), null);
  assert.equal(connects(h.advance(3600 * SEC)), 0);
  assert.equal(code(() => h.callWait('f')), 'rtm/closed');
});

test('a_fatal_connect_error_fails_every_call_with_it_and_never_reconnects', async () => {
  const { RtmError } = await import('../dist/esm/index.js');
  const h = new Harness(noAuth());
  const queued = h.callWait('f');
  h.core.handleFatalError(new RtmError('rtm/bad-request', 'not a ws:// URL'));
  const out = h.drain();
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/bad-request' && e.error.message === 'not a ws:// URL'));
  assert.deepEqual(done(out), [[queued, { err: 'rtm/bad-request' }]]);
  assert.equal(disconnects(out), 0, 'no socket was open: nothing to disconnect');
  assert.equal(h.core.state.kind, 'closed');
  assert.equal(h.core.pollTimeout(), null);
  assert.equal(connects(h.advance(3600 * SEC)), 0);
  try {
    h.callWait('f');
    assert.fail('a call after a fatal error');
  } catch (err) {
    assert.equal(err.code, 'rtm/closed');
    assert.match(err.message, /not a ws:\/\/ URL/);
  }
});

test('a_fatal_error_on_an_open_client_closes_its_socket', async () => {
  const { RtmError } = await import('../dist/esm/index.js');
  const h = new Harness(noAuth());
  h.ready();
  const inFlight = h.callWait('f');
  h.core.handleFatalError(new RtmError('rtm/bad-request', 'bad'));
  const out = h.drain();
  assert.deepEqual(done(out), [[inFlight, { err: 'rtm/bad-request' }]]);
  assert.equal(disconnects(out), 1);
  assert.equal(h.core.state.kind, 'closed');
});

test('auth_reply_with_falsy_data_is_a_rejection', () => {
  for (const data of [false, null, 0, '']) {
    const h = new Harness(withAuth());
    const authId = sent(h.open())[0].id;
    const out = h.server({ id: authId, data });
    assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/auth-rejected'), String(data));
    assert.equal(h.core.state.kind, 'closed', String(data));
  }
});

test('close_4003_while_authenticating_is_a_rejection', () => {
  const h = new Harness(withAuth());
  const queued = h.callWait('f');
  h.open();
  h.core.handleClose(4003, 'bad token', h.now);
  const out = h.drain();
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/auth-rejected' && e.error.message === 'bad token'));
  assert.deepEqual(done(out), [[queued, { err: 'rtm/auth-rejected' }]]);
  assert.equal(h.core.state.kind, 'closed');
  assert.equal(h.core.pollTimeout(), null);
});

test('push_subscriptions_are_resent_after_every_reconnect', () => {
  const h = new Harness(withAuth());
  h.ready();
  const tags = ['b', 'a'];
  const sub = h.core.subscribePush('score', tags, h.now);
  let frames = sent(h.drain());
  assert.equal(frames[0].type, 'subscribe');
  assert.equal(frames[0].event, 'score');
  assert.deepEqual(done(h.server({ id: frames[0].id, data: true })), [[sub, { ok: true }]]);
  for (let i = 0; i < 2; i++) {
    h.lose(1006);
    h.jump();
    frames = sent(h.ready());
    // auth first, then the subscription, before anything else.
    assert.equal(frames[0].type, 'auth');
    assert.equal(frames[1].type, 'subscribe');
    assert.equal(frames[1].event, 'score');
    assert.deepEqual(frames[1].tags, ['a', 'b']);
    // Its ack is internal: no completion.
    assert.deepEqual(h.server({ id: frames[1].id, data: true }), []);
  }
  h.core.unsubscribePush('score', tags, h.now);
  frames = sent(h.drain());
  assert.equal(frames[0].type, 'unsubscribe');
  h.lose(1006);
  h.jump();
  frames = sent(h.ready());
  assert.ok(frames.every((f) => f.type !== 'subscribe'), JSON.stringify(frames));
});

test('subscribing_offline_is_sent_after_open_and_acked_by_its_reply', () => {
  const h = new Harness(noAuth());
  const sub = h.core.subscribePush('score', ['m7'], h.now);
  assert.deepEqual(done(h.drain()), []);
  const frames = sent(h.open());
  assert.equal(frames.length, 1);
  assert.equal(frames[0].type, 'subscribe');
  assert.equal(h.core.pendingCalls, 1);
  assert.deepEqual(done(h.server({ id: frames[0].id, data: true })), [[sub, { ok: true }]]);
});

test('a_subscribe_in_flight_when_the_connection_drops_is_acked_after_reconnect', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = h.core.subscribePush('score', ['m7'], h.now);
  h.drain();
  assert.deepEqual(done(h.lose(1006)), [], 'subscribes are re-sent, not failed');
  h.jump();
  const frames = sent(h.ready());
  assert.deepEqual(done(h.server({ id: frames[0].id, data: true })), [[sub, { ok: true }]]);
});

test('a_denied_subscription_fails_its_call_and_is_not_resent', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = h.core.subscribePush('secret', ['x'], h.now);
  const frames = sent(h.drain());
  const out = h.server({ id: frames[0].id, data: { error: { code: 'rtm/forbidden', message: 'no' } } });
  assert.deepEqual(done(out), [[sub, { err: 'rtm/forbidden' }]]);
  assert.equal(h.core.subscriptions, 0);
  h.lose(null);
  h.jump();
  assert.deepEqual(sent(h.ready()), []);
});

test('a denied re-sent subscription is reported as an error and dropped', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1'], h.now);
  h.server({ id: sent(h.drain())[0].id, data: true });
  h.lose(1006);
  h.jump();
  const frames = sent(h.ready());
  const out = h.server({ id: frames[0].id, data: { error: { code: 'rtm/forbidden', message: 'not any more' } } });
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/forbidden'));
  assert.equal(h.core.subscriptions, 0);
});

test('unsubscribing_while_offline_completes_at_once', () => {
  const h = new Harness(noAuth());
  const sub = h.core.subscribePush('score', ['m7'], h.now);
  const unsub = h.core.unsubscribePush('score', ['m7'], h.now);
  assert.deepEqual(done(h.drain()), [
    [sub, { ok: true }],
    [unsub, { ok: true }],
  ]);
  assert.deepEqual(sent(h.open()), []);
});

test('in_flight_calls_fail_disconnected_and_are_not_resent', () => {
  const h = new Harness(noAuth());
  h.ready();
  const a = h.callWait('a');
  const b = h.callWait('b');
  h.drain();
  assert.equal(h.core.pendingCalls, 2);
  assert.deepEqual(done(h.lose(1006)), [
    [a, { err: 'rtm/disconnected' }],
    [b, { err: 'rtm/disconnected' }],
  ]);
  assert.equal(h.core.pendingCalls, 0);
  h.jump();
  assert.deepEqual(sent(h.ready()), [], 'invokes are not re-sent');
});

test('a_call_times_out_after_the_call_timeout', () => {
  const h = new Harness({ callTimeoutMs: 5 * SEC });
  h.ready();
  const call = h.callWait('slow');
  const id = sent(h.drain())[0].id;
  assert.equal(h.core.pollTimeout(), h.now + 5 * SEC);
  assert.deepEqual(done(h.advance(5 * SEC - MS)), []);
  assert.deepEqual(done(h.advance(MS)), [[call, { err: 'rtm/timeout' }]]);
  assert.equal(h.core.pendingCalls, 0);
  // The late reply is ignored.
  assert.deepEqual(h.server({ id, data: 1 }), []);
});

test('a_queued_call_times_out_and_leaves_the_queue', () => {
  const h = new Harness({ callTimeoutMs: 5 * SEC });
  const early = h.callWait('early');
  h.advance(2 * SEC);
  const late = h.callWait('late');
  assert.deepEqual(done(h.advance(3 * SEC)), [[early, { err: 'rtm/timeout' }]]);
  assert.equal(h.core.queuedCalls, 1);
  assert.deepEqual(functions(sent(h.open())), ['late']);
  assert.deepEqual(done(h.advance(2 * SEC)), [[late, { err: 'rtm/timeout' }]]);
});

test('calls_never_time_out_without_a_call_timeout', () => {
  const h = new Harness({ callTimeoutMs: null, heartbeat: null });
  h.ready();
  h.callWait('f');
  h.drain();
  assert.equal(h.core.pollTimeout(), null);
  assert.deepEqual(h.advance(3600 * SEC), []);
});

test('a per-call timeout overrides the client one, and a cancelled call leaves at once', async () => {
  const { RtmError } = await import('../dist/esm/index.js');
  const h = new Harness({ callTimeoutMs: 5 * SEC, heartbeat: null });
  h.ready();
  const quick = h.core.callWait('quick', [], h.now, { timeoutMs: SEC });
  const never = h.core.callWait('never', [], h.now, { timeoutMs: null });
  const aborted = h.callWait('aborted');
  h.drain();
  h.core.cancel(aborted, new RtmError('rtm/aborted', 'aborted'));
  assert.deepEqual(done(h.drain()), [[aborted, { err: 'rtm/aborted' }]]);
  assert.deepEqual(done(h.advance(SEC)), [[quick, { err: 'rtm/timeout' }]]);
  assert.deepEqual(done(h.advance(3600 * SEC)), []);
  assert.equal(h.core.pendingCalls, 1, `${never} still waits`);
});

test('a call that must not wait offline fails at once with disconnected', () => {
  const h = new Harness(noAuth());
  assert.equal(code(() => h.core.callWait('f', [], h.now, { queue: false })), 'rtm/disconnected');
  assert.equal(code(() => h.core.call('f', [], h.now, { queue: false })), 'rtm/disconnected');
  assert.equal(h.core.queuedCalls, 0);
});

test('arguments that are not JSON fail the call at once, queued or not', () => {
  const h = new Harness(noAuth());
  const cyclic = {};
  cyclic.self = cyclic;
  assert.equal(code(() => h.core.callWait('f', [cyclic], h.now)), 'rtm/bad-request');
  assert.equal(code(() => h.core.call('f', [10n], h.now)), 'rtm/bad-request');
  h.ready();
  assert.equal(code(() => h.core.callWait('f', [cyclic], h.now)), 'rtm/bad-request');
  // undefined inside an array is null, as JSON.stringify has it.
  h.core.call('f', [undefined, 1], h.now);
  assert.deepEqual(sent(h.drain())[0].data, [null, 1]);
});

// ----- heartbeat: the server's liveness -----

const heartbeat = (interval, timeout) => ({ heartbeat: { intervalMs: interval * SEC, timeoutMs: timeout * SEC }, callTimeoutMs: null });

test('a_quiet_server_is_pinged_once_per_heartbeat_interval_of_silence', () => {
  const h = new Harness(heartbeat(25, 60));
  h.ready();
  assert.equal(h.core.pollTimeout(), h.now + 25 * SEC);
  assert.equal(pings(h.advance(24 * SEC)), 0);
  assert.equal(pings(h.advance(SEC)), 1);
  // The next ping waits for another interval.
  assert.equal(pings(h.advance(24 * SEC)), 0);
  assert.equal(pings(h.advance(SEC)), 1);
});

test('any_frame_ping_or_pong_from_the_server_is_a_sign_of_life', () => {
  const h = new Harness(heartbeat(25, 60));
  h.ready();
  h.advance(20 * SEC);
  h.core.handleActivity(h.now);
  assert.equal(pings(h.advance(20 * SEC)), 0, 'heard from 20 s ago');
  h.server({ event: 'tick', data: [] });
  assert.equal(pings(h.advance(24 * SEC)), 0, 'an event 24 s ago');
  assert.equal(pings(h.advance(SEC)), 1);
  // Answered: the deadline moves on; no drop at 60 s from the first silence.
  h.core.handleActivity(h.now);
  assert.equal(disconnects(h.advance(50 * SEC)), 0);
  assert.equal(h.core.state.kind, 'open');
});

test('a_server_silent_past_the_heartbeat_timeout_is_dropped_and_reconnected', () => {
  const h = new Harness({ ...heartbeat(25, 60), callTimeoutMs: 3600 * SEC });
  h.ready();
  const inFlight = h.callWait('f');
  h.drain();
  h.advance(59 * SEC);
  assert.equal(h.core.state.kind, 'open');
  const out = h.advance(SEC);
  assert.equal(disconnects(out), 1);
  assert.deepEqual(done(out), [[inFlight, { err: 'rtm/disconnected' }]]);
  assert.ok(events(out).some((e) => e.type === 'closed' && /nothing from the server/.test(e.reason)));
  assert.equal(h.core.state.kind, 'waiting');
  assert.equal(connects(h.jump()), 1);
});

test('no_heartbeat_while_no_socket_is_open_or_when_disabled', () => {
  const h = new Harness(heartbeat(25, 60));
  // Connecting: no socket yet, nothing to ping.
  assert.equal(h.core.pollTimeout(), null);
  const off = new Harness({ ...heartbeat(25, 60), heartbeat: null });
  off.ready();
  assert.equal(off.core.pollTimeout(), null);
  assert.deepEqual(off.advance(3600 * SEC), []);
  // A socket that cannot ping (a browser's): no heartbeat either.
  const browser = new Harness(heartbeat(25, 60));
  browser.core.handleOpen(browser.now, false);
  browser.drain();
  assert.equal(browser.core.pollTimeout(), null);
});

// ----- reconnect schedule -----

test('fixed_delay_reconnect_schedule', () => {
  const h = new Harness({ reconnect: { kind: 'fixed', delayMs: SEC } });
  h.ready();
  assert.deepEqual(reconnectDelays(h.lose(1006)), [[1, SEC]]);
  assert.deepEqual(h.core.state, { kind: 'waiting', attempt: 1 });
  assert.equal(h.core.pollTimeout(), h.now + SEC);
  assert.equal(connects(h.advance(SEC - MS)), 0);
  assert.equal(connects(h.advance(MS)), 1);
  assert.equal(h.core.state.kind, 'connecting');
  // A failed connect attempt waits the same delay again.
  assert.deepEqual(reconnectDelays(h.lose(null)), [[2, SEC]]);
  assert.equal(connects(h.jump()), 1);
  // A successful open resets the attempt count.
  h.ready();
  assert.deepEqual(reconnectDelays(h.lose(1001)), [[1, SEC]]);
});

test('backoff_doubles_up_to_its_cap_and_resets_after_open', () => {
  const h = new Harness({ reconnect: { kind: 'backoff', initialMs: SEC, maxMs: 8 * SEC, factor: 2, jitter: 'none' }, ...withAuth() });
  h.ready();
  const delays = [...reconnectDelays(h.lose(1006))];
  for (let i = 0; i < 5; i++) {
    assert.equal(connects(h.jump()), 1);
    delays.push(...reconnectDelays(h.lose(null)));
  }
  assert.deepEqual(delays.map(([a, d]) => [a, d / SEC]), [[1, 1], [2, 2], [3, 4], [4, 8], [5, 8], [6, 8]]);
  h.jump();
  // An open without auth success does not reset it...
  h.open();
  assert.deepEqual(reconnectDelays(h.lose(4008)), [[7, 8 * SEC]]);
  // ... an authenticated one does.
  h.jump();
  h.ready();
  assert.deepEqual(reconnectDelays(h.lose(1006)), [[1, SEC]]);
});

test('backoff_jitter_stays_within_bounds_and_is_deterministic_by_seed', () => {
  const schedule = (seed, jitter) => {
    const h = new Harness({ reconnect: { kind: 'backoff', initialMs: SEC, maxMs: 8 * SEC, factor: 2, jitter }, jitterSeed: seed });
    h.ready();
    const delays = [...reconnectDelays(h.lose(null))];
    for (let i = 0; i < 19; i++) {
      h.jump();
      delays.push(...reconnectDelays(h.lose(null)));
    }
    return delays;
  };
  for (const jitter of ['full', 'equal']) {
    const delays = schedule(42, jitter);
    assert.deepEqual(delays, schedule(42, jitter), 'same seed, same schedule');
    assert.notDeepEqual(delays, schedule(43, jitter), 'another seed, another schedule');
    assert.equal(new Set(delays.map(([, d]) => d)).size > 5, true, 'the delays vary');
    for (const [attempt, delay] of delays) {
      const base = Math.min(SEC * 2 ** (Math.min(attempt, 4) - 1), 8 * SEC);
      assert.ok(delay <= base, `attempt ${attempt}: ${delay} > ${base}`);
      assert.ok(delay >= 0);
      if (jitter === 'equal') assert.ok(delay >= base / 2, `attempt ${attempt}: ${delay} < half`);
    }
  }
});

test('huge attempt numbers stay at the cap', () => {
  const h = new Harness({ reconnect: { kind: 'backoff', initialMs: SEC, maxMs: 10 * SEC, factor: 2, jitter: 'none' } });
  h.ready();
  let last = null;
  h.lose(null);
  for (let i = 0; i < 2000; i++) {
    h.jump();
    last = reconnectDelays(h.lose(null))[0];
  }
  assert.deepEqual(last, [2001, 10 * SEC]);
});

test('reconnect_never_closes_the_client_and_fails_queued_calls', () => {
  const h = new Harness({ reconnect: { kind: 'never' } });
  const queued = h.callWait('f');
  assert.deepEqual(done(h.lose(null)), [[queued, { err: 'rtm/disconnected' }]]);
  assert.equal(h.core.state.kind, 'closed');
  assert.equal(h.core.pollTimeout(), null);
});

test('the_client_gives_up_after_max_reconnect_attempts', () => {
  const h = new Harness({ maxReconnectAttempts: 2 });
  h.ready();
  h.lose(null);
  h.jump();
  h.lose(null);
  h.jump();
  const queued = h.callWait('f');
  const out = h.lose(null);
  assert.deepEqual(done(out), [[queued, { err: 'rtm/disconnected' }]]);
  assert.equal(h.core.state.kind, 'closed');
  assert.ok(events(out).some((e) => e.type === 'closed' && e.final));
});

test('a socket still opening after the open timeout counts as a failed attempt', () => {
  const h = new Harness({ openTimeoutMs: 10 * SEC });
  assert.equal(h.core.pollTimeout(), h.now + 10 * SEC);
  assert.equal(disconnects(h.advance(10 * SEC - MS)), 0);
  const out = h.advance(MS);
  assert.equal(disconnects(out), 1);
  assert.deepEqual(reconnectDelays(out), [[1, SEC]]);
  assert.ok(events(out).some((e) => e.type === 'closed' && /not open within/.test(e.reason)));
  // A retry now starts the waiting attempt at once.
  h.core.reconnectNow(h.now);
  assert.equal(connects(h.drain()), 1);
  // Once open, the open timeout no longer applies.
  h.ready();
  assert.equal(disconnects(h.advance(20 * SEC)), 0);
});

// ----- close -----

test('close_fails_everything_with_closed_and_stops_reconnecting', () => {
  let h = new Harness(noAuth());
  h.ready();
  const pending = h.callWait('pending');
  h.drain();
  h.core.close(h.now);
  let out = h.drain();
  assert.deepEqual(done(out), [[pending, { err: 'rtm/closed' }]]);
  assert.equal(disconnects(out), 1);

  h = new Harness(noAuth());
  const queued = h.callWait('queued');
  const sub = h.core.subscribePush('e', ['t'], h.now);
  h.core.close(h.now);
  out = h.drain();
  assert.deepEqual(done(out), [
    [queued, { err: 'rtm/closed' }],
    [sub, { err: 'rtm/closed' }],
  ]);
  assert.equal(h.core.state.kind, 'closed');
  assert.equal(h.core.queuedCalls, 0);
  assert.equal(h.core.pollTimeout(), null);
  assert.equal(code(() => h.core.call('f', [], h.now)), 'rtm/closed');
  assert.equal(code(() => h.core.subscribePush('e', [], h.now)), 'rtm/closed');
  // A late open or close from the driver changes nothing.
  h.core.handleOpen(h.now);
  h.core.handleClose(1000, '', h.now);
  assert.deepEqual(h.drain(), []);
  assert.equal(connects(h.advance(3600 * SEC)), 0);
});

test('close_while_waiting_to_reconnect_stops_the_schedule', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.lose(1006);
  h.core.close(h.now);
  assert.equal(disconnects(h.drain()), 0, 'no socket to close');
  assert.equal(h.core.pollTimeout(), null);
  assert.equal(connects(h.advance(10 * SEC)), 0);
});

// ----- replies and events -----

test('a_fire_and_forget_reply_is_ignored', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.call('log', ['hi'], h.now);
  const frames = sent(h.drain());
  assert.equal(frames[0].function, 'log');
  assert.deepEqual(frames[0].data, ['hi']);
  assert.equal(h.core.pendingCalls, 0);
  assert.deepEqual(h.server({ id: frames[0].id, data: 1 }), []);
});

test('a_reply_completes_its_call_and_an_error_reply_fails_it', () => {
  const h = new Harness(noAuth());
  h.ready();
  const ok = h.callWait('add');
  const bad = h.callWait('helo');
  const frames = sent(h.drain());
  const out = h.server({ id: frames[1].id, data: { error: { code: 'rtm/function-not-found', message: "no function named 'helo'" } } });
  assert.deepEqual(done(out), [[bad, { err: 'rtm/function-not-found' }]]);
  assert.deepEqual(done(h.server({ id: frames[0].id, data: 3 })), [[ok, { ok: 3 }]]);
});

test('the error-key quirk: replies read as the JS client reads them', () => {
  const h = new Harness(noAuth());
  h.ready();
  const cases = [
    [{ error: 'not really' }, { err: 'rtm/handler-error' }],
    [{ error: { message: 'no code' } }, { err: 'rtm/handler-error' }],
    [{ error: { code: 'shop/closed', message: 'tomorrow' } }, { err: 'shop/closed' }],
    [{ error: null }, { ok: { error: null } }],
    [{ error: false }, { ok: { error: false } }],
    [{ error: 0 }, { ok: { error: 0 } }],
    [{ error: '' }, { ok: { error: '' } }],
    [null, { ok: null }],
  ];
  for (const [data, want] of cases) {
    const call = h.callWait('f');
    const id = sent(h.drain())[0].id;
    assert.deepEqual(done(h.server({ id, data })), [[call, want]], JSON.stringify(data));
  }
  // A reply with no data reads as null.
  const call = h.callWait('f');
  assert.deepEqual(done(h.server({ id: sent(h.drain())[0].id })), [[call, { ok: null }]]);
});

test('unknown_reply_ids_are_ignored', () => {
  const h = new Harness(noAuth());
  h.ready();
  assert.deepEqual(h.server({ id: 'nope', data: 1 }), []);
});

test('events_are_handed_to_the_adapter', () => {
  const h = new Harness(noAuth());
  h.ready();
  assert.deepEqual(h.server({ event: 'alert', data: ['Hello from server!'] }), [
    { type: 'event', event: 'alert', args: ['Hello from server!'] },
  ]);
  assert.deepEqual(h.server({ event: 'bare' }), [{ type: 'event', event: 'bare', args: [] }]);
});

test('bad_server_frames_are_reported_and_otherwise_ignored', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.callWait('f');
  h.drain();
  for (const frame of ['not json', '[1]', '{}', '{"event":"e","data":5}', '{"id":7,"data":1}', '"s"']) {
    const out = h.server(frame);
    assert.equal(out.length, 1, frame);
    assert.equal(out[0].type, 'lifecycle');
    assert.equal(out[0].event.type, 'error');
    assert.equal(out[0].event.error.code, 'rtm/bad-request');
  }
  assert.equal(h.core.state.kind, 'open');
  assert.equal(h.core.pendingCalls, 1);
});

test('arbitrary_server_frames_never_throw', () => {
  // The property test of the Rust core, as a seeded loop.
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const alphabet = '{}[]":,0123456789abcdefidataeventerror truenullfalse\\u';
  for (let run = 0; run < 300; run++) {
    const auth = random() < 0.5;
    const h = new Harness(auth ? withAuth() : noAuth());
    h.callWait('f');
    h.core.subscribePush('e', ['t'], h.now);
    h.open();
    for (let i = 0; i < 8; i++) {
      let text = '';
      const length = Math.floor(random() * 64);
      for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)];
      h.server(text);
    }
    for (let id = 0; id < 8; id++) {
      h.server({ id: String(Math.floor(random() * 8)), data: { error: 5 } });
      h.server({ id: String(id), error: {} });
    }
    h.advance(60 * SEC);
    h.core.handleClose(1006, '', h.now);
    h.drain();
  }
});

// ----- positions in streams (ext): the rules after `// ----- positions in
// streams (ext) -----` in rtm-core/tests/client_rules.rs, same names, then
// this port's own -----

/** Subscribes to `score [m1]` while open; returns the subscribe sent. */
function subscribeM1(h) {
  h.core.subscribePush('score', ['m1'], h.now);
  return sent(h.drain())[0];
}

const positioned = (n, offset, epoch) => ({ event: 'score', data: [n], tag: 'm1', offset, epoch });
const delivered = (out) => out.filter((o) => o.type === 'event').map((o) => o.args);
const resyncs = (out) => events(out).filter((e) => e.type === 'resync').map((e) => [e.event, e.tag, e.reason]);

test('a_subscribe_asks_for_positions_and_after_a_reconnect_sends_the_last_one_it_had', () => {
  const h = new Harness(noAuth());
  h.ready();
  const first = subscribeM1(h);
  assert.deepEqual(first.since, { m1: null });
  h.server({ id: first.id, data: true, streams: { m1: { offset: 4, epoch: 'e1' } } });
  assert.deepEqual(delivered(h.server(positioned(5, 5, 'e1'))), [[5]]);
  assert.deepEqual(delivered(h.server(positioned(6, 6, 'e1'))), [[6]]);
  h.lose(1006);
  h.jump();
  const again = sent(h.open())[0];
  assert.equal(again.type, 'subscribe');
  assert.deepEqual(again.since, { m1: { offset: 6, epoch: 'e1' } });
  assert.deepEqual(h.core.position('score', 'm1'), { offset: 6, epoch: 'e1' });
});

test('an_event_at_or_below_the_position_is_dropped', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = subscribeM1(h);
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 4, epoch: 'e1' } } });
  assert.deepEqual(delivered(h.server(positioned(4, 4, 'e1'))), []);
  assert.deepEqual(delivered(h.server(positioned(3, 3, 'e1'))), []);
  assert.deepEqual(delivered(h.server(positioned(5, 5, 'e1'))), [[5]]);
});

test('a_jump_in_offsets_makes_the_client_subscribe_again_from_its_position_and_take_the_recovery', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = subscribeM1(h);
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 4, epoch: 'e1' } } });
  // 5 was lost on the way.
  let out = h.server(positioned(6, 6, 'e1'));
  assert.deepEqual(delivered(out), []);
  const resync = sent(out)[0];
  assert.equal(resync.type, 'subscribe');
  assert.deepEqual(resync.tags, ['m1']);
  assert.deepEqual(resync.since, { m1: { offset: 4, epoch: 'e1' } });
  // Live ones past the hole meanwhile: the recovery brings them.
  assert.deepEqual(delivered(h.server(positioned(7, 7, 'e1'))), []);
  const got = [];
  for (let n = 5; n <= 7; n++) got.push(...delivered(h.server(positioned(n, n, 'e1'))));
  out = h.server({ id: resync.id, data: true, streams: { m1: { offset: 7, epoch: 'e1', recovered: true } } });
  assert.deepEqual(events(out), []);
  assert.deepEqual(out, []);
  got.push(...delivered(h.server(positioned(8, 8, 'e1'))));
  assert.deepEqual(got, [[5], [6], [7], [8]]);
});

test('a_stream_that_could_not_be_recovered_is_told_to_the_application', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = subscribeM1(h);
  const out = h.server({ id: sub.id, data: true, streams: { m1: { offset: 9, epoch: 'e2', recovered: false, reason: 'epoch-changed' } } });
  assert.deepEqual(resyncs(out), [['score', 'm1', 'epoch-changed']]);
  assert.deepEqual(delivered(h.server(positioned(10, 10, 'e2'))), [[10]]);
});

test('a_push_to_two_tracked_tags_is_handed_to_the_application_once', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1', 'm2'], h.now);
  const sub = sent(h.drain())[0];
  assert.deepEqual(sub.since, { m1: null, m2: null });
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 0, epoch: 'a' }, m2: { offset: 0, epoch: 'b' } } });
  const one = { event: 'score', data: [1], push: 's1:9', tag: 'm1', offset: 1, epoch: 'a' };
  const two = { event: 'score', data: [1], push: 's1:9', tag: 'm2', offset: 1, epoch: 'b' };
  assert.deepEqual(delivered(h.server(one)), [[1]]);
  assert.deepEqual(delivered(h.server(two)), []);
  // Both positions moved: a reconnect asks for neither again.
  h.lose(1006);
  h.jump();
  const again = sent(h.open())[0];
  assert.deepEqual(again.since, { m1: { offset: 1, epoch: 'a' }, m2: { offset: 1, epoch: 'b' } });
});

test('a_subscribe_refused_for_a_while_is_sent_again_after_a_backoff_and_a_denied_one_is_not', () => {
  const h = new Harness(noAuth());
  h.ready();
  const call = h.core.subscribePush('score', ['m1'], h.now);
  const sub = sent(h.drain())[0];
  let out = h.server({ id: sub.id, data: { error: { code: 'rtm/broker-unavailable', message: 'down' } } });
  assert.deepEqual(done(out), [[call, { err: 'rtm/broker-unavailable' }]]);
  const retry = events(out).find((e) => e.type === 'subscribe-retry');
  assert.ok(retry, 'a retry');
  assert.deepEqual([retry.attempt, retry.delayMs], [1, SEC], "the reconnect schedule's first delay");
  assert.equal(retry.event, 'score');
  assert.deepEqual(retry.tags, ['m1']);
  assert.equal(retry.error.code, 'rtm/broker-unavailable');
  assert.ok(!events(out).some((e) => e.type === 'error'), 'a retry is not an error');
  assert.deepEqual(sent(h.advance(retry.delayMs - MS)), []);
  const again = sent(h.advance(MS))[0];
  assert.equal(again.type, 'subscribe');
  assert.deepEqual(again.tags, ['m1']);
  // Denied for good this time: not sent again.
  out = h.server({ id: again.id, data: { error: { code: 'rtm/forbidden', message: 'no' } } });
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/forbidden'));
  assert.equal(h.core.subscriptions, 0);
  assert.deepEqual(sent(h.advance(10 * SEC)), []);
});

test('without_tracking_a_subscribe_carries_no_since_and_events_pass_as_they_come', () => {
  const h = new Harness({ trackPositions: false });
  h.ready();
  const sub = subscribeM1(h);
  assert.ok(!('since' in sub), JSON.stringify(sub));
  assert.deepEqual(delivered(h.server(positioned(3, 3, 'e1'))), [[3]]);
  assert.deepEqual(delivered(h.server(positioned(3, 3, 'e1'))), [[3]]);
  // Nor are the reply's streams read.
  assert.deepEqual(h.server({ id: sub.id, data: true, streams: { m1: { offset: 9, epoch: 'e2', recovered: false, reason: 'trimmed' } } }), [
    { type: 'done', call: 1, ok: true, value: true },
  ]);
  assert.equal(h.core.position('score', 'm1'), null);
});

test('the_auth_asks_for_the_users_stream_and_a_reconnect_sends_the_last_position_it_had', () => {
  const h = new Harness(withAuth());
  const out = h.open();
  const auth = sent(out)[0];
  assert.deepEqual(auth.since, { user: null });
  h.server({ id: auth.id, data: true, streams: { user: { offset: 2, epoch: 'u1' } } });
  const dm = (n, offset) => ({ event: 'dm', data: [n], offset, epoch: 'u1' });
  assert.deepEqual(delivered(h.server(dm(3, 3))), [[3]]);
  assert.deepEqual(delivered(h.server(dm(3, 3))), [], 'seen: dropped');
  h.lose(1006);
  h.jump();
  const again = sent(h.open())[0];
  assert.deepEqual(again.since, { user: { offset: 3, epoch: 'u1' } });
});

test('a_jump_in_the_users_stream_makes_the_client_reconnect_to_recover_it', () => {
  const h = new Harness(withAuth());
  const out = h.open();
  const auth = sent(out)[0];
  h.server({ id: auth.id, data: true, streams: { user: { offset: 2, epoch: 'u1' } } });
  const jumped = h.server({ event: 'dm', data: [5], offset: 5, epoch: 'u1' });
  assert.deepEqual(delivered(jumped), []);
  assert.ok(disconnects(jumped) > 0, JSON.stringify(jumped));
  assert.equal(h.core.state.kind, 'waiting');
  h.jump();
  const again = sent(h.open())[0];
  assert.deepEqual(again.since, { user: { offset: 2, epoch: 'u1' } });
  // The recovery before the auth reply, then the reply.
  const got = [];
  for (let n = 3; n <= 5; n++) got.push(...delivered(h.server({ event: 'dm', data: [n], offset: n, epoch: 'u1' })));
  h.server({ id: again.id, data: true, streams: { user: { offset: 5, epoch: 'u1', recovered: true } } });
  assert.deepEqual(got, [[3], [4], [5]]);
});

test('tracking positions is on by default', () => {
  assert.equal(new ClientCore({}, 0).config.trackPositions, true);
});

test('retries back off on the reconnect schedule, wait while offline, and a taken one starts again from the first delay', () => {
  const h = new Harness({ reconnect: { kind: 'backoff', initialMs: 100, maxMs: 1000, factor: 2, jitter: 'none' } });
  h.ready();
  h.core.subscribePush('score', ['m1'], h.now);
  let frame = sent(h.drain())[0];
  const refuse = (f, code = 'rtm/broker-unavailable') =>
    events(h.server({ id: f.id, data: { error: { code, message: 'later' } } })).filter((e) => e.type === 'subscribe-retry').map((e) => [e.attempt, e.delayMs]);
  assert.deepEqual(refuse(frame), [[1, 100]]);
  assert.equal(h.core.pollTimeout(), h.now + 100, 'the retry is the next deadline');
  frame = sent(h.jump())[0];
  assert.deepEqual(refuse(frame, 'rtm/timeout'), [[2, 200]], 'rtm/timeout from the server is temporary too');
  frame = sent(h.jump())[0];
  assert.deepEqual(refuse(frame), [[3, 400]]);
  // Offline meanwhile: nothing is sent until the next open (100 ms later,
  // before the retry was due), which re-sends it at once.
  h.lose(1006);
  assert.deepEqual(sent(h.advance(99)), []);
  h.jump();
  assert.equal(h.core.state.kind, 'connecting');
  frame = sent(h.open())[0];
  assert.equal(frame.type, 'subscribe');
  assert.deepEqual(refuse(frame), [[4, 800]], 'the count goes on until it is taken');
  frame = sent(h.jump())[0];
  h.server({ id: frame.id, data: true });
  h.lose(1006);
  h.jump();
  frame = sent(h.open())[0];
  assert.deepEqual(refuse(frame), [[1, 100]], 'taken: the next refusal starts again');
  // Unsubscribed while a retry waits: never sent again.
  h.core.unsubscribePush('score', ['m1'], h.now);
  assert.deepEqual(sent(h.drain()).map((f) => f.type), ['unsubscribe']);
  assert.deepEqual(sent(h.advance(10 * SEC)).filter((f) => f.type === 'subscribe'), []);
});

test('with no reconnect a temporary refusal is not retried: the subscription is dropped', () => {
  const h = new Harness({ reconnect: { kind: 'never' } });
  h.ready();
  h.core.subscribePush('score', ['m1'], h.now);
  const frame = sent(h.drain())[0];
  const out = h.server({ id: frame.id, data: { error: { code: 'rtm/broker-unavailable', message: 'down' } } });
  assert.deepEqual(events(out).filter((e) => e.type === 'subscribe-retry'), []);
  assert.equal(h.core.subscriptions, 0);
});

test('a re-sent subscription refused for a while is retried without an error event', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1'], h.now);
  h.server({ id: sent(h.drain())[0].id, data: true });
  h.lose(1006);
  h.jump();
  const frame = sent(h.open())[0];
  const out = h.server({ id: frame.id, data: { error: { code: 'rtm/broker-unavailable', message: 'down' } } });
  assert.deepEqual(events(out).map((e) => e.type), ['subscribe-retry']);
  assert.equal(h.core.subscriptions, 1);
  assert.equal(sent(h.jump())[0].type, 'subscribe');
});

test('a gap resubscribe that fails is reported, and the next jump asks again', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1', 'm2'], h.now);
  const sub = sent(h.drain())[0];
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 4, epoch: 'e1' }, m2: { offset: 0, epoch: 'e1' } } });
  const resync = sent(h.server(positioned(7, 7, 'e1')))[0];
  assert.deepEqual([resync.tags, resync.since], [['m1'], { m1: { offset: 4, epoch: 'e1' } }], 'only the stream with the gap');
  const out = h.server({ id: resync.id, data: { error: { code: 'rtm/forbidden', message: 'no' } } });
  assert.ok(events(out).some((e) => e.type === 'error' && e.error.code === 'rtm/forbidden'), 'no waiter: told');
  assert.equal(h.core.subscriptions, 1, 'the held subscription is another one: kept');
  const again = sent(h.server(positioned(8, 8, 'e1')))[0];
  assert.deepEqual(again.since, { m1: { offset: 4, epoch: 'e1' } });
});

test('a new epoch on a live event is a gap: the client asks the server', () => {
  const h = new Harness(noAuth());
  h.ready();
  const sub = subscribeM1(h);
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 4, epoch: 'e1' } } });
  const out = h.server(positioned(1, 1, 'e2'));
  assert.deepEqual(delivered(out), []);
  assert.deepEqual(sent(out)[0].since, { m1: { offset: 4, epoch: 'e1' } });
  const told = h.server({ id: sent(out)[0].id, data: true, streams: { m1: { offset: 1, epoch: 'e2', recovered: false, reason: 'epoch-changed' } } });
  assert.deepEqual(resyncs(told), [['score', 'm1', 'epoch-changed']]);
  assert.deepEqual(delivered(h.server(positioned(2, 2, 'e2'))), [[2]]);
});

test('an unknown reason reads as gap, and unlisted tags and untracked events pass as they come', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1', 'm2'], h.now);
  const sub = sent(h.drain())[0];
  // m2's event keeps no history on that server: not listed.
  const out = h.server({ id: sub.id, data: true, streams: { m1: { offset: 3, epoch: 'e1', recovered: false, reason: 'who-knows' } } });
  assert.deepEqual(resyncs(out), [['score', 'm1', 'gap']]);
  assert.deepEqual(delivered(h.server({ event: 'score', data: ['m2 live'] })), [['m2 live']]);
  assert.deepEqual(delivered(h.server({ event: 'score', data: ['m2 live'] })), [['m2 live']]);
  // The user's stream (no tag): tracked too (the first one sets the position), a seen one dropped.
  assert.deepEqual(delivered(h.server({ event: 'dm', data: [1], offset: 7, epoch: 'u' })), [[1]]);
  assert.deepEqual(delivered(h.server({ event: 'dm', data: [1], offset: 7, epoch: 'u' })), []);
  assert.deepEqual(h.core.position('', 'user'), { offset: 7, epoch: 'u' });
  // An invalid epoch: no position, delivered as is.
  for (const epoch of ['', 'a b', 'x'.repeat(65), 'ü']) {
    assert.deepEqual(delivered(h.server({ event: 'score', data: [epoch], tag: 'm1', offset: 1, epoch })), [[epoch]]);
  }
});

test('positioned frames with fields of the wrong type are bad frames; malformed streams are reported', () => {
  const h = new Harness(noAuth());
  h.ready();
  for (const frame of [
    { event: 'score', data: [1], tag: 5, offset: 1, epoch: 'a' },
    { event: 'score', data: [1], tag: 'm1', offset: -1, epoch: 'a' },
    { event: 'score', data: [1], tag: 'm1', offset: '1', epoch: 'a' },
    { event: 'score', data: [1], tag: 'm1', offset: 1.5, epoch: 'a' },
    { event: 'score', data: [1], tag: 'm1', offset: 1, epoch: 7 },
    { event: 'score', data: [1], push: {}, tag: 'm1', offset: 1, epoch: 'a' },
  ]) {
    const out = h.server(frame);
    assert.deepEqual(events(out).map((e) => e.error?.code), ['rtm/bad-request'], JSON.stringify(frame));
    assert.deepEqual(delivered(out), []);
  }
  for (const streams of [5, { m1: 3 }, { m1: { offset: 'x', epoch: 'a' } }, { m1: { offset: 1 } }, { m1: { offset: 1, epoch: 'a', recovered: 'yes' } }]) {
    const call = h.core.subscribePush('score', ['m1'], h.now);
    const sub = sent(h.drain())[0];
    const out = h.server({ id: sub.id, data: true, streams });
    assert.deepEqual(events(out).map((e) => e.error?.code), ['rtm/bad-request'], JSON.stringify(streams));
    assert.deepEqual(done(out), [[call, { ok: true }]], 'the subscribe itself was taken');
  }
});

test('the push ids remembered are bounded to 1024, oldest forgotten first', async () => {
  const { Positions } = await import('../dist/esm/index.js');
  const p = new Positions();
  p.handleStreams('score', [{ tag: 'm1', position: { offset: 0, epoch: 'a' }, recovered: null }]);
  p.handleStreams('score', [{ tag: 'm2', position: { offset: 0, epoch: 'b' }, recovered: null }]);
  for (let n = 1; n <= 1030; n++) assert.equal(p.handleEvent('score', { tag: 'm1', position: { offset: n, epoch: 'a' }, push: `s:${n}` }), 'deliver');
  assert.equal(p.rememberedPushes, 1024);
  // s:1..6 forgotten: seen again on m2, they count as new (and push out s:7..12); s:13 is still remembered.
  for (let n = 1; n <= 6; n++) assert.equal(p.handleEvent('score', { tag: 'm2', position: { offset: n, epoch: 'b' }, push: `s:${n}` }), 'deliver');
  assert.equal(p.handleEvent('score', { tag: 'm2', position: { offset: 7, epoch: 'b' }, push: 's:13' }), 'drop');
  assert.deepEqual(p.position('score', 'm2'), { offset: 7, epoch: 'b' }, 'dropped as seen, its position still moved');
  assert.equal(p.handleEvent('score', { tag: 'm2', position: { offset: 8, epoch: 'b' }, push: 's:12' }), 'deliver');
  assert.equal(p.rememberedPushes, 1024);
  assert.deepEqual(p.position('score', 'm2'), { offset: 8, epoch: 'b' });
});

test('unsubscribing forgets the positions, and close forgets them all', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['m1', 'm2'], h.now);
  const sub = sent(h.drain())[0];
  h.server({ id: sub.id, data: true, streams: { m1: { offset: 4, epoch: 'a' }, m2: { offset: 6, epoch: 'a' } } });
  h.core.unsubscribePush('score', ['m1'], h.now);
  h.drain();
  assert.equal(h.core.position('score', 'm1'), null);
  assert.deepEqual(h.core.position('score', 'm2'), { offset: 6, epoch: 'a' });
  // Subscribed again: from no position.
  h.core.subscribePush('score', ['m1'], h.now);
  assert.deepEqual(sent(h.drain())[0].since, { m1: null });
  h.core.close(h.now);
  assert.equal(h.core.position('score', 'm2'), null);
});

test('the since of a subscribe is written with its tags sorted', () => {
  const h = new Harness(noAuth());
  h.ready();
  h.core.subscribePush('score', ['b', 'a', 'c'], h.now);
  const frame = h.drain().find((o) => o.type === 'transmit').frame;
  assert.equal(frame, '{"id":"1","type":"subscribe","event":"score","tags":["a","b","c"],"since":{"a":null,"b":null,"c":null}}');
  h.core.unsubscribePush('score', ['a'], h.now);
  const unsub = h.drain().find((o) => o.type === 'transmit').frame;
  assert.equal(unsub, '{"id":"2","type":"unsubscribe","event":"score","tags":["a"]}', 'no since on an unsubscribe');
});

test("the auth's since is written exactly, and not at all without tracking", () => {
  let h = new Harness(withAuth());
  let frame = h.open().find((o) => o.type === 'transmit').frame;
  assert.equal(frame, '{"id":"1","type":"auth","data":[{"token":"t"}],"since":{"user":null}}');
  h.server({ id: '1', data: true, streams: { user: { offset: 7, epoch: 'u1' } } });
  assert.deepEqual(h.core.position('', 'user'), { offset: 7, epoch: 'u1' });
  h.lose(1006);
  h.jump();
  frame = h.open().find((o) => o.type === 'transmit').frame;
  assert.equal(frame, '{"id":"2","type":"auth","data":[{"token":"t"}],"since":{"user":{"offset":7,"epoch":"u1"}}}');

  h = new Harness({ ...withAuth(), trackPositions: false });
  frame = h.open().find((o) => o.type === 'transmit').frame;
  assert.equal(frame, '{"id":"1","type":"auth","data":[{"token":"t"}]}');
  // Nor are the reply's streams read, and a jump passes as it comes.
  const out = h.server({ id: '1', data: true, streams: { user: { offset: 2, epoch: 'u1', recovered: false, reason: 'trimmed' } } });
  assert.deepEqual(resyncs(out), []);
  assert.equal(h.core.position('', 'user'), null);
  assert.deepEqual(delivered(h.server({ event: 'dm', data: [9], offset: 9, epoch: 'u1' })), [[9]]);
  assert.equal(h.core.state.kind, 'open');
});

test("a user's stream that could not be recovered is told as event '' tag 'user', before ready", () => {
  const h = new Harness(withAuth());
  const auth = sent(h.open())[0];
  const out = h.server({ id: auth.id, data: true, streams: { user: { offset: 40, epoch: 'u2', recovered: false, reason: 'epoch-changed' } } });
  assert.deepEqual(resyncs(out), [['', 'user', 'epoch-changed']]);
  const kinds = events(out).map((e) => e.type);
  assert.ok(kinds.indexOf('resync') < kinds.indexOf('ready'), kinds.join());
  assert.equal(h.core.state.kind, 'open');
  assert.deepEqual(delivered(h.server({ event: 'dm', data: [41], offset: 41, epoch: 'u2' })), [[41]]);
  // A tagged event of the same name is another stream.
  h.core.subscribePush('dm', ['x'], h.now);
  assert.deepEqual(sent(h.drain())[0].since, { x: null });
});
