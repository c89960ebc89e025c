/**
 * `@rtm/client`: a TypeScript client for RTM servers.
 *
 * - The typed API: {@link connect}, {@link Client} (`call`, `callWith`,
 *   `invoke`, `subscribe`, `subscribePush`, connection events, `state`), errors
 *   as {@link RtmError} with the protocol's {@link ErrorCodes}.
 * - {@link RtmClient}: a drop-in for `@zexcore/rtm-client` 2.x.
 * - {@link ClientCore}: the sans-IO state machine both are built on.
 */
export { Client, connect } from './client.js';
export type { CallOptions, ClientEvents, ClientOptions, ConnectionState, ReconnectOption, SubscribeRetryInfo, Unsubscribe } from './client.js';
export { RtmClient, RTMMessageResponse } from './compat.js';
export type { RTMClientError, RTMClientOptions } from './compat.js';
export { ErrorCodes, RtmError } from './errors.js';
export type { ErrorCode, KnownErrorCode } from './errors.js';
export { ClientCore, DEFAULT_CONFIG } from './core.js';
export type { CallOptions as CoreCallOptions, CoreConfig, CoreState, CloseCause, Heartbeat, Lifecycle, Output } from './core.js';
export type { Jitter, Reconnect } from './backoff.js';
export { Positions } from './positions.js';
export type { EventPosition, ResyncReason, Since, StreamPosition, StreamState, Verdict } from './positions.js';
export type { WebSocketConstructor, WebSocketLike } from './websocket.js';
