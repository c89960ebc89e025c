// The chat example in a real browser (Debian's Chromium through
// puppeteer-core): two users in two isolated browser contexts sign in,
// talk in a room and in direct messages, the phone-width layout is used,
// and the server is killed and restarted under the open pages.
//
// A second scenario runs two chat servers sharing a Redis (when
// redis-server is installed): a DM and a room message across servers, and
// Redis killed and restarted under the open pages.
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

const here = path.dirname(fileURLToPath(import.meta.url));
const CHAT_BIN = process.env.CHAT_BIN
  ? path.resolve(process.env.CHAT_BIN)
  : path.resolve(here, '../../../../target/debug/examples/chat');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => fs.existsSync(p));
const SHOTS = path.join(here, 'screenshots');
const WAIT_MS = 10_000; // every wait fails loudly after this
const DESKTOP = { width: 1100, height: 720 };
const PHONE = { width: 390, height: 844 };

// ----- the chat server: started here, killed by its PID only -----

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

  // SIGKILL to the process this object started (by its PID); waits for it to be gone.
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, 'SIGKILL');
    await child.exited;
  }
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

  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    process.kill(child.pid, 'SIGKILL');
    await child.exited;
  }
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
    ],
    protocolTimeout: 30_000,
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

// A page for `who` on `url`; page errors, failed requests and console errors
// go to `problems` (none expected).
async function openPage(context, who, url, problems) {
  const page = await context.newPage();
  page.who = who;
  page.chatUrl = url;
  page.setDefaultTimeout(WAIT_MS);
  await page.setViewport(DESKTOP);
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
      await fn();
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
    })).catch(() => ({}));
    throw new Error(`${page.who}: ${what}: not within ${WAIT_MS} ms (${err.message}); page: ${JSON.stringify(state)}`);
  }
}

// The visible element matching `selector` whose text is `text`, as a handle.
// Clicks the element showing `text`, as a user would (a real mouse click).
// The side bar is re-rendered when presence changes, which can detach the
// element between finding and clicking it: then it is found again.
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

// Types a message and sends it with Enter; the box empties once the server took it.
async function send(page, text) {
  await page.type('#text', text);
  await page.keyboard.press('Enter');
  await waitFor(page, `"${text}" accepted`, () => document.querySelector('#text').value === '');
}

async function waitForMessage(page, from, text) {
  await waitFor(page, `message "${text}" from ${from}`, (from, text) => [...document.querySelectorAll('#log li')]
    .some((li) => li.querySelector('.from')?.textContent === from && li.querySelector('.text')?.textContent === text), from, text);
}

const title = (page) => page.$eval('#title', (el) => el.textContent);

// ----- the scenario -----

test('two users chat in a real browser, on a desktop and a phone, across a server restart', { timeout: 60_000 }, async (t) => {
  const chat = new Chat(await freePort());
  const problems = [];
  const run = stepper(t);
  const { step } = run;
  const contexts = [];
  try {
    await chat.start();
    // Two users, each in an isolated browser context (own storage, own cookies).
    const aliceContext = await browser.createBrowserContext();
    const bobContext = await browser.createBrowserContext();
    contexts.push(aliceContext, bobContext);
    const open = (who, context) => openPage(context, who, chat.url, problems);
    const alice = await open('alice', aliceContext);
    const bob = await open('bob', bobContext);

    await step('both sign in, land in # lobby and see each other online', async () => {
      await signIn(alice, 'alice');
      await signIn(bob, 'bob');
      for (const page of [alice, bob]) {
        assert.equal(await title(page), '# lobby');
        await element(page, '#online li .name', page === alice ? 'bob' : 'alice');
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

    await step('a room message each way', async () => {
      await send(alice, 'hello bob, from alice in the lobby');
      await waitForMessage(bob, 'alice', 'hello bob, from alice in the lobby');
      await send(bob, 'hi alice <b>not bold</b>');
      await waitForMessage(alice, 'bob', 'hi alice <b>not bold</b>');
    });

    await step('a DM started by typing @bob, answered by clicking alice in the list', async () => {
      await alice.type('#join-name', '@bob');
      await alice.keyboard.press('Enter');
      await waitFor(alice, 'the DM with bob open', () => document.querySelector('#title').textContent === '@ bob');
      await send(alice, 'psst, a direct message');
      // Bob is in the lobby: the DM waits behind a badge on alice's name.
      await waitFor(bob, 'an unread badge on alice', () => [...document.querySelectorAll('#online li')]
        .some((li) => li.querySelector('.name')?.textContent === 'alice' && li.querySelector('.badge')?.textContent === '1'));
      await bob.screenshot({ path: path.join(SHOTS, 'desktop-1100-unread.png') });
      await clickOn(bob, '#online li .name', 'alice');
      assert.equal(await title(bob), '@ alice');
      await waitForMessage(bob, 'alice', 'psst, a direct message');
      await send(bob, 'got it, answering in private');
      await waitForMessage(alice, 'bob', 'got it, answering in private');
    });

    await step('a DM to a name that is not online here, typed in "message a name"', async () => {
      await bob.type('#dm-name', 'carol');
      await bob.keyboard.press('Enter');
      await waitFor(bob, 'the DM with carol open', () => document.querySelector('#title').textContent === '@ carol');
      const note = await bob.$eval('#title-note', (el) => el.textContent);
      assert.match(note, /not online/);
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
    });

    await step('another tab of the same browser is offered the name, not signed in as it', async () => {
      const tab = await open('alice-tab-2', aliceContext);
      await tab.goto(chat.url, { waitUntil: 'load', timeout: WAIT_MS });
      await waitFor(tab, 'the sign-in form', () => !document.querySelector('#login').hidden);
      assert.equal(await tab.$eval('#login-name', (input) => input.value), 'alice');
      await tab.setViewport(PHONE);
      await tab.screenshot({ path: path.join(SHOTS, 'phone-390-sign-in.png') });
      await tab.setViewport(DESKTOP);
      await signIn(tab, 'carol');
      await waitFor(alice, 'carol online', () => [...document.querySelectorAll('#online li .name')].some((el) => el.textContent === 'carol'));
      await tab.close();
      // A reload keeps this tab's user and its conversation.
      await alice.reload({ waitUntil: 'load', timeout: WAIT_MS });
      await waitOnline(alice);
      assert.equal(await alice.$eval('#me-name', (el) => el.textContent), 'alice');
      assert.equal(await title(alice), '@ bob');
      await waitForMessage(alice, 'bob', 'got it, answering in private');
      await clickOn(alice, '#rooms li .name', '# lobby');
      await alice.screenshot({ path: path.join(SHOTS, 'desktop-1100.png') });
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
      await alice.screenshot({ path: path.join(SHOTS, 'phone-390.png') });
      // The drawer opens, lists the rooms, and closes on a choice.
      await alice.click('#menu');
      await waitFor(alice, 'the drawer open', () => document.querySelector('#side').getBoundingClientRect().left >= 0);
      await alice.screenshot({ path: path.join(SHOTS, 'phone-390-drawer.png') });
      await clickOn(alice, '#rooms li .name', '# lobby');
      await waitFor(alice, 'the drawer closed', () => document.querySelector('#side').getBoundingClientRect().right <= 0);
      await send(alice, 'sent from a phone');
      await waitForMessage(bob, 'alice', 'sent from a phone');
    });

    await step('server killed: both pages say so; a message typed meanwhile stays in the box', async () => {
      await chat.kill();
      for (const page of [alice, bob]) {
        await waitFor(page, 'the disconnect banner', () => !document.querySelector('#banner').hidden
          && /Disconnected from the server\. Retrying/.test(document.querySelector('#banner').textContent));
      }
      await alice.type('#text', 'typed while the server was down');
      await alice.keyboard.press('Enter');
      await waitFor(alice, 'the not-connected error', () => /Not connected/.test(document.querySelector('#error').textContent));
      assert.equal(await alice.$eval('#text', (input) => input.value), 'typed while the server was down');
      await alice.screenshot({ path: path.join(SHOTS, 'phone-390-disconnected.png') });
    });

    await step('server restarted on the same port: both reconnect, rejoin # lobby, keep working', async () => {
      await chat.start();
      await Promise.all([waitOnline(alice), waitOnline(bob)]);
      await waitFor(alice, 'the not-connected error gone', () => document.querySelector('#error').textContent === '');
      await alice.keyboard.press('Enter'); // sends what stayed in the box
      await waitFor(alice, 'the kept message accepted', () => document.querySelector('#text').value === '');
      await waitForMessage(bob, 'alice', 'typed while the server was down');
      await send(bob, 'welcome back');
      await waitForMessage(alice, 'bob', 'welcome back');
      await element(alice, '#online li .name', 'bob');
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

    await step('a DM to a name on the other server, typed; answered; a room message across', async () => {
      await dave.type('#dm-name', '@erin');
      await dave.keyboard.press('Enter');
      await waitFor(dave, 'the DM with erin open', () => document.querySelector('#title').textContent === '@ erin');
      assert.match(await dave.$eval('#title-note', (el) => el.textContent), /any server of the cluster/);
      await send(dave, 'hello from server 1');
      await clickOn(erin, '#online li .name', 'dave');
      await waitForMessage(erin, 'dave', 'hello from server 1');
      await send(erin, 'hello back from server 2');
      await waitForMessage(dave, 'erin', 'hello back from server 2');
      await clickOn(dave, '#rooms li .name', '# lobby');
      await clickOn(erin, '#rooms li .name', '# lobby');
      await send(dave, 'lobby, across servers');
      await waitForMessage(erin, 'dave', 'lobby, across servers');
    });

    await step('Redis killed: both pages show the cluster link down, and sending says why', async () => {
      await redis.kill();
      for (const page of [dave, erin]) {
        await waitFor(page, 'the cluster-link banner', () => !document.querySelector('#banner').hidden
          && /Cluster link down/.test(document.querySelector('#banner').textContent)
          && document.querySelector('#status').textContent === 'cluster link down');
      }
      await dave.type('#text', 'sent once Redis is back');
      await dave.keyboard.press('Enter');
      await waitFor(dave, 'the cluster error', () => /cluster link \(Redis\) is down/.test(document.querySelector('#error').textContent));
      await dave.screenshot({ path: path.join(SHOTS, 'desktop-1100-cluster-down.png') });
    });

    await step('Redis back on the same port: the banner and the error go, messages flow again', async () => {
      await redis.start();
      await Promise.all([waitOnline(dave), waitOnline(erin)]);
      await waitFor(dave, 'the cluster error gone', () => document.querySelector('#error').textContent === '');
      await dave.keyboard.press('Enter'); // the message stayed in the box
      await waitFor(dave, 'the kept message accepted', () => document.querySelector('#text').value === '');
      await waitForMessage(erin, 'dave', 'sent once Redis is back');
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
