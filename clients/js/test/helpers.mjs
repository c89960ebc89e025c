// Test helpers: the fixture server (rtm-fixture) started and stopped by the
// tests, raw WebSocket servers that go silent or stop reading, and bounded
// waits that fail loudly saying what was waited for.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The workspace root (clients/js/test/../../..). */
export const REPO = path.resolve(here, '../../..');
/** `RTM_FIXTURE_BIN`, else `$CARGO_TARGET_DIR/debug/rtm-fixture`, else `<repo>/target/debug/rtm-fixture`. */
export const FIXTURE_BIN = process.env.RTM_FIXTURE_BIN
  ? path.resolve(process.env.RTM_FIXTURE_BIN)
  : path.join(process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target'), 'debug', 'rtm-fixture');
/** Every wait fails after this. */
export const WAIT_MS = 10_000;

/** `promise`, or a loud failure after `ms` naming `what`. */
export async function within(what, promise, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `fn` every 5 ms until it returns a truthy value; fails after `ms`. */
export async function eventually(what, fn, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The rejection of `promise` (fails if it resolves), within the wait bound. */
export async function rejection(what, promise, ms = WAIT_MS) {
  try {
    const value = await within(what, promise, ms);
    assert.fail(`${what}: resolved with ${JSON.stringify(value)} instead of failing`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    if (/not within/.test(err?.message) && !err.code) throw err;
    return err;
  }
}

/**
 * Attaches to `promise` at once (so a rejection that comes while the test
 * awaits something else is not "unhandled") and resolves with its error;
 * fails if it resolves.
 */
export function failure(what, promise) {
  return promise.then(
    (value) => {
      throw new assert.AssertionError({ message: `${what}: resolved with ${JSON.stringify(value)} instead of failing` });
    },
    (err) => err,
  );
}

/** The next `type` event of a typed client, within the bound. */
export function next(client, type, what = `the "${type}" event`, ms = WAIT_MS) {
  return within(
    what,
    new Promise((resolve) => {
      const off = client.on(type, (value) => {
        off();
        resolve(value);
      });
    }),
    ms,
  );
}

/** A queue of values pushed by handlers, taken in order with a bound. */
export class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
  }

  push = (...args) => {
    const value = args.length === 1 ? args[0] : args;
    const waiter = this.waiters.shift();
    if (waiter) waiter(value);
    else this.items.push(value);
  };

  take(what = 'a value', ms = WAIT_MS) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return within(what, new Promise((resolve) => this.waiters.push(resolve)), ms);
  }
}

// ----- clients and servers made by a test: closed after it, pass or fail -----

const tracked = new Set();

/** Closes `thing` (a Client, an RtmClient, a raw server) after the current test. */
export function track(thing) {
  tracked.add(thing);
  return thing;
}

/** For `afterEach`: closes everything tracked, so a failed test leaves nothing reconnecting. */
export async function closeTracked() {
  const things = [...tracked];
  tracked.clear();
  for (const thing of things) {
    try {
      if (typeof thing.Close === 'function') thing.Close();
      else await thing.close();
    } catch {
      // already closed
    }
  }
}

// ----- processes: started here, killed by their PID only -----

const started = new Set();
function killStarted() {
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
process.on('exit', killStarted);

/** A free local port (the OS picks it; it is released before use). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `rtm-fixture --runtime tokio --listen 127.0.0.1:PORT [args]`, started by the tests. */
export class Fixture {
  constructor(args = []) {
    this.args = args;
    this.port = 0;
    this.url = '';
    this.child = null;
    this.output = '';
  }

  static async start(args = []) {
    const fixture = new Fixture(args);
    await fixture.start();
    return fixture;
  }

  /** Starts it (on `port`, or the port it had, or a free one); resolves once it listens. */
  async start(port = this.port) {
    assert.ok(
      fs.existsSync(FIXTURE_BIN),
      `no rtm-fixture at ${FIXTURE_BIN}: run \`cargo build -p conformance --bin rtm-fixture\` in ${REPO}, or set RTM_FIXTURE_BIN`,
    );
    const child = spawn(FIXTURE_BIN, ['--runtime', 'tokio', '--listen', `127.0.0.1:${port}`, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
    });
    started.add(child);
    this.child = child;
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      started.delete(child);
      resolve({ code, signal });
    }));
    let stdout = '';
    await within(
      `rtm-fixture to print "listening on"`,
      new Promise((resolve, reject) => {
        child.stdout.setEncoding('utf8').on('data', (chunk) => {
          stdout += chunk;
          this.output += chunk;
          const match = /listening on (ws:\/\/127\.0\.0\.1:(\d+)\/)/.exec(stdout);
          if (match) {
            this.url = match[1];
            this.port = Number(match[2]);
            resolve();
          }
        });
        child.stderr.setEncoding('utf8').on('data', (chunk) => {
          this.output += chunk;
        });
        child.exited.then(({ code, signal }) => reject(new Error(`rtm-fixture exited (code ${code}, signal ${signal}) before listening:\n${this.output}`)));
      }),
    ).catch((err) => {
      this.kill();
      throw err;
    });
  }

  get running() {
    return Boolean(this.child && this.child.exitCode === null && this.child.signalCode === null);
  }

  /** SIGTERM (a graceful shutdown: in-flight calls finish, every connection closed with 1001); waits for the exit. */
  async stop() {
    if (!this.running) return;
    process.kill(this.child.pid, 'SIGTERM');
    await within('rtm-fixture to exit after SIGTERM', this.child.exited).catch(async (err) => {
      await this.kill();
      throw err;
    });
  }

  /** SIGKILL: the server vanishes at once, as in a crash; waits for the exit. */
  async kill() {
    if (!this.running) return;
    process.kill(this.child.pid, 'SIGKILL');
    await within('rtm-fixture to exit after SIGKILL', this.child.exited);
  }
}

// ----- raw WebSocket servers that misbehave -----

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * A WebSocket server that completes the handshake, then never says anything
 * (no reply, no pong): `'silent'` keeps reading what it is sent, `'stalled'`
 * stops reading, so the client's unsent bytes pile up.
 */
export async function rawServer(mode) {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let head = '';
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? '';
      const accept = crypto.createHash('sha1').update(key + GUID).digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      if (mode === 'stalled') socket.pause();
      else socket.on('data', () => {});
    };
    socket.on('data', onData);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return track({
    url: `ws://127.0.0.1:${server.address().port}/`,
    connections: () => sockets.size,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  });
}

/**
 * A real HTTP server (node:http) on 127.0.0.1 that answers every WebSocket
 * upgrade with `server.answer`: an HTTP status (404: a wrong path) or
 * `'websocket'` (the handshake completed, then silence, as `rawServer`).
 * `upgrades` counts the upgrade requests; `dropAll()` drops the open
 * connections (the client sees the server gone).
 */
export async function httpServer(answer) {
  const sockets = new Set();
  const server = http.createServer((request, response) => {
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  const state = { answer, upgrades: 0 };
  server.on('upgrade', (request, socket) => {
    state.upgrades += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    if (state.answer === 'websocket') {
      const accept = crypto.createHash('sha1').update(request.headers['sec-websocket-key'] + GUID).digest('base64');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
      socket.on('data', () => {});
      return;
    }
    const status = state.answer;
    const body = `${http.STATUS_CODES[status] ?? 'Error'}\n`;
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return track(Object.assign(state, {
    url: `ws://127.0.0.1:${server.address().port}/`,
    dropAll: () => {
      for (const socket of sockets) socket.destroy();
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(resolve));
    },
  }));
}

/**
 * A TCP forwarder on 127.0.0.1 (node `net`), what a load balancer in front
 * of a server is (as `conformance::switch::Switch`): a client pointed at
 * `url` reaches the port `target` (`null`: every new connection is closed
 * at once, as if nothing answered). `cut()` ends every connection it carries
 * now, both sides destroyed at once, so the client sees its connection lost
 * (1006) without any close frame; `pointTo(port | null)` changes where new
 * connections go; `carried()` counts the live ones, `accepted` all of them.
 */
export async function tcpProxy(target) {
  const pairs = new Set();
  const state = { target, accepted: 0 };
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    state.accepted += 1;
    if (state.target === null) {
      socket.destroy();
      return;
    }
    const upstream = net.connect({ host: '127.0.0.1', port: state.target });
    upstream.on('error', () => {});
    const pair = [socket, upstream];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      socket.destroy();
      upstream.destroy();
    };
    socket.on('close', end);
    upstream.on('close', end);
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const cut = () => {
    for (const pair of [...pairs]) {
      pairs.delete(pair);
      for (const socket of pair) socket.destroy();
    }
  };
  return track(Object.assign(state, {
    url: `ws://127.0.0.1:${server.address().port}/`,
    carried: () => pairs.size,
    cut,
    pointTo: (port) => {
      state.target = port;
    },
    close: () => {
      state.target = null;
      cut();
      return new Promise((resolve) => server.close(resolve));
    },
  }));
}

/** A URL nothing listens on: port 1 (tcpmux), outside the ephemeral range, refused at once. */
export const DEAD_URL = 'ws://127.0.0.1:1/';
