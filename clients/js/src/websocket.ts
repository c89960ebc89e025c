/**
 * The WebSocket this client uses: the global one (browsers, Deno, Bun,
 * Node 22+), else the `ws` package (Node 18–21), loaded only then.
 */

/** What the client needs of a WebSocket: the standard API, and `ws`'s ping and pong when present. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'error' | 'close', listener: (event: any) => void): void;
  /** `ws` only: sends a WebSocket ping. Browsers cannot, so the heartbeat is off there. */
  ping?: () => void;
  /**
   * `ws` only: `pong` and `ping` events, signs that the server is alive;
   * `unexpected-response` (`(request, response)`), the HTTP answer of a
   * server that refused the upgrade, with its `statusCode`.
   */
  on?: (event: 'pong' | 'ping' | 'unexpected-response', listener: (...args: any[]) => void) => unknown;
}

/** A WebSocket constructor: `globalThis.WebSocket`, `ws`, or any compatible class. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The global WebSocket, else `ws` (a promise, as it is loaded on first use). */
export function defaultWebSocket(): WebSocketConstructor | Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof global === 'function') return global as WebSocketConstructor;
  return import('ws').then((mod: any) => {
    const ctor = mod.WebSocket ?? mod.default?.WebSocket ?? mod.default;
    if (typeof ctor !== 'function') throw new Error("the 'ws' package has no WebSocket export");
    return ctor as WebSocketConstructor;
  });
}

/**
 * Why `url` can never be connected to, or `null` when it looks like a
 * `ws://host[:port][/path]` or `wss://…` URL.
 */
export function badUrl(url: unknown): string | null {
  if (typeof url !== 'string') return `${String(url)} is not a URL (only ws:// and wss:// URLs are supported)`;
  const match = /^(wss?):\/\/([^/?#]*)/i.exec(url);
  if (!match) return `"${url}" is not a ws:// or wss:// URL (only ws:// and wss:// URLs are supported)`;
  const host = match[2] ?? '';
  if (!host || host.startsWith('@') || host.startsWith(':')) return `"${url}" has no host (only ws:// and wss:// URLs with a host are supported)`;
  try {
    new URL(url);
  } catch {
    return `"${url}" is not a valid URL (only ws:// and wss:// URLs are supported)`;
  }
  return null;
}
