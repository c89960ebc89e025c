// The browser bundle: src/browser.ts as one classic script defining the
// global `RTM`, with no dependency (`ws` is for Node only and is stubbed out).
// Used by `npm run build` (scripts/build.mjs) and by the test that checks the
// copy committed beside the chat example is up to date.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The copy the chat example embeds (committed, so `cargo run` needs no Node). */
export const chatBundle = path.resolve(root, '../../rtm-tokio/examples/chat/rtm-client.js');
export const distBundle = path.join(root, 'dist/browser/rtm-client.js');

const BANNER = `// @rtm/client browser bundle: defines the global RTM (RTM.connect, RTM.Client,
// RTM.RtmClient, RTM.RtmError, RTM.ErrorCodes). Generated from clients/js/src by
// \`npm run build\` in clients/js: do not edit; rebuild and commit instead.`;

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
