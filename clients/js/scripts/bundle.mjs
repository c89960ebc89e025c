// The browser bundle: src/browser.ts as one classic script defining the
// global `RTM`, with no dependency (`ws` is for Node only and is stubbed out).
// Used by `npm run build` (scripts/build.mjs), which writes it to
// dist/browser/ only, and by the test that checks a copy of it is up to date.
// The same sources give the same bytes, wherever it is run from (the paths in
// its comments are relative to this package).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const distBundle = path.join(root, 'dist/browser/rtm-client.js');

const BANNER = `// @rtm/client browser bundle: defines the global RTM (RTM.connect, RTM.Client,
// RTM.RtmClient, RTM.RtmError, RTM.ErrorCodes). Generated from clients/js/src by
// \`npm run build\` (dist/browser/rtm-client.js): do not edit. A copy committed
// elsewhere is updated by its own script (the chat example's:
// rtm-tokio/examples/chat/update-client-bundle.sh).`;

const noWs = {
  name: 'no-ws',
  setup(build) {
    build.onResolve({ filter: /^ws$/ }, () => ({ path: 'ws', namespace: 'no-ws' }));
    build.onLoad({ filter: /.*/, namespace: 'no-ws' }, () => ({ contents: 'export default undefined;', loader: 'js' }));
  },
};

/** Builds the bundle in memory; resolves with its text. */
export async function bundle() {
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [path.join(root, 'src/browser.ts')],
    bundle: true,
    write: false,
    format: 'iife',
    globalName: 'RTM',
    platform: 'browser',
    target: 'es2020',
    charset: 'utf8',
    legalComments: 'none',
    banner: { js: BANNER },
    plugins: [noWs],
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}
