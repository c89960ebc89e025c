// The chat example in a real browser (Debian's Chromium through
// puppeteer-core): users in isolated browser contexts sign in, talk in a
// room and in direct messages, the phone-width layout is used, and the
// server is killed and restarted under the open pages. Then the rules of
// issue 17 for the page: sign-in keys, text that imitates another message,
// typing through a 300 ms round trip, drafts per conversation, a flood of
// room messages and one of DMs from throwaway names.
//
// Room history: a page whose socket dropped gets the room messages sent
// meanwhile, once, in order, after its client reconnects by itself; after a
// restart (history in memory lost) the room shows a notice.
//
// A scenario runs two chat servers sharing a Redis (when redis-server is
// installed): a DM and a room message across servers, a page dropped while
// the other server's user writes (recovered from Redis), and Redis killed
// and restarted under the open pages.
//
// Run: `npm ci && npm test` in this folder, after
// `cargo build -p rtm-tokio --example chat` (CHAT_BIN overrides the binary).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';
import WebSocket from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHAT_BIN = process.env.CHAT_BIN
  ? path.resolve(process.env.CHAT_BIN)
  : path.resolve(here, '../../../../target/debug/examples/chat');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => fs.existsSync(p));
const DELAY_PROXY = path.resolve(here, '../../../../conformance/tools/delay-proxy.py');
const SHOTS = path.join(here, 'screenshots');
const WAIT_MS = 10_000; // every wait fails loudly after this
const DESKTOP = { width: 1100, height: 720 };
const PHONE = { width: 390, height: 844 };

// ----- processes: started here, killed by their PID only -----

// Every process this file started, so none outlives it: on a normal exit, or
// when the test runner stops it (timeout, Ctrl-C).
const started = new Set();
function killStarted() {
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}
process.on('exit', killStarted);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killStarted();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

function track(child) {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// SIGKILL to a process this file started (by its PID); waits for it to be gone.
async function killChild(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  process.kill(child.pid, 'SIGKILL');
  await child.exited;
}

class Chat {
  constructor(port, args = []) {
    this.port = port;
    this.args = args;
    this.url = `http://127.0.0.1:${port}/`;
    this.child = null;
    this.output = ''; // stdout and stderr of every run, for failure reports
  }

  // Starts the binary; resolves once it prints "chat on http://".
  async start() {
    assert.ok(fs.existsSync(CHAT_BIN), `no chat binary at ${CHAT_BIN}: run \`cargo build -p rtm-tokio --example chat\` or set CHAT_BIN`);
    const child = track(spawn(CHAT_BIN, ['--listen', `127.0.0.1:${this.port}`, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: 'info' },
    }));
    this.child = child;
    child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`chat did not print "chat on http://" within ${WAIT_MS} ms:\n${this.output}`)), WAIT_MS);
      const read = (chunk) => {
        this.output += chunk;
        if (this.output.includes(`chat on http://127.0.0.1:${this.port}/`)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.setEncoding('utf8').on('data', read);
      child.stderr.setEncoding('utf8').on('data', read);
      child.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`chat exited (code ${code}, signal ${signal}) before serving:\n${this.output}`));
      });
    });
  }

  kill() { return killChild(this.child); }
}

// A throwaway redis-server on a port of our own, killed by its PID only.
class Redis {
  constructor(port) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}/`;
    this.child = null;
  }

  async start() {
    const child = track(spawn(REDIS_SERVER, ['--bind', '127.0.0.1', '--port', String(this.port), '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    this.child = child;
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    let output = '';
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server not ready within ${WAIT_MS} ms:\n${output}`)), WAIT_MS);
      child.stdout.setEncoding('utf8').on('data', (chunk) => {
        output += chunk;
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code}):\n${output}`));
      });
    });
  }

  kill() { return killChild(this.child); }
}

// conformance/tools/delay-proxy.py in front of a chat: every chunk waits
// `delay` seconds each way (0.15: a 300 ms round trip). Killed by its PID.
class DelayProxy {
  constructor(port, upstream, delay) {
    this.port = port;
    this.upstream = upstream;
    this.delay = delay;
    this.url = `http://127.0.0.1:${port}/`;
    this.child = null;
  }

  async start(delay = this.delay) {
    this.delay = delay;
    const child = track(spawn('python3', [DELAY_PROXY, String(this.port), String(this.upstream), String(delay)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    }));
    this.child = child;
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    let output = '';
    child.stderr.setEncoding('utf8').on('data', (chunk) => { output += chunk; });
    // Ready once it accepts a connection.
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`delay-proxy exited (${child.exitCode}):\n${output}`);
      const ok = await new Promise((resolve) => {
        const socket = net.connect(this.port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
        socket.once('error', () => resolve(false));
      });
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`delay-proxy not listening within ${WAIT_MS} ms:\n${output}`);
      await sleep(50);
    }
  }

  kill() { return killChild(this.child); }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ----- a raw RTM peer in Node (the `ws` package): other users, floods -----

class RawError extends Error {
  constructor(error) {
    super(error?.message || 'error');
    this.code = error?.code;
  }
}

class Raw {
  constructor(port) {
    this.url = `ws://127.0.0.1:${port}/rtm`;
    this.nextId = 1;
    this.waiting = new Map();
    this.events = [];
    this.closed = null;
  }

  // Opens, signs in with `authArgs` (the auth frame's data); rejects with the server's error.
  static async signIn(port, authArgs) {
    const raw = new Raw(port);
    await raw.open();
    try {
      raw.authData = await raw.request({ type: 'auth', data: authArgs });
    } catch (err) {
      raw.close();
      throw err;
    }
    return raw;
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = (this.ws = new WebSocket(this.url, { perMessageDeflate: false }));
      ws.once('open', resolve);
      ws.once('error', reject);
      ws.on('error', () => {});
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: String(reason) };
        for (const waiter of this.waiting.values()) waiter.reject(new RawError({ code: 'closed', message: `closed ${code} ${reason}` }));
        this.waiting.clear();
        reject(new Error(`closed ${code} before open`));
      });
      ws.on('message', (data) => this.handle(JSON.parse(String(data))));
    });
  }

  handle(frame) {
    if (frame.id === undefined) {
      this.events.push(frame);
      return;
    }
    const waiter = this.waiting.get(frame.id);
    if (!waiter) return;
    this.waiting.delete(frame.id);
    if (frame.error) waiter.reject(new RawError(frame.error));
    else if (frame.data && typeof frame.data === 'object' && frame.data.error) waiter.reject(new RawError(frame.data.error));
    else waiter.resolve(frame.data);
  }

  request(body) {
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, ...body }));
    });
  }

  call(fn, ...args) { return this.request({ type: 'invoke', function: fn, data: args }); }

  close() { this.ws?.terminate(); }
}

// ----- the browser: one for every scenario, each user in a context of its own -----

let browser = null;
let profile = null;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rtm-chat-e2e-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Pages of other contexts keep their timers: they stand for other people's machines.
      '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
    protocolTimeout: 30_000,
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

// A page for `who` on `url`; page errors, failed requests and console errors
// go to `problems` (none expected). The page's WebSockets are recorded
// (frames sent, close codes, events received by name) in `window.__ws`.
async function openPage(context, who, url, problems) {
  const page = await context.newPage();
  page.who = who;
  page.chatUrl = url;
  page.setDefaultTimeout(WAIT_MS);
  await page.setViewport(DESKTOP);
  await page.evaluateOnNewDocument(() => {
    const Native = window.WebSocket;
    const record = (window.__ws = { sockets: [], sent: [], closes: [], events: {} });
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        record.sockets.push(this);
        this.addEventListener('close', (e) => record.closes.push(e.code));
        this.addEventListener('message', (e) => {
          const name = /^\{"event":"([^"]+)"/.exec(e.data)?.[1];
          if (name) record.events[name] = (record.events[name] || 0) + 1;
        });
      }

      send(data) {
        if (record.sent.length < 5000) record.sent.push(String(data));
        super.send(data);
      }
    };
  });
  page.on('pageerror', (err) => problems.push(`${who}: page error: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400) problems.push(`${who}: ${res.status()} for ${res.url()}`);
  });
  // Everything the page loads comes from the chat server itself (no CDN, no network).
  const origin = new URL(url).origin;
  page.on('request', (req) => {
    if (new URL(req.url()).origin !== origin) problems.push(`${who}: a request outside the chat server: ${req.url()}`);
  });
  page.on('console', (msg) => {
    // The browser reports each refused WebSocket while a server is down: expected.
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) {
      problems.push(`${who}: console error: ${msg.text()}`);
    }
  });
  return page;
}

// Subtests run in order; after a failure the rest are skipped, not left to time out.
function stepper(t) {
  const run = { failed: false };
  run.step = (name, fn) => t.test(name, async (st) => {
    if (run.failed) return st.skip('an earlier step failed');
    try {
      await fn(st);
    } catch (err) {
      run.failed = true;
      throw err;
    }
  });
  return run;
}

// ----- page helpers -----

// Waits for `fn(...args)` to be truthy in the page; fails saying who waited for what.
async function waitFor(page, what, fn, ...args) {
  try {
    return await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 50 }, ...args);
  } catch (err) {
    const state = await page.evaluate(() => ({
      status: document.querySelector('#status')?.textContent,
      banner: document.querySelector('#banner')?.hidden ? '' : document.querySelector('#banner')?.textContent.trim(),
      error: document.querySelector('#error')?.textContent,
      title: document.querySelector('#title')?.textContent,
      login: document.querySelector('#login')?.hidden ? '' : document.querySelector('#login-error')?.textContent,
    })).catch(() => ({}));
    throw new Error(`${page.who}: ${what}: not within ${WAIT_MS} ms (${err.message}); page: ${JSON.stringify(state)}`);
  }
}

// Clicks the element showing `text`, as a user would (a real mouse click).
// An entry of the side bar may be redrawn (presence) between finding and
// clicking it: then it is found again.
async function clickOn(page, selector, text) {
  for (let attempt = 1; ; attempt++) {
    try {
      await (await element(page, selector, text)).click();
      return;
    } catch (err) {
      if (attempt >= 5 || !/detached|not clickable/i.test(String(err && err.message))) throw err;
    }
  }
}

// The visible element matching `selector` whose text is `text`, as a handle.
async function element(page, selector, text) {
  const handle = await waitFor(page, `"${text}" in ${selector}`, (selector, text) => [...document.querySelectorAll(selector)]
    .find((el) => el.textContent.trim() === text && el.getClientRects().length > 0), selector, text);
  return handle.asElement();
}

async function signIn(page, name) {
  await page.goto(page.chatUrl, { waitUntil: 'load', timeout: WAIT_MS });
  await waitFor(page, 'the sign-in form', () => !document.querySelector('#login').hidden);
  await page.$eval('#login-name', (input) => { input.value = ''; });
  await page.type('#login-name', name);
  await page.keyboard.press('Enter');
  await waitOnline(page);
  assert.equal(await page.$eval('#me-name', (el) => el.textContent), name);
}

async function waitOnline(page) {
  await waitFor(page, 'status "online" and no banner', () => document.querySelector('#status').textContent === 'online'
    && document.querySelector('#banner').hidden);
}

// Waits for the user's own message `text` to show in `state` ('sending',
// 'waiting', 'failed', or '' once sent).
async function waitOwn(page, text, state) {
  await waitFor(page, `"${text}" ${state || 'sent'}`, (text, state) => [...document.querySelectorAll('#log li.msg.mine')]
    .some((li) => li.querySelector('.text').textContent === text
      && (['sending', 'waiting', 'failed'].find((s) => li.classList.contains(s)) || '') === state), text, state);
}

// Types a message and sends it with Enter; the box empties at once, and the
// message shows as sent once the server took it.
async function send(page, text) {
  await page.type('#text', text);
  await page.keyboard.press('Enter');
  assert.equal(await page.$eval('#text', (box) => box.value), '', `${page.who}: the box not cleared on send`);
  await waitFor(page, `"${text}" sent`, (text) => [...document.querySelectorAll('#log li.msg.mine')]
    .some((li) => li.querySelector('.text').textContent === text && !/sending|waiting|failed/.test(li.className)), text);
}

async function waitForMessage(page, from, text) {
  await waitFor(page, `message "${text}" from ${from}`, (from, text) => [...document.querySelectorAll('#log li.msg')]
    .some((li) => li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text), from, text);
}

// How many messages from `from` with this text the open conversation shows.
const countMessages = (page, from, text) => page.$$eval('#log li.msg', (items, from, text) => items
  .filter((li) => li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text).length, from, text);

const title = (page) => page.$eval('#title', (el) => el.textContent);
const names = (page, selector) => page.$$eval(selector, (items) => items.map((el) => el.textContent.trim()));

async function shot(page, name, viewport) {
  if (viewport) await page.setViewport(viewport);
  await page.screenshot({ path: path.join(SHOTS, name) });
}

// Opens the Requests list (collapsed by default) and the request from `name`.
async function openRequest(page, name) {
  await waitFor(page, `a request from ${name}`, (name) => !document.querySelector('#requests').hidden
    && [...document.querySelectorAll('#request-list li .name')].some((el) => el.textContent === name), name);
  if (!(await page.$eval('#requests', (el) => el.open))) await page.click('#requests summary');
  await clickOn(page, '#request-list li .name', name);
  await waitFor(page, `the DM with ${name} open`, (name) => document.querySelector('#title').textContent === '@ ' + name, name);
}

// ----- room history: a dropped connection, and what it missed -----

// Cuts the page's connection as a network drop does: the browser goes
// offline (no reconnect gets through) and the page's open WebSocket is
// closed under its client. The client is not replaced (no new sign-in): it
// retries by itself, and gets through once `reconnect(page)` is called.
// Marks the page, to tell afterwards that it was not reloaded.
async function dropConnection(page) {
  await page.evaluate(() => {
    window.__beforeDrop = { client, sockets: window.__ws.sockets.length, sent: window.__ws.sent.length };
  });
  await page.setOfflineMode(true);
  await page.evaluate(() => window.__ws.sockets.at(-1).close());
  await waitFor(page, 'the disconnect banner after the drop', () => !document.querySelector('#banner').hidden
    && /Disconnected from the server/.test(document.querySelector('#banner').textContent));
}

// Back online: the page's client reconnects by itself (the page asks it to
// retry at once when the browser says it is online).
async function reconnect(page) {
  await page.setOfflineMode(false);
  await waitOnline(page);
}

// What the dropped page did since `dropConnection`: the same client, not
// reloaded, on a new socket; and the room subscriptions it sent on it.
const sinceDrop = (page) => page.evaluate(() => ({
  sameClient: window.__beforeDrop?.client === client,
  newSockets: window.__ws.sockets.length - window.__beforeDrop.sockets,
  subscribes: window.__ws.sent.slice(window.__beforeDrop.sent).map((f) => JSON.parse(f))
    .filter((f) => f.type === 'subscribe' && f.event === 'room-message'),
}));

// The texts of the messages from `from` in the open conversation, in order.
const textsFrom = (page, from) => page.$$eval('#log li.msg', (items, from) => items
  .filter((li) => li.querySelector('.from')?.textContent === from).map((li) => li.querySelector('.text').textContent), from);

// The notices of the open conversation (messages that could not be recovered).
const notices = (page) => page.$$eval('#log li.notice', (items) => items.map((li) => li.textContent));

// ----- the scenarios -----

test('two users chat in a real browser, on a desktop and a phone, across a server restart', { timeout: 60_000 }, async (t) => {
  const chat = new Chat(await freePort());
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  const raws = [];
  try {
    await chat.start();
    // Two users, each in an isolated browser context (own storage, own cookies).
    const aliceContext = await browser.createBrowserContext();
    const bobContext = await browser.createBrowserContext();
    contexts.push(aliceContext, bobContext);
    const open = (who, context) => openPage(context, who, chat.url, problems);
    const alice = await open('alice', aliceContext);
    const bob = await open('bob', bobContext);
    let aliceTab = null; // a second tab signed in as alice, kept through the restart

    await step('both sign in, land in # lobby and see each other online; the name is bound to a key', async () => {
      await signIn(alice, 'alice');
      await signIn(bob, 'bob');
      for (const page of [alice, bob]) {
        assert.equal(await title(page), '# lobby');
        await element(page, '#online li .name', page === alice ? 'bob' : 'alice');
        // The key the server gave, kept per name for the other tabs of this browser.
        const key = await page.evaluate((name) => localStorage.getItem('rtm-chat-key:' + name), page.who);
        assert.match(key || '', /^[0-9a-f]{32}$/, `${page.who}: no key stored`);
      }
      // The favicon is served (the page links /favicon.svg; /favicon.ico is asked unasked).
      const icon = await alice.evaluate(async () => {
        const res = await fetch('/favicon.ico');
        return [res.status, res.headers.get('content-type')];
      });
      assert.deepEqual(icon, [200, 'image/svg+xml']);
      // The page runs on @rtm/client's browser bundle, served by the chat itself.
      const client = await alice.evaluate(() => [typeof RTM.Client, typeof RTM.RtmClient, [...document.scripts].map((s) => s.getAttribute('src'))]);
      assert.deepEqual(client, ['function', 'function', ['/rtm-client.js', '/chat.js']]);
    });

    await step('presence: someone arriving and leaving is added and removed (diffs)', async () => {
      const dora = await Raw.signIn(chat.port, ['dora']);
      raws.push(dora);
      await dora.call('hello');
      await element(alice, '#online li .name', 'dora');
      dora.close();
      await waitFor(alice, 'dora gone from the list', () => ![...document.querySelectorAll('#online li .name')].some((el) => el.textContent === 'dora'));
      assert.ok((await alice.evaluate(() => window.__ws.events.presence || 0)) >= 2, 'no presence events');
    });

    await step('a room message each way', async () => {
      await send(alice, 'hello bob, from alice in the lobby');
      await waitForMessage(bob, 'alice', 'hello bob, from alice in the lobby');
      await send(bob, 'hi alice <b>not bold</b>');
      await waitForMessage(alice, 'bob', 'hi alice <b>not bold</b>');
    });

    await step('a DM started by typing @bob; bob has no conversation with alice: a request, opened and answered', async () => {
      await alice.type('#join-name', '@bob');
      await alice.keyboard.press('Enter');
      await waitFor(alice, 'the DM with bob open', () => document.querySelector('#title').textContent === '@ bob');
      await send(alice, 'psst, a direct message');
      // Bob never talked with alice: the DM waits in Requests (collapsed), not as an unread conversation.
      await waitFor(bob, 'one request', () => !document.querySelector('#requests').hidden
        && document.querySelector('#requests-count').textContent === '1' && !document.querySelector('#requests').open);
      assert.equal(await bob.$eval('#menu-badge', (el) => el.hidden), true, 'a request counted as unread');
      await shot(bob, 'desktop-1100-request.png');
      await openRequest(bob, 'alice');
      await waitForMessage(bob, 'alice', 'psst, a direct message');
      assert.equal(await bob.$eval('#requests', (el) => el.hidden), true, 'the request still listed once opened');
      // Point 9: what is not delivered, said in the DM view.
      assert.match(await bob.$eval('#view-note', (el) => (el.hidden ? '' : el.textContent)), /Messages sent while alice is offline are not delivered later/);
      await send(bob, 'got it, answering in private');
      await waitForMessage(alice, 'bob', 'got it, answering in private');
    });

    await step('a DM to a name that is not online here, typed in "message a name"', async () => {
      await bob.type('#dm-name', 'carol');
      await bob.keyboard.press('Enter');
      await waitFor(bob, 'the DM with carol open', () => document.querySelector('#title').textContent === '@ carol');
      const note = await bob.$eval('#title-note', (el) => el.textContent);
      assert.match(note, /not online/);
      assert.match(await bob.$eval('#view-note', (el) => el.textContent), /carol is offline are not delivered later/);
      await send(bob, 'carol, are you there?');
      await waitForMessage(bob, 'bob', 'carol, are you there?');
    });

    await step('a bad room name is refused, and the error goes when the name is edited', async () => {
      await bob.type('#join-name', 'no spaces');
      await bob.keyboard.press('Enter');
      await waitFor(bob, 'the room-name error', () => /room name/.test(document.querySelector('#side-error').textContent));
      await bob.keyboard.press('Backspace');
      await waitFor(bob, 'the error gone after an edit', () => document.querySelector('#side-error').textContent === '');
      await bob.$eval('#join-name', (input) => { input.value = ''; });
      await clickOn(bob, '#rooms li .name', '# lobby');
      assert.equal(await title(bob), '# lobby');
      assert.equal(await bob.$eval('#view-note', (el) => el.hidden), true, 'the DM note shown in a room');
    });

    await step('another browser cannot take a name in use: the sign-in form says so', async () => {
      const context = await browser.createBrowserContext();
      contexts.push(context);
      const mallory = await open('mallory', context);
      await mallory.setViewport(PHONE);
      await mallory.goto(chat.url, { waitUntil: 'load', timeout: WAIT_MS });
      await waitFor(mallory, 'the sign-in form', () => !document.querySelector('#login').hidden);
      // What sign-in protects and what it does not, stated by the form.
      const about = await mallory.$eval('#login-about', (el) => el.textContent.replace(/\s+/g, ' '));
      assert.match(about, /cannot be taken by another browser/);
      assert.match(about, /no password/);
      await mallory.type('#login-name', 'alice');
      await mallory.keyboard.press('Enter');
      await waitFor(mallory, 'the name-taken message on the form', () => !document.querySelector('#login').hidden
        && /“alice” is in use in another browser/.test(document.querySelector('#login-error').textContent));
      await shot(mallory, 'phone-390-sign-in-taken.png');
      await context.close();
      contexts.pop();
    });

    await step('another tab of the same browser is offered the name; it may be someone else, or the same name (the key is shared)', async () => {
      const tab = await open('alice-tab-2', aliceContext);
      await tab.goto(chat.url, { waitUntil: 'load', timeout: WAIT_MS });
      await waitFor(tab, 'the sign-in form', () => !document.querySelector('#login').hidden);
      assert.equal(await tab.$eval('#login-name', (input) => input.value), 'alice');
      await shot(tab, 'phone-390-sign-in.png', PHONE);
      await tab.setViewport(DESKTOP);
      await signIn(tab, 'carol');
      await waitFor(alice, 'carol online', () => [...document.querySelectorAll('#online li .name')].some((el) => el.textContent === 'carol'));
      await tab.close();
      aliceTab = await open('alice-tab-3', aliceContext);
      await signIn(aliceTab, 'alice'); // signed in with the key alice's first tab stored
      const auth = await aliceTab.evaluate(() => JSON.parse(window.__ws.sent.find((f) => f.includes('"type":"auth"'))).data);
      assert.deepEqual(auth, ['alice', await aliceTab.evaluate(() => localStorage.getItem('rtm-chat-key:alice'))]);
      await alice.bringToFront(); // a background tab draws no frames: clicks would wait on it
      // A reload keeps this tab's user and its conversation, and signs in with the key.
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitOnline(alice);
      assert.equal(await alice.$eval('#me-name', (el) => el.textContent), 'alice');
      assert.equal(await title(alice), '@ bob');
      await waitForMessage(alice, 'bob', 'got it, answering in private');
      const reloadAuth = await alice.evaluate(() => JSON.parse(window.__ws.sent.find((f) => f.includes('"type":"auth"'))).data);
      assert.equal(reloadAuth.length, 2, 'no key sent on reload');
      await clickOn(alice, '#rooms li .name', '# lobby');
      await shot(alice, 'desktop-1100.png');
    });

    await step('on a phone (390 × 844) the message box takes the width, the rooms are a drawer', async () => {
      await alice.setViewport(PHONE);
      await waitFor(alice, 'the side bar out of the way', () => document.querySelector('#side').getBoundingClientRect().right <= 0);
      const layout = await alice.evaluate(() => {
        const box = (sel) => document.querySelector(sel).getBoundingClientRect();
        return {
          text: box('#text').width,
          sideRight: box('#side').right,
          menu: box('#menu').width,
          scrollWidth: document.documentElement.scrollWidth,
        };
      });
      assert.ok(layout.text >= 0.7 * PHONE.width, `message box ${layout.text} px wide of ${PHONE.width}`);
      assert.ok(layout.sideRight <= 0, `side bar visible while closed (right edge at ${layout.sideRight})`);
      assert.ok(layout.menu > 0, 'no menu button');
      assert.ok(layout.scrollWidth <= PHONE.width, `page scrolls sideways (${layout.scrollWidth} px)`);
      await shot(alice, 'phone-390.png');
      // The drawer opens, lists the rooms, and closes on a choice.
      await alice.click('#menu');
      await waitFor(alice, 'the drawer open', () => document.querySelector('#side').getBoundingClientRect().left >= 0);
      await shot(alice, 'phone-390-drawer.png');
      await clickOn(alice, '#rooms li .name', '# lobby');
      await waitFor(alice, 'the drawer closed', () => document.querySelector('#side').getBoundingClientRect().right <= 0);
      await send(alice, 'sent from a phone');
      await waitForMessage(bob, 'alice', 'sent from a phone');
      await alice.setViewport(DESKTOP);
    });

    await step('server killed: both pages say so, the online list shows as stale; a DM sent meanwhile waits, the box clears', async () => {
      await chat.kill();
      for (const page of [alice, bob]) {
        await waitFor(page, 'the disconnect banner', () => !document.querySelector('#banner').hidden
          && /Disconnected from the server\. Retrying/.test(document.querySelector('#banner').textContent));
        // Point 4 / 9: the list is not updated while disconnected, and says so.
        await waitFor(page, 'the online list marked stale', () => document.querySelector('#online').classList.contains('stale')
          && /may be out of date/.test(document.querySelector('#people-note').textContent));
      }
      // Point 8: a DM typed while disconnected goes to the DM, though the user moved on to the lobby.
      await clickOn(alice, '#online li .name', 'bob');
      assert.equal(await title(alice), '@ bob');
      await alice.type('#text', 'typed while the server was down');
      await alice.keyboard.press('Enter');
      assert.equal(await alice.$eval('#text', (box) => box.value), '', 'the box not cleared');
      await waitOwn(alice, 'typed while the server was down', 'waiting');
      await shot(alice, 'desktop-1100-disconnected.png');
      await clickOn(alice, '#rooms li .name', '# lobby');
      await alice.type('#text', 'a lobby draft, not sent');
      await shot(alice, 'phone-390-disconnected.png', PHONE);
      await alice.setViewport(DESKTOP);
      // No history: a DM reaches only who is connected when it is sent. So
      // alice stays cut off (the browser offline) until bob is back.
      await alice.setOfflineMode(true);
    });

    await step('server restarted on the same port: both reconnect; the waiting DM goes to the DM by itself; the lobby draft stays', async () => {
      await chat.start();
      await waitOnline(bob);
      await alice.setOfflineMode(false); // the page retries at once when the browser is back online
      await waitOnline(alice);
      await waitFor(alice, 'the list no longer stale', () => !document.querySelector('#online').classList.contains('stale'));
      assert.equal(await alice.$eval('#text', (box) => box.value), 'a lobby draft, not sent');
      await clickOn(bob, '#online li .name', 'alice');
      await waitForMessage(bob, 'alice', 'typed while the server was down');
      assert.equal(await countMessages(bob, 'alice', 'typed while the server was down'), 1);
      await clickOn(bob, '#rooms li .name', '# lobby');
      assert.equal(await countMessages(bob, 'alice', 'typed while the server was down'), 0, 'the DM went to the lobby');
      await send(bob, 'welcome back');
      await waitForMessage(alice, 'bob', 'welcome back');
      await element(alice, '#online li .name', 'bob');
      await clickOn(alice, '#online li .name', 'bob');
      await waitOwn(alice, 'typed while the server was down', '');
      // The restarted server knew no name: alice's two tabs signed in again
      // with the old key; the first got a new one, the other used it (after
      // a "name-taken", when they raced). Neither was signed out.
      await waitOnline(aliceTab);
      assert.equal(await aliceTab.$eval('#me-name', (el) => el.textContent), 'alice');
      const lastKey = (page) => page.evaluate(() => window.__ws.sent.filter((f) => f.includes('"type":"auth"')).map((f) => JSON.parse(f).data[1]).at(-1));
      const stored = await alice.evaluate(() => localStorage.getItem('rtm-chat-key:alice'));
      assert.ok([await lastKey(alice), await lastKey(aliceTab)].includes(stored), 'the second tab back did not sign in with the key the first stored');
      await aliceTab.close();
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- chat output ---\n${chat.output}`);
    for (const raw of raws) raw.close();
    for (const context of contexts) await context.close().catch(() => {});
    await chat.kill();
  }
});

test('room history: a page whose socket dropped gets the room messages sent meanwhile, once, in order; after a restart (history in memory lost) a notice', { timeout: 60_000 }, async (t) => {
  const chat = new Chat(await freePort());
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  try {
    await chat.start();
    contexts.push(await browser.createBrowserContext(), await browser.createBrowserContext());
    const alice = await openPage(contexts[0], 'alice', chat.url, problems);
    const bob = await openPage(contexts[1], 'bob', chat.url, problems);

    await step('alice and bob in # lobby; alice\'s client keeps its position in the room', async () => {
      await signIn(alice, 'alice');
      await signIn(bob, 'bob');
      await send(bob, 'before the drop');
      await waitForMessage(alice, 'bob', 'before the drop');
      const position = await alice.evaluate(() => client.position('room-message', 'room:lobby'));
      assert.ok(Number.isInteger(position?.offset) && position.offset >= 1 && typeof position.epoch === 'string',
        `no position in room:lobby: ${JSON.stringify(position)}`);
      // Without --redis the history is in the server's memory: still no cluster.
      assert.deepEqual(await alice.evaluate(() => state.server), { cluster: false, broker: 'none', reason: null });
      assert.equal(await alice.$eval('#people-note', (el) => el.textContent), 'online');
    });

    await step('alice\'s socket drops while bob sends 3 messages: after its own reconnect her page shows them once, in order, with no reload', async () => {
      const t0 = Date.now();
      await dropConnection(alice);
      const missed = ['missed while away 1', 'missed while away 2', 'missed while away 3'];
      for (const text of missed) await send(bob, text);
      await reconnect(alice);
      await waitForMessage(alice, 'bob', missed[2]);
      // A late copy would come right after: look again a moment later.
      await sleep(300);
      assert.deepEqual(await textsFrom(alice, 'bob'), ['before the drop', ...missed]);
      const since = await sinceDrop(alice);
      assert.ok(since.sameClient, 'the page made a new client (a new sign-in), not a reconnect');
      assert.ok(since.newSockets >= 1, 'no new socket');
      assert.equal(await alice.evaluate(() => performance.getEntriesByType('navigation').length), 1);
      // The client re-sent the room with its position: the server recovered from there.
      const last = since.subscribes.at(-1);
      assert.ok(Number.isInteger(last?.since?.['room:lobby']?.offset), `no position re-sent: ${JSON.stringify(since.subscribes)}`);
      assert.deepEqual(await notices(alice), [], 'a notice though everything was recovered');
      t.diagnostic(`dropped, 3 messages sent, recovered in ${Date.now() - t0} ms`);
      await shot(alice, 'desktop-1100-recovered.png');
    });

    await step('the server restarted while alice was away and bob wrote after it: the history went with it; alice\'s page says so in the room', async () => {
      await alice.evaluate(() => {
        window.__resyncs = [];
        client.on('resync', (event, tag, reason) => window.__resyncs.push([event, tag, reason]));
      });
      await dropConnection(alice);
      await chat.kill();
      await chat.start();
      await waitOnline(bob);
      await send(bob, 'after the restart, while alice is away');
      await reconnect(alice);
      await waitFor(alice, 'a notice in # lobby', () => document.querySelectorAll('#log li.notice').length > 0);
      // The room's stream, told; the user's own stream (event '', tag
      // 'user': the chat keeps no DM history) may be told too, and the page
      // shows nothing for it.
      const resyncs = await alice.evaluate(() => window.__resyncs);
      assert.deepEqual(resyncs.filter(([event]) => event === 'room-message'), [['room-message', 'room:lobby', 'epoch-changed']]);
      assert.ok(resyncs.every(([event, tag]) => event === 'room-message' || (event === '' && tag === 'user')), JSON.stringify(resyncs));
      assert.ok((await sinceDrop(alice)).sameClient, 'the page made a new client (a new sign-in), not a reconnect');
      const [notice, ...more] = await notices(alice);
      assert.equal(more.length, 0, 'more than one notice');
      assert.match(notice, /may be missing here: the room’s history was lost/);
      // Live messages go on after the notice.
      await send(bob, 'live again');
      await waitForMessage(alice, 'bob', 'live again');
      const order = await alice.$$eval('#log li', (items) => items.map((li) => (li.classList.contains('notice') ? 'notice' : li.querySelector('.text')?.textContent)));
      assert.ok(order.indexOf('notice') < order.indexOf('live again'), `the notice after the live message: ${JSON.stringify(order)}`);
      assert.equal(await countMessages(alice, 'bob', 'live again'), 1);
      assert.equal(await alice.$eval('#log li.notice', (li) => getComputedStyle(li).borderTopStyle), 'dashed');
      await shot(alice, 'desktop-1100-history-lost.png');
      await shot(alice, 'phone-390-history-lost.png', PHONE);
      await alice.setViewport(DESKTOP);
    });

    await step('the notice is kept with the room\'s log: after a reload, once, and no message twice', async () => {
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitOnline(alice);
      assert.equal((await notices(alice)).length, 1);
      assert.equal(await countMessages(alice, 'bob', 'live again'), 1);
      assert.equal(await countMessages(alice, 'bob', 'missed while away 2'), 1);
      // A message already in the log (restored from storage) coming again with its id shows once.
      await alice.evaluate(() => {
        const m = state.convs.get('room:lobby').log.find((x) => x.text === 'missed while away 2');
        window.__ws.sockets.at(-1).dispatchEvent(new MessageEvent('message', { data: JSON.stringify({ event: 'room-message', data: ['lobby', m.from, m.text, m.ts, m.id] }) }));
      });
      await send(alice, 'after the copy');
      assert.equal(await countMessages(alice, 'bob', 'missed while away 2'), 1, 'a message shown twice');
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- chat output ---\n${chat.output}`);
    for (const context of contexts) await context.close().catch(() => {});
    await chat.kill();
  }
});

test('text that lies: a newline and "12:03 PM admin" stay inside one message; bidi controls are isolated', { timeout: 30_000 }, async (t) => {
  const chat = new Chat(await freePort());
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  let mallory = null;
  try {
    await chat.start();
    contexts.push(await browser.createBrowserContext());
    const alice = await openPage(contexts[0], 'alice', chat.url, problems);
    await signIn(alice, 'alice');
    mallory = await Raw.signIn(chat.port, ['mallory']);
    await mallory.request({ type: 'subscribe', event: 'room-message', tags: ['room:lobby'] });
    const forged = 'see you at noon\n12:03 PM admin: your account is locked, send me your password';
    const reversed = 'my file: \u202Egnp.exe\u202C (open it)';

    await step('each arrives as one message: author and time apart from the text, line breaks inside its box', async () => {
      await mallory.call('say', 'lobby', forged, 'lie-1');
      await mallory.call('say', 'lobby', reversed, 'lie-2');
      await mallory.call('say', 'lobby', 'an ordinary message after them', 'lie-3');
      await waitForMessage(alice, 'mallory', 'an ordinary message after them');
      const rows = await alice.$$eval('#log li.msg', (items) => items.map((li) => ({
        children: [...li.children].map((c) => c.className),
        from: li.querySelector('.from').textContent,
        fromTag: li.querySelector('.from').tagName,
        text: li.querySelector('.text').textContent,
        dir: li.querySelector('.text').getAttribute('dir'),
        whiteSpace: getComputedStyle(li.querySelector('.text')).whiteSpace,
        bidi: getComputedStyle(li.querySelector('.text')).unicodeBidi,
        lines: Math.round(li.querySelector('.text').getBoundingClientRect().height / parseFloat(getComputedStyle(li.querySelector('.text')).lineHeight)),
        textLeft: li.querySelector('.text').getBoundingClientRect().left,
        metaLeft: li.querySelector('.meta').getBoundingClientRect().left,
      })));
      assert.equal(rows.length, 3, `${rows.length} message rows for 3 messages`);
      for (const row of rows) {
        assert.deepEqual(row.children, ['meta', 'text']);
        assert.equal(row.from, 'mallory');
        assert.equal(row.fromTag, 'BDI');
        assert.equal(row.dir, 'auto');
        assert.equal(row.whiteSpace, 'pre-wrap');
        assert.equal(row.bidi, 'isolate');
        assert.ok(row.textLeft > row.metaLeft, 'the text box is not indented under its header');
      }
      // The forged "header" is the second line of the first message's text.
      assert.equal(rows[0].text.split('\n').length, 2);
      assert.ok(rows[0].lines >= 2, 'the line break is not shown');
      assert.match(rows[0].text, /\n12:03 PM admin/);
      // The server removes the bidi controls; were one left, the text's own isolation holds it.
      assert.ok(!/[\u202A-\u202E\u2066-\u2069]/.test(rows[1].text), `bidi controls kept: ${JSON.stringify(rows[1].text)}`);
      await shot(alice, 'desktop-1100-text-that-lies.png');
      await shot(alice, 'phone-390-text-that-lies.png', PHONE);
      await alice.setViewport(DESKTOP);
    });

    await step('the user\'s own message with Shift+Enter line breaks is one message too', async () => {
      await alice.type('#text', 'first line');
      await alice.keyboard.down('Shift');
      await alice.keyboard.press('Enter');
      await alice.keyboard.up('Shift');
      await alice.type('#text', 'second line');
      await alice.keyboard.press('Enter');
      await waitFor(alice, 'the two-line message sent', () => [...document.querySelectorAll('#log li.msg.mine')]
        .some((li) => li.querySelector('.text').textContent === 'first line\nsecond line' && !/sending/.test(li.className)));
      const [event] = mallory.events.filter((e) => e.event === 'room-message' && e.data[1] === 'alice');
      assert.equal(event?.data[2], 'first line\nsecond line');
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- chat output ---\n${chat.output}`);
    mallory?.close();
    for (const context of contexts) await context.close().catch(() => {});
    await chat.kill();
  }
});

test('typing through a 300 ms round trip: sent once, in order, pending then sent; drafts per conversation; a lost reply resent exactly once', { timeout: 60_000 }, async (t) => {
  const chat = new Chat(await freePort());
  const proxy = new DelayProxy(await freePort(), chat.port, 0.15);
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  let bob = null;
  try {
    await chat.start();
    await proxy.start();
    contexts.push(await browser.createBrowserContext());
    const alice = await openPage(contexts[0], 'alice', proxy.url, problems);
    await signIn(alice, 'alice');
    bob = await Raw.signIn(chat.port, ['bob']);
    await bob.call('hello'); // as a page does: announced to the others
    // Bob hears the lobby (a push subscription) and his DMs.
    await bob.request({ type: 'subscribe', event: 'room-message', tags: ['room:lobby'] });
    const heard = (text) => bob.events.filter((e) => (e.event === 'room-message' ? e.data[2] : e.event === 'dm' ? e.data[1] : null) === text);
    const lobbyTexts = () => bob.events.filter((e) => e.event === 'room-message' && e.data[1] === 'alice').map((e) => e.data[2]);
    // Each state a message of alice's shows, in order, as the rows are drawn.
    await alice.evaluate(() => {
      window.__states = [];
      new MutationObserver((records) => {
        for (const r of records) {
          for (const node of r.addedNodes) {
            if (node.classList?.contains('mine')) {
              window.__states.push([node.querySelector('.text').textContent,
                ['sending', 'waiting', 'failed'].find((s) => node.classList.contains(s)) || 'sent', performance.now()]);
            }
          }
        }
      }).observe(document.querySelector('#log'), { childList: true });
    });

    await step('"ok⏎thanks⏎" typed at 60 ms a key: two messages, the box empty at once, each pending then sent', async () => {
      const rtt = await alice.evaluate(async () => {
        const t0 = performance.now();
        await fetch('/favicon.svg', { cache: 'no-store' });
        return performance.now() - t0;
      });
      assert.ok(rtt >= 280, `the proxy adds no delay (${rtt.toFixed(0)} ms)`);
      await alice.type('#text', 'ok\n', { delay: 60 });
      const afterOk = await alice.evaluate(() => [document.querySelector('#text').value, [...document.querySelectorAll('#log li.msg.mine')].map((li) => li.className)]);
      assert.equal(afterOk[0], '', 'the box not cleared at once');
      assert.match(afterOk[1].at(-1), /sending/, 'not shown pending');
      await shot(alice, 'desktop-1100-pending.png');
      await alice.type('#text', 'thanks\n', { delay: 60 });
      await waitFor(alice, 'both sent', () => [...document.querySelectorAll('#log li.msg.mine')].filter((li) => !/sending/.test(li.className)).length === 2);
      await sleep(500); // anything sent twice would have arrived by now
      assert.deepEqual(lobbyTexts(), ['ok', 'thanks']);
      const states = await alice.evaluate(() => window.__states.map(([text, state]) => `${text}:${state}`));
      assert.deepEqual(states.filter((s) => s.startsWith('ok:')), ['ok:sending', 'ok:sent']);
      assert.deepEqual(states.filter((s) => s.startsWith('thanks:')), ['thanks:sending', 'thanks:sent']);
      t.diagnostic(`round trip through the proxy: ${rtt.toFixed(0)} ms`);
    });

    await step('a double Enter and a double click on Send send once', async () => {
      await alice.type('#text', 'once, by Enter', { delay: 20 });
      await alice.keyboard.press('Enter');
      await alice.keyboard.press('Enter');
      await alice.type('#text', 'once, by Send', { delay: 20 });
      await alice.click('#send', { count: 2 });
      await waitFor(alice, 'both sent', () => [...document.querySelectorAll('#log li.msg.mine')].filter((li) => !/sending/.test(li.className)).length === 4);
      await sleep(500);
      assert.deepEqual(lobbyTexts(), ['ok', 'thanks', 'once, by Enter', 'once, by Send']);
    });

    await step('drafts per conversation: switching swaps them, a reload keeps them', async () => {
      await clickOn(alice, '#online li .name', 'bob');
      assert.equal(await title(alice), '@ bob');
      assert.equal(await alice.$eval('#text', (box) => box.value), '');
      await alice.type('#text', 'draft for bob');
      await clickOn(alice, '#rooms li .name', '# lobby');
      assert.equal(await alice.$eval('#text', (box) => box.value), '');
      await alice.type('#text', 'draft for the lobby');
      await clickOn(alice, '#online li .name', 'bob');
      assert.equal(await alice.$eval('#text', (box) => box.value), 'draft for bob');
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitOnline(alice);
      assert.equal(await title(alice), '@ bob');
      assert.equal(await alice.$eval('#text', (box) => box.value), 'draft for bob');
      await clickOn(alice, '#rooms li .name', '# lobby');
      assert.equal(await alice.$eval('#text', (box) => box.value), 'draft for the lobby');
    });

    await step('what is typed in a DM goes to the DM: sent while cut off, then the user moves to the lobby', async () => {
      await clickOn(alice, '#online li .name', 'bob');
      await proxy.kill(); // the page's connection is cut
      await waitFor(alice, 'the disconnect banner', () => !document.querySelector('#banner').hidden);
      await alice.keyboard.press('Enter'); // sends the draft for bob
      assert.equal(await alice.$eval('#text', (box) => box.value), '');
      await waitOwn(alice, 'draft for bob', 'waiting');
      await clickOn(alice, '#rooms li .name', '# lobby');
      assert.equal(await alice.$eval('#text', (box) => box.value), 'draft for the lobby');
      await proxy.start();
      await alice.click('#banner-retry').catch(() => {}); // or at the next attempt
      await waitOnline(alice);
      const deadline = Date.now() + WAIT_MS;
      while (!heard('draft for bob').length && Date.now() < deadline) await sleep(50);
      const got = heard('draft for bob');
      assert.equal(got.length, 1, `bob got "draft for bob" ${got.length} times`);
      assert.equal(got[0].event, 'dm', 'it went to the lobby');
      assert.equal(await alice.$eval('#text', (box) => box.value), 'draft for the lobby');
    });

    await step('a reply lost with the connection: the message is resent with its id, and arrives once', async () => {
      // A longer delay (0.4 s each way), so the connection can be cut after
      // the call reached the server and before its reply came back.
      await proxy.kill();
      await proxy.start(0.4);
      await waitOnline(alice);
      await alice.$eval('#text', (box) => { box.value = ''; });
      await alice.type('#text', 'the reply to this is lost');
      const sentBefore = await alice.evaluate(() => window.__ws.sent.length);
      await alice.keyboard.press('Enter');
      await sleep(600); // the call reached the server at ~400 ms; its reply would come back at ~800 ms
      await proxy.kill();
      const deadline = Date.now() + WAIT_MS;
      while (!heard('the reply to this is lost').length && Date.now() < deadline) await sleep(50);
      assert.equal(heard('the reply to this is lost').length, 1, 'the first send did not reach the server');
      await waitFor(alice, 'the message waiting', () => [...document.querySelectorAll('#log li.msg.mine')]
        .some((li) => li.querySelector('.text').textContent === 'the reply to this is lost' && li.classList.contains('waiting')));
      await proxy.start(0.15);
      await alice.click('#banner-retry').catch(() => {});
      await waitOnline(alice);
      await waitFor(alice, 'the message sent', () => [...document.querySelectorAll('#log li.msg.mine')]
        .some((li) => li.querySelector('.text').textContent === 'the reply to this is lost' && !/sending|waiting|failed/.test(li.className)));
      await sleep(500);
      assert.equal(heard('the reply to this is lost').length, 1, 'sent twice');
      // Two calls, one id.
      const calls = await alice.evaluate((from) => window.__ws.sent.slice(from).map((f) => JSON.parse(f))
        .filter((f) => f.function === 'say' && f.data[1] === 'the reply to this is lost'), sentBefore);
      assert.equal(calls.length, 2, `${calls.length} say calls`);
      assert.equal(calls[0].data[2], calls[1].data[2]);
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- chat output ---\n${chat.output}`);
    bob?.close();
    for (const context of contexts) await context.close().catch(() => {});
    await proxy.kill();
    await chat.kill();
  }
});

test('floods: 1,200 pipelined room messages, then DMs from 1,500 throwaway names, while a friend writes', { timeout: 90_000 }, async (t) => {
  // One sign-in back every 4 s (the default is one a second): once the
  // address's sign-ins are spent, the page's reload (slow on a busy machine)
  // must meet the refusal, not a sign-in come back meanwhile.
  const chat = new Chat(await freePort(), ['--sign-ins-per-minute', '15', ...(process.env.CHAT_FLOOD_ARGS || '').split(' ').filter(Boolean)]);
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  const raws = [];
  try {
    await chat.start();
    contexts.push(await browser.createBrowserContext(), await browser.createBrowserContext());
    const alice = await openPage(contexts[0], 'alice', chat.url, problems);
    const bob = await openPage(contexts[1], 'bob', chat.url, problems);
    await signIn(alice, 'alice');
    await signIn(bob, 'bob');
    // Presence settled (no entry added under the mouse while clicking).
    await element(alice, '#online li .name', 'bob');
    await element(bob, '#online li .name', 'alice');
    // Friends: a conversation each way.
    await clickOn(bob, '#online li .name', 'alice');
    await send(bob, 'hi alice, it is bob');
    await openRequest(alice, 'bob');
    await send(alice, 'hi bob');
    await clickOn(alice, '#rooms li .name', '# lobby');
    await clickOn(bob, '#rooms li .name', '# lobby');
    // How long the page's main thread is held: the longest task, and the longest gap of a 50 ms timer.
    const watch = (page) => page.evaluate(() => {
      window.__lag = { longest: 0, gap: 0 };
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__lag.longest = Math.max(window.__lag.longest, e.duration);
      }).observe({ entryTypes: ['longtask'] });
      let last = performance.now();
      setInterval(() => {
        const now = performance.now();
        window.__lag.gap = Math.max(window.__lag.gap, now - last);
        last = now;
      }, 50);
    });
    await watch(alice);
    await watch(bob);

    await step('1,200 pipelined say("lobby", 2,000 chars) from one client: the pages stay connected and keep working', async () => {
      const flooder = await Raw.signIn(chat.port, ['flooder']);
      raws.push(flooder);
      const big = 'x'.repeat(1990);
      const t0 = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 1200 }, (_, i) => flooder.call('say', 'lobby', `${String(i).padStart(4, '0')} ${big}`.slice(0, 2000), `flood-${i}`)));
      const took = Date.now() - t0;
      const accepted = results.filter((r) => r.status === 'fulfilled').length;
      const codes = {};
      for (const r of results) if (r.status === 'rejected') codes[r.reason.code] = (codes[r.reason.code] || 0) + 1;
      await sleep(1000);
      // Still connected: no socket closed, the status never left "online", a message goes each way.
      for (const page of [alice, bob]) {
        assert.deepEqual(await page.evaluate(() => window.__ws.closes), [], `${page.who}'s socket closed`);
        await waitOnline(page);
      }
      const reached = await alice.evaluate(() => window.__ws.events['room-message'] || 0);
      const t1 = Date.now();
      await send(alice, 'still here after the flood');
      await waitForMessage(bob, 'alice', 'still here after the flood');
      const roundTrip = Date.now() - t1;
      const lag = await alice.evaluate(() => window.__lag);
      t.diagnostic(`flood: ${accepted} of 1200 accepted in ${took} ms, refused ${JSON.stringify(codes)}; ${reached} room messages reached alice's page; `
        + `alice → bob after it: ${roundTrip} ms; alice's longest task ${lag.longest.toFixed(0)} ms, longest timer gap ${lag.gap.toFixed(0)} ms`);
      assert.ok(accepted < 1200, 'the server took the whole flood (no rate limit)');
      assert.ok(roundTrip < 3000, `a message took ${roundTrip} ms after the flood`);
      flooder.close();
    });

    await step('on the page: 1,200 room messages of 2,000 chars reaching it at once (injected into its socket) are drawn in one go', async () => {
      await alice.bringToFront();
      await alice.evaluate(() => { window.__lag.longest = 0; window.__lag.gap = 0; });
      const cost = await alice.evaluate((n) => new Promise((resolve) => {
        const socket = window.__ws.sockets.at(-1);
        const big = 'y'.repeat(1995);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          socket.dispatchEvent(new MessageEvent('message', { data: JSON.stringify({ event: 'room-message', data: ['lobby', 'flooder', `${i} ${big}`.slice(0, 2000), Date.now(), `inj-${i}`] }) }));
        }
        const handled = performance.now() - t0;
        // Drawn by the next frame (plus one, for the layout to be done).
        requestAnimationFrame(() => requestAnimationFrame(() => resolve([handled, performance.now() - t0, document.querySelectorAll('#log li.msg').length])));
      }), 1200);
      const ping0 = Date.now();
      await alice.evaluate(() => 1);
      const pingMs = Date.now() - ping0;
      const lag = await alice.evaluate(() => window.__lag);
      t.diagnostic(`1,200 injected room messages: handled in ${cost[0].toFixed(0)} ms, drawn in ${cost[1].toFixed(0)} ms (${cost[2]} rows kept); `
        + `longest task ${lag.longest.toFixed(0)} ms; page round trip after ${pingMs} ms`);
      assert.equal(cost[2], 500, 'rows kept in the view');
      assert.ok(cost[1] < 3000, `drawing 1,200 messages took ${cost[1].toFixed(0)} ms`);
      await send(alice, 'still here after the injected flood');
      await waitForMessage(bob, 'alice', 'still here after the injected flood');
    });

    await step('DMs from 1,500 fresh names (what the server accepts) while bob writes: bob\'s DM shows within 3 s; requests capped, collapsed', async () => {
      await alice.bringToFront();
      await alice.evaluate(() => { window.__lag.longest = 0; window.__lag.gap = 0; });
      const outcome = { signedIn: 0, signInRefused: 0, sent: 0, refused: 0, other: 0, codes: {} };
      const note = (err) => { outcome.codes[err.code || err.message] = (outcome.codes[err.code || err.message] || 0) + 1; };
      let next = 0;
      const t0 = Date.now();
      const worker = async () => {
        while (next < 1500) {
          const i = next++;
          const name = `t${String(i).padStart(4, '0')}`;
          let raw;
          try {
            raw = await Raw.signIn(chat.port, [name]);
            outcome.signedIn++;
          } catch (err) {
            outcome.signInRefused++;
            note(err);
            continue;
          }
          try {
            await raw.call('dm', 'alice', `hello from ${name}`, `dm-${name}`);
            outcome.sent++;
          } catch (err) {
            outcome.refused++;
            note(err);
          } finally {
            raw.close();
          }
        }
      };
      const flood = Promise.all(Array.from({ length: 20 }, worker));
      // A friend's DM in the middle of it.
      while (next < 500 && Date.now() - t0 < 20_000) await sleep(20);
      await clickOn(bob, '#online li .name', 'alice');
      await bob.type('#text', 'a DM from bob during the flood');
      const sentAt = Date.now();
      await bob.keyboard.press('Enter');
      await waitFor(alice, 'bob\'s DM: an unread badge on bob', () => [...document.querySelectorAll('#online li')]
        .some((li) => li.querySelector('.name')?.textContent === 'bob' && li.querySelector('.badge')?.textContent === '1'));
      const friendMs = Date.now() - sentAt;
      // Responsive: a round trip to the page's main thread.
      const ping0 = Date.now();
      await alice.evaluate(() => 1);
      const pingMs = Date.now() - ping0;
      await flood;
      const took = Date.now() - t0;
      const lag = await alice.evaluate(() => window.__lag);
      const requests = await alice.evaluate(() => [Number(document.querySelector('#requests-count').textContent), document.querySelectorAll('#request-list li').length, document.querySelector('#requests').open]);
      const dmEvents = await alice.evaluate(() => window.__ws.events.dm || 0);
      t.diagnostic(`DM flood: ${JSON.stringify(outcome)} in ${took} ms; ${dmEvents} DM events reached alice's page; requests shown ${requests[0]}; `
        + `bob's DM shown after ${friendMs} ms; page round trip ${pingMs} ms; longest task ${lag.longest.toFixed(0)} ms, longest timer gap ${lag.gap.toFixed(0)} ms`);
      assert.ok(friendMs < 3000, `bob's DM took ${friendMs} ms`);
      assert.ok(pingMs < 1000, `the page took ${pingMs} ms to answer`);
      assert.ok(requests[0] <= 50 && requests[1] === requests[0], `requests: ${requests}`);
      assert.equal(requests[2], false, 'the requests list opened by itself');
      await clickOn(alice, '#online li .name', 'bob');
      await waitForMessage(alice, 'bob', 'a DM from bob during the flood');
    });

    await step('sign-ins refused for this address: a reload waits and signs in again, not signed out', async () => {
      // Spend what is left of the address's sign-ins.
      for (let i = 0; i < 60; i++) {
        try {
          (await Raw.signIn(chat.port, [`spend${i}`])).close();
        } catch (err) {
          assert.match(err.message, /retry in \d+ ms/);
          break;
        }
      }
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitFor(alice, 'the sign-in-limit banner', () => /Too many sign-ins from this address\. Retrying in/.test(document.querySelector('#banner').textContent)
        && !document.querySelector('#banner').hidden);
      assert.equal(await alice.$eval('#login', (el) => el.hidden), true, 'sent back to the sign-in form');
      await shot(alice, 'desktop-1100-sign-in-limit.png');
      await waitOnline(alice);
      assert.equal(await alice.$eval('#me-name', (el) => el.textContent), 'alice');
    });

    await step('1,500 DMs from fresh names all reaching the page at once (injected into its socket): capped at 50, no freeze', async () => {
      const cost = await alice.evaluate((n) => {
        const socket = window.__ws.sockets.at(-1);
        const t0 = performance.now();
        for (let i = 0; i < n; i++) {
          const name = `z${String(i).padStart(4, '0')}`;
          socket.dispatchEvent(new MessageEvent('message', { data: JSON.stringify({ event: 'dm', data: [name, `hello from ${name}`, Date.now(), 'alice', `zid-${i}`] }) }));
        }
        return performance.now() - t0;
      }, 1500);
      await sleep(100);
      const after = await alice.evaluate(() => ({
        count: document.querySelector('#requests-count').textContent,
        items: [...document.querySelectorAll('#request-list li .name')].map((el) => el.textContent),
        people: document.querySelectorAll('#online li').length,
        title: document.title,
      }));
      t.diagnostic(`1,500 injected DMs handled in ${cost.toFixed(0)} ms; requests ${after.count}; people entries ${after.people}`);
      assert.equal(after.count, '50');
      assert.equal(after.items.length, 50);
      assert.equal(after.items[0], 'z1499');
      assert.equal(after.items[49], 'z1450');
      assert.equal(after.title, 'alice · RTM chat', 'requests counted as unread');
      assert.ok(cost < 1500, `1,500 DMs took ${cost.toFixed(0)} ms of the page's time`);
      await alice.click('#requests summary');
      await shot(alice, 'desktop-1100-requests.png');
      await alice.setViewport(PHONE);
      await alice.click('#menu');
      await waitFor(alice, 'the drawer open', () => document.querySelector('#side').getBoundingClientRect().left >= 0);
      await alice.$eval('#requests', (el) => el.scrollIntoView());
      await shot(alice, 'phone-390-requests.png');
      await alice.keyboard.press('Escape');
      await alice.setViewport(DESKTOP);
      // A request opened: a conversation, kept.
      await clickOn(alice, '#request-list li .name', 'z1499');
      await waitForMessage(alice, 'z1499', 'hello from z1499');
    });

    await step('after a reload the requests are gone; conversations opened from them stay', async () => {
      await sleep(1100); // the logs are saved within a second
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitOnline(alice);
      assert.equal(await alice.$eval('#requests', (el) => el.hidden), true);
      const people = await names(alice, '#online li .name');
      assert.ok(people.includes('z1499') && people.includes('bob'), `people: ${people}`);
      assert.ok(!people.some((name) => /^z(?!1499)/.test(name)), `requests came back: ${people.filter((n) => n.startsWith('z'))}`);
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- chat output ---\n${chat.output.slice(-5000)}`);
    for (const raw of raws) raw.close();
    for (const context of contexts) await context.close().catch(() => {});
    await chat.kill();
  }
});

test('two servers sharing Redis: a DM and a room across servers, and Redis down then back', {
  timeout: 60_000,
  skip: REDIS_SERVER ? false : 'redis-server is not installed',
}, async (t) => {
  const redis = new Redis(await freePort());
  const args = ['--redis', redis.url];
  const [one, two] = [new Chat(await freePort(), args), new Chat(await freePort(), args)];
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  try {
    await redis.start();
    await Promise.all([one.start(), two.start()]);
    contexts.push(await browser.createBrowserContext(), await browser.createBrowserContext());
    const dave = await openPage(contexts[0], 'dave', one.url, problems);
    const erin = await openPage(contexts[1], 'erin', two.url, problems);

    await step('dave on server 1 and erin on server 2 sign in; presence is per server', async () => {
      await signIn(dave, 'dave');
      await signIn(erin, 'erin');
      const people = await dave.$$eval('#online li', (items) => items.map((li) => li.textContent.trim()));
      assert.deepEqual(people, ['dave (you)']);
      await waitFor(dave, 'people said to be on this server', () => /this server/.test(document.querySelector('#people-note').textContent));
    });

    await step('a DM to a name on the other server, typed; answered from the request; a room message across', async () => {
      await dave.type('#dm-name', '@erin');
      await dave.keyboard.press('Enter');
      await waitFor(dave, 'the DM with erin open', () => document.querySelector('#title').textContent === '@ erin');
      assert.match(await dave.$eval('#title-note', (el) => el.textContent), /any server of the cluster/);
      await send(dave, 'hello from server 1');
      await openRequest(erin, 'dave');
      await waitForMessage(erin, 'dave', 'hello from server 1');
      await send(erin, 'hello back from server 2');
      await waitForMessage(dave, 'erin', 'hello back from server 2');
      await clickOn(dave, '#rooms li .name', '# lobby');
      await clickOn(erin, '#rooms li .name', '# lobby');
      await send(dave, 'lobby, across servers');
      await waitForMessage(erin, 'dave', 'lobby, across servers');
    });

    await step('dave (server 1) drops while erin (server 2) writes in # lobby: dave\'s page gets them from the history in Redis, once, in order', async () => {
      const t0 = Date.now();
      await dropConnection(dave);
      const missed = ['from server 2 while dave is away 1', 'from server 2 while dave is away 2', 'from server 2 while dave is away 3'];
      for (const text of missed) await send(erin, text);
      await reconnect(dave);
      await waitForMessage(dave, 'erin', missed[2]);
      await sleep(300);
      assert.deepEqual((await textsFrom(dave, 'erin')).filter((text) => text.includes('while dave is away')), missed);
      assert.ok((await sinceDrop(dave)).sameClient, 'the page made a new client (a new sign-in), not a reconnect');
      assert.deepEqual(await notices(dave), []);
      assert.deepEqual(await dave.evaluate(() => state.server), { cluster: true, broker: 'up', reason: null });
      t.diagnostic(`dropped, 3 messages sent on the other server, recovered in ${Date.now() - t0} ms`);
      await shot(dave, 'desktop-1100-recovered-across-servers.png');
    });

    await step('Redis killed: both pages show the cluster link down; a message fails, with Retry, and says why', async () => {
      await redis.kill();
      for (const page of [dave, erin]) {
        await waitFor(page, 'the cluster-link banner', () => !document.querySelector('#banner').hidden
          && /Cluster link down/.test(document.querySelector('#banner').textContent)
          && document.querySelector('#status').textContent === 'cluster link down');
      }
      await dave.type('#text', 'sent once Redis is back');
      await dave.keyboard.press('Enter');
      await waitFor(dave, 'the message failed, saying why, with Retry', () => [...document.querySelectorAll('#log li.msg.mine.failed')]
        .some((li) => li.querySelector('.text').textContent === 'sent once Redis is back' && li.querySelector('button.retry')
          && /cluster link \(Redis\) is down/.test(li.querySelector('.fail').textContent)));
      assert.equal(await dave.$eval('#text', (box) => box.value), '');
      await shot(dave, 'desktop-1100-cluster-down.png');
      // Names live in Redis: a reload now cannot sign in. The page says so and retries; it does not sign out.
      await erin.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitFor(erin, 'the names-unavailable banner', () => !document.querySelector('#banner').hidden
        && /Names cannot be checked now/.test(document.querySelector('#banner').textContent));
      assert.equal(await erin.$eval('#login', (el) => el.hidden), true, 'sent back to the sign-in form');
    });

    await step('Redis back on the same port: the banner goes; Retry sends the message', async () => {
      await redis.start();
      await Promise.all([waitOnline(dave), waitOnline(erin)]);
      await dave.click('#log li.msg.mine.failed button.retry');
      await waitForMessage(erin, 'dave', 'sent once Redis is back');
      assert.equal(await countMessages(erin, 'dave', 'sent once Redis is back'), 1);
      await send(erin, 'and back to server 1');
      await waitForMessage(dave, 'erin', 'and back to server 1');
    });

    await step('no page errors and no failed requests', async () => {
      assert.deepEqual(problems, []);
    });
  } finally {
    if (run.failed) console.error(`--- server 1 ---\n${one.output}\n--- server 2 ---\n${two.output}`);
    for (const context of contexts) await context.close().catch(() => {});
    await Promise.all([one.kill(), two.kill()]);
    await redis.kill();
  }
});
