// @rtm/client browser bundle: defines the global RTM (RTM.connect, RTM.Client,
// RTM.RtmClient, RTM.RtmError, RTM.ErrorCodes). Generated from clients/js/src by
// `npm run build` (dist/browser/rtm-client.js): do not edit. A copy committed
// elsewhere is updated by its own script (the chat example's:
// rtm-tokio/examples/chat/update-client-bundle.sh).
"use strict";
var RTM = (() => {
  var __defProp = Object.defineProperty;
  var __getOwnPropDesc = Object.getOwnPropertyDescriptor;
  var __getOwnPropNames = Object.getOwnPropertyNames;
  var __hasOwnProp = Object.prototype.hasOwnProperty;
  var __esm = (fn, res, err) => function __init() {
    if (err) throw err[0];
    try {
      return fn && (res = (0, fn[__getOwnPropNames(fn)[0]])(fn = 0)), res;
    } catch (e) {
      throw err = [e], e;
    }
  };
  var __export = (target, all) => {
    for (var name in all)
      __defProp(target, name, { get: all[name], enumerable: true });
  };
  var __copyProps = (to, from, except, desc) => {
    if (from && typeof from === "object" || typeof from === "function") {
      for (let key of __getOwnPropNames(from))
        if (!__hasOwnProp.call(to, key) && key !== except)
          __defProp(to, key, { get: () => from[key], enumerable: !(desc = __getOwnPropDesc(from, key)) || desc.enumerable });
    }
    return to;
  };
  var __toCommonJS = (mod) => __copyProps(__defProp({}, "__esModule", { value: true }), mod);

  // no-ws:ws
  var ws_exports = {};
  __export(ws_exports, {
    default: () => ws_default
  });
  var ws_default;
  var init_ws = __esm({
    "no-ws:ws"() {
      ws_default = void 0;
    }
  });

  // src/browser.ts
  var browser_exports = {};
  __export(browser_exports, {
    Client: () => Client,
    ErrorCodes: () => ErrorCodes,
    RTMMessageResponse: () => RTMMessageResponse,
    RtmClient: () => RtmClient,
    RtmError: () => RtmError,
    connect: () => connect,
    version: () => version
  });

  // src/backoff.ts
  var Prng = class {
    constructor(seed) {
      this.state = seed >>> 0 || 2654435769;
    }
    /** Uniform in [0, 1). */
    next() {
      this.state = this.state + 1831565813 >>> 0;
      let t = this.state;
      t = Math.imul(t ^ t >>> 15, t | 1);
      t ^= t + Math.imul(t ^ t >>> 7, t | 61);
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    }
    /** Uniform in [0, max]. */
    below(max) {
      return max <= 0 ? 0 : Math.min(max, this.next() * (max + 1e-9));
    }
  };
  function reconnectDelay(reconnect, attempt, rng) {
    switch (reconnect.kind) {
      case "never":
        return null;
      case "fixed":
        return Math.max(0, reconnect.delayMs);
      case "backoff": {
        const { initialMs, maxMs, factor, jitter } = reconnect;
        const growth = Math.pow(Math.max(1, factor), Math.max(0, attempt - 1));
        const base = Math.max(0, Math.min(maxMs, initialMs * growth));
        switch (jitter) {
          case "none":
            return base;
          case "full":
            return rng.below(base);
          case "equal":
            return base / 2 + rng.below(base - base / 2);
        }
      }
    }
  }

  // src/errors.ts
  var ErrorCodes = {
    // On the wire (error replies).
    /** A malformed field in a well-formed request; also a server URL this client cannot use. */
    BadRequest: "rtm/bad-request",
    /** No function registered under that name. */
    FunctionNotFound: "rtm/function-not-found",
    /** The function returned an error (applications may use their own codes instead). */
    HandlerError: "rtm/handler-error",
    /** The function panicked, or its result could not be encoded. */
    Internal: "rtm/internal",
    /** The per-connection bound of requests in flight was reached. */
    TooManyRequests: "rtm/too-many-requests",
    /** A request before authentication. */
    Unauthenticated: "rtm/unauthenticated",
    /** A second `auth` on an authenticated connection. */
    AlreadyAuthenticated: "rtm/already-authenticated",
    /** The server's authentication handler rejected the `auth`. */
    AuthRejected: "rtm/auth-rejected",
    /** The subscribe authorizer denied a push subscription. */
    Forbidden: "rtm/forbidden",
    /** Publish on a server without authentication (passed on by a function). */
    NoAuth: "rtm/no-auth",
    /** Publish or Push while the server's broker is down (passed on by a function). */
    BrokerUnavailable: "rtm/broker-unavailable",
    // Client-side, never on the wire.
    /** No reply within the call timeout (or `connect` did not open in time). */
    Timeout: "rtm/timeout",
    /** The connection was lost while the call was in flight (or the call refused to wait offline). */
    Disconnected: "rtm/disconnected",
    /** The client was closed by the application, or for good by an earlier error. */
    Closed: "rtm/closed",
    /** The offline queue bound was reached. */
    QueueFull: "rtm/queue-full",
    /** The call's `AbortSignal` fired (this client's own code). */
    Aborted: "rtm/aborted",
    /** What `@zexcore/rtm-client` reports to `onError` when `auth` fails (compat API only). */
    AuthError: "rtm/auth-error"
  };
  var RtmError = class _RtmError extends Error {
    constructor(code, message, options) {
      super(message, options);
      this.name = "RtmError";
      this.code = code;
    }
    /** `code: message`, as the Rust client prints it. */
    toString() {
      return this.message ? `${this.code}: ${this.message}` : String(this.code);
    }
    /** The plain `{ code, message }` object, as on the wire. */
    toJSON() {
      return { code: this.code, message: this.message };
    }
    /** Whether `value` is an `RtmError` (optionally with this `code`). */
    static is(value, code) {
      return value instanceof _RtmError && (code === void 0 || value.code === code);
    }
  };

  // src/positions.ts
  var USER_STREAM = "user";
  var USER_KEY = "";
  var REASONS = ["epoch-changed", "trimmed", "too-many", "too-old", "ahead", "gap"];
  function parseReason(code) {
    return typeof code === "string" && REASONS.includes(code) ? code : "gap";
  }
  var RECENT_PUSHES = 1024;
  var MAX_EPOCH_BYTES = 64;
  function isValidEpoch(epoch) {
    return epoch.length >= 1 && epoch.length <= MAX_EPOCH_BYTES && /^[0-9A-Za-z_-]+$/.test(epoch);
  }
  function writeSince(since) {
    const tags = [...since.keys()].sort();
    const parts = tags.map((tag) => {
      const position = since.get(tag) ?? null;
      const value = position === null ? "null" : `{"offset":${position.offset},"epoch":${JSON.stringify(position.epoch)}}`;
      return `${JSON.stringify(tag)}:${value}`;
    });
    return `,"since":{${parts.join(",")}}`;
  }
  var isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
  function parseStreams(raw) {
    const malformed = (why) => `the reply's streams are malformed (${why})`;
    if (!isObject(raw)) return malformed("not an object");
    const states = [];
    for (const [tag, state] of Object.entries(raw)) {
      if (!isObject(state)) return malformed(`${JSON.stringify(tag)} is not an object`);
      const { offset, epoch, recovered, reason } = state;
      if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) return malformed(`the offset of ${JSON.stringify(tag)} is not a non-negative integer`);
      if (typeof epoch !== "string") return malformed(`the epoch of ${JSON.stringify(tag)} is not a string`);
      if (recovered !== void 0 && recovered !== null && typeof recovered !== "boolean") return malformed(`recovered of ${JSON.stringify(tag)} is not a boolean`);
      if (reason !== void 0 && reason !== null && typeof reason !== "string") return malformed(`the reason of ${JSON.stringify(tag)} is not a string`);
      states.push({
        tag,
        position: { offset, epoch },
        recovered: recovered === void 0 || recovered === null ? null : recovered ? true : { reason: parseReason(reason) }
      });
    }
    states.sort((a, b) => a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0);
    return states;
  }
  var Positions = class {
    constructor() {
      this.streams = /* @__PURE__ */ new Map();
      /** Push ids seen lately, oldest first, at most {@link RECENT_PUSHES}. */
      this.recent = [];
      this.recentSet = /* @__PURE__ */ new Set();
    }
    /** `since` for a subscribe of `tags` of `event`: each tag's position, or `null` when it has none yet. */
    since(event, tags) {
      const since = /* @__PURE__ */ new Map();
      for (const tag of tags) since.set(tag, this.streams.get(event)?.get(tag)?.position ?? null);
      return since;
    }
    /** `since` for an `auth`: the user's stream's position, or `null`. */
    userSince() {
      return this.since(USER_KEY, [USER_STREAM]);
    }
    /** The position held in the stream (`event`, `tag`), or `null`. */
    position(event, tag) {
      const position = this.streams.get(event)?.get(tag)?.position;
      return position ? { ...position } : null;
    }
    /** A positioned event of `event` arrived (no tag: the user's stream). */
    handleEvent(event, at) {
      const stream = at.tag === null ? this.entry(USER_KEY, USER_STREAM) : this.entry(event, at.tag);
      const next = at.position;
      const had = stream.position;
      if (had !== null) {
        const sameEpoch = had.epoch === next.epoch;
        if (sameEpoch && next.offset <= had.offset) return "drop";
        if (!(sameEpoch && next.offset === had.offset + 1)) {
          if (stream.resyncing) return "drop";
          stream.resyncing = true;
          return "gap";
        }
      }
      stream.position = { offset: next.offset, epoch: next.epoch };
      if (at.push !== null && !this.rememberPush(at.push)) return "drop";
      return "deliver";
    }
    /** A subscribe's reply said where its streams are; returns the streams that could not be recovered, with why. */
    handleStreams(event, states) {
      const lost = [];
      for (const state of states) {
        const stream = this.entry(event, state.tag);
        stream.position = { offset: state.position.offset, epoch: state.position.epoch };
        stream.resyncing = false;
        if (state.recovered !== null && state.recovered !== true) lost.push({ tag: state.tag, reason: state.recovered.reason });
      }
      return lost;
    }
    /** A resubscribe after a gap failed: events are taken again (the next jump asks again). */
    resyncFailed(event, tags) {
      const byTag = this.streams.get(event);
      if (!byTag) return;
      for (const tag of tags) {
        const stream = byTag.get(tag);
        if (stream) stream.resyncing = false;
      }
    }
    /** `tags` of `event` are unsubscribed: their positions are forgotten. */
    forget(event, tags) {
      const byTag = this.streams.get(event);
      if (!byTag) return;
      for (const tag of tags) byTag.delete(tag);
      if (!byTag.size) this.streams.delete(event);
    }
    /** Forgets every position (the client closed). */
    clear() {
      this.streams.clear();
    }
    /** How many streams have an entry (for tests and monitoring). */
    get size() {
      let n = 0;
      for (const byTag of this.streams.values()) n += byTag.size;
      return n;
    }
    /** How many push ids are remembered (at most {@link RECENT_PUSHES}). */
    get rememberedPushes() {
      return this.recent.length;
    }
    entry(event, tag) {
      let byTag = this.streams.get(event);
      if (!byTag) this.streams.set(event, byTag = /* @__PURE__ */ new Map());
      let stream = byTag.get(tag);
      if (!stream) byTag.set(tag, stream = { position: null, resyncing: false });
      return stream;
    }
    /** Whether `push` is new (then remembered). */
    rememberPush(push) {
      if (this.recentSet.has(push)) return false;
      if (this.recent.length >= RECENT_PUSHES) {
        const old = this.recent.shift();
        if (old !== void 0) this.recentSet.delete(old);
      }
      this.recent.push(push);
      this.recentSet.add(push);
      return true;
    }
  };

  // src/frame.ts
  function encodeAuth(id, authData, since = null) {
    const head = `{"id":${JSON.stringify(id)},"type":"auth","data":[${json(authData)}]`;
    return since ? `${head}${writeSince(since)}}` : `${head}}`;
  }
  function encodeInvoke(id, fn, data) {
    return `{"id":${JSON.stringify(id)},"type":"invoke","function":${JSON.stringify(fn)},"data":${data}}`;
  }
  function encodeArgs(args) {
    try {
      return json(args);
    } catch (err) {
      return new RtmError(ErrorCodes.BadRequest, `arguments are not JSON: ${err.message}`);
    }
  }
  function encodeSubscription(id, subscribe, sub, since = null) {
    const type = subscribe ? "subscribe" : "unsubscribe";
    const head = `{"id":${JSON.stringify(id)},"type":"${type}","event":${JSON.stringify(sub.event)},"tags":${JSON.stringify(sub.tags)}`;
    return subscribe && since ? `${head}${writeSince(since)}}` : `${head}}`;
  }
  function json(value) {
    const text = JSON.stringify(value);
    return text === void 0 ? "null" : text;
  }
  function normalize(event, tags) {
    return { event, tags: [...new Set(tags)].sort() };
  }
  function checkEventName(event) {
    if (typeof event !== "string" || event === "") {
      return new RtmError(ErrorCodes.BadRequest, "event name must be a non-empty string");
    }
    return null;
  }
  function checkTags(tags) {
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === "string")) {
      return new RtmError(ErrorCodes.BadRequest, "tags must be an array of strings");
    }
    return null;
  }
  function isTruthy(value) {
    return Boolean(value);
  }
  var isObject2 = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
  function wireError(error) {
    if (!error) return null;
    if (isObject2(error)) {
      const code = typeof error.code === "string" ? error.code : ErrorCodes.HandlerError;
      const message = typeof error.message === "string" ? error.message : "";
      return new RtmError(code, message);
    }
    if (typeof error === "string") return new RtmError(ErrorCodes.HandlerError, error);
    return new RtmError(ErrorCodes.HandlerError, JSON.stringify(error));
  }
  function parseServerFrame(text) {
    let raw;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      return new RtmError(ErrorCodes.BadRequest, `server frame is not valid: ${err.message}`);
    }
    if (!isObject2(raw)) return new RtmError(ErrorCodes.BadRequest, "server frame is not valid: not an object");
    const { id, event, data } = raw;
    for (const key of ["tag", "epoch", "push"]) {
      const value = raw[key];
      if (value !== void 0 && value !== null && typeof value !== "string") {
        return new RtmError(ErrorCodes.BadRequest, `server frame is not valid: ${key} is not a string`);
      }
    }
    const offset = raw.offset;
    if (offset !== void 0 && offset !== null && !(typeof offset === "number" && Number.isInteger(offset) && offset >= 0)) {
      return new RtmError(ErrorCodes.BadRequest, "server frame is not valid: offset is not a non-negative integer");
    }
    if (id !== void 0 && id !== null) {
      if (typeof id !== "string") return new RtmError(ErrorCodes.BadRequest, "server frame is not valid: id is not a string");
      const top = raw.error;
      if (top !== void 0 && top !== null) {
        if (!isObject2(top)) return new RtmError(ErrorCodes.BadRequest, "server frame is not valid: error is not an object");
        const code = typeof top.code === "string" ? top.code : ErrorCodes.Internal;
        const message = typeof top.message === "string" ? top.message : "";
        return { kind: "reply", id, ok: false, error: new RtmError(code, message) };
      }
      if (isObject2(data)) {
        const error = wireError(data.error);
        if (error) return { kind: "reply", id, ok: false, error };
      }
      const streams = raw.streams === void 0 ? null : raw.streams;
      return { kind: "reply", id, ok: true, data: data === void 0 ? null : data, streams };
    }
    if (event !== void 0 && event !== null) {
      if (typeof event !== "string") return new RtmError(ErrorCodes.BadRequest, "server frame is not valid: event is not a string");
      let args;
      if (data === void 0 || data === null) args = [];
      else if (Array.isArray(data)) args = data;
      else return new RtmError(ErrorCodes.BadRequest, "event data must be an array");
      const { tag, epoch, push } = raw;
      const position = typeof offset === "number" && typeof epoch === "string" && isValidEpoch(epoch) ? { tag: tag ?? null, position: { offset, epoch }, push: push ?? null } : null;
      return { kind: "event", event, args, position };
    }
    return new RtmError(ErrorCodes.BadRequest, "server frame has neither id nor event");
  }

  // src/core.ts
  var DEFAULT_CONFIG = {
    auth: false,
    authData: void 0,
    callTimeoutMs: 3e4,
    offlineQueue: 1024,
    reconnect: { kind: "fixed", delayMs: 1e3 },
    maxReconnectAttempts: null,
    openTimeoutMs: 1e4,
    jitterSeed: 1592622679,
    heartbeat: { intervalMs: 25e3, timeoutMs: 6e4 },
    trackPositions: true
  };
  var TEMPORARY_REFUSALS = [ErrorCodes.BrokerUnavailable, ErrorCodes.Timeout];
  var sameSub = (a, b) => a.event === b.event && a.tags.length === b.tags.length && a.tags.every((t, i) => t === b.tags[i]);
  var Deadlines = class {
    constructor() {
      this.heap = [];
    }
    push(at, call) {
      const heap = this.heap;
      heap.push([at, call]);
      let i = heap.length - 1;
      while (i > 0) {
        const parent = i - 1 >> 1;
        if (less(heap[parent], heap[i])) break;
        [heap[parent], heap[i]] = [heap[i], heap[parent]];
        i = parent;
      }
    }
    peek() {
      return this.heap[0];
    }
    pop() {
      const heap = this.heap;
      const last = heap.pop();
      if (!heap.length || !last) return;
      heap[0] = last;
      let i = 0;
      for (; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && less(heap[l], heap[m])) m = l;
        if (r < heap.length && less(heap[r], heap[m])) m = r;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i], heap[m]];
        i = m;
      }
    }
    clear() {
      this.heap = [];
    }
  };
  var less = (a, b) => a[0] < b[0] || a[0] === b[0] && a[1] < b[1];
  var ClientCore = class {
    constructor(config, now2) {
      this.stateValue = { kind: "connecting", attempt: 0 };
      /** The next reconnect attempt's number minus one; 0 once ready. */
      this.attempt = 0;
      this.reconnectAt = null;
      this.connectDeadline = null;
      this.nextRequest = 0;
      this.nextCall = 0;
      this.pending = /* @__PURE__ */ new Map();
      this.calls = /* @__PURE__ */ new Map();
      this.deadlines = new Deadlines();
      this.queue = [];
      this.subs = [];
      /** Positions in the streams of the push subscriptions (ext). */
      this.positions = new Positions();
      this.outputs = [];
      /** Why the client closed for good, when it was not the application's `close`. */
      this.closedByValue = null;
      this.lastHeard = 0;
      this.lastPing = 0;
      /** Whether this connection's socket can ping (browsers' cannot). */
      this.canPing = false;
      /** Why the last connection attempt or connection failed, to tell the application. */
      this.lastFailure = "";
      this.config = { ...DEFAULT_CONFIG, ...config };
      this.rng = new Prng(this.config.jitterSeed);
      this.startConnecting(now2, 0);
    }
    /** Why the client closed for good, unless the application closed it. */
    get closedBy() {
      return this.closedByValue;
    }
    // ----- getters -----
    get state() {
      return this.stateValue;
    }
    /** Calls sent and awaiting their reply (calls, subscribe and unsubscribe acks). */
    get pendingCalls() {
      let n = 0;
      for (const c of this.calls.values()) if (c.place.kind === "sent") n += 1;
      return n;
    }
    /** Calls waiting in the offline queue (fire-and-forget included). */
    get queuedCalls() {
      return this.queue.length;
    }
    /** Push subscriptions held (re-sent after every reconnect). */
    get subscriptions() {
      return this.subs.length;
    }
    /** The position this client holds in the stream (`event`, `tag`), or `null` (none yet, or not tracked). */
    position(event, tag) {
      return this.positions.position(event, tag);
    }
    /** Whether `event` with `tags` (normalized) is held. */
    holds(event, tag) {
      return this.subs.some((h) => h.sub.event === event && h.sub.tags.includes(tag));
    }
    // ----- inputs -----
    /** The socket opened: sends `auth` if configured, else the client is open. */
    handleOpen(now2, canPing = true) {
      if (this.stateValue.kind !== "connecting") return;
      this.lastHeard = now2;
      this.lastPing = now2;
      this.canPing = canPing;
      this.connectDeadline = null;
      this.lifecycle({ type: "opened" });
      if (this.config.auth) {
        this.stateValue = { kind: "authenticating" };
        this.lifecycle({ type: "authenticating" });
        const id = this.requestId();
        const since = this.config.trackPositions ? this.positions.userSince() : null;
        this.transmit(encodeAuth(id, this.config.authData, since));
        this.pending.set(id, { kind: "auth" });
      } else {
        this.becomeOpen(null);
      }
    }
    /** A text frame arrived. Bad frames are reported as `error` lifecycle events and otherwise ignored. */
    handleText(text, now2) {
      if (!this.hasSocket()) return;
      this.lastHeard = now2;
      const frame = parseServerFrame(text);
      if (frame instanceof RtmError) {
        this.lifecycle({ type: "error", error: frame });
      } else if (frame.kind === "event") {
        const at = frame.position;
        const verdict = at !== null && this.config.trackPositions ? this.positions.handleEvent(frame.event, at) : "deliver";
        switch (verdict) {
          case "deliver":
            this.outputs.push({ type: "event", event: frame.event, args: frame.args });
            break;
          case "drop":
            break;
          case "gap":
            if (at?.tag != null) {
              this.sendSubscribe(normalize(frame.event, [at.tag]), []);
            } else {
              this.outputs.push({ type: "disconnect" });
              this.handleClose(null, "missed events of the user's stream: reconnecting to recover them", now2);
            }
            break;
        }
      } else {
        this.handleReply(frame.id, frame.ok ? { ok: true, value: frame.data } : { ok: false, error: frame.error }, frame.ok ? frame.streams : null, now2);
      }
    }
    /**
     * The socket closed or was lost, or a connect attempt failed. Unless the
     * client is closed, pending invokes fail with `rtm/disconnected` and a
     * reconnect is scheduled. Close code 4003 during auth is a rejected auth.
     */
    handleClose(code, reason, now2) {
      const state = this.stateValue;
      if (state.kind === "closed" || state.kind === "waiting") return;
      if (state.kind === "authenticating" && code === 4003) {
        this.authRejected(reason || "authentication rejected", false);
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
        this.lifecycle({ type: "closed", code, reason, final: false, cause: "lost" });
        this.stateValue = { kind: "waiting", attempt };
        this.reconnectAt = now2 + delay;
        this.lifecycle({ type: "reconnecting", attempt, delayMs: delay });
      } else {
        const why = this.lastFailure ? `connection lost, not reconnecting (${this.lastFailure})` : "connection lost, not reconnecting";
        const err = new RtmError(ErrorCodes.Disconnected, why);
        this.closedByValue = err;
        this.failEverything(err);
        this.stateValue = { kind: "closed" };
        this.lifecycle({ type: "closed", code, reason, final: true, cause: "gave-up" });
      }
    }
    /** Something other than a text frame came from the server (a ping, a pong): it is alive. */
    handleActivity(now2) {
      if (this.hasSocket()) this.lastHeard = now2;
    }
    /**
     * Time passed: call deadlines (`rtm/timeout`), the open timeout, the
     * heartbeat (a ping, or the connection dropped as lost) and the reconnect
     * delay due by `now` fire.
     */
    handleTimeout(now2) {
      this.heartbeat(now2);
      if (this.connectDeadline !== null && this.stateValue.kind === "connecting" && now2 >= this.connectDeadline) {
        this.outputs.push({ type: "disconnect" });
        this.handleClose(null, `not open within ${this.config.openTimeoutMs} ms`, now2);
      }
      for (; ; ) {
        const top = this.deadlines.peek();
        if (!top || top[0] > now2) break;
        this.deadlines.pop();
        const [at, call] = top;
        const c = this.calls.get(call);
        if (!c || c.deadline !== at) continue;
        this.unplace(call);
        this.complete(call, { ok: false, error: new RtmError(ErrorCodes.Timeout, "no reply within the call timeout") });
      }
      if (this.stateValue.kind === "waiting" && this.reconnectAt !== null && this.reconnectAt <= now2) {
        this.startConnecting(now2, this.stateValue.attempt);
      }
      if (this.stateValue.kind === "open") {
        const due = [];
        for (const h of this.subs) {
          if (h.retry !== null && h.retry.at <= now2) {
            h.retry = null;
            due.push(h.sub);
          }
        }
        for (const sub of due) this.sendSubscribe(sub, []);
      }
    }
    /** Start the waiting reconnect attempt now (a "retry now" button, the network back). */
    reconnectNow(now2) {
      if (this.stateValue.kind === "waiting") this.startConnecting(now2, this.stateValue.attempt);
    }
    // ----- commands -----
    /** Calls `fn` and ignores its reply. Queued while not open. Throws `rtm/queue-full` or `rtm/closed`. */
    call(fn, args, _now, options = {}) {
      this.checkNotClosed();
      const data = encodeArgs(args);
      if (data instanceof RtmError) throw data;
      if (this.stateValue.kind === "open") {
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
    callWait(fn, args, now2, options = {}) {
      this.checkNotClosed();
      const data = encodeArgs(args);
      if (data instanceof RtmError) throw data;
      if (this.stateValue.kind === "open") {
        const id = this.requestId();
        this.transmit(encodeInvoke(id, fn, data));
        const call2 = this.newCall(now2, { kind: "sent", id }, options.timeoutMs);
        this.pending.set(id, { kind: "call", call: call2 });
        return call2;
      }
      if (options.queue === false) throw notConnected();
      if (this.queue.length >= this.config.offlineQueue) throw this.queueFull();
      const call = this.newCall(now2, { kind: "queued" }, options.timeoutMs);
      this.enqueue(call, fn, data);
      return call;
    }
    /**
     * Holds a push subscription to `event` with `tags`, re-sent after every
     * reconnect until {@link ClientCore.unsubscribePush}. Its acknowledgement
     * comes as a `done` output (after the next open if offline).
     */
    subscribePush(event, tags, now2) {
      this.checkNotClosed();
      const bad = checkEventName(event) ?? checkTags(tags);
      if (bad) throw bad;
      const sub = normalize(event, tags);
      if (this.stateValue.kind === "open") {
        const call2 = this.newCall(now2, { kind: "done" });
        this.addSub(sub);
        this.sendSubscribe(sub, [call2]);
        return call2;
      }
      const call = this.newCall(now2, { kind: "held-sub" });
      this.addSub(sub).waiters.push(call);
      return call;
    }
    /**
     * Forgets a push subscription's `tags` for `event`. While open the server
     * is told and acknowledges with a `done` output; while offline there is
     * nothing to undo on the server, so it completes at once.
     */
    unsubscribePush(event, tags, now2) {
      this.checkNotClosed();
      const bad = checkEventName(event) ?? checkTags(tags);
      if (bad) throw bad;
      const sub = normalize(event, tags);
      this.positions.forget(event, sub.tags);
      for (const orphan of this.removeTags(event, sub.tags)) this.complete(orphan, { ok: true, value: true });
      if (this.stateValue.kind === "open") {
        const id = this.requestId();
        this.transmit(encodeSubscription(id, false, sub));
        const call2 = this.newCall(now2, { kind: "sent", id });
        this.pending.set(id, { kind: "unsubscribe", call: call2 });
        return call2;
      }
      const call = this.newCall(now2, { kind: "done" });
      this.complete(call, { ok: true, value: true });
      return call;
    }
    /** Gives up on a call (its `AbortSignal` fired): it fails with `error` and leaves wherever it waits. */
    cancel(call, error) {
      if (!this.calls.has(call)) return;
      this.unplace(call);
      this.complete(call, { ok: false, error });
    }
    /**
     * Something no retry can fix happened (a malformed server URL, no
     * WebSocket): `err` is reported, every call fails with it, and the client
     * ends closed without reconnecting.
     */
    handleFatalError(err) {
      if (this.stateValue.kind === "closed") return;
      this.closeForGood(err, null, this.hasSocket(), "fatal");
    }
    /**
     * Closes the client for good: every pending and queued call fails with
     * `rtm/closed`, the socket is closed and no reconnect follows.
     */
    close(_now) {
      if (this.stateValue.kind === "closed") return;
      const hasSocket = this.stateValue.kind !== "waiting";
      this.failEverything(new RtmError(ErrorCodes.Closed, "the client was closed"));
      if (hasSocket) this.outputs.push({ type: "disconnect" });
      this.stateValue = { kind: "closed" };
      this.lifecycle({ type: "closed", code: 1e3, reason: "closed by the application", final: true, cause: "application" });
    }
    // ----- outputs -----
    /** The next thing the driver must do, or `undefined` when there is nothing. */
    pollOutput() {
      return this.outputs.shift();
    }
    /** When {@link ClientCore.handleTimeout} must be called next, or `null`. */
    pollTimeout() {
      let at = null;
      const earliest = (t) => {
        if (t !== null && (at === null || t < at)) at = t;
      };
      for (; ; ) {
        const top = this.deadlines.peek();
        if (!top) break;
        const c = this.calls.get(top[1]);
        if (c && c.deadline === top[0]) {
          earliest(top[0]);
          break;
        }
        this.deadlines.pop();
      }
      if (this.stateValue.kind === "waiting") earliest(this.reconnectAt);
      if (this.stateValue.kind === "connecting") earliest(this.connectDeadline);
      if (this.stateValue.kind === "open") for (const h of this.subs) earliest(h.retry?.at ?? null);
      earliest(this.heartbeatDue());
      return at;
    }
    // ----- internals -----
    lifecycle(event) {
      this.outputs.push({ type: "lifecycle", event });
    }
    transmit(frame) {
      this.outputs.push({ type: "transmit", frame });
    }
    /** Unique for the client's whole life, hence per connection too. */
    requestId() {
      this.nextRequest += 1;
      return String(this.nextRequest);
    }
    newCall(now2, place, timeoutMs) {
      this.nextCall += 1;
      const call = this.nextCall;
      const timeout = timeoutMs === void 0 ? this.config.callTimeoutMs : timeoutMs;
      const deadline = timeout === null || !Number.isFinite(timeout) ? null : now2 + Math.max(0, timeout);
      if (deadline !== null) this.deadlines.push(deadline, call);
      this.calls.set(call, { deadline, place });
      return call;
    }
    /** Finishes a live call once; a call already finished is skipped. */
    complete(call, result) {
      if (!this.calls.delete(call)) return;
      this.outputs.push(result.ok ? { type: "done", call, ok: true, value: result.value } : { type: "done", call, ok: false, error: result.error });
    }
    /** Takes a call out of wherever it waits (it timed out or was aborted). */
    unplace(call) {
      const c = this.calls.get(call);
      if (!c) return;
      const place = c.place;
      switch (place.kind) {
        case "queued":
          this.queue = this.queue.filter((q) => q.call !== call);
          break;
        case "held-sub":
          for (const h of this.subs) h.waiters = h.waiters.filter((w) => w !== call);
          break;
        case "done":
          break;
        case "sent": {
          const p = this.pending.get(place.id);
          if (p?.kind === "subscribe") p.waiters = p.waiters.filter((w) => w !== call);
          else if (p?.kind === "call" || p?.kind === "unsubscribe") this.pending.delete(place.id);
          break;
        }
      }
    }
    hasSocket() {
      return this.stateValue.kind === "authenticating" || this.stateValue.kind === "open";
    }
    /** When the heartbeat must act next: ping, or give up on the server. */
    heartbeatDue() {
      const beat = this.config.heartbeat;
      if (!beat || !this.canPing || !this.hasSocket()) return null;
      const ping = Math.max(this.lastHeard, this.lastPing) + beat.intervalMs;
      return Math.min(ping, this.lastHeard + beat.timeoutMs);
    }
    heartbeat(now2) {
      const beat = this.config.heartbeat;
      if (!beat || !this.canPing || !this.hasSocket()) return;
      if (now2 >= this.lastHeard + beat.timeoutMs) {
        this.outputs.push({ type: "disconnect" });
        this.handleClose(null, `nothing from the server for ${beat.timeoutMs} ms`, now2);
      } else if (now2 >= Math.max(this.lastHeard, this.lastPing) + beat.intervalMs) {
        this.lastPing = now2;
        this.outputs.push({ type: "ping" });
      }
    }
    checkNotClosed() {
      if (this.stateValue.kind === "closed") {
        const message = this.closedByValue ? `the client was closed: ${this.closedByValue.message}` : "the client was closed";
        throw new RtmError(ErrorCodes.Closed, message);
      }
    }
    queueFull() {
      return new RtmError(ErrorCodes.QueueFull, `offline queue full (${this.config.offlineQueue} calls)`);
    }
    enqueue(call, fn, data) {
      if (this.queue.length >= this.config.offlineQueue) throw this.queueFull();
      this.queue.push({ call, fn, data });
    }
    addSub(sub) {
      let held = this.subs.find((h) => sameSub(h.sub, sub));
      if (!held) {
        held = { sub, waiters: [], retry: null, retries: 0 };
        this.subs.push(held);
      }
      return held;
    }
    /** Forgets `tags` of `event`; returns the waiters of entries left with no tag. */
    removeTags(event, tags) {
      const orphans = [];
      for (const h of this.subs) {
        if (h.sub.event !== event) continue;
        h.sub = { event, tags: h.sub.tags.filter((t) => !tags.includes(t)) };
        if (!h.sub.tags.length) orphans.push(...h.waiters.splice(0));
      }
      this.subs = this.subs.filter((h) => h.sub.event !== event || h.sub.tags.length > 0);
      return orphans;
    }
    sendSubscribe(sub, waiters) {
      const id = this.requestId();
      const since = this.config.trackPositions ? this.positions.since(sub.event, sub.tags) : null;
      this.transmit(encodeSubscription(id, true, sub, since));
      for (const call of waiters) {
        const c = this.calls.get(call);
        if (c) c.place = { kind: "sent", id };
      }
      this.pending.set(id, { kind: "subscribe", sub, waiters });
    }
    startConnecting(now2, attempt) {
      this.stateValue = { kind: "connecting", attempt };
      this.reconnectAt = null;
      const timeout = this.config.openTimeoutMs;
      this.connectDeadline = timeout === null || !Number.isFinite(timeout) ? null : now2 + timeout;
      this.outputs.push({ type: "connect" });
      this.lifecycle({ type: "connecting", attempt });
    }
    /** Open and authenticated: re-send subscriptions, then flush the queue in order. */
    becomeOpen(authData) {
      this.stateValue = { kind: "open" };
      this.attempt = 0;
      this.lastFailure = "";
      const resend = this.subs.map((h) => {
        h.retry = null;
        return [h.sub, h.waiters.splice(0)];
      });
      for (const [sub, waiters] of resend) this.sendSubscribe(sub, waiters);
      const queue = this.queue;
      this.queue = [];
      for (const q of queue) {
        const id = this.requestId();
        this.transmit(encodeInvoke(id, q.fn, q.data));
        if (q.call !== null) {
          const c = this.calls.get(q.call);
          if (c) c.place = { kind: "sent", id };
          this.pending.set(id, { kind: "call", call: q.call });
        }
      }
      this.lifecycle({ type: "ready", authenticated: this.config.auth, authData });
    }
    handleReply(id, result, streams, now2) {
      const pending = this.pending.get(id);
      if (!pending) return;
      this.pending.delete(id);
      switch (pending.kind) {
        case "auth":
          if (result.ok && isTruthy(result.value)) {
            this.streamStates(USER_KEY, streams);
            this.becomeOpen(result.value);
          } else this.authRejected(result.ok ? "authentication rejected" : result.error.message || "authentication rejected", true);
          break;
        case "call":
        case "unsubscribe":
          this.complete(pending.call, result);
          break;
        case "subscribe":
          if (result.ok) this.subscribed(pending.sub, streams);
          else this.subscribeRefused(pending.sub, result.error, pending.waiters.length === 0, now2);
          for (const call of pending.waiters) this.complete(call, result);
          break;
      }
    }
    /**
     * A subscribe was taken: its streams' positions are where the reply says;
     * a stream that could not be recovered is told to the application.
     */
    subscribed(sub, streams) {
      const held = this.subs.find((h) => sameSub(h.sub, sub));
      if (held) held.retries = 0;
      this.streamStates(sub.event, streams);
    }
    /**
     * A reply's `streams`: the positions of `event`'s streams (the user's
     * stream for an `auth`); a stream that could not be recovered is told.
     */
    streamStates(event, streams) {
      if (streams === null || streams === void 0 || !this.config.trackPositions) return;
      const states = parseStreams(streams);
      if (typeof states === "string") {
        this.lifecycle({ type: "error", error: new RtmError(ErrorCodes.BadRequest, states) });
        return;
      }
      for (const { tag, reason } of this.positions.handleStreams(event, states)) {
        this.lifecycle({ type: "resync", event, tag, reason });
      }
    }
    /**
     * A subscribe was refused. A temporary refusal (`rtm/broker-unavailable`,
     * `rtm/timeout`) of a held subscription is sent again after a backoff (the
     * reconnect schedule's); any other, or with no reconnects, stops it being
     * sent again.
     */
    subscribeRefused(sub, error, tell, now2) {
      this.positions.resyncFailed(sub.event, sub.tags);
      const held = this.subs.find((h) => sameSub(h.sub, sub));
      if (held && TEMPORARY_REFUSALS.includes(error.code)) {
        const attempt = held.retries + 1;
        const delay = reconnectDelay(this.config.reconnect, attempt, this.rng);
        if (delay !== null) {
          held.retries = attempt;
          held.retry = { at: now2 + delay, attempt };
          this.lifecycle({ type: "subscribe-retry", event: sub.event, tags: [...sub.tags], attempt, delayMs: delay, error });
          return;
        }
      }
      this.subs = this.subs.filter((h) => !sameSub(h.sub, sub));
      if (tell) this.lifecycle({ type: "error", error });
    }
    /** The server rejected the auth: terminal, nothing is retried. */
    authRejected(message, closeSocket) {
      this.closeForGood(new RtmError(ErrorCodes.AuthRejected, message), 4003, closeSocket, "auth-rejected");
    }
    /** Reports `err`, fails every call with it and ends closed. */
    closeForGood(err, code, closeSocket, cause) {
      this.closedByValue = err;
      this.lifecycle({ type: "error", error: err });
      this.failEverything(err);
      if (closeSocket) this.outputs.push({ type: "disconnect" });
      this.stateValue = { kind: "closed" };
      this.lifecycle({ type: "closed", code, reason: err.message, final: true, cause });
    }
    /**
     * The connection is gone: invokes in flight fail (they may not be
     * idempotent, so they are not re-sent); subscribes wait for the next open.
     */
    dropInFlight() {
      const disconnected = () => new RtmError(ErrorCodes.Disconnected, "connection lost while the call was in flight");
      for (const p of this.takePending()) {
        switch (p.kind) {
          case "auth":
            break;
          case "call":
            this.complete(p.call, { ok: false, error: disconnected() });
            break;
          case "unsubscribe":
            this.complete(p.call, { ok: true, value: true });
            break;
          case "subscribe": {
            const held = this.subs.find((h) => sameSub(h.sub, p.sub));
            if (held) {
              held.waiters.push(...p.waiters);
              for (const call of p.waiters) {
                const c = this.calls.get(call);
                if (c) c.place = { kind: "held-sub" };
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
    takePending() {
      const entries = [...this.pending.entries()].sort((a, b) => Number(a[0]) - Number(b[0]));
      this.pending.clear();
      return entries.map(([, p]) => p);
    }
    /** Every pending, queued and held call fails with `err`; subscriptions are forgotten. */
    failEverything(err) {
      for (const p of this.takePending()) {
        switch (p.kind) {
          case "auth":
            break;
          case "call":
          case "unsubscribe":
            this.complete(p.call, { ok: false, error: err });
            break;
          case "subscribe":
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
      for (const call of [...this.calls.keys()]) this.complete(call, { ok: false, error: err });
      this.deadlines.clear();
      this.reconnectAt = null;
      this.connectDeadline = null;
    }
  };
  function notConnected() {
    return new RtmError(ErrorCodes.Disconnected, "not connected");
  }

  // src/websocket.ts
  function defaultWebSocket() {
    const global = globalThis.WebSocket;
    if (typeof global === "function") return global;
    return Promise.resolve().then(() => (init_ws(), ws_exports)).then((mod) => {
      const ctor = mod.WebSocket ?? mod.default?.WebSocket ?? mod.default;
      if (typeof ctor !== "function") throw new Error("the 'ws' package has no WebSocket export");
      return ctor;
    });
  }
  function badUrl(url) {
    if (typeof url !== "string") return `${String(url)} is not a URL (only ws:// and wss:// URLs are supported)`;
    const match = /^(wss?):\/\/([^/?#]*)/i.exec(url);
    if (!match) return `"${url}" is not a ws:// or wss:// URL (only ws:// and wss:// URLs are supported)`;
    const host = match[2] ?? "";
    if (!host || host.startsWith("@") || host.startsWith(":")) return `"${url}" has no host (only ws:// and wss:// URLs with a host are supported)`;
    try {
      new URL(url);
    } catch {
      return `"${url}" is not a valid URL (only ws:// and wss:// URLs are supported)`;
    }
    return null;
  }

  // src/client.ts
  var now = () => typeof performance !== "undefined" ? performance.now() : Date.now();
  function reportListenerError(err) {
    const report = globalThis.reportError;
    if (typeof report === "function") report(err);
    else console.error("rtm client: a listener threw:", err);
  }
  function toReconnect(option, fallback) {
    if (option === void 0) return fallback;
    if (option === false) return { kind: "never" };
    if ("delayMs" in option) return { kind: "fixed", delayMs: option.delayMs };
    return {
      kind: "backoff",
      initialMs: option.initialMs ?? 500,
      maxMs: option.maxMs ?? 3e4,
      factor: option.factor ?? 2,
      jitter: option.jitter ?? "equal"
    };
  }
  var DEFAULT_RECONNECT = { kind: "backoff", initialMs: 500, maxMs: 3e4, factor: 2, jitter: "equal" };
  function coreConfig(options, reconnect) {
    return {
      auth: options.auth !== void 0,
      authData: options.auth,
      callTimeoutMs: options.callTimeoutMs === void 0 ? DEFAULT_CONFIG.callTimeoutMs : options.callTimeoutMs,
      offlineQueue: options.offlineQueue ?? DEFAULT_CONFIG.offlineQueue,
      reconnect,
      maxReconnectAttempts: options.maxReconnectAttempts ?? null,
      openTimeoutMs: options.openTimeoutMs === void 0 ? DEFAULT_CONFIG.openTimeoutMs : options.openTimeoutMs,
      jitterSeed: options.jitterSeed ?? Math.floor(Math.random() * 4294967295),
      heartbeat: options.heartbeat === void 0 ? DEFAULT_CONFIG.heartbeat : options.heartbeat,
      trackPositions: options.trackPositions ?? DEFAULT_CONFIG.trackPositions
    };
  }
  var Client = class {
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
    constructor(url, options = {}, reconnectFallback = DEFAULT_RECONNECT, httpErrorsFinal = true) {
      this.socket = null;
      /** The last WebSocket made, closed or not (`null` before the first attempt). */
      this.lastSocketValue = null;
      /** Whether a socket of this client ever opened: the URL worked once. */
      this.everOpened = false;
      this.socketError = "";
      this.attemptToken = 0;
      this.waiting = /* @__PURE__ */ new Map();
      this.handlers = /* @__PURE__ */ new Map();
      this.pushRegs = /* @__PURE__ */ new Set();
      this.listeners = /* @__PURE__ */ new Map();
      this.openWaiters = /* @__PURE__ */ new Set();
      this.timer = null;
      this.timerAt = null;
      this.pumping = false;
      this.started = false;
      this.lastState = "connecting";
      this.url = url;
      this.options = { ...options };
      this.httpErrorsFinal = httpErrorsFinal;
      this.core = new ClientCore(coreConfig(options, toReconnect(options.reconnect, reconnectFallback)), now());
      queueMicrotask(() => {
        this.started = true;
        this.pump();
      });
    }
    // ----- state -----
    /** Where the client is: `connecting`, `authenticating`, `open`, `reconnecting` (waiting for the next attempt) or `closed`. */
    get state() {
      return publicState(this.core.state.kind);
    }
    /** Calls sent and awaiting their reply. */
    get pendingCalls() {
      return this.core.pendingCalls;
    }
    /** Calls waiting in the offline queue. */
    get queuedCalls() {
      return this.core.queuedCalls;
    }
    /** Push subscriptions held (re-sent after every reconnect). */
    get pushSubscriptions() {
      return this.core.subscriptions;
    }
    /**
     * The position this client holds in the push stream (`event`, `tag`): the
     * offset of the last event it had, under the stream's epoch; `null` when
     * it has none (not subscribed yet, no history for `event` on the server,
     * or `trackPositions: false`).
     */
    position(event, tag) {
      return this.core.position(event, tag);
    }
    /** The WebSocket in use, if one is open or opening. */
    get socketInUse() {
      return this.socket;
    }
    /**
     * The last WebSocket this client made, whatever its `readyState` (a closed
     * one stays here until the next attempt replaces it); `null` before the
     * first attempt.
     */
    get lastSocket() {
      return this.lastSocketValue;
    }
    /**
     * Resolves once the client is open (at once if it is); rejects if it
     * closes for good first (`rtm/auth-rejected`, `rtm/bad-request`,
     * `rtm/closed`) or, with `rtm/timeout`, after `timeoutMs`.
     */
    waitOpen(timeoutMs = null) {
      if (this.core.state.kind === "open") return Promise.resolve();
      if (this.core.state.kind === "closed") return Promise.reject(this.closedError());
      return new Promise((resolve, reject) => {
        let timer;
        const waiter = {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          }
        };
        this.openWaiters.add(waiter);
        if (timeoutMs !== null && Number.isFinite(timeoutMs)) {
          timer = setTimeout(() => {
            this.openWaiters.delete(waiter);
            const why = this.core.lastFailure ? `: ${this.core.lastFailure}` : "";
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
    call(fn, ...args) {
      return this.callWith({}, fn, ...args);
    }
    /** {@link Client.call} with options: an `AbortSignal`, a timeout of its own, fail-fast when offline. */
    callWith(options, fn, ...args) {
      return new Promise((resolve, reject) => {
        const { signal } = options;
        if (signal?.aborted) return reject(aborted(signal));
        let call;
        try {
          const callOptions = {
            ...options.timeoutMs !== void 0 ? { timeoutMs: options.timeoutMs } : {},
            queue: options.whenOffline !== "fail"
          };
          call = this.core.callWait(fn, args, now(), callOptions);
        } catch (err) {
          return reject(err);
        }
        const waiter = { resolve, reject };
        if (signal) {
          const onAbort = () => {
            this.core.cancel(call, aborted(signal));
            this.pump();
          };
          signal.addEventListener("abort", onAbort, { once: true });
          waiter.cleanup = () => signal.removeEventListener("abort", onAbort);
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
    invoke(fn, ...args) {
      this.core.call(fn, args, now());
      this.pump();
    }
    // ----- events -----
    /**
     * Calls `handler(...args)` for every `event` from the server (Emit,
     * Publish, and Push to subscriptions this client holds). Client side only.
     * Returns the function that removes it.
     */
    subscribe(event, handler) {
      this.addHandler(event, handler);
      let done = false;
      return () => {
        if (done) return;
        done = true;
        this.removeHandler(event, handler);
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
    subscribePush(event, tags, handler) {
      const bad = checkEventName(event) ?? checkTags(tags);
      if (bad) return Promise.reject(bad);
      const reg = { event, tags: normalize(event, tags).tags, handler: handler ?? null };
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
        (err) => {
          forget();
          if (reg.tags.some((tag) => this.core.holds(event, tag))) void this.releaseTags(event, reg.tags);
          throw err;
        }
      );
    }
    /**
     * Drops the push subscriptions to `event` for `tags` (every one this client
     * holds, with their handlers if no tag is left to them) and tells the server.
     */
    unsubscribePush(event, tags) {
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
      return this.await(() => this.core.unsubscribePush(event, drop, now())).then(() => void 0);
    }
    // ----- connection events -----
    /** Adds a listener of a connection event; returns the function that removes it. */
    on(type, listener) {
      let set = this.listeners.get(type);
      if (!set) this.listeners.set(type, set = /* @__PURE__ */ new Set());
      set.add(listener);
      return () => this.off(type, listener);
    }
    /** Removes a listener added with {@link Client.on}. */
    off(type, listener) {
      this.listeners.get(type)?.delete(listener);
    }
    /** If waiting to reconnect, starts the attempt now (a "retry now" button, the network back). */
    reconnectNow() {
      this.core.reconnectNow(now());
      this.pump();
    }
    /**
     * Closes the client for good: calls pending or queued fail with
     * `rtm/closed`, the socket is closed (1000), nothing reconnects, and later
     * calls fail with `rtm/closed`.
     */
    close() {
      this.core.close(now());
      this.handlers.clear();
      this.pushRegs.clear();
      this.pump();
    }
    // ----- internals -----
    /** Runs a core command that completes through a `done` output. */
    await(command) {
      return new Promise((resolve, reject) => {
        let call;
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
    releaseTags(event, tags) {
      const held = /* @__PURE__ */ new Set();
      for (const reg of this.pushRegs) if (reg.event === event) for (const t of reg.tags) held.add(t);
      const free = tags.filter((t) => !held.has(t));
      if (!free.length || this.core.state.kind === "closed") return Promise.resolve();
      return this.await(() => this.core.unsubscribePush(event, free, now())).then(
        () => void 0,
        () => void 0
      );
    }
    addHandler(event, handler) {
      let set = this.handlers.get(event);
      if (!set) this.handlers.set(event, set = /* @__PURE__ */ new Set());
      set.add(handler);
    }
    removeHandler(event, handler) {
      const set = this.handlers.get(event);
      if (!set) return;
      set.delete(handler);
      if (!set.size) this.handlers.delete(event);
    }
    /** Emits a connection event to its listeners; a listener that throws is reported, not fatal. */
    emit(type, ...args) {
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
    pump() {
      if (this.pumping || !this.started) return;
      this.pumping = true;
      try {
        for (let out = this.core.pollOutput(); out; out = this.core.pollOutput()) this.perform(out);
      } finally {
        this.pumping = false;
      }
      this.schedule();
    }
    perform(out) {
      switch (out.type) {
        case "connect":
          this.openSocket();
          break;
        case "transmit":
          this.transmit(out.frame);
          break;
        case "ping":
          try {
            this.socket?.ping?.();
          } catch {
          }
          break;
        case "disconnect":
          this.dropSocket(1e3);
          break;
        case "done": {
          const waiter = this.waiting.get(out.call);
          if (!waiter) break;
          this.waiting.delete(out.call);
          waiter.cleanup?.();
          if (out.ok) waiter.resolve(out.value);
          else waiter.reject(out.error);
          break;
        }
        case "event":
          this.dispatch(out.event, out.args);
          break;
        case "lifecycle":
          this.lifecycle(out.event);
          break;
      }
    }
    dispatch(event, args) {
      const set = this.handlers.get(event);
      if (!set) return;
      for (const handler of [...set]) {
        try {
          const result = handler(...args);
          if (result && typeof result.then === "function") {
            result.then(void 0, reportListenerError);
          }
        } catch (err) {
          reportListenerError(err);
        }
      }
    }
    lifecycle(event) {
      switch (event.type) {
        case "connecting":
          this.emitState();
          this.emit("connecting", { attempt: event.attempt });
          break;
        case "opened":
          break;
        case "authenticating":
          this.emitState();
          break;
        case "ready": {
          this.emitState();
          for (const waiter of [...this.openWaiters]) waiter.resolve();
          this.openWaiters.clear();
          this.emit("open", { authenticated: event.authenticated, authData: event.authData });
          break;
        }
        case "closed":
          this.emitState();
          if (event.final) {
            const err = this.closedError();
            for (const waiter of [...this.openWaiters]) waiter.reject(err);
            this.openWaiters.clear();
            this.clearTimer();
          }
          this.emit("close", { code: event.code, reason: event.reason, final: event.final });
          break;
        case "reconnecting":
          this.emitState();
          this.emit("reconnecting", { attempt: event.attempt, delayMs: event.delayMs });
          break;
        case "error":
          this.emit("error", event.error);
          break;
        case "resync":
          this.emit("resync", event.event, event.tag, event.reason);
          break;
        case "subscribe-retry":
          this.emit("subscribe-retry", { event: event.event, tags: event.tags, attempt: event.attempt, delayMs: event.delayMs, error: event.error });
          break;
      }
    }
    emitState() {
      const state = this.state;
      if (state === this.lastState) return;
      this.lastState = state;
      this.emit("state", state);
    }
    /** Why `waitOpen` fails once the client is closed. */
    closedError() {
      const why = this.core.closedBy;
      if (!why) return new RtmError(ErrorCodes.Closed, "the client was closed");
      if (why.code === ErrorCodes.AuthRejected || why.code === ErrorCodes.BadRequest) return why;
      return new RtmError(ErrorCodes.Closed, `the client was closed: ${why.message}`, { cause: why });
    }
    openSocket() {
      this.dropSocket(1e3);
      if (this.core.state.kind !== "connecting") return;
      const token = ++this.attemptToken;
      const bad = badUrl(this.url);
      if (bad) {
        this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, bad));
        return;
      }
      const ctor = this.options.WebSocket ?? defaultWebSocket();
      if (typeof ctor === "function") {
        this.createSocket(ctor);
        return;
      }
      ctor.then(
        (loaded) => {
          if (token !== this.attemptToken || this.core.state.kind !== "connecting") return;
          this.createSocket(loaded);
          this.pump();
        },
        (err) => {
          const message = `no WebSocket: this runtime has no global WebSocket and the 'ws' package could not be loaded (${err?.message ?? err})`;
          this.core.handleFatalError(new RtmError(ErrorCodes.Closed, message, { cause: err }));
          this.pump();
        }
      );
    }
    createSocket(Ctor) {
      let socket;
      try {
        socket = new Ctor(this.url);
      } catch (err) {
        this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, `cannot connect to ${this.url}: ${err?.message ?? err}`));
        return;
      }
      this.socket = socket;
      this.lastSocketValue = socket;
      this.socketError = "";
      let refusedBy = "";
      const canPing = typeof socket.ping === "function" && typeof socket.on === "function";
      if (this.httpErrorsFinal && !this.everOpened && typeof socket.on === "function") {
        socket.on("unexpected-response", (_request, response) => {
          const status = response?.statusCode ?? 0;
          refusedBy = `the server answered the WebSocket upgrade with HTTP ${status}${response?.statusMessage ? ` ${response.statusMessage}` : ""}`;
          if (this.socket === socket && finalHttpStatus(status)) {
            this.core.handleFatalError(new RtmError(ErrorCodes.BadRequest, `cannot connect to ${this.url}: ${refusedBy} (is the URL right?)`));
            this.pump();
            return;
          }
          if (this.socket === socket) this.socketError = refusedBy;
          try {
            socket.close();
          } catch {
          }
        });
      }
      socket.addEventListener("open", () => {
        if (this.socket !== socket) return;
        this.everOpened = true;
        this.core.handleOpen(now(), canPing);
        this.pump();
      });
      socket.addEventListener("message", (event) => {
        if (this.socket !== socket) return;
        if (typeof event.data !== "string") {
          this.core.handleActivity(now());
          this.pump();
          return;
        }
        this.emit("message", event.data);
        if (this.socket !== socket) return;
        this.core.handleText(event.data, now());
        this.pump();
      });
      socket.addEventListener("error", (event) => {
        if (this.socket !== socket) return;
        const message = typeof event?.message === "string" ? event.message : event?.error?.message;
        if (message && !refusedBy) this.socketError = message;
        this.emit("socket-error", event);
      });
      socket.addEventListener("close", (event) => {
        if (this.socket !== socket) return;
        this.socket = null;
        const code = typeof event?.code === "number" ? event.code : null;
        const reason = event?.reason || this.socketError || (code === null ? "connection closed" : `connection closed (code ${code})`);
        this.core.handleClose(code, reason, now());
        this.pump();
      });
      if (canPing) {
        const alive = () => {
          if (this.socket !== socket) return;
          this.core.handleActivity(now());
          this.pump();
        };
        socket.on("pong", alive);
        socket.on("ping", alive);
      }
    }
    transmit(frame) {
      const socket = this.socket;
      if (!socket) return;
      try {
        socket.send(frame);
      } catch (err) {
        this.lose(`send failed: ${err?.message ?? err}`);
        return;
      }
      const max = this.options.maxBufferedBytes === void 0 ? 16 * 1024 * 1024 : this.options.maxBufferedBytes;
      if (max !== null && socket.bufferedAmount > max) {
        this.lose(`the server stopped reading: ${socket.bufferedAmount} bytes unsent (maxBufferedBytes ${max})`);
      }
    }
    /** Counts the connection as lost: the socket is dropped and the core told. */
    lose(reason) {
      this.dropSocket(1e3);
      this.core.handleClose(null, reason, now());
    }
    /** Closes the socket in use (if any); its events no longer reach the core. */
    dropSocket(code) {
      const socket = this.socket;
      this.socket = null;
      if (!socket) return;
      try {
        socket.close(code);
      } catch {
      }
    }
    schedule() {
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
    clearTimer() {
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = null;
    }
  };
  function finalHttpStatus(status) {
    return status >= 400 && status < 500 && status !== 408 && status !== 429;
  }
  function publicState(kind) {
    return kind === "waiting" ? "reconnecting" : kind;
  }
  function aborted(signal) {
    const reason = signal.reason;
    const why = reason?.message ? `: ${reason.message}` : "";
    return new RtmError(ErrorCodes.Aborted, `the call was aborted${why}`, { cause: signal.reason });
  }
  async function connect(url, options = {}) {
    const client = new Client(url, options);
    try {
      await client.waitOpen(options.connectTimeoutMs === void 0 ? 1e4 : options.connectTimeoutMs);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  // src/compat.ts
  var RtmClient = class {
    /**
     * Creates a client connected to `address` (`ws://` or `wss://`; anything
     * else throws, as `new WebSocket` does), with `options`.
     */
    constructor(address, options) {
      this.closedByApp = false;
      this.authFailed = false;
      const bad = badUrl(address);
      if (bad) throw new RtmError(ErrorCodes.BadRequest, bad);
      this.Address = address;
      this.Options = options || { reconnectDelayMs: 1e3 };
      const o = this.Options;
      const fixed = o.reconnectDelayMs === void 0 ? 1e3 : o.reconnectDelayMs;
      const fallback = fixed > 0 ? { kind: "fixed", delayMs: fixed } : { kind: "never" };
      const clientOptions = {
        // The original authenticates only with truthy data.
        ...o.authenticationData ? { auth: o.authenticationData } : {},
        reconnect: o.reconnect,
        callTimeoutMs: o.callTimeoutMs,
        offlineQueue: o.offlineQueue,
        maxReconnectAttempts: o.maxReconnectAttempts,
        openTimeoutMs: o.openTimeoutMs,
        heartbeat: o.heartbeat,
        maxBufferedBytes: o.maxBufferedBytes,
        jitterSeed: o.jitterSeed,
        trackPositions: o.trackPositions,
        WebSocket: o.WebSocket
      };
      for (const key of Object.keys(clientOptions)) {
        if (clientOptions[key] === void 0 && key !== "auth") delete clientOptions[key];
      }
      this.client = new Client(address, clientOptions, toReconnect(o.reconnect, fallback), false);
      const c = this.client;
      c.on("connecting", ({ attempt }) => {
        if (attempt > 0) this.callback("onReconnecting", attempt);
      });
      c.on("state", (state) => {
        if (state === "authenticating") this.callback("onAuthenticating");
      });
      c.on("open", () => this.callback("onOpen"));
      c.on("close", () => {
        if (this.closedByApp || this.authFailed) return;
        this.callback("onClose");
      });
      c.on("error", (error) => {
        if (error.code === ErrorCodes.AuthRejected) {
          this.authFailed = true;
          this.callback("onError", { code: ErrorCodes.AuthError, data: error.message || "Server returned an invalid response." });
        } else {
          this.callback("onError", { code: "rtm/unknown-error", data: error });
        }
      });
      c.on("socket-error", (event) => this.callback("onError", { code: "rtm/network-error", data: event }));
      c.on("message", (raw) => this.callback("onMessage", raw));
      c.on("resync", (event, tag, reason) => this.callback("onResync", event, tag, reason));
      c.on("subscribe-retry", (info) => this.callback("onSubscribeRetry", info));
    }
    /** Whether the connection is open and authenticated with `authenticationData`. */
    get Authenticated() {
      return this.client.state === "open" && Boolean(this.Options.authenticationData);
    }
    /**
     * The last WebSocket, as the original's public field: opening, open, or
     * closed (a closed one stays until the next attempt replaces it, and after
     * `Close()`), so `client.Socket.readyState` can always be read. `undefined`
     * only before the first attempt, made right after construction (a
     * microtask; in Node without a global WebSocket, once `ws` is loaded).
     */
    get Socket() {
      return this.client.lastSocket ?? void 0;
    }
    /**
     * Subscribes to push events: the server holds a subscription to
     * `eventName` for `tags` (re-sent after every reconnect, after re-auth),
     * and `callback(...data)` is called for every `eventName` event. Resolves
     * with a function that removes the callback (and tells the server, unless
     * another push subscription holds the tags); rejects (e.g. `rtm/forbidden`)
     * if the server denies it, the callback then removed.
     */
    async SubscribePush(eventName, tags, callback) {
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
    Subscribe(event, callback) {
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
    async Call(func, ...data) {
      this.client.invoke(func, ...data);
    }
    /**
     * Executes a named function on the server and resolves with its result.
     * Rejects with an `RtmError` (`code`, `message`): the server's error, or
     * `rtm/timeout`, `rtm/disconnected`, `rtm/queue-full`, `rtm/closed`.
     */
    CallWait(func, ...data) {
      return this.client.call(func, ...data);
    }
    /**
     * Closes the connection for good: what is pending rejects with
     * `rtm/closed`, subscriptions are dropped, no callback is called any more.
     * The client may not be used again after this call.
     */
    Close() {
      this.closedByApp = true;
      this.client.close();
    }
    callback(name, ...args) {
      if (this.closedByApp) return;
      const fn = this.Options[name];
      if (typeof fn !== "function") return;
      try {
        const result = fn(...args);
        if (result && typeof result.then === "function") {
          result.then(void 0, reportListenerError);
        }
      } catch (err) {
        reportListenerError(err);
      }
    }
  };
  var RTMMessageResponse = class {
    constructor(rawMessage) {
      const msg = JSON.parse(rawMessage);
      this.data = msg.data;
      this.id = msg.id;
    }
  };

  // src/browser.ts
  var version = "1.0.0";
  return __toCommonJS(browser_exports);
})();
