// The package as shipped: its CommonJS and ESM entries with type
// declarations; the browser bundle, which must define the global RTM with no
// dependency, work with a browser's WebSocket (no ping), and be built the
// same wherever it is built; what `npm pack` puts in the tarball (licences,
// README, dist/); and, in this repository, the copy of the bundle committed
// beside the chat example, which must be what these sources build (so it
// cannot go stale: the chat's update-client-bundle.sh updates it).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import { bundle, distBundle, root } from '../scripts/bundle.mjs';
import { Fixture, REPO, within } from './helpers.mjs';

const require = createRequire(import.meta.url);

/** The copy the chat example embeds (committed, so `cargo build` needs no Node), and the script that updates it. */
const chatBundle = path.join(REPO, 'rtm-tokio/examples/chat/rtm-client.js');
const UPDATE = 'rtm-tokio/examples/chat/update-client-bundle.sh';
/** Whether this package is clients/js of the RTM repository (not a copy of it elsewhere). */
const inRepository = path.join(REPO, 'clients/js') === root && fs.existsSync(path.join(REPO, 'rtm-tokio/examples/chat.rs'));

test('the browser bundle is the same bytes whatever the working directory of the build', async () => {
  const fresh = await bundle();
  assert.equal(fs.readFileSync(distBundle, 'utf8'), fresh, 'dist/browser/rtm-client.js is not what these sources build: run `npm run build`');
  const cwd = process.cwd();
  try {
    process.chdir(REPO);
    assert.equal(await bundle(), fresh, 'the bundle depends on the working directory');
  } finally {
    process.chdir(cwd);
  }
  assert.doesNotMatch(fresh, new RegExp(REPO.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 'an absolute path in the bundle');
});

test('the copy of the bundle committed beside the chat is the one these sources build', async (t) => {
  if (!inRepository) {
    t.skip('not in the RTM repository (a copy of the package): no chat example beside it');
    return;
  }
  const fresh = await bundle();
  const stale = `${path.relative(REPO, chatBundle)} is not what clients/js's sources build: run ${UPDATE} and commit ${path.relative(REPO, chatBundle)}`;
  assert.ok(fs.existsSync(chatBundle), stale);
  // Byte for byte.
  assert.ok(fs.readFileSync(chatBundle).equals(Buffer.from(fresh, 'utf8')), stale);
  // The committed copy, not only the one on disk: a copy updated but not
  // committed while its sources are committed fails here.
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
    assert.fail(`the committed ${path.relative(REPO, chatBundle)} differs from what its committed sources build: commit the one ${UPDATE} wrote`);
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

test('npm pack: the tarball has the licences, the README, package.json and dist/, nothing else', () => {
  const pkg = require('../package.json');
  assert.equal(pkg.license, 'MIT OR Apache-2.0');
  const npm = process.env.npm_execpath
    ? [process.execPath, [process.env.npm_execpath]]
    : [process.platform === 'win32' ? 'npm.cmd' : 'npm', []];
  const out = execFileSync(npm[0], [...npm[1], 'pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    encoding: 'utf8',
  });
  const [packed] = JSON.parse(out);
  const files = packed.files.map((f) => f.path).sort();
  for (const file of ['LICENSE-APACHE', 'LICENSE-MIT', 'README.md', 'package.json', 'dist/browser/rtm-client.js', 'dist/cjs/index.js', 'dist/cjs/index.d.ts', 'dist/esm/index.js', 'dist/esm/index.d.ts']) {
    assert.ok(files.includes(file), `${file} is not packed: ${files.join(', ')}`);
  }
  const stray = files.filter((f) => !f.startsWith('dist/') && !['LICENSE-APACHE', 'LICENSE-MIT', 'README.md', 'package.json'].includes(f));
  assert.deepEqual(stray, [], 'packed beyond the package');
  assert.equal(packed.filename, `rtm-client-${pkg.version}.tgz`);
  assert.ok(!fs.existsSync(path.join(root, packed.filename)), '--dry-run left a tarball');
  // The licence texts are the repository's, when beside it.
  for (const licence of ['LICENSE-MIT', 'LICENSE-APACHE']) {
    const top = path.join(REPO, licence);
    if (inRepository && fs.existsSync(top)) {
      assert.ok(fs.readFileSync(path.join(root, licence)).equals(fs.readFileSync(top)), `clients/js/${licence} differs from the repository's ${licence}: copy it again`);
    }
  }
});
