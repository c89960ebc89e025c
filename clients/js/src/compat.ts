/**
 * `RtmClient`: a drop-in for `@zexcore/rtm-client` 2.x. The same
 * constructor, method names, option names and callback semantics, on top of
 * the typed {@link Client}, so an application switches by changing its
 * import. Where the original is faulty this one is right (see the README's
 * compatibility table): calls in flight when the connection drops reject
 * with `rtm/disconnected`, push subscriptions are re-sent after every
 * reconnect (after re-auth), the offline queue is bounded (`rtm/queue-full`),
 * calls time out (`rtm/timeout`), `Close()` rejects what is pending with
 * `rtm/closed`, backoff with jitter and a cap is available, nothing polls.
 */
import type { Reconnect } from './backoff.js';
import { Client, type ClientOptions, type ReconnectOption, type SubscribeRetryInfo, reportListenerError, toReconnect } from './client.js';
import type { Heartbeat } from './core.js';
import { ErrorCodes, RtmError } from './errors.js';
import type { ResyncReason } from './positions.js';
import { badUrl, type WebSocketConstructor, type WebSocketLike } from './websocket.js';

/** What `onError` receives, as in `@zexcore/rtm-client`. */
export interface RTMClientError {
  code: 'rtm/auth-error' | 'rtm/network-error' | 'rtm/unknown-error';
  data?: any;
}

/** The options of `@zexcore/rtm-client` 2.x, plus this client's extensions (marked). */
export interface RTMClientOptions {
  /** Sent with the authentication message after every successful connection (when truthy). */
  authenticationData?: any;
  /** Called before the authentication message is sent. */
  onAuthenticating?: () => void;
  /** Called every time the connection is opened, after a successful authentication. */
  onOpen?: () => void;
  /** Called every time the connection is closed (also when an attempt fails). Not after `Close()`. */
  onClose?: () => void;
  /** Called on a socket error (`rtm/network-error`), a failed authentication (`rtm/auth-error`), or anything else (`rtm/unknown-error`). */
  onError?: (err: RTMClientError) => void;
  /** Called before reconnect attempt `attempt` (1, 2, …) is made. */
  onReconnecting?: (attempt: number) => void;
  /** Delay before each reconnect attempt, in milliseconds (default 1000). Set to 0 to disable auto reconnect. */
  reconnectDelayMs?: number;
  /** Called with every frame received from the server, as text. */
  onMessage?: (raw: string) => void;

  /** Extension: the reconnect schedule, e.g. `{ initialMs: 500, maxMs: 30000, jitter: 'full' }` (overrides `reconnectDelayMs`). */
  reconnect?: ReconnectOption;
  /** Extension: every call's timeout (`rtm/timeout`). Default 30 000 ms; `null`: none. */
  callTimeoutMs?: number | null;
  /** Extension: the offline queue's bound (`rtm/queue-full`). Default 1024. */
  offlineQueue?: number;
  /** Extension: give up (and close) after this many failed attempts in a row. Default: never. */
  maxReconnectAttempts?: number | null;
  /** Extension: a socket still opening after this long is retried. Default 10 000 ms. */
  openTimeoutMs?: number | null;
  /** Extension: the server's liveness check where the socket can ping (`ws`). Default 25 s / 60 s; `null`: off. */
  heartbeat?: Heartbeat | null;
  /** Extension: bytes unsent past which the server counts as gone. Default 16 MiB. */
  maxBufferedBytes?: number | null;
  /** Extension: the jitter seed. */
  jitterSeed?: number;
  /**
   * Extension: keep a position in the stream of every push subscription
   * whose event keeps history on the server, so that after a reconnect the
   * events missed meanwhile come first, in order, each once (or `onResync`
   * is called). Default `true`; a server without history ignores it.
   */
  trackPositions?: boolean;
  /**
   * Extension: the events missed on the push stream (`event`, `tag`) could
   * not be recovered (`reason`: `trimmed`, `too-many`, `too-old`,
   * `epoch-changed`, `ahead`, `gap`): reload that state from the
   * application's own store. Later events are delivered as usual. For the
   * user's stream (the events with history Published to the user, tracked
   * from the auth) `event` is `''` and `tag` is `'user'`.
   */
  onResync?: (event: string, tag: string, reason: ResyncReason) => void;
  /** Extension: a push subscription refused for a while (`rtm/broker-unavailable`) is sent again after `info.delayMs`. */
  onSubscribeRetry?: (info: SubscribeRetryInfo) => void;
  /** Extension: the WebSocket class (default: the global one, else `ws`). */
  WebSocket?: WebSocketConstructor;
}

/**
 * Provides asynchronous RTM functions and events (`@zexcore/rtm-client` 2.x's API).
 *
 * ```js
 * const { RtmClient } = require('@rtm/client'); // was: require('@zexcore/rtm-client')
 * const client = new RtmClient('ws://127.0.0.1:7070/', { authenticationData: token, onOpen: () => {} });
 * const sum = await client.CallWait('add', 1, 2);
 * ```
 */
export class RtmClient {
  /** The server address. */
  readonly Address: string;
  /** The options given (or `{ reconnectDelayMs: 1000 }`). */
  Options: RTMClientOptions;
  /** The typed client underneath (`call`, `subscribe`, `on`, `state`, …). */
  readonly client: Client;
  private closedByApp = false;

  /**
   * Creates a client connected to `address` (`ws://` or `wss://`; anything
   * else throws, as `new WebSocket` does), with `options`.
   */
  constructor(address: string, options?: RTMClientOptions) {
    const bad = badUrl(address);
    if (bad) throw new RtmError(ErrorCodes.BadRequest, bad);
    this.Address = address;
    this.Options = options || { reconnectDelayMs: 1000 };
    const o = this.Options;
    const fixed = o.reconnectDelayMs === undefined ? 1000 : o.reconnectDelayMs;
    const fallback: Reconnect = fixed > 0 ? { kind: 'fixed', delayMs: fixed } : { kind: 'never' };
    const clientOptions: ClientOptions = {
      // The original authenticates only with truthy data.
      ...(o.authenticationData ? { auth: o.authenticationData } : {}),
      reconnect: o.reconnect,
      callTimeoutMs: o.callTimeoutMs,
      offlineQueue: o.offlineQueue,
      maxReconnectAttempts: o.maxReconnectAttempts,
      openTimeoutMs: o.openTimeoutMs,
      heartbeat: o.heartbeat,
      maxBufferedBytes: o.maxBufferedBytes,
      jitterSeed: o.jitterSeed,
      trackPositions: o.trackPositions,
      WebSocket: o.WebSocket,
    };
    for (const key of Object.keys(clientOptions) as Array<keyof ClientOptions>) {
      if (clientOptions[key] === undefined && key !== 'auth') delete clientOptions[key];
    }
    // As the original, an HTTP error answering the upgrade is retried like any failed attempt.
    this.client = new Client(address, clientOptions, toReconnect(o.reconnect, fallback), false);
    const c = this.client;
    c.on('connecting', ({ attempt }) => {
      if (attempt > 0) this.callback('onReconnecting', attempt);
    });
    c.on('state', (state) => {
      if (state === 'authenticating') this.callback('onAuthenticating');
    });
    c.on('open', () => this.callback('onOpen'));
    c.on('close', () => {
      // As the original: no callback once closed by `Close()` or a failed authentication.
      if (this.closedByApp || this.authFailed) return;
      this.callback('onClose');
    });
    c.on('error', (error) => {
      if (error.code === ErrorCodes.AuthRejected) {
        this.authFailed = true;
        this.callback('onError', { code: ErrorCodes.AuthError, data: error.message || 'Server returned an invalid response.' });
      } else {
        this.callback('onError', { code: 'rtm/unknown-error', data: error });
      }
    });
    c.on('socket-error', (event) => this.callback('onError', { code: 'rtm/network-error', data: event }));
    c.on('message', (raw) => this.callback('onMessage', raw));
    c.on('resync', (event, tag, reason) => this.callback('onResync', event, tag, reason));
    c.on('subscribe-retry', (info) => this.callback('onSubscribeRetry', info));
  }

  private authFailed = false;

  /** Whether the connection is open and authenticated with `authenticationData`. */
  get Authenticated(): boolean {
    return this.client.state === 'open' && Boolean(this.Options.authenticationData);
  }

  /**
   * The last WebSocket, as the original's public field: opening, open, or
   * closed (a closed one stays until the next attempt replaces it, and after
   * `Close()`), so `client.Socket.readyState` can always be read. `undefined`
   * only before the first attempt, made right after construction (a
   * microtask; in Node without a global WebSocket, once `ws` is loaded).
   */
  get Socket(): WebSocketLike | undefined {
    return this.client.lastSocket ?? undefined;
  }

  /**
   * Subscribes to push events: the server holds a subscription to
   * `eventName` for `tags` (re-sent after every reconnect, after re-auth),
   * and `callback(...data)` is called for every `eventName` event. Resolves
   * with a function that removes the callback (and tells the server, unless
   * another push subscription holds the tags); rejects (e.g. `rtm/forbidden`)
   * if the server denies it, the callback then removed.
   */
  async SubscribePush(eventName: string, tags: string[], callback: (...data: any[]) => void): Promise<() => boolean> {
    const undo = await this.client.subscribePush(eventName, tags, callback);
    let active = true;
    return () => {
      if (!active) return false;
      active = false;
      void undo();
      return true;
    };
  }

  /**
   * Registers a function to execute when `event` is received from the server.
   * Client side only. Returns the function that unsubscribes it.
   */
  Subscribe(event: string, callback: (...data: any[]) => void | Promise<void>): () => boolean {
    const undo = this.client.subscribe(event, callback);
    let active = true;
    return () => {
      if (!active) return false;
      active = false;
      undo();
      return true;
    };
  }

  /**
   * Executes a named function on the server, fire-and-forget: the reply is
   * ignored. Queued while not connected; rejects with `rtm/queue-full` when
   * the offline queue is full and `rtm/closed` after `Close()`.
   */
  async Call(func: string, ...data: any[]): Promise<void> {
    this.client.invoke(func, ...data);
  }

  /**
   * Executes a named function on the server and resolves with its result.
   * Rejects with an `RtmError` (`code`, `message`): the server's error, or
   * `rtm/timeout`, `rtm/disconnected`, `rtm/queue-full`, `rtm/closed`.
   */
  CallWait<T = any>(func: string, ...data: any[]): Promise<T> {
    return this.client.call<T>(func, ...data);
  }

  /**
   * Closes the connection for good: what is pending rejects with
   * `rtm/closed`, subscriptions are dropped, no callback is called any more.
   * The client may not be used again after this call.
   */
  Close(): void {
    this.closedByApp = true;
    this.client.close();
  }

  private callback<K extends 'onAuthenticating' | 'onOpen' | 'onClose' | 'onError' | 'onReconnecting' | 'onMessage' | 'onResync' | 'onSubscribeRetry'>(
    name: K,
    ...args: Parameters<NonNullable<RTMClientOptions[K]>>
  ): void {
    if (this.closedByApp) return;
    const fn = this.Options[name] as ((...a: unknown[]) => unknown) | undefined;
    if (typeof fn !== 'function') return;
    try {
      const result = fn(...args);
      if (result && typeof (result as Promise<unknown>).then === 'function') {
        (result as Promise<unknown>).then(undefined, reportListenerError);
      }
    } catch (err) {
      reportListenerError(err);
    }
  }
}

/** A response from the server (exported by `@zexcore/rtm-client`; kept for imports that name it). */
export class RTMMessageResponse<T = any> {
  data: T;
  id: string;

  constructor(rawMessage: string) {
    const msg = JSON.parse(rawMessage);
    this.data = msg.data;
    this.id = msg.id;
  }
}
