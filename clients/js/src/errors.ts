/**
 * Errors: every failure this client reports is an {@link RtmError} with one of
 * the protocol's codes (docs/protocol.md, "Error codes"), or the code an
 * application's server function chose.
 */

/** The error codes of the RTM protocol, and the client-side ones. */
export const ErrorCodes = {
  // On the wire (error replies).
  /** A malformed field in a well-formed request; also a server URL this client cannot use. */
  BadRequest: 'rtm/bad-request',
  /** No function registered under that name. */
  FunctionNotFound: 'rtm/function-not-found',
  /** The function returned an error (applications may use their own codes instead). */
  HandlerError: 'rtm/handler-error',
  /** The function panicked, or its result could not be encoded. */
  Internal: 'rtm/internal',
  /** The per-connection bound of requests in flight was reached. */
  TooManyRequests: 'rtm/too-many-requests',
  /** A request before authentication. */
  Unauthenticated: 'rtm/unauthenticated',
  /** A second `auth` on an authenticated connection. */
  AlreadyAuthenticated: 'rtm/already-authenticated',
  /** The server's authentication handler rejected the `auth`. */
  AuthRejected: 'rtm/auth-rejected',
  /** The subscribe authorizer denied a push subscription. */
  Forbidden: 'rtm/forbidden',
  /** Publish on a server without authentication (passed on by a function). */
  NoAuth: 'rtm/no-auth',
  /** Publish or Push while the server's broker is down (passed on by a function). */
  BrokerUnavailable: 'rtm/broker-unavailable',

  // Client-side, never on the wire.
  /** No reply within the call timeout (or `connect` did not open in time). */
  Timeout: 'rtm/timeout',
  /** The connection was lost while the call was in flight (or the call refused to wait offline). */
  Disconnected: 'rtm/disconnected',
  /** The client was closed by the application, or for good by an earlier error. */
  Closed: 'rtm/closed',
  /** The offline queue bound was reached. */
  QueueFull: 'rtm/queue-full',
  /** The call's `AbortSignal` fired (this client's own code). */
  Aborted: 'rtm/aborted',
  /** What `@zexcore/rtm-client` reports to `onError` when `auth` fails (compat API only). */
  AuthError: 'rtm/auth-error',
} as const;

/** One of {@link ErrorCodes}' values. */
export type KnownErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * An error code: a known one, or any string an application's function chose
 * (for example `shop/closed`).
 */
export type ErrorCode = KnownErrorCode | (string & {});

/**
 * An RTM failure: a `code` to branch on and a human `message`.
 *
 * Error replies from the server become an `RtmError` with the reply's code and
 * message; client-side failures use the client-side codes (`rtm/timeout`,
 * `rtm/disconnected`, `rtm/closed`, `rtm/queue-full`, `rtm/aborted`).
 */
export class RtmError extends Error {
  /** The error code, e.g. `rtm/function-not-found`. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RtmError';
    this.code = code;
  }

  /** `code: message`, as the Rust client prints it. */
  override toString(): string {
    return this.message ? `${this.code}: ${this.message}` : String(this.code);
  }

  /** The plain `{ code, message }` object, as on the wire. */
  toJSON(): { code: string; message: string } {
    return { code: this.code, message: this.message };
  }

  /** Whether `value` is an `RtmError` (optionally with this `code`). */
  static is(value: unknown, code?: ErrorCode): value is RtmError {
    return value instanceof RtmError && (code === undefined || value.code === code);
  }
}
