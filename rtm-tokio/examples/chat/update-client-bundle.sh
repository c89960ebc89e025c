#!/usr/bin/env bash
# Updates rtm-client.js, the copy of @rtm/client's browser bundle this example
# embeds (include_str! in ../chat.rs) and serves as /rtm-client.js. The copy is
# committed so the example builds with plain `cargo build`, without Node; run
# this after changing clients/js, then commit rtm-client.js. clients/js's
# `npm test` fails while the committed copy is not what its sources build.
#
# It builds clients/js (`npm ci` first when its node_modules is missing or
# older than its lockfile; `npm run build` writes in clients/js/dist/ only)
# and copies clients/js/dist/browser/rtm-client.js here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
client=$(cd "$here/../../../clients/js" && pwd)

cd "$client"
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
cp dist/browser/rtm-client.js "$here/rtm-client.js"
echo "update-client-bundle: copied clients/js/dist/browser/rtm-client.js to rtm-tokio/examples/chat/rtm-client.js"
