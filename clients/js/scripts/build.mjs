// `npm run build`: the ESM and CommonJS builds with their type declarations
// (tsc), and the browser bundle (esbuild). It writes in dist/ only (the chat
// example copies the bundle itself: rtm-tokio/examples/chat/update-client-bundle.sh).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { bundle, distBundle, root } from './bundle.mjs';

const require = createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc');

fs.rmSync(path.join(root, 'dist'), { recursive: true, force: true });
for (const [config, type] of [['tsconfig.esm.json', 'module'], ['tsconfig.cjs.json', 'commonjs']]) {
  execFileSync(process.execPath, [tsc, '-p', config], { cwd: root, stdio: 'inherit' });
  const out = path.join(root, 'dist', type === 'module' ? 'esm' : 'cjs');
  fs.writeFileSync(path.join(out, 'package.json'), JSON.stringify({ type }, null, 2) + '\n');
}
const text = await bundle();
fs.mkdirSync(path.dirname(distBundle), { recursive: true });
fs.writeFileSync(distBundle, text);
console.log('build: dist/esm, dist/cjs (with .d.ts), dist/browser/rtm-client.js');
