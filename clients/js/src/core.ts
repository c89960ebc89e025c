/**
 * The client state machine, a port of the Rust client core
 * (`rtm-core/src/client/`): request ids, calls awaiting replies and their
 * deadlines, the bounded offline queue, the push subscriptions re-sent after
 * every reconnect, the reconnect schedule and auth on every (re)open, and
 * (ext) the positions in the streams of its push subscriptions
 * ({@link Positions}): `since` on every subscribe, duplicates dropped, a gap
 * resubscribed, a stream that could not be recovered told (`resync`), a
 * subscribe refused for a while sent again (`subscribe-retry`); and the
 * user's stream (the events with history Published to the user): `since` on
 * every `auth`, a gap in it recovered by reconnecting.
 *
 * It does no IO and reads no clock: a driver feeds it inputs (`handle*`,
 * with the current time in milliseconds), gives it commands, then drains
 * {@link ClientCore.pollOutput} and calls {@link ClientCore.handleTimeout} at
 * {@link ClientCore.pollTimeout}. Time must not go backwards between calls.
 */
import { type Reconnect, Prng, reconnectDelay } from './backoff.js';
import { ErrorCodes, RtmError } from './errors.js';
import {
  type PushSub,
  checkEventName,
  checkTags,
  encodeArgs,
  encodeAuth,
  encodeInvoke,
  encodeSubscription,
  isTruthy,
  normalize,
  parseServerFrame,
} from './frame.js';
import { type ResyncReason, type StreamPosition, Positions, USER_KEY, parseStreams } from './positions.js';

/** Liveness of the server: ping after `intervalMs` of silence, give up after `timeoutMs`. */
export interface Heartbeat {
  intervalMs: number;
  timeoutMs: number;
}

/** Options of a client core. */
export interface CoreConfig {
  /** Whether `auth` is sent on every (re)open, with {@link CoreConfig.authData}. */
  auth: boolean;
  /** Sent as `{"type":"auth","data":[authData]}`. */
  authData: unknown;
  /** Deadline of every call awaiting a reply, counted from the call (also while queued); `null`: none. */
  callTimeoutMs: number | null;
  /** Calls made while not open wait in a queue of this many; beyond it `rtm/queue-full`. */
  offlineQueue: number;
  /** The reconnect schedule. */
  reconnect: Reconnect;
  /** Consecutive failed attempts after which the client gives up and closes; `null`: never. */
  maxReconnectAttempts: number | null;
  /** A socket not open within this long counts as a failed attempt; `null`: no limit. */
  openTimeoutMs: number | null;
  /** Seed of the jitter PRNG. */
  jitterSeed: number;
  /** Liveness checks of the server, on sockets that can ping; `null`: none. */
  heartbeat: Heartbeat | null;
  /**
   * Keep a position in the stream of every push subscription whose event
   * keeps history on the server (ext; docs/protocol.md): subscribes carry
   * `since`, so after a reconnect the server sends what was missed, in
   * order, once, or says it cannot (a `resync` lifecycle event); an event
   * seen twice is dropped, and one missed makes the client subscribe again
   * with its position. The `auth` carries `since` for the user's stream
   * (the events with history Published to the user); a gap in it makes the
   * client reconnect, and the next `auth` recovers it. A server without
   * history ignores `since`. Default `true`.
   */
  trackPositions: boolean;
}

export const DEFAULT_CONFIG: CoreConfig = {
  auth: false,
  authData: undefined,
  callTimeoutMs: 30_000,
  offlineQueue: 1024,
  reconnect: { kind: 'fixed', delayMs: 1000 },
  maxReconnectAttempts: null,
  openTimeoutMs: 10_000,
  jitterSeed: 0x5eed7e57,
  heartbeat: { intervalMs: 25_000, timeoutMs: 60_000 },
  trackPositions: true,
};

/** Where the client is in its connection lifecycle. */
export type CoreState =
  | { kind: 'connecting'; attempt: number }
  | { kind: 'authenticating' }
  | { kind: 'open' }
  | { kind: 'waiting'; attempt: number }
  | { kind: 'closed' };

/** Why the socket closed, in a `closed` lifecycle event. */
export type CloseCause = 'lost' | 'application' | 'auth-rejected' | 'fatal' | 'gave-up';

/** Something worth telling the application about the connection. */
export type Lifecycle =
  /** A socket is being opened: attempt 0 is the first connection, then 1, 2… after a drop. */
  | { type: 'connecting'; attempt: number }
  /** The socket opened. */
  | { type: 'opened' }
  /** The `auth` request was sent. */
  | { type: 'authenticating' }
  /** Ready: authenticated (if configured), subscriptions re-sent, queue flushed. `authData`: the auth reply's `data`. */
  | { type: 'ready'; authenticated: boolean; authData: unknown }
  /** The socket closed (or an attempt failed). `final`: no reconnect follows. */
  | { type: 'closed'; code: number | null; reason: string; final: boolean; cause: CloseCause }
  /** Attempt `attempt` will start after `delayMs`. */
  | { type: 'reconnecting'; attempt: number; delayMs: number }
  /** Something went wrong that no call owns: a bad frame, a rejected auth, a denied re-subscribe. */
  | { type: 'error'; error: RtmError }
  /**
   * The events this client missed on the push stream (`event`, `tag`) could
   * not be recovered (`reason`, docs/protocol.md): reload what they would
   * have told from the application's own store. Later events of the stream
   * are delivered as usual. For the user's stream (the events with history
   * Published to the user) `event` is `''` and `tag` is `'user'`.
   */
  | { type: 'resync'; event: string; tag: string; reason: ResyncReason }
  /**
   * A push subscription the server refused with a temporary error
   * (`rtm/broker-unavailable`, `rtm/timeout`) is sent again after `delayMs`
   * (retry number `attempt`, from 1), until it is taken or unsubscribed.
   */
  | { type: 'subscribe-retry'; event: string; tags: string[]; attempt: number; delayMs: number; error: RtmError };

/** What the core asks of its driver. */
export type Output =
  /** Open a WebSocket, then call `handleOpen`, or `handleClose` if it fails. */
  | { type: 'connect' }
  /** Send this text frame. */
  | { type: 'transmit'; frame: string }
  /** Send a WebSocket ping. */
  | { type: 'ping' }
  /** Close the socket (1000); its close event must not reach the core any more. */
  | { type: 'disconnect' }
  /** A call finished. */
  | { type: 'done'; call: number; ok: true; value: unknown }
  | { type: 'done'; call: number; ok: false; error: RtmError }
  /** An event frame arrived. */
  | { type: 'event'; event: string; args: unknown[] }
  | { type: 'lifecycle'; event: Lifecycle };

type Pending =
  | { kind: 'auth' }
  | { kind: 'call'; call: number }
  /** Also the internal re-sends after a reconnect (no waiter). */
  | { kind: 'subscribe'; sub: PushSub; waiters: number[] }
  | { kind: 'unsubscribe'; call: number };

type Place = { kind: 'queued' } | { kind: 'sent'; id: string } | { kind: 'held-sub' } | { kind: 'done' };

interface Call {
  deadline: number | null;
  place: Place;
}

interface Queued {
  /** `null` for a fire-and-forget call. */
  call: number | null;
  fn: string;
  /** The arguments, already JSON. */
  data: string;
}

interface HeldSub {
  sub: PushSub;
  waiters: number[];
  /** Refused with a temporary error: sent again at this time (the retry's number beside). */
  retry: { at: number; attempt: number } | null;
  /** Retries so far since it was last taken. */
  retries: number;
}

/** Refusals of a subscribe that a later retry may not meet. */
const TEMPORARY_REFUSALS: readonly string[] = [ErrorCodes.BrokerUnavailable, ErrorCodes.Timeout];

/** Per-call options. */
export interface CallOptions {
  /** This call's timeout instead of the client's (`null`: none). */
  timeoutMs?: number | null;
  /** `false`: fail at once with `rtm/disconnected` instead of waiting in the offline queue. */
  queue?: boolean;
}

const sameSub = (a: PushSub, b: PushSub) =>
  a.event === b.event && a.tags.length === b.tags.length && a.tags.every((t, i) => t === b.tags[i]);

/** A min-heap of (deadline, call), with lazy deletion. */
class Deadlines {
  private heap: Array<[number, number]> = [];

  push(at: number, call: number): void {
    const heap = this.heap;
    heap.push([at, call]);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (less(heap[parent]!, heap[i]!)) break;
      [heap[parent], heap[i]] = [heap[i]!, heap[parent]!];
      i = parent;
    }
  }

  peek(): [number, number] | undefined {
    return this.heap[0];
  }

  pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (!heap.length || !last) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && less(heap[l]!, heap[m]!)) m = l;
      if (r < heap.length && less(heap[r]!, heap[m]!)) m = r;
      if (m === i) break;
      [heap[m], heap[i]] = [heap[i]!, heap[m]!];
      i = m;
    }
  }

  clear(): void {
    this.heap = [];
  }
}

const less = (a: [number, number], b: [number, number]) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

/** The client state machine. See the module docs. */
export class ClientCore {
  readonly config: CoreConfig;
  private stateValue: CoreState = { kind: 'connecting', attempt: 0 };
  /** The next reconnect attempt's number minus one; 0 once ready. */
  private attempt = 0;
  private reconnectAt: number | null = null;
  private connectDeadline: number | null = null;
  private rng: Prng;
  private nextRequest = 0;
  private nextCall = 0;
  private pending = new Map<string, Pending>();
  private calls = new Map<number, Call>();
  private deadlines = new Deadlines();
  private queue: Queued[] = [];
  private subs: HeldSub[] = [];
  /** Positions in the streams of the push subscriptions (ext). */
  private positions = new Positions();
  private outputs: Output[] = [];
  /** Why the client closed for good, when it was not the application's `close`. */
  private closedByValue: RtmError | null = null;
  private lastHeard = 0;
  private lastPing = 0;
  /** Whether this connection's socket can ping (browsers' cannot). */
  private canPing = false;
  /** Why the last connection attempt or connection failed, to tell the application. */
  lastFailure = '';

  /** Why the client closed for good, unless the application closed it. */
  get closedBy(): RtmError | null {
    return this.closedByValue;
  }

  constructor(config: Partial<CoreConfig>, now: number) {
    this.config = { ...DEFAULT_CONFIG, ...config };
    this.rng = new Prng(this.config.jitterSeed);
    this.startConnecting(now, 0);
  }

  // ----- getters -----

  get state(): CoreState {
    return this.stateValue;
  }

  /** Calls sent and awaiting their reply (calls, subscribe and unsubscribe acks). */
  get pendingCalls(): number {
    let n = 0;
    for (const c of this.calls.values()) if (c.place.kind === 'sent') n += 1;
    return n;
  }

  /** Calls waiting in the offline queue (fire-and-forget included). */
  get queuedCalls(): number {
    return this.queue.length;
  }

  /** Push subscriptions held (re-sent after every reconnect). */
  get subscriptions(): number {
    return this.subs.length;
  }

  /** The position this client holds in the stream (`event`, `tag`), or `null` (none yet, or not tracked). */
  position(event: string, tag: string): StreamPosition | null {
    return this.positions.position(event, tag);
  }

  /** Whether `event` with `tags` (normalized) is held. */
  holds(event: string, tag: string): boolean {
    return this.subs.some((h) => h.sub.event === event && h.sub.tags.includes(tag));
  }

  // ----- inputs -----

  /** The socket opened: sends `auth` if configured, else the client is open. */
  handleOpen(now: number, canPing = true): void {
    if (this.stateValue.kind !== 'connecting') return;
    this.lastHeard = now;
    this.lastPing = now;
    this.canPing = canPing;
    this.connectDeadline = null;
    this.lifecycle({ type: 'opened' });
    if (this.config.auth) {
      this.stateValue = { kind: 'authenticating' };
      this.lifecycle({ type: 'authenticating' });
      const id = this.requestId();
      // With positions: the user's stream (Publish) too.
      const since = this.config.trackPositions ? this.positions.userSince() : null;
      this.transmit(encodeAuth(id, this.config.authData, since));
      this.pending.set(id, { kind: 'auth' });
    } else {
      this.becomeOpen(null);
    }
  }

  /** A text frame arrived. Bad frames are reported as `error` lifecycle events and otherwise ignored. */
  handleText(text: string, now: number): void {
    if (!this.hasSocket()) return;
    this.lastHeard = now;
    const frame = parseServerFrame(text);
    if (frame instanceof RtmError) {
      this.lifecycle({ type: 'error', error: frame });
    } else if (frame.kind === 'event') {
      const at = frame.position;
      const verdict = at !== null && this.config.trackPositions ? this.positions.handleEvent(frame.event, at) : 'deliver';
      switch (verdict) {
        case 'deliver':
          this.outputs.push({ type: 'event', event: frame.event, args: frame.args });
          break;
        case 'drop':
          break;
        case 'gap':
          if (at?.tag != null) {
            // Missed some: subscribe again with the position, and the server
            // sends them (or says it cannot).
            this.sendSubscribe(normalize(frame.event, [at.tag]), []);
          } else {
            // The user's stream is tracked by the auth: a new connection
            // authenticates from the position.
            this.outputs.push({ type: 'disconnect' });
            this.handleClose(null, "missed events of the user's stream: reconnecting to recover them", now);
          }
          break;
      }
    } else {
      this.handleReply(frame.id, frame.ok ? { ok: true, value: frame.data } : { ok: false, error: frame.error }, frame.ok ? frame.streams : null, now);
    }
  }

  /**
   * The socket closed or was lost, or a connect attempt failed. Unless the
   * client is closed, pending invokes fail with `rtm/disconnected` and a
   * reconnect is scheduled. Close code 4003 during auth is a rejected auth.
   */
  handleClose(code: number | null, reason: string, now: number): void {
    const state = this.stateValue;
    if (state.kind === 'closed' || state.kind === 'waiting') return;
    if (state.kind === 'authenticating' && code === 4003) {
      this.authRejected(reason || 'authentication rejected', false);
      return;
    }
    if (reason) this.lastFailure = reason;
    this.connectDeadline = null;
    this.dropInFlight();
    this.attempt += 1;
    const attempt = this.attempt;
    const max = this.config.maxReconnectAttempts;
    const allowed = max === null || attempt <= max;
    const delay = allowed ? reconnectDelay(this.config.reconnect, attempt, this.rng) : null;
    if (delay !== null) {
      this.lifecycle({ type: 'closed', code, reason, final: false, cause: 'lost' });
      this.stateValue = { kind: 'waiting', attempt };
      this.reconnectAt = now + delay;
      this.lifecycle({ type: 'reconnecting', attempt, delayMs: delay });
    } else {
      const why = this.lastFailure ? `connection lost, not reconnecting (${this.lastFailure})` : 'connection lost, not reconnecting';
      const err = new RtmError(ErrorCodes.Disconnected, why);
      this.closedByValue = err;
      this.failEverything(err);
      this.stateValue = { kind: 'closed' };
      this.lifecycle({ type: 'closed', code, reason, final: true, cause: 'gave-up' });
    }
  }

  /** Something other than a text frame came from the server (a ping, a pong): it is alive. */
  handleActivity(now: number): void {
    if (this.hasSocket()) this.lastHeard = now;
  }

  /**
   * Time passed: call deadlines (`rtm/timeout`), the open timeout, the
   * heartbeat (a ping, or the connection dropped as lost) and the reconnect
   * delay due by `now` fire.
   */
  handleTimeout(now: number): void {
    this.heartbeat(now);
    if (this.connectDeadline !== null && this.stateValue.kind === 'connecting' && now >= this.connectDeadline) {
      // The socket may stay "connecting" for minutes: drop it and retry.
      this.outputs.push({ type: 'disconnect' });
      this.handleClose(null, `not open within ${this.config.openTimeoutMs} ms`, now);
    }
    for (;;) {
      const top = this.deadlines.peek();
      if (!top || top[0] > now) break;
      this.deadlines.pop();
      const [at, call] = top;
      const c = this.calls.get(call);
      if (!c || c.deadline !== at) continue; // already finished
      this.unplace(call);
      this.complete(call, { ok: false, error: new RtmError(ErrorCodes.Timeout, 'no reply within the call timeout') });
    }
    if (this.stateValue.kind === 'waiting' && this.reconnectAt !== null && this.reconnectAt <= now) {
      this.startConnecting(now, this.stateValue.attempt);
    }
    if (this.stateValue.kind === 'open') {
      const due: PushSub[] = [];
      for (const h of this.subs) {
        if (h.retry !== null && h.retry.at <= now) {
          h.retry = null;
          due.push(h.sub);
        }
      }
      for (const sub of due) this.sendSubscribe(sub, []);
    }
  }

  /** Start the waiting reconnect attempt now (a "retry now" button, the network back). */
  reconnectNow(now: number): void {
    if (this.stateValue.kind === 'waiting') this.startConnecting(now, this.stateValue.attempt);
  }

  // ----- commands -----

  /** Calls `fn` and ignores its reply. Queued while not open. Throws `rtm/queue-full` or `rtm/closed`. */
  call(fn: string, args: readonly unknown[], _now: number, options: CallOptions = {}): void {
    this.checkNotClosed();
    const data = encodeArgs(args);
    if (data instanceof RtmError) throw data;
    if (this.stateValue.kind === 'open') {
      this.transmit(encodeInvoke(this.requestId(), fn, data));
      return;
    }
    if (options.queue === false) throw notConnected();
    this.enqueue(null, fn, data);
  }

  /**
   * Calls `fn`; its reply comes back as a `done` output with the returned
   * call number. Queued while not open; the call timeout runs from now, also
   * while queued. Throws `rtm/queue-full` or `rtm/closed`.
   */
  callWait(fn: string, args: readonly unknown[], now: number, options: CallOptions = {}): number {
    this.checkNotClosed();
    const data = encodeArgs(args);
    if (data instanceof RtmError) throw data;
    if (this.stateValue.kind === 'open') {
      const id = this.requestId();
      this.transmit(encodeInvoke(id, fn, data));
      const call = this.newCall(now, { kind: 'sent', id }, options.timeoutMs);
      this.pending.set(id, { kind: 'call', call });
      return call;
    }
    if (options.queue === false) throw notConnected();
    if (this.queue.length >= this.config.offlineQueue) throw this.queueFull();
    const call = this.newCall(now, { kind: 'queued' }, options.timeoutMs);
    this.enqueue(call, fn, data);
    return call;
  }

  /**
   * Holds a push subscription to `event` with `tags`, re-sent after every
   * reconnect until {@link ClientCore.unsubscribePush}. Its acknowledgement
   * comes as a `done` output (after the next open if offline).
   */
  subscribePush(event: string, tags: readonly string[], now: number): number {
    this.checkNotClosed();
    const bad = checkEventName(event) ?? checkTags(tags);
    if (bad) throw bad;
    const sub = normalize(event, tags);
    if (this.stateValue.kind === 'open') {
      const call = this.newCall(now, { kind: 'done' });
      this.addSub(sub);
      this.sendSubscribe(sub, [call]);
      return call;
    }
    const call = this.newCall(now, { kind: 'held-sub' });
    this.addSub(sub).waiters.push(call);
    return call;
  }

  /**
   * Forgets a push subscription's `tags` for `event`. While open the server
   * is told and acknowledges with a `done` output; while offline there is
   * nothing to undo on the server, so it completes at once.
   */
  unsubscribePush(event: string, tags: readonly string[], now: number): number {
    this.checkNotClosed();
    const bad = checkEventName(event) ?? checkTags(tags);
    if (bad) throw bad;
    const sub = normalize(event, tags);
    this.positions.forget(event, sub.tags);
    // Offline subscribes withdrawn before they were sent: done, nothing to send.
    for (const orphan of this.removeTags(event, sub.tags)) this.complete(orphan, { ok: true, value: true });
    if (this.stateValue.kind === 'open') {
      const id = this.requestId();
      this.transmit(encodeSubscription(id, false, sub));
      const call = this.newCall(now, { kind: 'sent', id });
      this.pending.set(id, { kind: 'unsubscribe', call });
      return call;
    }
    const call = this.newCall(now, { kind: 'done' });
    this.complete(call, { ok: true, value: true });
    return call;
  }

  /** Gives up on a call (its `AbortSignal` fired): it fails with `error` and leaves wherever it waits. */
  cancel(call: number, error: RtmError): void {
    if (!this.calls.has(call)) return;
    this.unplace(call);
    this.complete(call, { ok: false, error });
  }

  /**
   * Something no retry can fix happened (a malformed server URL, no
   * WebSocket): `err` is reported, every call fails with it, and the client
   * ends closed without reconnecting.
   */
  handleFatalError(err: RtmError): void {
    if (this.stateValue.kind === 'closed') return;
    this.closeForGood(err, null, this.hasSocket(), 'fatal');
  }

  /**
   * Closes the client for good: every pending and queued call fails with
   * `rtm/closed`, the socket is closed and no reconnect follows.
   */
  close(_now: number): void {
    if (this.stateValue.kind === 'closed') return;
    const hasSocket = this.stateValue.kind !== 'waiting';
    this.failEverything(new RtmError(ErrorCodes.Closed, 'the client was closed'));
    if (hasSocket) this.outputs.push({ type: 'disconnect' });
    this.stateValue = { kind: 'closed' };
    this.lifecycle({ type: 'closed', code: 1000, reason: 'closed by the application', final: true, cause: 'application' });
  }

  // ----- outputs -----

  /** The next thing the driver must do, or `undefined` when there is nothing. */
  pollOutput(): Output | undefined {
    return this.outputs.shift();
  }

  /** When {@link ClientCore.handleTimeout} must be called next, or `null`. */
  pollTimeout(): number | null {
    let at: number | null = null;
    const earliest = (t: number | null) => {
      if (t !== null && (at === null || t < at)) at = t;
    };
    // Skip finished calls at the top, so a stale deadline does not wake the driver.
    for (;;) {
      const top = this.deadlines.peek();
      if (!top) break;
      const c = this.calls.get(top[1]);
      if (c && c.deadline === top[0]) {
        earliest(top[0]);
        break;
      }
      this.deadlines.pop();
    }
    if (this.stateValue.kind === 'waiting') earliest(this.reconnectAt);
    if (this.stateValue.kind === 'connecting') earliest(this.connectDeadline);
    if (this.stateValue.kind === 'open') for (const h of this.subs) earliest(h.retry?.at ?? null);
    earliest(this.heartbeatDue());
    return at;
  }

  // ----- internals -----

  private lifecycle(event: Lifecycle): void {
    this.outputs.push({ type: 'lifecycle', event });
  }

  private transmit(frame: string): void {
    this.outputs.push({ type: 'transmit', frame });
  }

  /** Unique for the client's whole life, hence per connection too. */
  private requestId(): string {
    this.nextRequest += 1;
    return String(this.nextRequest);
  }

  private newCall(now: number, place: Place, timeoutMs?: number | null): number {
    this.nextCall += 1;
    const call = this.nextCall;
    const timeout = timeoutMs === undefined ? this.config.callTimeoutMs : timeoutMs;
    const deadline = timeout === null || !Number.isFinite(timeout) ? null : now + Math.max(0, timeout);
    if (deadline !== null) this.deadlines.push(deadline, call);
    this.calls.set(call, { deadline, place });
    return call;
  }

  /** Finishes a live call once; a call already finished is skipped. */
  private complete(call: number, result: { ok: true; value: unknown } | { ok: false; error: RtmError }): void {
    if (!this.calls.delete(call)) return;
    this.outputs.push(result.ok ? { type: 'done', call, ok: true, value: result.value } : { type: 'done', call, ok: false, error: result.error });
  }

  /** Takes a call out of wherever it waits (it timed out or was aborted). */
  private unplace(call: number): void {
    const c = this.calls.get(call);
    if (!c) return;
    const place = c.place;
    switch (place.kind) {
      case 'queued':
        this.queue = this.queue.filter((q) => q.call !== call);
        break;
      case 'held-sub':
        for (const h of this.subs) h.waiters = h.waiters.filter((w) => w !== call);
        break;
      case 'done':
        break;
      case 'sent': {
        const p = this.pending.get(place.id);
        if (p?.kind === 'subscribe') p.waiters = p.waiters.filter((w) => w !== call);
        else if (p?.kind === 'call' || p?.kind === 'unsubscribe') this.pending.delete(place.id);
        break;
      }
    }
  }

  private hasSocket(): boolean {
    return this.stateValue.kind === 'authenticating' || this.stateValue.kind === 'open';
  }

  /** When the heartbeat must act next: ping, or give up on the server. */
  private heartbeatDue(): number | null {
    const beat = this.config.heartbeat;
    if (!beat || !this.canPing || !this.hasSocket()) return null;
    const ping = Math.max(this.lastHeard, this.lastPing) + beat.intervalMs;
    return Math.min(ping, this.lastHeard + beat.timeoutMs);
  }

  private heartbeat(now: number): void {
    const beat = this.config.heartbeat;
    if (!beat || !this.canPing || !this.hasSocket()) return;
    if (now >= this.lastHeard + beat.timeoutMs) {
      // The socket may look open forever: close it and reconnect.
      this.outputs.push({ type: 'disconnect' });
      this.handleClose(null, `nothing from the server for ${beat.timeoutMs} ms`, now);
    } else if (now >= Math.max(this.lastHeard, this.lastPing) + beat.intervalMs) {
      this.lastPing = now;
      this.outputs.push({ type: 'ping' });
    }
  }

  private checkNotClosed(): void {
    if (this.stateValue.kind === 'closed') {
      const message = this.closedByValue ? `the client was closed: ${this.closedByValue.message}` : 'the client was closed';
      throw new RtmError(ErrorCodes.Closed, message);
    }
  }

  private queueFull(): RtmError {
    return new RtmError(ErrorCodes.QueueFull, `offline queue full (${this.config.offlineQueue} calls)`);
  }

  private enqueue(call: number | null, fn: string, data: string): void {
    if (this.queue.length >= this.config.offlineQueue) throw this.queueFull();
    this.queue.push({ call, fn, data });
  }

  private addSub(sub: PushSub): HeldSub {
    let held = this.subs.find((h) => sameSub(h.sub, sub));
    if (!held) {
      held = { sub, waiters: [], retry: null, retries: 0 };
      this.subs.push(held);
    }
    return held;
  }

  /** Forgets `tags` of `event`; returns the waiters of entries left with no tag. */
  private removeTags(event: string, tags: string[]): number[] {
    const orphans: number[] = [];
    for (const h of this.subs) {
      if (h.sub.event !== event) continue;
      h.sub = { event, tags: h.sub.tags.filter((t) => !tags.includes(t)) };
      if (!h.sub.tags.length) orphans.push(...h.waiters.splice(0));
    }
    this.subs = this.subs.filter((h) => h.sub.event !== event || h.sub.tags.length > 0);
    return orphans;
  }

  private sendSubscribe(sub: PushSub, waiters: number[]): void {
    const id = this.requestId();
    const since = this.config.trackPositions ? this.positions.since(sub.event, sub.tags) : null;
    this.transmit(encodeSubscription(id, true, sub, since));
    for (const call of waiters) {
      const c = this.calls.get(call);
      if (c) c.place = { kind: 'sent', id };
    }
    this.pending.set(id, { kind: 'subscribe', sub, waiters });
  }

  private startConnecting(now: number, attempt: number): void {
    this.stateValue = { kind: 'connecting', attempt };
    this.reconnectAt = null;
    const timeout = this.config.openTimeoutMs;
    this.connectDeadline = timeout === null || !Number.isFinite(timeout) ? null : now + timeout;
    this.outputs.push({ type: 'connect' });
    this.lifecycle({ type: 'connecting', attempt });
  }

  /** Open and authenticated: re-send subscriptions, then flush the queue in order. */
  private becomeOpen(authData: unknown): void {
    this.stateValue = { kind: 'open' };
    this.attempt = 0;
    this.lastFailure = '';
    const resend = this.subs.map((h) => {
      h.retry = null;
      return [h.sub, h.waiters.splice(0)] as const;
    });
    for (const [sub, waiters] of resend) this.sendSubscribe(sub, waiters);
    const queue = this.queue;
    this.queue = [];
    for (const q of queue) {
      const id = this.requestId();
      this.transmit(encodeInvoke(id, q.fn, q.data));
      if (q.call !== null) {
        const c = this.calls.get(q.call);
        if (c) c.place = { kind: 'sent', id };
        this.pending.set(id, { kind: 'call', call: q.call });
      }
    }
    this.lifecycle({ type: 'ready', authenticated: this.config.auth, authData });
  }

  private handleReply(id: string, result: { ok: true; value: unknown } | { ok: false; error: RtmError }, streams: unknown, now: number): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    switch (pending.kind) {
      case 'auth':
        if (result.ok && isTruthy(result.value)) {
          this.streamStates(USER_KEY, streams);
          this.becomeOpen(result.value);
        } else this.authRejected(result.ok ? 'authentication rejected' : result.error.message || 'authentication rejected', true);
        break;
      case 'call':
      case 'unsubscribe':
        this.complete(pending.call, result);
        break;
      case 'subscribe':
        if (result.ok) this.subscribed(pending.sub, streams);
        else this.subscribeRefused(pending.sub, result.error, pending.waiters.length === 0, now);
        for (const call of pending.waiters) this.complete(call, result);
        break;
    }
  }

  /**
   * A subscribe was taken: its streams' positions are where the reply says;
   * a stream that could not be recovered is told to the application.
   */
  private subscribed(sub: PushSub, streams: unknown): void {
    const held = this.subs.find((h) => sameSub(h.sub, sub));
    if (held) held.retries = 0;
    this.streamStates(sub.event, streams);
  }

  /**
   * A reply's `streams`: the positions of `event`'s streams (the user's
   * stream for an `auth`); a stream that could not be recovered is told.
   */
  private streamStates(event: string, streams: unknown): void {
    if (streams === null || streams === undefined || !this.config.trackPositions) return;
    const states = parseStreams(streams);
    if (typeof states === 'string') {
      this.lifecycle({ type: 'error', error: new RtmError(ErrorCodes.BadRequest, states) });
      return;
    }
    for (const { tag, reason } of this.positions.handleStreams(event, states)) {
      this.lifecycle({ type: 'resync', event, tag, reason });
    }
  }

  /**
   * A subscribe was refused. A temporary refusal (`rtm/broker-unavailable`,
   * `rtm/timeout`) of a held subscription is sent again after a backoff (the
   * reconnect schedule's); any other, or with no reconnects, stops it being
   * sent again.
   */
  private subscribeRefused(sub: PushSub, error: RtmError, tell: boolean, now: number): void {
    this.positions.resyncFailed(sub.event, sub.tags);
    const held = this.subs.find((h) => sameSub(h.sub, sub));
    if (held && TEMPORARY_REFUSALS.includes(error.code)) {
      const attempt = held.retries + 1;
      const delay = reconnectDelay(this.config.reconnect, attempt, this.rng);
      if (delay !== null) {
        held.retries = attempt;
        held.retry = { at: now + delay, attempt };
        this.lifecycle({ type: 'subscribe-retry', event: sub.event, tags: [...sub.tags], attempt, delayMs: delay, error });
        return;
      }
    }
    // Denied: the server does not hold it, so stop re-sending it.
    this.subs = this.subs.filter((h) => !sameSub(h.sub, sub));
    if (tell) this.lifecycle({ type: 'error', error });
  }

  /** The server rejected the auth: terminal, nothing is retried. */
  private authRejected(message: string, closeSocket: boolean): void {
    this.closeForGood(new RtmError(ErrorCodes.AuthRejected, message), 4003, closeSocket, 'auth-rejected');
  }

  /** Reports `err`, fails every call with it and ends closed. */
  private closeForGood(err: RtmError, code: number | null, closeSocket: boolean, cause: CloseCause): void {
    this.closedByValue = err;
    this.lifecycle({ type: 'error', error: err });
    this.failEverything(err);
    if (closeSocket) this.outputs.push({ type: 'disconnect' });
    this.stateValue = { kind: 'closed' };
    this.lifecycle({ type: 'closed', code, reason: err.message, final: true, cause });
  }

  /**
   * The connection is gone: invokes in flight fail (they may not be
   * idempotent, so they are not re-sent); subscribes wait for the next open.
   */
  private dropInFlight(): void {
    const disconnected = () => new RtmError(ErrorCodes.Disconnected, 'connection lost while the call was in flight');
    for (const p of this.takePending()) {
      switch (p.kind) {
        case 'auth':
          break;
        case 'call':
          this.complete(p.call, { ok: false, error: disconnected() });
          break;
        case 'unsubscribe':
          // The subscription is gone with the connection, as asked.
          this.complete(p.call, { ok: true, value: true });
          break;
        case 'subscribe': {
          const held = this.subs.find((h) => sameSub(h.sub, p.sub));
          if (held) {
            held.waiters.push(...p.waiters);
            for (const call of p.waiters) {
              const c = this.calls.get(call);
              if (c) c.place = { kind: 'held-sub' };
            }
          } else {
            for (const call of p.waiters) this.complete(call, { ok: false, error: disconnected() });
          }
          break;
        }
      }
    }
  }

  /** Every request awaiting a reply, in the order sent, so completions come out in call order. */
  private takePending(): Pending[] {
    const entries = [...this.pending.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
    this.pending.clear();
    return entries.map(([, p]) => p);
  }

  /** Every pending, queued and held call fails with `err`; subscriptions are forgotten. */
  private failEverything(err: RtmError): void {
    for (const p of this.takePending()) {
      switch (p.kind) {
        case 'auth':
          break;
        case 'call':
        case 'unsubscribe':
          this.complete(p.call, { ok: false, error: err });
          break;
        case 'subscribe':
          for (const call of p.waiters) this.complete(call, { ok: false, error: err });
          break;
      }
    }
    const queue = this.queue;
    this.queue = [];
    for (const q of queue) if (q.call !== null) this.complete(q.call, { ok: false, error: err });
    const subs = this.subs;
    this.subs = [];
    for (const h of subs) for (const call of h.waiters) this.complete(call, { ok: false, error: err });
    this.positions.clear();
    // Calls completed at once or about to be sent are gone too.
    for (const call of [...this.calls.keys()]) this.complete(call, { ok: false, error: err });
    this.deadlines.clear();
    this.reconnectAt = null;
    this.connectDeadline = null;
  }
}

function notConnected(): RtmError {
  return new RtmError(ErrorCodes.Disconnected, 'not connected');
}
