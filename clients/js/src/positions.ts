/**
 * Positions in streams (ext; docs/protocol.md, "Positions and recovery"), a
 * port of the Rust client core's `rtm-core/src/client/positions.rs` and of
 * the wire parts of `rtm-core/src/positions.rs`.
 *
 * Events with history are kept by the server in streams: a Push stream is one
 * (event, tag). A client that keeps its place in a stream sends it as
 * `since` with every subscribe, so that after a reconnect the server sends
 * what was missed (in order, once, before the reply) or says it cannot; the
 * same positions drop an event seen twice and notice one missed.
 */

/** A place in a stream: the offset of the last event had, under the stream's epoch. */
export interface StreamPosition {
  /** The offset of the last event had (the stream's first event is 1). */
  offset: number;
  /** The stream's epoch: 1–64 of `[0-9A-Za-z_-]`; a new one means the store lost the stream. */
  epoch: string;
}

/** A subscribe's `since`: for each tag listed, its position, or `null` when it has none yet. */
export type Since = Map<string, StreamPosition | null>;

/**
 * The tag of the user's stream (the events with history Published to the
 * user): an `auth`'s `since` and its reply's `streams` name it so.
 */
export const USER_STREAM = 'user';

/**
 * The event part of the user's stream's key (no event has it: names are
 * non-empty); its tag is {@link USER_STREAM}. A `resync` of the user's
 * stream has `event === ''` and `tag === 'user'`.
 */
export const USER_KEY = '';

/** Where an event a client received sits in its stream (the fields the server adds to a tracked stream's events). */
export interface EventPosition {
  /** The Push stream's tag (`null`: the user's stream, the events with history Published to the user). */
  tag: string | null;
  /** The event's offset and its stream's epoch. */
  position: StreamPosition;
  /** For a Push to several tags: the push's id, the same in each tag's stream. */
  push: string | null;
}

/** Where one stream of a subscribe stands once it is answered (a reply's `streams` entry). */
export interface StreamState {
  tag: string;
  position: StreamPosition;
  /** `null`: the client sent no position. `true`: every event after it was delivered. Else why none could be. */
  recovered: true | { reason: ResyncReason } | null;
}

/**
 * Why the events missed on a stream could not be recovered, as the wire says
 * it (an unknown reason reads as `gap`).
 *
 * - `epoch-changed`: the store lost the stream;
 * - `trimmed`: the history no longer has the oldest missed event;
 * - `too-many`: more were missed than the server recovers (default 300);
 * - `too-old`: older than the history keeps;
 * - `ahead`: the client's offset is past the stream's (the store lost recent events);
 * - `gap`: live events were lost while the history was read.
 */
export type ResyncReason = 'epoch-changed' | 'trimmed' | 'too-many' | 'too-old' | 'ahead' | 'gap';

const REASONS: readonly string[] = ['epoch-changed', 'trimmed', 'too-many', 'too-old', 'ahead', 'gap'];

/** The reason a wire `reason` names (an unknown or absent one: `gap`), as the Rust core reads it. */
export function parseReason(code: unknown): ResyncReason {
  return typeof code === 'string' && REASONS.includes(code) ? (code as ResyncReason) : 'gap';
}

/** Push ids remembered to show a Push to several tracked tags once. */
export const RECENT_PUSHES = 1024;

/** Longest epoch, in bytes (all of them ASCII). */
const MAX_EPOCH_BYTES = 64;

/** An epoch is 1–64 of `[0-9A-Za-z_-]`. */
export function isValidEpoch(epoch: string): boolean {
  return epoch.length >= 1 && epoch.length <= MAX_EPOCH_BYTES && /^[0-9A-Za-z_-]+$/.test(epoch);
}

/** `,"since":{…}` for a subscribe (or an `auth`, for the user's stream): each tag of `since`, sorted, with its position or `null`. */
export function writeSince(since: Since): string {
  const tags = [...since.keys()].sort();
  const parts = tags.map((tag) => {
    const position = since.get(tag) ?? null;
    const value = position === null ? 'null' : `{"offset":${position.offset},"epoch":${JSON.stringify(position.epoch)}}`;
    return `${JSON.stringify(tag)}:${value}`;
  });
  return `,"since":{${parts.join(',')}}`;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * Reads a reply's `streams` (`{"m1":{"offset":15,"epoch":"x1","recovered":true},…}`),
 * sorted by tag; a string says what is malformed. As the Rust core reads it:
 * `offset` a non-negative integer, `epoch` a string, `recovered` a boolean or
 * absent, `reason` a string or absent; other fields are ignored.
 */
export function parseStreams(raw: unknown): StreamState[] | string {
  const malformed = (why: string) => `the reply's streams are malformed (${why})`;
  if (!isObject(raw)) return malformed('not an object');
  const states: StreamState[] = [];
  for (const [tag, state] of Object.entries(raw)) {
    if (!isObject(state)) return malformed(`${JSON.stringify(tag)} is not an object`);
    const { offset, epoch, recovered, reason } = state;
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) return malformed(`the offset of ${JSON.stringify(tag)} is not a non-negative integer`);
    if (typeof epoch !== 'string') return malformed(`the epoch of ${JSON.stringify(tag)} is not a string`);
    if (recovered !== undefined && recovered !== null && typeof recovered !== 'boolean') return malformed(`recovered of ${JSON.stringify(tag)} is not a boolean`);
    if (reason !== undefined && reason !== null && typeof reason !== 'string') return malformed(`the reason of ${JSON.stringify(tag)} is not a string`);
    states.push({
      tag,
      position: { offset, epoch },
      recovered: recovered === undefined || recovered === null ? null : recovered ? true : { reason: parseReason(reason) },
    });
  }
  states.sort((a, b) => (a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
  return states;
}

/**
 * What to do with a positioned event:
 * - `deliver`: hand it to the application, it is the stream's next;
 * - `drop`: the application had it (or the stream is being resynced, and the recovery brings it);
 * - `gap`: drop it and subscribe again with the stream's position: events were missed before it.
 */
export type Verdict = 'deliver' | 'drop' | 'gap';

interface Stream {
  position: StreamPosition | null;
  /** A subscribe with `since` is on its way after a gap: events wait for it. */
  resyncing: boolean;
}

/** Every tracked stream's position, by (event, tag). */
export class Positions {
  private streams = new Map<string, Map<string, Stream>>();
  /** Push ids seen lately, oldest first, at most {@link RECENT_PUSHES}. */
  private recent: string[] = [];
  private recentSet = new Set<string>();

  /** `since` for a subscribe of `tags` of `event`: each tag's position, or `null` when it has none yet. */
  since(event: string, tags: readonly string[]): Since {
    const since: Since = new Map();
    for (const tag of tags) since.set(tag, this.streams.get(event)?.get(tag)?.position ?? null);
    return since;
  }

  /** `since` for an `auth`: the user's stream's position, or `null`. */
  userSince(): Since {
    return this.since(USER_KEY, [USER_STREAM]);
  }

  /** The position held in the stream (`event`, `tag`), or `null`. */
  position(event: string, tag: string): StreamPosition | null {
    const position = this.streams.get(event)?.get(tag)?.position;
    return position ? { ...position } : null;
  }

  /** A positioned event of `event` arrived (no tag: the user's stream). */
  handleEvent(event: string, at: EventPosition): Verdict {
    const stream = at.tag === null ? this.entry(USER_KEY, USER_STREAM) : this.entry(event, at.tag);
    const next = at.position;
    const had = stream.position;
    if (had !== null) {
      const sameEpoch = had.epoch === next.epoch;
      if (sameEpoch && next.offset <= had.offset) return 'drop';
      if (!(sameEpoch && next.offset === had.offset + 1)) {
        // Past a jump, while the recovery is on its way: it brings them.
        if (stream.resyncing) return 'drop';
        // A jump, or a new epoch (the store lost the stream): ask the
        // server, which recovers or says it cannot.
        stream.resyncing = true;
        return 'gap';
      }
      // The next one (while resyncing: the recovered ones come so).
    }
    stream.position = { offset: next.offset, epoch: next.epoch };
    if (at.push !== null && !this.rememberPush(at.push)) return 'drop';
    return 'deliver';
  }

  /** A subscribe's reply said where its streams are; returns the streams that could not be recovered, with why. */
  handleStreams(event: string, states: readonly StreamState[]): Array<{ tag: string; reason: ResyncReason }> {
    const lost: Array<{ tag: string; reason: ResyncReason }> = [];
    for (const state of states) {
      const stream = this.entry(event, state.tag);
      stream.position = { offset: state.position.offset, epoch: state.position.epoch };
      stream.resyncing = false;
      if (state.recovered !== null && state.recovered !== true) lost.push({ tag: state.tag, reason: state.recovered.reason });
    }
    return lost;
  }

  /** A resubscribe after a gap failed: events are taken again (the next jump asks again). */
  resyncFailed(event: string, tags: readonly string[]): void {
    const byTag = this.streams.get(event);
    if (!byTag) return;
    for (const tag of tags) {
      const stream = byTag.get(tag);
      if (stream) stream.resyncing = false;
    }
  }

  /** `tags` of `event` are unsubscribed: their positions are forgotten. */
  forget(event: string, tags: readonly string[]): void {
    const byTag = this.streams.get(event);
    if (!byTag) return;
    for (const tag of tags) byTag.delete(tag);
    if (!byTag.size) this.streams.delete(event);
  }

  /** Forgets every position (the client closed). */
  clear(): void {
    this.streams.clear();
  }

  /** How many streams have an entry (for tests and monitoring). */
  get size(): number {
    let n = 0;
    for (const byTag of this.streams.values()) n += byTag.size;
    return n;
  }

  /** How many push ids are remembered (at most {@link RECENT_PUSHES}). */
  get rememberedPushes(): number {
    return this.recent.length;
  }

  private entry(event: string, tag: string): Stream {
    let byTag = this.streams.get(event);
    if (!byTag) this.streams.set(event, (byTag = new Map()));
    let stream = byTag.get(tag);
    if (!stream) byTag.set(tag, (stream = { position: null, resyncing: false }));
    return stream;
  }

  /** Whether `push` is new (then remembered). */
  private rememberPush(push: string): boolean {
    if (this.recentSet.has(push)) return false;
    if (this.recent.length >= RECENT_PUSHES) {
      const old = this.recent.shift();
      if (old !== undefined) this.recentSet.delete(old);
    }
    this.recent.push(push);
    this.recentSet.add(push);
    return true;
  }
}
