// The package as shipped: its CommonJS and ESM entries with type
// declarations; the browser bundle, which must define the global RTM with no
// dependency, work with a browser's WebSocket (no ping), and be the one
// committed beside the chat example, rebuilt from these sources (so it
// cannot go stale).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { bundle, chatBundle, distBundle, root } from '../scripts/bundle.mjs';
import { Fixture, REPO, within } from './helpers.mjs';

const require = createRequire(import.meta.url);

test('the committed browser bundle beside the chat is the one these sources build', async (t) => {
  const fresh = await bundle();
  assert.ok(fs.existsSync(chatBundle), `${chatBundle} is missing: run \`npm run build\` in clients/js and commit it`);
  assert.equal(fs.readFileSync(chatBundle, 'utf8'), fresh, `${path.relative(REPO, chatBundle)} is stale: run \`npm run build\` in clients/js and commit it`);
  assert.equal(fs.readFileSync(distBundle, 'utf8'), fresh);
  // `npm test` rebuilds first: in a clone, what was committed must already have been this.
  const git = (...args) => execFileSync('git', ['-C', REPO, ...args], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  let tracked = false;
  try {
    tracked = git('ls-files', '--', path.relative(REPO, chatBundle)).trim() !== '';
  } catch {
    t.diagnostic('not a git work tree: only the file on disk was checked');
    return;
  }
  if (!tracked) {
    t.diagnostic('the bundle is not committed yet: only the file on disk was checked');
    return;
  }
  const changed = (...paths) => git('diff', '--name-only', 'HEAD', '--', ...paths).trim();
  const sources = ['src', 'scripts', 'package.json', 'package-lock.json', 'tsconfig.base.json'].map((p) => path.relative(REPO, path.join(root, p)));
  if (changed(path.relative(REPO, chatBundle)) && !changed(...sources)) {
    assert.fail(`the committed ${path.relative(REPO, chatBundle)} differs from what its committed sources build: commit the rebuilt one`);
  }
});

test('the bundle is one classic script: no require, no import, no Node', async () => {
  const text = fs.readFileSync(distBundle, 'utf8');
  assert.doesNotMatch(text, /\brequire\(/);
  assert.doesNotMatch(text, /\bimport\(/);
  assert.doesNotMatch(text, /^\s*(import|export)\s/m);
  assert.doesNotMatch(text, /process\.|Buffer\b|node:/);
});

let fixture;
before(async () => {
  fixture = await Fixture.start();
});
after(async () => {
  await fixture?.stop();
});

test('the bundle defines RTM and works on a browser-like WebSocket (no ping, no Node globals)', async () => {
  const WS = require('ws');
  // The standard WebSocket API only, as a browser has it.
  class BrowserWebSocket {
    constructor(url) {
      const ws = new WS(url);
      this.ws = ws;
    }
    get readyState() { return this.ws.readyState; }
    get bufferedAmount() { return this.ws.bufferedAmount; }
    send(data) { this.ws.send(data); }
    close(code, reason) { this.ws.close(code, reason); }
    addEventListener(type, listener) { this.ws.addEventListener(type, listener); }
  }
  const sandbox = {
    WebSocket: BrowserWebSocket, URL, AbortController, AbortSignal, console, performance,
    setTimeout, clearTimeout, queueMicrotask,
  };
  vm.createContext(sandbox);
  vm.runInContext(fs.readFileSync(distBundle, 'utf8'), sandbox, { filename: 'rtm-client.js' });
  const RTM = sandbox.RTM;
  for (const name of ['connect', 'Client', 'RtmClient', 'RtmError', 'ErrorCodes']) assert.ok(RTM[name], name);
  const client = await within('RTM.connect', RTM.connect(fixture.url));
  try {
    assert.equal(await within('a call', client.call('add', 1, 2)), 3);
    const err = await client.call('missing').catch((e) => e);
    assert.ok(err instanceof RTM.RtmError);
    assert.equal(err.code, 'rtm/function-not-found');
  } finally {
    client.close();
  }
  const rtm = new RTM.RtmClient(fixture.url);
  try {
    assert.equal(await within('CallWait', rtm.CallWait('add', 2, 3)), 5);
  } finally {
    rtm.Close();
  }
});

test('the package: CommonJS and ESM entries with type declarations, through its exports', async () => {
  const pkg = require('../package.json');
  for (const file of [pkg.main, pkg.module, pkg.types, 'dist/esm/index.d.ts', pkg.exports['./browser']]) {
    assert.ok(fs.existsSync(path.join(root, file)), file);
  }
  assert.equal(JSON.parse(fs.readFileSync(path.join(root, 'dist/esm/package.json'), 'utf8')).type, 'module');
  // Self-references resolve through "exports", as an app's import would.
  const viaRequire = require('@rtm/client');
  const viaImport = await import('@rtm/client');
  for (const api of [viaRequire, viaImport]) {
    for (const name of ['RtmClient', 'connect', 'Client', 'RtmError', 'ErrorCodes', 'ClientCore']) assert.ok(api[name], name);
  }
  assert.equal(viaImport.ErrorCodes.QueueFull, 'rtm/queue-full');
  assert.equal(pkg.dependencies.ws !== undefined && pkg.browser.ws, false);
});
