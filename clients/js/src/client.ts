/**
 * The typed client: {@link connect} and {@link Client}. It drives the
 * sans-IO {@link ClientCore} with a real WebSocket and timers.
 */
import type { Jitter, Reconnect } from './backoff.js';
import { type CoreConfig, type Heartbeat, type Lifecycle, type Output, ClientCore, DEFAULT_CONFIG } from './core.js';
import { ErrorCodes, RtmError } from './errors.js';
import { checkEventName, checkTags, normalize } from './frame.js';
import type { ResyncReason, StreamPosition } from './positions.js';
import { type WebSocketConstructor, type WebSocketLike, badUrl, defaultWebSocket } from './websocket.js';

/** Where a client is: opening a socket, authenticating, open (ready), waiting to reconnect, or closed for good. */
export type ConnectionState = 'connecting' | 'authenticating' | 'open' | 'reconnecting' | 'closed';

/**
 * The reconnect schedule:
 * - `false`: never reconnect (a lost connection closes the client);
 * - `{ delayMs }`: the same delay before every attempt;
 * - `{ initialMs, maxMs, factor, jitter }`: exponential backoff with a cap and jitter
 *   (defaults 500 ms, 30 s, 2, `'equal'`: uniform in `[d/2, d]`; `'full'`: in `[0, d]`).
 */
export type ReconnectOption =
  | false
  | { delayMs: number }
  | { initialMs?: number; maxMs?: number; factor?: number; jitter?: Jitter };

/** Options of {@link connect} and {@link Client}. */
export interface ClientOptions {
  /** Sent as `{"type":"auth","data":[auth]}` on every (re)open; absent (`undefined`): no auth. */
  auth?: unknown;
  /** Every call's timeout, from the call (also while queued): `rtm/timeout`. Default 30 000; `null`: none. */
  callTimeoutMs?: number | null;
  /** Calls made while not open wait in a queue of this many (default 1024); beyond it `rtm/queue-full`. */
  offlineQueue?: number;
  /** The reconnect schedule (default: backoff 500 ms doubling to 30 s, equal jitter). */
  reconnect?: ReconnectOption;
  /** Consecutive failed attempts after which the client gives up and closes (default: never gives up). */
  maxReconnectAttempts?: number | null;
  /** A socket still opening after this long is dropped and counts as a failed attempt (default 10 000; `null`: none). */
  openTimeoutMs?: number | null;
  /** How long {@link connect} waits for the first open (default 10 000; `null`: forever). */
  connectTimeoutMs?: number | null;
  /**
   * Liveness of the server, where the socket can ping (`ws` in Node; browsers
   * cannot): a ping after `intervalMs` of silence, the connection dropped and
   * re-made after `timeoutMs`. Default 25 000 / 60 000; `null`: off.
   */
  heartbeat?: Heartbeat | null;
  /**
   * Bytes sent but not yet taken by the network (`bufferedAmount`) beyond
   * which the server counts as gone (it stopped reading): the connection is
   * dropped, its calls fail `rtm/disconnected`, and it is re-made. Default 16 MiB; `null`: no bound.
   */
  maxBufferedBytes?: number | null;
  /** Seed of the backoff jitter (default: random). */
  jitterSeed?: number;
  /**
   * Keep a position in the stream of every push subscription whose event
   * keeps history on the server (docs/protocol.md, "Positions and
   * recovery"): after a reconnect the server sends the events missed
   * meanwhile, in order, each once, before the live ones, or says it cannot
   * (the `resync` event); an event seen twice is dropped, and one missed
   * makes the client ask again. The `auth` tracks the user's stream (the
   * events with history Published to the user) the same way; a hole in it
   * makes the client reconnect. A server without history ignores it.
   * Default `true`; `false`: subscribes as before, events passed as they come.
   */
  trackPositions?: boolean;
  /** The WebSocket class to use (default: the global one, else `ws`). */
  WebSocket?: WebSocketConstructor;
}

/** A push subscription refused for a while, sent again (the `subscribe-retry` event). */
export interface SubscribeRetryInfo {
  /** The event name. */
  event: string;
  /** Its tags. */
  tags: string[];
  /** The retry's number (1 for the first). */
  attempt: number;
  /** How long until it is sent again (the reconnect schedule's delay for that attempt). */
  delayMs: number;
  /** Why it was refused: `rtm/broker-unavailable` or `rtm/timeout`. */
  error: RtmError;
}

/** Options of one call ({@link Client.callWith}). */
export interface CallOptions {
  /** Aborting it fails the call with `rtm/aborted` (the server is not told: the reply is ignored). */
  signal?: AbortSignal;
  /** This call's timeout instead of the client's `callTimeoutMs` (`null`: none). */
  timeoutMs?: number | null;
  /** While not open: `'queue'` (default) waits in the offline queue; `'fail'` fails at once with `rtm/disconnected`. */
  whenOffline?: 'queue' | 'fail';
}

/** The events of a {@link Client}, with their listeners' arguments. */
export interface ClientEvents {
  /** Ready: authenticated (if `auth` is set), push subscriptions re-sent, offline queue flushed. After every (re)connect. */
  open: [info: { authenticated: boolean; authData: unknown }];
  /** The socket closed, or an attempt failed. `final`: the client is closed for good. */
  close: [info: { code: number | null; reason: string; final: boolean }];
  /** The next attempt, number `attempt`, starts in `delayMs`. */
  reconnecting: [info: { attempt: number; delayMs: number }];
  /** A failure no call owns: a rejected auth (`rtm/auth-rejected`), a denied re-subscribe, a bad frame from the server. */
  error: [error: RtmError];
  /** The connection state changed ({@link Client.state}). */
  state: [state: ConnectionState];
  /** A socket is being opened: attempt 0 first, then 1, 2… after a drop. */
  connecting: [info: { attempt: number }];
  /** Every text frame from the server, as received, before it is handled. */
  message: [raw: string];
  /** The WebSocket's own `error` event (a failed connect, a network error). */
  'socket-error': [event: unknown];
  /**
   * The events this client missed on the push stream (`event`, `tag`) could
   * not be recovered (`reason`: `trimmed`, `too-many`, `too-old`,
   * `epoch-changed`, `ahead`, `gap`): reload what they would have told from
   * the application's own store. Later events of the stream are delivered
   * as usual. Only with `trackPositions` (the default) and a server that
   * keeps history for `event`. For the user's stream (the events with
   * history Published to the user, tracked from the `auth`) `event` is `''`
   * and `tag` is `'user'`.
   */
  resync: [event: string, tag: string, reason: ResyncReason];
  /**
   * A push subscription the server refused with a temporary error
   * (`rtm/broker-unavailable`, `rtm/timeout`) is sent again after
   * `delayMs`, until it is taken or unsubscribed.
   */
  'subscribe-retry': [info: SubscribeRetryInfo];
}

type Listener<K extends keyof ClientEvents> = (...args: ClientEvents[K]) => void;

/** A function that undoes a subscription. */
export type Unsubscribe = () => void;

interface Waiter {
  resolve(value: unknown): void;
  reject(error: RtmError): void;
  cleanup?: () => void;
}

interface PushReg {
  event: string;
  tags: string[];
  handler: ((...args: any[]) => unknown) | null;
}

const now = (): number => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/** Reports an exception thrown by an application's listener without stopping the client. */
export function reportListenerError(err: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === 'function') report(err);
  else console.error('rtm client: a listener threw:', err);
}

/** The core's reconnect schedule from the option. */
export function toReconnect(option: ReconnectOption | undefined, fallback: Reconnect): Reconnect {
  if (option === undefined) return fallback;
  if (option === false) return { kind: 'never' };
  if ('delayMs' in option) return { kind: 'fixed', delayMs: option.delayMs };
  return {
    kind: 'backoff',
    initialMs: option.initialMs ?? 500,
    maxMs: option.maxMs ?? 30_000,
    factor: option.factor ?? 2,
    jitter: option.jitter ?? 'equal',
  };
}

/** The default schedule of the typed API: backoff from 500 ms to 30 s, equal jitter. */
export const DEFAULT_RECONNECT: Reconnect = { kind: 'backoff', initialMs: 500, maxMs: 30_000, factor: 2, jitter: 'equal' };

/** The core's options from the client's. */
export function coreConfig(options: ClientOptions, reconnect: Reconnect): Partial<CoreConfig> {
  return {
    auth: options.auth !== undefined,
    authData: options.auth,
    callTimeoutMs: options.callTimeoutMs === undefined ? DEFAULT_CONFIG.callTimeoutMs : options.callTimeoutMs,
    offlineQueue: options.offlineQueue ?? DEFAULT_CONFIG.offlineQueue,
    reconnect,
    maxReconnectAttempts: options.maxReconnectAttempts ?? null,
    openTimeoutMs: options.openTimeoutMs === undefined ? DEFAULT_CONFIG.openTimeoutMs : options.openTimeoutMs,
    jitterSeed: options.jitterSeed ?? Math.floor(Math.random() * 0xffffffff),
    heartbeat: options.heartbeat === undefined ? DEFAULT_CONFIG.heartbeat : options.heartbeat,
    trackPositions: options.trackPositions ?? DEFAULT_CONFIG.trackPositions,
  };
}

/**
 * A client of an RTM server. It connects at once (in the background) and
 * stays connected: a lost connection is re-made on the reconnect schedule,
 * re-authenticated, its push subscriptions re-sent, and calls made meanwhile
 * wait in a bounded offline queue.
 *
 * ```ts
 * const client = await connect('ws://127.0.0.1:7070/', { auth: 'user:alice' });
 * const sum = await client.call<number>('add', 1, 2);
 * const off = client.subscribe<[string]>('alert', (text) => console.log(text));
 * ```
 */
export class Client {
  /** The server URL. */
  readonly url: string;
  private readonly core: ClientCore;
  private readonly options: ClientOptions;
  private socket: WebSocketLike | null = null;
  /** The last WebSocket made, closed or not (`null` before the first attempt). */
  private lastSocketValue: WebSocketLike | null = null;
  /** Whether a socket of this client ever opened: the URL worked once. */
  private everOpened = false;
  private readonly httpErrorsFinal: boolean;
  private socketError = '';
  private attemptToken = 0;
  private waiting = new Map<number, Waiter>();
  private handlers = new Map<string, Set<(...args: any[]) => unknown>>();
  private pushRegs = new Set<PushReg>();
  private listeners = new Map<keyof ClientEvents, Set<(...args: any[]) => void>>();
  private openWaiters = new Set<{ resolve(): void; reject(e: RtmError): void }>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt: number | null = null;
  private pumping = false;
  private started = false;
  private lastState: ConnectionState = 'connecting';

  /**
   * Starts a client of `url` (`ws://` or `wss://`); it connects in the
   * background (see {@link connect} to wait for the first open). Listeners
   * added right after construction see every event.
   *
   * `reconnectFallback` is the schedule when `options.reconnect` is not
   * given. `httpErrorsFinal` (default `true`): an HTTP 4xx answer (but 408
   * and 429) to the WebSocket upgrade before the client was ever open closes
   * it at once with `rtm/bad-request` (a wrong URL or path), where the
   * WebSocket shows the status (`ws`; browsers do not); `false` retries it
   * like any failed attempt, as `@zexcore/rtm-client` does (`RtmClient`).
   */
  constructor(url: string, options: ClientOptions = {}, reconnectFallback: Reconnect = DEFAULT_RECONNECT, httpErrorsFinal = true) {
    this.url = url;
    this.options = { ...options };
    this.httpErrorsFinal = httpErrorsFinal;
    this.core = new ClientCore(coreConfig(options, toReconnect(options.reconnect, reconnectFallback)), now());
    // The first socket is opened after the caller had a chance to add listeners.
    queueMicrotask(() => {
      this.started = true;
      this.pump();
    });
  }

  // ----- state -----

  /** Where the client is: `connecting`, `authenticating`, `open`, `reconnecting` (waiting for the next attempt) or `closed`. */
  get state(): ConnectionState {
    return publicState(this.core.state.kind);
  }

  /** Calls sent and awaiting their reply. */
  get pendingCalls(): number {
    return this.core.pendingCalls;
  }

  /** Calls waiting in the offline queue. */
  get queuedCalls(): number {
    return this.core.queuedCalls;
  }

  /** Push subscriptions held (re-sent after every reconnect). */
  get pushSubscriptions(): number {
    return this.core.subscriptions;
  }

  /**
   * The position this client holds in the push stream (`event`, `tag`): the
   * offset of the last event it had, under the stream's epoch; `null` when
   * it has none (not subscribed yet, no history for `event` on the server,
   * or `trackPositions: false`).
   */
  position(event: string, tag: string): StreamPosition | null {
    return this.core.position(event, tag);
  }

  /** The WebSocket in use, if one is open or opening. */
  get socketInUse(): WebSocketLike | null {
    return this.socket;
  }

  /**
   * The last WebSocket this client made, whatever its `readyState` (a closed
   * one stays here until the next attempt replaces it); `null` before the
   * first attempt.
   */
  get lastSocket(): WebSocketLike | null {
    return this.lastSocketValue;
  }

  /**
   * Resolves once the client is open (at once if it is); rejects if it
   * closes for good first (`rtm/auth-rejected`, `rtm/bad-request`,
   * `rtm/closed`) or, with `rtm/timeout`, after `timeoutMs`.
   */
  waitOpen(timeoutMs: number | null = null): Promise<void> {
    if (this.core.state.kind === 'open') return Promise.resolve();
    if (this.core.state.kind === 'closed') return Promise.reject(this.closedError());
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: RtmError) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.openWaiters.add(waiter);
      if (timeoutMs !== null && Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => {
          this.openWaiters.delete(waiter);
          const why = this.core.lastFailure ? `: ${this.core.lastFailure}` : '';
          reject(new RtmError(ErrorCodes.Timeout, `not open within ${timeoutMs} ms${why}`));
        }, timeoutMs);
      }
    });
  }

  // ----- calls -----

  /**
   * Calls server function `fn` with `args` and resolves with its result.
   * Rejects with an {@link RtmError}: the server's code (`rtm/function-not-found`,
   * `rtm/handler-error`, …), or `rtm/timeout`, `rtm/disconnected` (the
   * connection dropped while the call was in flight: it is not re-sent),
   * `rtm/queue-full`, `rtm/closed`.
   */
  call<T = unknown>(fn: string, ...args: unknown[]): Promise<T> {
    return this.callWith<T>({}, fn, ...args);
  }

  /** {@link Client.call} with options: an `AbortSignal`, a timeout of its own, fail-fast when offline. */
  callWith<T = unknown>(options: CallOptions, fn: string, ...args: unknown[]): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const { signal } = options;
      if (signal?.aborted) return reject(aborted(signal));
      let call: number;
      try {
        const callOptions = {
          ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
          queue: options.whenOffline !== 'fail',
        };
        call = this.core.callWait(fn, args, now(), callOptions);
      } catch (err) {
        return reject(err);
      }
      const waiter: Waiter = { resolve: resolve as (v: unknown) => void, reject };
      if (signal) {
        const onAbort = () => {
          this.core.cancel(call, aborted(signal));
          this.pump();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.waiting.set(call, waiter);
      this.pump();
    });
  }

  /**
   * Calls `fn` without waiting for its reply (fire-and-forget; the JS
   * client's `Call`). Queued while not open. Throws an {@link RtmError} at
   * once: `rtm/queue-full`, `rtm/closed`, `rtm/bad-request` (arguments that are not JSON).
   */
  invoke(fn: string, ...args: unknown[]): void {
    this.core.call(fn, args, now());
    this.pump();
  }

  // ----- events -----

  /**
   * Calls `handler(...args)` for every `event` from the server (Emit,
   * Publish, and Push to subscriptions this client holds). Client side only.
   * Returns the function that removes it.
   */
  subscribe<A extends unknown[] = any[]>(event: string, handler: (...args: A) => unknown): Unsubscribe {
    this.addHandler(event, handler as (...args: any[]) => unknown);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.removeHandler(event, handler as (...args: any[]) => unknown);
    };
  }

  /**
   * Holds a push subscription to `event` for `tags` on the server (re-sent
   * after every reconnect, after re-auth) and, with a `handler`, calls it for
   * every `event` (events carry no tags: the handler sees every `event` this
   * client gets). Resolves with the function that undoes it once the server
   * acknowledged; rejects with `rtm/forbidden` if the server denies it (the
   * handler is then removed). While offline it waits for the next open.
   *
   * The returned function removes the handler and tells the server to drop
   * the tags no other push subscription of this client still holds.
   */
  subscribePush<A extends unknown[] = any[]>(
    event: string,
    tags: readonly string[],
    handler?: ((...args: A) => unknown) | null,
  ): Promise<() => Promise<void>> {
    const bad = checkEventName(event) ?? checkTags(tags);
    if (bad) return Promise.reject(bad);
    const reg: PushReg = { event, tags: normalize(event, tags).tags, handler: (handler as PushReg['handler']) ?? null };
    if (reg.handler) this.addHandler(event, reg.handler);
    this.pushRegs.add(reg);
    const forget = () => {
      this.pushRegs.delete(reg);
      if (reg.handler) this.removeHandler(event, reg.handler);
      reg.handler = null;
    };
    return this.await(() => this.core.subscribePush(event, tags, now())).then(
      () => {
        let done = false;
        return () => {
          if (done || !this.pushRegs.has(reg)) return Promise.resolve();
          done = true;
          forget();
          return this.releaseTags(event, reg.tags);
        };
      },
      (err: RtmError) => {
        forget();
        // A subscription refused for a while (`rtm/broker-unavailable`), or
        // whose call timed out while offline, stays held by the core, which
        // would send it again: the caller was told it failed, so it is
        // dropped (the tags no other push subscription holds), as the Rust
        // client does.
        if (reg.tags.some((tag) => this.core.holds(event, tag))) void this.releaseTags(event, reg.tags);
        throw err;
      },
    );
  }

  /**
   * Drops the push subscriptions to `event` for `tags` (every one this client
   * holds, with their handlers if no tag is left to them) and tells the server.
   */
  unsubscribePush(event: string, tags: readonly string[]): Promise<void> {
    const bad = checkEventName(event) ?? checkTags(tags);
    if (bad) return Promise.reject(bad);
    const drop = normalize(event, tags).tags;
    for (const reg of [...this.pushRegs]) {
      if (reg.event !== event) continue;
      reg.tags = reg.tags.filter((t) => !drop.includes(t));
      if (!reg.tags.length) {
        this.pushRegs.delete(reg);
        if (reg.handler) this.removeHandler(event, reg.handler);
      }
    }
    return this.await(() => this.core.unsubscribePush(event, drop, now())).then(() => undefined);
  }

  // ----- connection events -----

  /** Adds a listener of a connection event; returns the function that removes it. */
  on<K extends keyof ClientEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as (...args: any[]) => void);
    return () => this.off(type, listener);
  }

  /** Removes a listener added with {@link Client.on}. */
  off<K extends keyof ClientEvents>(type: K, listener: Listener<K>): void {
    this.listeners.get(type)?.delete(listener as (...args: any[]) => void);
  }

  /** If waiting to reconnect, starts the attempt now (a "retry now" button, the network back). */
  reconnectNow(): void {
    this.core.reconnectNow(now());
    this.pump();
  }

  /**
   * Closes the client for good: calls pending or queued fail with
   * `rtm/closed`, the socket is closed (1000), nothing reconnects, and later
   * calls fail with `rtm/closed`.
   */
  close(): void {
    this.core.close(now());
    this.handlers.clear();
    this.pushRegs.clear();
    this.pump();
  }

  // ----- internals -----

  /** Runs a core command that completes through a `done` output. */
  private await(command: () => number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let call: number;
      try {
        call = command();
      } catch (err) {
        return reject(err);
      }
      this.waiting.set(call, { resolve, reject });
      this.pump();
    });
  }

  /** Unsubscribes the tags of `event` that no other push subscription holds. */
  private releaseTags(event: string, tags: string[]): Promise<void> {
    const held = new Set<string>();
    for (const reg of this.pushRegs) if (reg.event === event) for (const t of reg.tags) held.add(t);
    const free = tags.filter((t) => !held.has(t));
    if (!free.length || this.core.state.kind === 'closed') return Promise.resolve();
    return this.await(() => this.core.unsubscribePush(event, free, now())).then(
      () => undefined,
      () => undefined,
    );
  }

  private addHandler(event: string, handler: (...args: any[]) => unknown): void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(handler);
  }

  private removeHandler(event: string, handler: (...args: any[]) => unknown): void {
    const set = this.handlers.get(event);
    if (!set) return;
    set.delete(handler);
    if (!set.size) this.handlers.delete(event);
  }

  /** Emits a connection event to its listeners; a listener that throws is reported, not fatal. */
  protected emit<K extends keyof ClientEvents>(type: K, ...args: ClientEvents[K]): void {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  /** Drains the core's outputs (not re-entrant: a command from a listener is drained by the loop), then arms the timer. */
  private pump(): void {
    if (this.pumping || !this.started) return;
    this.pumping = true;
    try {
      for (let out = this.core.pollOutput(); out; out = this.core.pollOutput()) this.perform(out);
    } finally {
      this.pumping = false;
    }
    this.schedule();
  }

  private perform(out: Output): void {
    switch (out.type) {
      case 'connect':
        this.openSocket();
        break;
      case 'transmit':
        this.transmit(out.frame);
        break;
      case 'ping':
        try {
          this.socket?.ping?.();
        } catch {
          // A closing socket: its close event follows.
        }
        break;
      case 'disconnect':
        this.dropSocket(1000);
        break;
      case 'done': {
        const waiter = this.waiting.get(out.call);
        if (!waiter) break;
        this.waiting.delete(out.call);
        waiter.cleanup?.();
        if (out.ok) waiter.resolve(out.value);
        else waiter.reject(out.error);
        break;
      }
      case 'event':
        this.dispatch(out.event, out.args);
        break;
      case 'lifecycle':
        this.lifecycle(out.event);
        break;
    }
  }

  private dispatch(event: string, args: unknown[]): void {
    const set = this.handlers.get(event);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        const result = handler(...args);
        if (result && typeof (result as Promise<unknown>).then === 'function') {
          (result as Promise<unknown>).then(undefined, reportListenerError);
        }
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  private lifecycle(event: Lifecycle): void {
    switch (event.type) {
      case 'connecting':
        this.emitState();
        this.emit('connecting', { attempt: event.attempt });
        break;
      case 'opened':
        break;
      case 'authenticating':
        this.emitState();
        break;
      case 'ready': {
        this.emitState();
        for (const waiter of [...this.openWaiters]) waiter.resolve();
        this.openWaiters.clear();
        this.emit('open', { authenticated: event.authenticated, authData: event.authData });
        break;
      }
      case 'closed':
        this.emitState();
        if (event.final) {
          const err = this.closedError();
          for (const waiter of [...this.openWaiters]) waiter.reject(err);
          this.openWaiters.clear();
          this.clearTimer();
        }
        this.emit('close', { code: event.code, reason: event.reason, final: event.final });
        break;
      case 'reconnecting':
        this.emitState();
        this.emit('reconnecting', { attempt: event.attempt, delayMs: event.delayMs });
        break;
      case 'error':
        this.emit('error', event.error);
        break;
      case 'resync':
        this.emit('resync', event.event, event.tag, event.reason);
        break;
      case 'subscribe-retry':
        this.emit('subscribe-retry', { event: event.event, tags: event.tags, attempt: event.attempt, delayMs: event.delayMs, error: event.error });
        break;
    }
  }

  private emitState(): void {
    const state = this.state;
    if (state === this.lastState) return;
    this.lastState = state;
    this.emit('state', state);
  }

  /** Why `waitOpen` fails once the client is closed. */
  private closedError(): RtmError {
    const why = this.core.closedBy;
    if (!why) return new RtmError(ErrorCodes.Closed, 'the client was closed');
    if (why.code === ErrorCodes.AuthRejected || why.code === ErrorCodes.BadRequest) return why;
    return new RtmError(ErrorCodes.Closed, `the client was closed: ${why.message}`, { cause: why });
  }

  private openSocket(): void {
    this.dropSocket(1000);
    if (this.core.state.kind !== 'connecting') return; // closed before the first socket opened
    const token = ++this.attemptToken;
    const bad = badUrl(this.url);
    if (bad) {
      this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, bad));
      return;
    }
    const ctor = this.options.WebSocket ?? defaultWebSocket();
    if (typeof ctor === 'function') {
      this.createSocket(ctor);
      return;
    }
    ctor.then(
      (loaded) => {
        if (token !== this.attemptToken || this.core.state.kind !== 'connecting') return;
        this.createSocket(loaded);
        this.pump();
      },
      (err: unknown) => {
        const message = `no WebSocket: this runtime has no global WebSocket and the 'ws' package could not be loaded (${(err as Error)?.message ?? err})`;
        this.core.handleFatalError(new RtmError(ErrorCodes.Closed, message, { cause: err }));
        this.pump();
      },
    );
  }

  private createSocket(Ctor: WebSocketConstructor): void {
    let socket: WebSocketLike;
    try {
      socket = new Ctor(this.url);
    } catch (err) {
      this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, `cannot connect to ${this.url}: ${(err as Error)?.message ?? err}`));
      return;
    }
    this.socket = socket;
    this.lastSocketValue = socket;
    this.socketError = '';
    /** The HTTP answer that refused this socket's upgrade, when the socket shows it. */
    let refusedBy = '';
    const canPing = typeof socket.ping === 'function' && typeof socket.on === 'function';
    if (this.httpErrorsFinal && !this.everOpened && typeof socket.on === 'function') {
      // `ws` tells the status of an upgrade the server refused (browsers hide
      // it: there the socket only errors). Listening means `ws` leaves the
      // handshake to us: a 4xx before the URL ever worked is final (a wrong
      // URL or path, not a server restarting); anything else is retried.
      socket.on('unexpected-response', (_request: unknown, response: { statusCode?: number; statusMessage?: string } | undefined) => {
        const status = response?.statusCode ?? 0;
        refusedBy = `the server answered the WebSocket upgrade with HTTP ${status}${response?.statusMessage ? ` ${response.statusMessage}` : ''}`;
        if (this.socket === socket && finalHttpStatus(status)) {
          this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, `cannot connect to ${this.url}: ${refusedBy} (is the URL right?)`));
          this.pump(); // drops the socket: `ws` aborts the handshake
          return;
        }
        if (this.socket === socket) this.socketError = refusedBy;
        try {
          socket.close(); // aborts the handshake; its close event makes it a failed attempt
        } catch {
          // Already closing.
        }
      });
    }
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      this.everOpened = true;
      this.core.handleOpen(now(), canPing);
      this.pump();
    });
    socket.addEventListener('message', (event: { data: unknown }) => {
      if (this.socket !== socket) return;
      if (typeof event.data !== 'string') {
        // The protocol has no binary frames from servers: a sign of life, nothing more.
        this.core.handleActivity(now());
        this.pump();
        return;
      }
      this.emit('message', event.data);
      if (this.socket !== socket) return;
      this.core.handleText(event.data, now());
      this.pump();
    });
    socket.addEventListener('error', (event: { message?: unknown; error?: unknown }) => {
      if (this.socket !== socket) return;
      const message = typeof event?.message === 'string' ? event.message : (event?.error as Error | undefined)?.message;
      if (message && !refusedBy) this.socketError = message;
      this.emit('socket-error', event);
    });
    socket.addEventListener('close', (event: { code?: number; reason?: string }) => {
      if (this.socket !== socket) return;
      this.socket = null;
      const code = typeof event?.code === 'number' ? event.code : null;
      const reason = event?.reason || this.socketError || (code === null ? 'connection closed' : `connection closed (code ${code})`);
      this.core.handleClose(code, reason, now());
      this.pump();
    });
    if (canPing) {
      const alive = () => {
        if (this.socket !== socket) return;
        this.core.handleActivity(now());
        this.pump();
      };
      socket.on!('pong', alive);
      socket.on!('ping', alive);
    }
  }

  private transmit(frame: string): void {
    const socket = this.socket;
    if (!socket) return; // the connection dropped meanwhile: its calls failed already
    try {
      socket.send(frame);
    } catch (err) {
      this.lose(`send failed: ${(err as Error)?.message ?? err}`);
      return;
    }
    const max = this.options.maxBufferedBytes === undefined ? 16 * 1024 * 1024 : this.options.maxBufferedBytes;
    if (max !== null && socket.bufferedAmount > max) {
      this.lose(`the server stopped reading: ${socket.bufferedAmount} bytes unsent (maxBufferedBytes ${max})`);
    }
  }

  /** Counts the connection as lost: the socket is dropped and the core told. */
  private lose(reason: string): void {
    this.dropSocket(1000);
    this.core.handleClose(null, reason, now());
  }

  /** Closes the socket in use (if any); its events no longer reach the core. */
  private dropSocket(code: number): void {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    try {
      socket.close(code);
    } catch {
      // Already closed.
    }
  }

  private schedule(): void {
    const at = this.core.pollTimeout();
    if (at === this.timerAt && (this.timer !== null || at === null)) return;
    this.clearTimer();
    if (at === null) return;
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = null;
      this.core.handleTimeout(now());
      this.pump();
    }, Math.max(0, Math.ceil(at - now())));
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = null;
  }
}

/** An HTTP status refusing the first upgrade that no retry can fix: 4xx but 408 (timeout) and 429 (too many requests). */
function finalHttpStatus(status: number): boolean {
  return status >= 400 && status < 500 && status !== 408 && status !== 429;
}

function publicState(kind: ClientCore['state']['kind']): ConnectionState {
  return kind === 'waiting' ? 'reconnecting' : kind;
}

function aborted(signal: AbortSignal): RtmError {
  const reason = signal.reason as { message?: string } | undefined;
  const why = reason?.message ? `: ${reason.message}` : '';
  return new RtmError(ErrorCodes.Aborted, `the call was aborted${why}`, { cause: signal.reason });
}

/**
 * Connects to an RTM server and resolves with the client once it is open
 * (authenticated, when `options.auth` is set). Rejects, with the client
 * closed, on `rtm/auth-rejected`, `rtm/bad-request` (a URL that is not
 * `ws://` or `wss://`), `rtm/closed` (no reconnect left) or `rtm/timeout`
 * (not open within `connectTimeoutMs`, default 10 s); the message says why the
 * last attempt failed.
 */
export async function connect(url: string, options: ClientOptions = {}): Promise<Client> {
  const client = new Client(url, options);
  try {
    await client.waitOpen(options.connectTimeoutMs === undefined ? 10_000 : options.connectTimeoutMs);
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}
