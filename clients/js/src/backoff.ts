/** The reconnect schedule: the delay before each attempt, with seeded jitter. */

/** How a backoff delay `d` is randomized, so that many clients dropped at once do not reconnect in lockstep. */
export type Jitter = 'none' | 'full' | 'equal';

/**
 * How the client reconnects after a connection it did not close is lost.
 *
 * - `{ kind: 'never' }`: a lost connection closes the client.
 * - `{ kind: 'fixed', delayMs }`: the same delay before every attempt (the JS client's `reconnectDelayMs`).
 * - `{ kind: 'backoff', … }`: `initialMs * factor^(attempt - 1)`, capped at `maxMs`, then `jitter`:
 *   `'none'` exactly that, `'full'` uniform in `[0, d]`, `'equal'` uniform in `[d/2, d]`.
 */
export type Reconnect =
  | { kind: 'never' }
  | { kind: 'fixed'; delayMs: number }
  | { kind: 'backoff'; initialMs: number; maxMs: number; factor: number; jitter: Jitter };

/** A small seeded PRNG (mulberry32): reproducible schedules in tests. */
export class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [0, max]. */
  below(max: number): number {
    return max <= 0 ? 0 : Math.min(max, this.next() * (max + 1e-9));
  }
}

/** The delay before reconnect `attempt` (1 for the first), or `null` to give up. */
export function reconnectDelay(reconnect: Reconnect, attempt: number, rng: Prng): number | null {
  switch (reconnect.kind) {
    case 'never':
      return null;
    case 'fixed':
      return Math.max(0, reconnect.delayMs);
    case 'backoff': {
      const { initialMs, maxMs, factor, jitter } = reconnect;
      const growth = Math.pow(Math.max(1, factor), Math.max(0, attempt - 1));
      const base = Math.max(0, Math.min(maxMs, initialMs * growth));
      switch (jitter) {
        case 'none':
          return base;
        case 'full':
          return rng.below(base);
        case 'equal':
          return base / 2 + rng.below(base - base / 2);
      }
    }
  }
}
