/**
 * The wire format (docs/protocol.md): requests this client sends and the
 * frames it reads, read exactly as `rtm_core::frame::parse_server_frame` and
 * the JavaScript client read them.
 */
import { ErrorCodes, RtmError } from './errors.js';
import { type EventPosition, type Since, isValidEpoch, writeSince } from './positions.js';

/** A push subscription: an event and its tags (sorted, without duplicates). */
export interface PushSub {
  event: string;
  tags: string[];
}

/** A frame from the server, as a client reads it. */
export type ServerFrame =
  /** `streams`: a subscribe's reply's `streams` (ext), as sent (`null`: none). */
  | { kind: 'reply'; id: string; ok: true; data: unknown; streams: unknown }
  | { kind: 'reply'; id: string; ok: false; error: RtmError }
  /** `position`: its place in its stream (ext), for a connection that tracks it (`null`: none). */
  | { kind: 'event'; event: string; args: unknown[]; position: EventPosition | null };

/**
 * `{"id":…,"type":"auth","data":[authData]}`, with `since` (ext) for the
 * user's stream when given: `,"since":{"user":<position or null>}` before
 * the closing brace.
 */
export function encodeAuth(id: string, authData: unknown, since: Since | null = null): string {
  const head = `{"id":${JSON.stringify(id)},"type":"auth","data":[${json(authData)}]`;
  return since ? `${head}${writeSince(since)}}` : `${head}}`;
}

/** `{"id":…,"type":"invoke","function":…,"data":<data>}`, `data` already encoded by {@link encodeArgs}. */
export function encodeInvoke(id: string, fn: string, data: string): string {
  return `{"id":${JSON.stringify(id)},"type":"invoke","function":${JSON.stringify(fn)},"data":${data}}`;
}

/**
 * The JSON array of a call's arguments, encoded when the call is made (so a
 * value JSON cannot carry fails that call at once, not a later flush).
 */
export function encodeArgs(args: readonly unknown[]): string | RtmError {
  try {
    return json(args);
  } catch (err) {
    return new RtmError(ErrorCodes.BadRequest, `arguments are not JSON: ${(err as Error).message}`);
  }
}

/**
 * `{"id":…,"type":"subscribe"|"unsubscribe","event":…,"tags":[…]}`, and for a
 * subscribe with `since` (ext) `,"since":{…}` before the closing brace (its
 * tags sorted, each with its position or `null`).
 */
export function encodeSubscription(id: string, subscribe: boolean, sub: PushSub, since: Since | null = null): string {
  const type = subscribe ? 'subscribe' : 'unsubscribe';
  const head = `{"id":${JSON.stringify(id)},"type":"${type}","event":${JSON.stringify(sub.event)},"tags":${JSON.stringify(sub.tags)}`;
  return subscribe && since ? `${head}${writeSince(since)}}` : `${head}}`;
}

/** JSON of a value; `undefined` (which JSON has not) is sent as `null`, as in an array. */
function json(value: unknown): string {
  const text = JSON.stringify(value);
  return text === undefined ? 'null' : text;
}

/** Tags sorted and deduplicated, so equal tag sets compare equal. */
export function normalize(event: string, tags: readonly string[]): PushSub {
  return { event, tags: [...new Set(tags)].sort() };
}

/** An event name is a non-empty string. */
export function checkEventName(event: unknown): RtmError | null {
  if (typeof event !== 'string' || event === '') {
    return new RtmError(ErrorCodes.BadRequest, 'event name must be a non-empty string');
  }
  return null;
}

/** Tags are an array of strings. */
export function checkTags(tags: unknown): RtmError | null {
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
    return new RtmError(ErrorCodes.BadRequest, 'tags must be an array of strings');
  }
  return null;
}

/** JavaScript truthiness, as the JS client tests a reply's `data`. */
export function isTruthy(value: unknown): boolean {
  return Boolean(value);
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The error a truthy `data.error` stands for; `null` when it is falsy. */
function wireError(error: unknown): RtmError | null {
  if (!error) return null;
  if (isObject(error)) {
    const code = typeof error.code === 'string' ? error.code : ErrorCodes.HandlerError;
    const message = typeof error.message === 'string' ? error.message : '';
    return new RtmError(code, message);
  }
  if (typeof error === 'string') return new RtmError(ErrorCodes.HandlerError, error);
  return new RtmError(ErrorCodes.HandlerError, JSON.stringify(error));
}

/**
 * Parses a frame sent by a server. Anything that is neither a reply nor an
 * event is an `rtm/bad-request` error (the client reports it and ignores the frame).
 *
 * - A reply (`id` is a string) is an error when it has a top-level `error`
 *   object (a rejected `auth`), or when `data` is an object whose `error` is
 *   truthy: an object gives its `code` (default `rtm/handler-error`) and
 *   `message`, any other truthy value is `rtm/handler-error` with that value as
 *   the message (the `error`-key quirk).
 * - An event (`event` is a string) has an array `data`, or none (`[]`).
 * - Positions (ext): a reply's `streams` is kept as sent (read by the core);
 *   an event's `offset` and `epoch` (a valid one: 1–64 of `[0-9A-Za-z_-]`)
 *   make its position, with its `tag` and `push` when there. As the Rust
 *   core reads them, `tag`, `epoch` and `push` must be strings and `offset`
 *   a non-negative integer when present (not `null`), on any frame, or the
 *   frame is not valid.
 */
export function parseServerFrame(text: string): ServerFrame | RtmError {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return new RtmError(ErrorCodes.BadRequest, `server frame is not valid: ${(err as Error).message}`);
  }
  if (!isObject(raw)) return new RtmError(ErrorCodes.BadRequest, 'server frame is not valid: not an object');
  const { id, event, data } = raw;
  for (const key of ['tag', 'epoch', 'push'] as const) {
    const value = raw[key];
    if (value !== undefined && value !== null && typeof value !== 'string') {
      return new RtmError(ErrorCodes.BadRequest, `server frame is not valid: ${key} is not a string`);
    }
  }
  const offset = raw.offset;
  if (offset !== undefined && offset !== null && !(typeof offset === 'number' && Number.isInteger(offset) && offset >= 0)) {
    return new RtmError(ErrorCodes.BadRequest, 'server frame is not valid: offset is not a non-negative integer');
  }
  if (id !== undefined && id !== null) {
    if (typeof id !== 'string') return new RtmError(ErrorCodes.BadRequest, 'server frame is not valid: id is not a string');
    const top = raw.error;
    if (top !== undefined && top !== null) {
      if (!isObject(top)) return new RtmError(ErrorCodes.BadRequest, 'server frame is not valid: error is not an object');
      const code = typeof top.code === 'string' ? top.code : ErrorCodes.Internal;
      const message = typeof top.message === 'string' ? top.message : '';
      return { kind: 'reply', id, ok: false, error: new RtmError(code, message) };
    }
    if (isObject(data)) {
      const error = wireError(data.error);
      if (error) return { kind: 'reply', id, ok: false, error };
    }
    const streams = raw.streams === undefined ? null : raw.streams;
    return { kind: 'reply', id, ok: true, data: data === undefined ? null : data, streams };
  }
  if (event !== undefined && event !== null) {
    if (typeof event !== 'string') return new RtmError(ErrorCodes.BadRequest, 'server frame is not valid: event is not a string');
    let args: unknown[];
    if (data === undefined || data === null) args = [];
    else if (Array.isArray(data)) args = data;
    else return new RtmError(ErrorCodes.BadRequest, 'event data must be an array');
    const { tag, epoch, push } = raw as { tag?: string | null; epoch?: string | null; push?: string | null };
    const position: EventPosition | null =
      typeof offset === 'number' && typeof epoch === 'string' && isValidEpoch(epoch)
        ? { tag: tag ?? null, position: { offset, epoch }, push: push ?? null }
        : null;
    return { kind: 'event', event, args, position };
  }
  return new RtmError(ErrorCodes.BadRequest, 'server frame has neither id nor event');
}
