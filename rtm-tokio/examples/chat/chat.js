// RTM chat page: the chat UI on the RTM client (@rtm/client, clients/js in
// the repository), whose browser bundle /rtm-client.js defines the global RTM.
// The client keeps the connection: it signs in on every (re)connect, re-sends
// the room subscriptions (push tags), backs off between attempts with jitter,
// and fails calls in flight when the connection drops. Rooms keep history on
// the server: after a reconnect the client first gets the room messages sent
// meanwhile (in order, once); when they cannot be recovered it emits
// 'resync', and the room's log shows a notice where messages may be missing.
// Direct messages keep no history (said in the DM view).
// All user text goes through textContent, never innerHTML.
//
// Storage: the signed-in name, the open conversation, the messages and the
// drafts are per tab (sessionStorage), so each tab may be a different user;
// the last name used is remembered for the sign-in form (localStorage), never
// used to sign in by itself; the rooms joined and the key of each name (what
// the server bound the name to) are per browser (localStorage), so the
// user's other tabs sign in as the same name.
//
// Rendering is incremental: a message appends one row and updates one entry
// of the side bar; names the user never talked with land in a capped list of
// requests, so a flood of throwaway names costs a few nodes, not a redraw.
'use strict';

const RETRY = { initialMs: 500, maxMs: 5000, factor: 2, jitter: 'equal' }; // reconnect backoff
const CONNECT_TIMEOUT_MS = 10000; // a socket still opening after this is retried
const MAX_LOG = 500; // messages kept per conversation (and rows in the view)
const KEEP_LOG = 100; // of which kept across a reload of the tab
const MAX_REQUESTS = 50; // message requests kept; the oldest goes first
const REQUEST_LOG = 20; // messages kept per request
// Unsent messages go out by themselves when the connection is back, unless
// older than this: the server forgets message ids after 10 minutes (a resend
// of one that did arrive would then show twice), and the user may no longer
// mean it. Those wait for Retry.
const RESEND_MAX_AGE_MS = 5 * 60 * 1000;
const TAKEN_RETRIES = 2; // "name taken" on a reconnect: try again with the key another tab may have just stored
const MAX_LINES = 20; // the server refuses longer messages
const NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;
const NAME_RULE = '1 to 32 letters, digits, - or _';

const TAB_NAME = 'rtm-chat-name'; // sessionStorage: who this tab is
const TAB_VIEW = 'rtm-chat-view'; // sessionStorage: the open conversation
const TAB_LOGS = 'rtm-chat-logs:'; // sessionStorage + name: the messages
const TAB_DRAFTS = 'rtm-chat-drafts:'; // sessionStorage + name: the drafts
const LAST_NAME = 'rtm-chat-last-name'; // localStorage: offered on the sign-in form
const ROOMS = 'rtm-chat-rooms:'; // localStorage + name: the rooms joined
const KEY = 'rtm-chat-key:'; // localStorage + name: the key the server bound the name to

const $ = (id) => document.getElementById(id);
const narrow = window.matchMedia('(max-width: 700px)');

// Storage may be disabled or full: the chat works without it.
const store = {
  get: (area, key) => { try { return window[area].getItem(key); } catch { return null; } },
  set: (area, key, value) => { try { window[area].setItem(key, value); } catch { /* not kept */ } },
  remove: (area, key) => { try { window[area].removeItem(key); } catch { /* nothing to do */ } },
};

// A notice in a room's log: { notice: true, text, ts } (messages that could
// not be recovered after a reconnect), kept and shown among the messages.
// A message: { from, text, ts, id? }; the user's own also have `to` (the
// view it was typed in: it goes there whatever is open when it is sent), `at`
// (when typed) and, until the server took it, `state`: 'sending', 'waiting'
// (not sent: goes when the connection is back) or 'failed' (with `error`,
// and a Retry that resends it with the same id: the server sends an id once).
const state = {
  name: '',
  rooms: [],
  view: null, // 'room:<name>' or 'dm:<user>'
  convs: new Map(), // view -> { log: [message], unread }: rooms, and DMs the user opened or answered
  requests: new Map(), // name -> { log: [message] }: DMs from names with no conversation, oldest first
  drafts: new Map(), // view -> the text typed there and not sent
  unread: 0, // over every conversation (requests not counted: strangers cannot raise it)
  online: new Set(), // names signed in on this server (presence is per server)
  conn: 'idle', // 'connecting' | 'online' | 'waiting' (a retry is scheduled) | 'idle'
  everOnline: false, // this sign-in has been online once: a drop is a "disconnect"
  retryAt: 0,
  retryWhy: '', // the banner's reason while a new sign-in is scheduled
  server: { cluster: false, broker: 'none', reason: null }, // from status()
  errors: { main: null, side: null }, // slot -> { tag } of the error shown there
};
const mine = new Map(); // id -> the user's own message, to match the server's echo and resend

// ----- the RTM connection (one RTM.Client per sign-in) -----

let client = null;
let tickTimer = null;
let retryTimer = null;
let attempts = 0; // failed connections since the last sign-in succeeded
let takenRetries = 0;
let transientRetries = 0;

const RTM_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/rtm';
const ROOM_EVENT = 'room-message';

// What the page signs in with: the name, and the key the server gave it (by
// this tab or another of this browser), read at each (re)connect. Also kept
// in memory: without storage a reconnect would lose it and be refused.
const keys = new Map(); // name -> key
const currentKey = () => store.get('localStorage', KEY + state.name) || keys.get(state.name) || null;
function keepKey(key) {
  keys.set(state.name, key);
  store.set('localStorage', KEY + state.name, key);
}
function forgetKey() {
  keys.delete(state.name);
  store.remove('localStorage', KEY + state.name);
}
let sentKey = null; // the key of the last sign-in sent
function authArgs() {
  sentKey = currentKey();
  return sentKey ? [state.name, sentKey] : [state.name];
}

// The chat signs in with `[name, key]`; @rtm/client sends its `auth` option as
// the single element of the auth frame's data, fixed when the client is made.
// So the client is given this WebSocket, which writes the auth frame's data
// as it sends it, with the key as it stands at that (re)connect.
class ChatSocket extends WebSocket {
  send(data) {
    if (typeof data === 'string' && data.includes('"type":"auth"')) {
      try {
        const frame = JSON.parse(data);
        if (frame.type === 'auth') {
          frame.data = authArgs();
          data = JSON.stringify(frame);
        }
      } catch { /* not a frame to rewrite */ }
    }
    super.send(data);
  }
}

function connect() {
  stop();
  const c = (client = new RTM.Client(RTM_URL, {
    auth: state.name, // rewritten by ChatSocket
    reconnect: RETRY,
    openTimeoutMs: CONNECT_TIMEOUT_MS,
    WebSocket: ChatSocket,
  }));
  const ours = (fn) => (...args) => { if (client === c) fn(...args); };
  c.subscribe(ROOM_EVENT, ours((room, from, text, ts, id) => {
    if (state.rooms.includes(room)) receive('room:' + room, from, text, ts, id);
  }));
  c.subscribe('dm', ours((from, text, ts, to, id) => receive('dm:' + (from === state.name ? to : from), from, text, ts, id)));
  c.subscribe('presence', ours((diff) => applyPresence(diff)));
  c.subscribe('status', ours((status) => setServerStatus(status)));
  // A room's messages sent while this client was away that the server could not give back.
  c.on('resync', ours((event, tag, reason) => {
    const room = typeof tag === 'string' && tag.startsWith('room:') ? tag.slice(5) : '';
    if (event === ROOM_EVENT && state.rooms.includes(room)) addNotice('room:' + room, missedText(reason));
  }));
  c.on('connecting', ours(({ attempt }) => {
    attempts = Math.max(attempts, attempt);
    setConn('connecting');
  }));
  c.on('reconnecting', ours(({ delayMs }) => {
    state.retryAt = Date.now() + delayMs;
    state.retryWhy = '';
    setConn('waiting');
  }));
  c.on('open', ours(({ authData }) => started(c, authData)));
  c.on('error', ours((err) => {
    if (err.code === 'rtm/auth-rejected') refused(err.message || 'sign-in refused');
    // else a denied room, a bad frame: nothing to undo
  }));
  // The rooms are push subscriptions the client holds: sent once open, re-sent after every reconnect.
  for (const room of state.rooms) subscribe(room);
  setConn('connecting');
}

// The server refused the sign-in; the client is closed for good.
function refused(message) {
  stop();
  // A limit or an outage, not a verdict on the name: a new client tries
  // later. Too many sign-ins from this address (the server says when to
  // retry), or the cluster's Redis, which holds the names, not answering.
  const wait = /retry in (\d+) ms/.exec(message);
  if (wait || message.startsWith('names-unavailable:')) {
    const ms = wait ? Number(wait[1]) : Math.min(30000, 2000 * 2 ** Math.min(transientRetries++, 4));
    const why = wait ? 'Too many sign-ins from this address.' : 'Names cannot be checked now (the cluster’s Redis does not answer).';
    retryIn(ms + 250 + Math.random() * 1000, why);
    return;
  }
  if (message.startsWith('name-taken:')) {
    // After a server restart every tab of this browser signs in again with the
    // old key: the first gets a new one, which the others find stored.
    if (state.everOnline && takenRetries < TAKEN_RETRIES) {
      takenRetries += 1;
      retryIn(1000 + Math.random() * 1000, 'Signing in again…');
      return;
    }
    // The key sent is not the name's: forget it (unless another tab stored a newer one).
    if (sentKey && currentKey() === sentKey) forgetKey();
    const name = state.name;
    signedOut();
    showLogin(`“${name}” is in use in another browser (or was, a short while ago). Sign in from that browser, or pick another name.`);
    return;
  }
  signedOut();
  showLogin(message);
}

// A new client (a new sign-in) after `ms`; the banner counts down to it.
function retryIn(ms, why) {
  clearTimeout(retryTimer);
  attempts = Math.max(attempts, 1);
  state.retryAt = Date.now() + ms;
  state.retryWhy = why;
  setConn('waiting');
  retryTimer = setTimeout(() => { if (state.name) connect(); }, ms);
}

// Open (signed in, rooms re-sent): keep the key, ask who is online and the cluster state, send what waited.
async function started(c, authData) {
  if (authData && typeof authData.key === 'string' && authData.user === state.name) keepKey(authData.key);
  takenRetries = 0;
  transientRetries = 0;
  state.retryWhy = '';
  store.set('sessionStorage', TAB_NAME, state.name);
  store.set('localStorage', LAST_NAME, state.name);
  // The whole list on every (re)connect; `presence` events then bring changes.
  call('hello').then(
    (names) => { if (client === c) setOnline(names); },
    (err) => { if (client === c && !lost(err)) showError('main', err, 'conn'); },
  );
  sendWaiting();
  // "online" only once the cluster link is known to be up (or absent): a
  // server without status() has no link to report.
  const status = await call('status').catch((err) => (lost(err) ? null : {}));
  if (client !== c || !status || c.state !== 'open') return;
  attempts = 0;
  state.everOnline = true;
  setServerStatus(status);
  setConn('online');
  clearErrors('conn');
}

function stop() {
  clearTimeout(retryTimer);
  const c = client;
  client = null;
  c?.close(); // what is pending fails with rtm/closed: such messages wait for the next client
  setConn('idle');
}

// The connection went, or the client was closed: nothing to report but that.
const lost = (err) => err?.code === 'rtm/disconnected' || err?.code === 'rtm/closed';

// A call fails at once with rtm/disconnected while not connected.
function call(fn, ...args) {
  if (!client) return Promise.reject(new RTM.RtmError('rtm/disconnected', 'not connected'));
  return client.callWith({ whenOffline: 'fail' }, fn, ...args);
}

// ----- connection and cluster status: the status line, the banner, the stale list -----

function setConn(conn) {
  state.conn = conn;
  clearInterval(tickTimer);
  // While a retry is scheduled, the banner counts down to it.
  if (conn === 'waiting') tickTimer = setInterval(renderBanner, 1000);
  renderStatus();
  renderStale();
}

function setServerStatus(status) {
  const s = status && typeof status === 'object' ? status : {};
  state.server = {
    cluster: Boolean(s.cluster),
    broker: ['up', 'down'].includes(s.broker) ? s.broker : 'none',
    reason: typeof s.reason === 'string' ? s.reason : null,
  };
  if (state.server.broker !== 'down') clearErrors('broker');
  renderStatus();
  renderTitle();
  $('people-note').textContent = peopleNote();
  // Whether a name not online here may be on another server: the entries of conversations.
  for (const view of state.convs.keys()) if (view.startsWith('dm:')) refreshPerson(view.slice(3));
}

function renderStatus() {
  const down = state.server.broker === 'down';
  const [text, kind] = {
    online: down ? ['cluster link down', 'warn'] : ['online', 'ok'],
    connecting: [attempts ? 'reconnecting…' : 'connecting…', ''],
    waiting: ['disconnected', 'bad'],
    idle: ['signed out', ''],
  }[state.conn];
  $('status').textContent = text;
  $('status').className = 'status ' + kind;
  renderBanner();
}

function renderBanner() {
  let text = '';
  let kind = 'bad';
  const lost = state.retryWhy || (state.everOnline ? 'Disconnected from the server.' : 'Cannot reach the server.');
  if (state.conn === 'waiting') {
    const secs = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
    text = `${lost} Retrying in ${secs}\u00a0s…`;
  } else if (state.conn === 'connecting' && attempts > 0) {
    text = `${lost} Retrying…`;
  } else if (state.conn === 'online' && state.server.broker === 'down') {
    kind = 'warn';
    text = 'Cluster link down: rooms and direct messages fail until Redis is back.';
  }
  const banner = $('banner');
  banner.hidden = !text;
  banner.className = 'banner ' + kind;
  banner.title = kind === 'warn' && state.server.reason ? 'Redis: ' + state.server.reason : '';
  $('banner-text').textContent = text;
  $('banner-retry').hidden = state.conn !== 'waiting';
}

// Not connected: nobody tells the page who comes and goes, so the list it
// shows may be wrong (or, before the first sign-in, empty), and says so.
const stale = () => state.conn !== 'online';

function renderStale() {
  $('online').classList.toggle('stale', stale());
  $('people-note').textContent = peopleNote();
  renderTitle();
}

function peopleNote() {
  if (stale()) return state.everOnline ? 'may be out of date (disconnected)' : 'not known yet (connecting)';
  return state.server.cluster ? 'online on this server' : 'online';
}

// ----- presence: the whole list on (re)connect, then diffs -----

function setOnline(names) {
  if (!Array.isArray(names)) return;
  const next = new Set(names.map(String));
  const changed = [...state.online].filter((name) => !next.has(name));
  for (const name of next) if (!state.online.has(name)) changed.push(name);
  state.online = next;
  for (const name of changed) refreshPerson(name);
  if (changed.length) renderTitle();
}

// `{joined, left}`; a whole list from a server that still sends one.
function applyPresence(diff) {
  if (Array.isArray(diff)) return setOnline(diff);
  if (!diff || typeof diff !== 'object') return;
  const left = Array.isArray(diff.left) ? diff.left.map(String) : [];
  const joined = Array.isArray(diff.joined) ? diff.joined.map(String) : [];
  for (const name of left) state.online.delete(name);
  for (const name of joined) state.online.add(name);
  for (const name of new Set([...left, ...joined])) refreshPerson(name);
  const [kind, target] = splitView(state.view);
  if (kind === 'dm' && (left.includes(target) || joined.includes(target))) renderTitle();
}

// ----- rooms and messages -----

function loadRooms(name) {
  let rooms = null;
  try { rooms = JSON.parse(store.get('localStorage', ROOMS + name)); } catch { /* none saved */ }
  return Array.isArray(rooms) && rooms.every((r) => typeof r === 'string' && NAME_RE.test(r)) ? rooms : ['lobby'];
}

const saveRooms = () => store.set('localStorage', ROOMS + state.name, JSON.stringify(state.rooms));

const validMessage = (m) => m && typeof m === 'object' && typeof m.text === 'string'
  && (typeof m.from === 'string' || m.notice === true);

function loadLogs(name) {
  state.convs.clear();
  state.requests.clear();
  state.unread = 0;
  mine.clear();
  let saved = null;
  try { saved = JSON.parse(store.get('sessionStorage', TAB_LOGS + name)); } catch { /* none saved */ }
  if (!Array.isArray(saved)) return;
  for (const [view, log] of saved) {
    if (typeof view !== 'string' || !/^(room|dm):/.test(view) || !Array.isArray(log)) continue;
    const kept = log.filter(validMessage);
    for (const m of kept) {
      if (m.from !== name || typeof m.id !== 'string') continue;
      // Sending when the tab went: not known whether it arrived; a resend with its id is safe.
      if (m.state === 'sending') m.state = 'waiting';
      mine.set(m.id, m);
    }
    state.convs.set(view, { log: kept, unread: 0 });
  }
}

let saveTimer = null;
function saveLogsSoon() {
  if (saveTimer) return;
  saveTimer = setTimeout(saveLogsNow, 1000);
}

function saveLogsNow() {
  clearTimeout(saveTimer);
  saveTimer = null;
  if (!state.name) return;
  // Conversations only: requests the user did not open are not kept.
  const logs = [...state.convs].map(([view, conv]) => [view, conv.log.slice(-KEEP_LOG)]);
  store.set('sessionStorage', TAB_LOGS + state.name, JSON.stringify(logs));
  store.set('sessionStorage', TAB_DRAFTS + state.name, JSON.stringify([...state.drafts]));
}

// A reload or a closed tab within the second after typing keeps what was typed.
window.addEventListener('pagehide', () => { if (saveTimer) saveLogsNow(); });

function loadDrafts(name) {
  state.drafts.clear();
  let saved = null;
  try { saved = JSON.parse(store.get('sessionStorage', TAB_DRAFTS + name)); } catch { /* none saved */ }
  if (!Array.isArray(saved)) return;
  for (const entry of saved) {
    if (Array.isArray(entry) && typeof entry[0] === 'string' && typeof entry[1] === 'string') state.drafts.set(entry[0], entry[1]);
  }
}

function subscribe(room) {
  const c = client;
  c?.subscribePush(ROOM_EVENT, ['room:' + room])
    .catch((err) => { if (client === c && err.code !== 'rtm/closed') showError('main', err, 'conn'); });
}

function joinRoom(room) {
  if (!state.rooms.includes(room)) {
    state.rooms.push(room);
    saveRooms();
    subscribe(room);
    if (!state.convs.has('room:' + room)) state.convs.set('room:' + room, { log: [], unread: 0 });
    renderRooms();
  }
  show('room:' + room);
}

function leaveRoom(room) {
  state.rooms = state.rooms.filter((r) => r !== room);
  saveRooms();
  client?.unsubscribePush(ROOM_EVENT, ['room:' + room]).catch(() => {});
  closeView('room:' + room);
  renderRooms();
}

// A direct message to anyone: online here or not (on another server of the cluster).
function openDm(name) {
  name = name.trim().replace(/^@/, '');
  if (!NAME_RE.test(name)) {
    showError('side', { message: `A user name is ${NAME_RULE}.` }, 'form');
    return false;
  }
  const view = 'dm:' + name;
  if (!state.convs.has(view)) {
    // Opening a request makes it a conversation: kept, and its messages with it.
    const request = state.requests.get(name);
    state.convs.set(view, { log: request ? request.log : [], unread: 0 });
    if (request) dropRequest(name);
    saveLogsSoon();
    refreshPerson(name);
  }
  clearErrors('form');
  show(view);
  return true;
}

function closeView(view) {
  const conv = state.convs.get(view);
  if (conv) addUnread(conv, -conv.unread);
  // What was not sent yet goes with the conversation: not sent later.
  for (const m of conv?.log || []) if (m.id && mine.get(m.id) === m) mine.delete(m.id);
  state.convs.delete(view);
  state.drafts.delete(view);
  saveLogsSoon();
  if (view.startsWith('dm:')) refreshPerson(view.slice(3));
  if (state.view === view) show(state.rooms.length ? 'room:' + state.rooms[0] : null, { focus: false });
}

// A message from the server: a room's, a DM to or from this user.
function receive(view, from, text, ts, id) {
  from = String(from);
  const m = { from, text: String(text), ts: Number(ts) };
  if (typeof id === 'string' && id) {
    m.id = id;
    // The user's own message coming back: it arrived; no second copy.
    const own = from === state.name && mine.get(id);
    if (own) return settle(own, m.ts);
    // Shown already (the client gives a recovered message once; this also
    // holds against a log restored from storage): no second copy.
    if (state.convs.get(view)?.log.some((x) => x.id === id && x.from === from)) return;
  }
  if (view.startsWith('dm:') && !state.convs.has(view) && from !== state.name) {
    addRequest(view.slice(3), m);
    return;
  }
  addMessage(view, m);
}

function addMessage(view, m) {
  let conv = state.convs.get(view);
  const fresh = !conv;
  if (fresh) {
    conv = { log: [], unread: 0 };
    state.convs.set(view, conv);
  }
  conv.log.push(m);
  if (conv.log.length > MAX_LOG) {
    const old = conv.log.shift();
    if (old.id && mine.get(old.id) === old) mine.delete(old.id);
  }
  saveLogsSoon();
  if (view === state.view) appendSoon(m);
  else if (m.from !== state.name) addUnread(conv, 1);
  if (fresh && view.startsWith('dm:')) refreshPerson(view.slice(3));
  else updateEntry(view);
}

// Why messages of a room may be missing after a reconnect ('resync' reasons).
function missedText(reason) {
  const why = {
    'epoch-changed': 'the room’s history was lost (the server restarted, or the room was quiet for long)',
    trimmed: 'more were sent than the room keeps',
    'too-many': 'more were sent than can be caught up at once',
    'too-old': 'they are older than the room keeps',
  }[reason] || 'the server could not give them back';
  return `Messages sent while you were disconnected may be missing here: ${why}.`;
}

// A notice in a conversation's log (not a message: no author, no unread count).
// Twice in a row (reconnects in a row) it shows once, with the latest reason.
function addNotice(view, text) {
  const conv = state.convs.get(view);
  if (!conv) return;
  const last = conv.log.at(-1);
  if (last?.notice) {
    last.text = text;
    last.ts = Date.now();
    const li = nodes.get(last);
    if (li?.isConnected) li.replaceWith(messageItem(last));
    saveLogsSoon();
    return;
  }
  const m = { notice: true, text, ts: Date.now() };
  conv.log.push(m);
  if (conv.log.length > MAX_LOG) {
    const old = conv.log.shift();
    if (old.id && mine.get(old.id) === old) mine.delete(old.id);
  }
  saveLogsSoon();
  if (view === state.view) appendSoon(m);
}

function addUnread(conv, n) {
  conv.unread += n;
  state.unread += n;
  renderUnread();
}

// ----- sending: the box clears at once; the message shows how it goes -----

function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function sendTyped() {
  const box = $('text');
  const text = box.value;
  const view = state.view;
  if (!view || !text.trim()) return; // a second Enter or tap finds the box empty: sent once
  if (text.split('\n').length > MAX_LINES) {
    showError('main', { message: `A message has at most ${MAX_LINES} lines.` }, 'lines');
    return;
  }
  box.value = '';
  state.drafts.delete(view);
  fitBox();
  const now = Date.now();
  const m = { from: state.name, text, ts: now, id: newId(), to: view, at: now, state: 'sending' };
  mine.set(m.id, m);
  addMessage(view, m);
  deliver(m);
}

// Sends (or resends, with the same id) the user's message to where it was typed.
function deliver(m) {
  const [kind, target] = splitView(m.to);
  m.state = 'sending';
  delete m.error;
  updateMessage(m);
  call(kind === 'room' ? 'say' : 'dm', target, m.text, m.id).then((reply) => settle(m, reply?.ts), (err) => {
    if (!m.state) return; // its echo came: it arrived
    // No connection (or it went with the call in flight, or the client was
    // replaced): sent again, with its id, once signed in again.
    if (lost(err) || err.code === 'rtm/auth-rejected') {
      m.state = 'waiting';
    } else {
      m.state = 'failed';
      m.error = describe(err);
    }
    // Why, and Retry, are on the message itself; the banner tells about the connection.
    updateMessage(m);
    saveLogsSoon();
  });
}

// The server took the message (its reply, or its echo).
function settle(m, ts) {
  if (!m.state) return;
  delete m.state;
  delete m.error;
  if (Number.isFinite(ts)) m.ts = ts;
  updateMessage(m);
  saveLogsSoon();
}

// Signed in again: what waited goes, in the order it was typed.
function sendWaiting() {
  for (const m of mine.values()) {
    if (m.state !== 'waiting') continue;
    if (Date.now() - (m.at || 0) > RESEND_MAX_AGE_MS) {
      m.state = 'failed';
      m.error = 'Not sent for over 5 minutes.';
      updateMessage(m);
    } else {
      deliver(m);
    }
  }
}

// ----- errors: each says which condition it reports, and goes when that does -----

const TAGS = { 'rtm/disconnected': 'conn', 'rtm/broker-unavailable': 'broker' };

function describe(err) {
  switch (err.code) {
    case 'rtm/disconnected': return 'Not connected: reconnecting.';
    case 'rtm/broker-unavailable': return 'Not sent: the cluster link (Redis) is down. Retry when it is back.';
    default: return err.message || err.code || String(err);
  }
}

// slot: 'main' (under the messages) or 'side' (under the forms of the side bar).
function showError(slot, err, tag) {
  const box = $(slot === 'side' ? 'side-error' : 'error');
  if (!err) {
    box.textContent = '';
    state.errors[slot] = null;
    return;
  }
  box.textContent = describe(err);
  state.errors[slot] = { tag: TAGS[err.code] || tag };
}

function clearErrors(tag) {
  for (const slot of ['main', 'side']) if (state.errors[slot]?.tag === tag) showError(slot, null);
}

// ----- rendering -----

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setView(view) {
  state.view = view;
  if (view) store.set('sessionStorage', TAB_VIEW, view);
  else store.remove('sessionStorage', TAB_VIEW);
}

function show(view, { focus = true } = {}) {
  const before = state.view;
  setView(view);
  const conv = state.convs.get(view);
  if (conv?.unread) addUnread(conv, -conv.unread);
  showError('main', null);
  setDrawer(false);
  // The box holds the draft of the conversation shown.
  $('text').value = state.drafts.get(view) || '';
  fitBox();
  renderView();
  if (before !== view) updateEntry(before);
  updateEntry(view);
  if (focus && !narrow.matches) $('text').focus(); // on a phone that would pop up the keyboard
}

// The open conversation, drawn whole (on switching to it).
function renderView() {
  renderTitle();
  $('compose').hidden = !state.view;
  appendQueue.length = 0;
  const log = state.convs.get(state.view)?.log || [];
  const list = $('log');
  const empty = state.view ? 'No messages yet.' : 'Join a room, or message someone by name.';
  list.replaceChildren(...(log.length ? log.map(messageItem) : [el('li', 'empty', empty)]));
  list.scrollTop = list.scrollHeight;
}

// Messages for the open conversation are appended once per frame: one
// layout for a burst, not one per message.
const appendQueue = [];
let appendFrame = 0;
function appendSoon(m) {
  appendQueue.push(m);
  if (appendFrame) return;
  const flush = () => {
    cancelAnimationFrame(appendFrame);
    clearTimeout(appendTimer);
    appendFrame = 0;
    flushAppends();
  };
  appendFrame = requestAnimationFrame(flush);
  // A hidden tab gets no frames: a timer then (slowed, but the log is drawn).
  const appendTimer = setTimeout(flush, 500);
}

function flushAppends() {
  if (!appendQueue.length) return;
  const list = $('log');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const ownMessage = appendQueue.some((m) => m.from === state.name);
  if (list.firstElementChild?.classList.contains('empty')) list.replaceChildren();
  const rows = document.createDocumentFragment();
  for (const m of appendQueue.splice(0).slice(-MAX_LOG)) rows.append(messageItem(m));
  list.append(rows);
  while (list.childElementCount > MAX_LOG) list.firstElementChild.remove();
  if (atBottom || ownMessage) list.scrollTop = list.scrollHeight;
}

function renderTitle() {
  const [kind, target] = splitView(state.view);
  $('title').textContent = kind === 'room' ? '# ' + target : kind === 'dm' ? '@ ' + target : 'RTM chat';
  let note = '';
  if (kind === 'dm' && target !== state.name) {
    if (state.online.has(target)) note = stale() ? 'was online (may be out of date)' : 'online';
    else if (stale()) note = state.everOnline ? 'was not online (may be out of date)' : 'whether they are online is not known yet';
    else if (state.server.cluster) note = 'not on this server: reaches them on any server of the cluster';
    else note = 'not online: they will not see messages sent now';
  }
  $('title-note').textContent = note;
  // Rooms keep history (a reconnect gets what was missed, or a notice says
  // it could not); DMs do not yet: what is not delivered is said where it is typed.
  const viewNote = $('view-note');
  viewNote.hidden = kind !== 'dm' || target === state.name;
  viewNote.textContent = viewNote.hidden ? '' : `Messages sent while ${target} is offline are not delivered later.`;
  $('text').placeholder = kind === 'room' ? 'Message # ' + target : kind === 'dm' ? 'Message @ ' + target : 'Write a message';
}

// The side bar, drawn whole (on sign-in); afterwards only its entries change.
const entries = new Map(); // view -> { li, badge } in the rooms and people lists
let people = []; // the names listed under People, sorted (as the list's items)

function renderSide() {
  renderRooms();
  entries.forEach((entry, view) => { if (view.startsWith('dm:')) entries.delete(view); });
  people = [];
  $('online').replaceChildren();
  const names = new Set([...state.online, ...[...state.convs.keys()].filter((v) => v.startsWith('dm:')).map((v) => v.slice(3))]);
  for (const name of [...names].sort(compare)) refreshPerson(name);
  requestItems.clear();
  $('request-list').replaceChildren(...[...state.requests.keys()].reverse().map(requestItem));
  renderRequestCount();
  $('people-note').textContent = peopleNote();
  renderUnread();
}

function renderRooms() {
  for (const view of [...entries.keys()]) if (view.startsWith('room:')) entries.delete(view);
  $('rooms').replaceChildren(...state.rooms.map((room) => sideItem('room:' + room, '# ' + room, () => leaveRoom(room), 'leave ' + room)));
}

const compare = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// Where `name` is or goes in the sorted `people`.
function bisect(name) {
  let lo = 0;
  let hi = people.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (people[mid] < name) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// The People entry of `name` (online here, or a conversation), added, redrawn or removed.
function refreshPerson(name) {
  const view = 'dm:' + name;
  const talked = state.convs.has(view);
  const listed = state.online.has(name) || talked;
  const i = bisect(name);
  const present = people[i] === name;
  const list = $('online');
  if (!listed) {
    if (present) {
      people.splice(i, 1);
      list.children[i].remove();
      entries.delete(view);
    }
    return;
  }
  let li;
  if (name === state.name && !talked) {
    entries.delete(view);
    li = el('li', 'self');
    li.append(el('bdi', '', name), ' (you)');
  } else {
    const close = talked ? () => closeView(view) : null;
    li = sideItem(view, name === state.name ? name + ' (you)' : name, close, 'close the conversation');
    if (!state.online.has(name)) {
      li.classList.add('offline');
      li.title = state.server.cluster ? 'not on this server' : 'not online';
    }
  }
  if (present) {
    list.children[i].replaceWith(li);
  } else {
    people.splice(i, 0, name);
    list.insertBefore(li, list.children[i] || null);
  }
}

function sideItem(view, label, close, closeTitle) {
  const li = el('li', view === state.view ? 'active' : '');
  const name = el('button', 'name');
  name.append(el('bdi', '', label));
  name.type = 'button';
  name.onclick = () => (view.startsWith('dm:') ? openDm(view.slice(3)) : show(view));
  const badge = el('span', 'badge');
  li.append(name, badge);
  if (close) {
    const x = el('button', 'leave', '×');
    x.type = 'button';
    x.title = closeTitle;
    x.setAttribute('aria-label', closeTitle);
    x.onclick = close;
    li.append(x);
  }
  entries.set(view, { li, badge });
  updateEntry(view);
  return li;
}

// One entry of the side bar: its unread count and whether it is open.
function updateEntry(view) {
  const entry = view && entries.get(view);
  if (!entry) return;
  const count = state.convs.get(view)?.unread || 0;
  entry.badge.textContent = String(count);
  entry.badge.hidden = !count;
  entry.li.classList.toggle('active', view === state.view);
}

// Unread messages elsewhere: on the menu button (phones) and the tab's title.
function renderUnread() {
  $('menu-badge').textContent = String(state.unread);
  $('menu-badge').hidden = !state.unread;
  document.title = (state.unread ? `(${state.unread}) ` : '') + (state.name ? state.name + ' · RTM chat' : 'RTM chat');
}

// ----- requests: DMs from names with no conversation, capped, collapsed -----

const requestItems = new Map(); // name -> li

function addRequest(name, m) {
  let request = state.requests.get(name);
  if (request) state.requests.delete(name); // re-inserted: the newest is last
  else request = { log: [] };
  request.log.push(m);
  if (request.log.length > REQUEST_LOG) request.log.shift();
  state.requests.set(name, request);
  if (state.requests.size > MAX_REQUESTS) dropRequest(state.requests.keys().next().value);
  // Newest on top: one entry made or moved.
  const li = requestItems.get(name) || requestItem(name);
  li.querySelector('.badge').textContent = String(request.log.length);
  $('request-list').prepend(li);
  renderRequestCount();
}

function dropRequest(name) {
  state.requests.delete(name);
  requestItems.get(name)?.remove();
  requestItems.delete(name);
  renderRequestCount();
}

function requestItem(name) {
  const li = el('li');
  const button = el('button', 'name');
  button.type = 'button';
  button.append(el('bdi', '', name));
  button.onclick = () => openDm(name);
  li.append(button, el('span', 'badge', String(state.requests.get(name)?.log.length || 0)));
  requestItems.set(name, li);
  return li;
}

function renderRequestCount() {
  // Emptied, it closes: the next requests come collapsed.
  if (!state.requests.size) $('requests').open = false;
  $('requests').hidden = !state.requests.size;
  $('requests-count').textContent = String(state.requests.size);
}

// ----- a message: author and time in a line of their own, the text in a box under it -----

const nodes = new WeakMap(); // message -> its row, while shown

const STATE_TEXT = { sending: 'sending…', waiting: 'not sent yet: sends when reconnected', failed: 'not sent' };

function messageItem(m) {
  if (m.notice) {
    const li = el('li', 'notice');
    li.setAttribute('role', 'note');
    const time = el('time', 'time', new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
    if (Number.isFinite(m.ts)) time.dateTime = new Date(m.ts).toISOString();
    li.append(el('span', 'notice-text', m.text), ' ', time);
    nodes.set(m, li);
    return li;
  }
  const li = el('li', 'msg' + (m.from === state.name ? ' mine' : '') + (m.state ? ' ' + m.state : ''));
  const meta = el('div', 'meta');
  const time = el('time', 'time', new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  if (Number.isFinite(m.ts)) time.dateTime = new Date(m.ts).toISOString();
  meta.append(el('bdi', 'from', m.from), time);
  if (m.state) meta.append(el('span', 'state', STATE_TEXT[m.state] || ''));
  // The text keeps its line breaks inside the box, and its direction to itself.
  const text = el('div', 'text', m.text);
  text.dir = 'auto';
  li.append(meta, text);
  if (m.state === 'failed') {
    const fail = el('div', 'fail', m.error || 'Not sent.');
    const retry = el('button', 'retry', 'Retry');
    retry.type = 'button';
    retry.onclick = () => deliver(m); // the same id: sent at most once
    fail.append(' ', retry);
    li.append(fail);
  }
  nodes.set(m, li);
  return li;
}

function updateMessage(m) {
  const li = nodes.get(m);
  if (li?.isConnected) li.replaceWith(messageItem(m));
}

// 'room:lobby' -> ['room', 'lobby']
const splitView = (view) => (view ? [view.slice(0, view.indexOf(':')), view.slice(view.indexOf(':') + 1)] : [null, null]);

// The message box grows with its lines, up to a limit (CSS max-height).
function fitBox() {
  const box = $('text');
  box.style.height = 'auto';
  box.style.height = box.scrollHeight + 2 + 'px';
}

function setDrawer(open) {
  $('app').classList.toggle('drawer-open', open);
  $('menu').setAttribute('aria-expanded', String(open));
  $('scrim').hidden = !open;
}

function showLogin(message) {
  document.title = 'RTM chat';
  $('app').hidden = true;
  $('login').hidden = false;
  // The name this browser used last, offered (not used) so another tab can be someone else.
  const input = $('login-name');
  input.value = state.name || store.get('localStorage', LAST_NAME) || store.get('localStorage', 'rtm-chat-name') || '';
  $('login-error').textContent = message || '';
  input.focus();
  input.select();
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = state.name;
  state.rooms = loadRooms(state.name);
  loadLogs(state.name);
  loadDrafts(state.name);
  for (const room of state.rooms) if (!state.convs.has('room:' + room)) state.convs.set('room:' + room, { log: [], unread: 0 });
  const saved = store.get('sessionStorage', TAB_VIEW);
  const [kind, target] = splitView(saved);
  const known = (kind === 'room' && state.rooms.includes(target)) || (kind === 'dm' && NAME_RE.test(target || ''));
  if (kind === 'dm' && known && !state.convs.has(saved)) state.convs.set(saved, { log: [], unread: 0 });
  setView(null);
  renderSide();
  show(known ? saved : state.rooms.length ? 'room:' + state.rooms[0] : null);
}

function signIn(name) {
  state.name = name;
  state.everOnline = false;
  state.retryWhy = '';
  attempts = 0;
  takenRetries = 0;
  showApp();
  connect();
}

// Forget this tab's user (not the name offered on the form, nor the name's key).
function signedOut() {
  clearTimeout(saveTimer); // nothing of this user is saved after this
  saveTimer = null;
  store.remove('sessionStorage', TAB_NAME);
  store.remove('sessionStorage', TAB_VIEW);
  store.remove('sessionStorage', TAB_LOGS + state.name);
  store.remove('sessionStorage', TAB_DRAFTS + state.name);
  state.convs.clear();
  state.requests.clear();
  state.drafts.clear();
  state.unread = 0;
  mine.clear();
  state.online = new Set();
  state.view = null;
  state.everOnline = false;
  state.retryWhy = '';
  state.server = { cluster: false, broker: 'none', reason: null };
  $('text').value = '';
  showError('main', null);
  showError('side', null);
}

// ----- wiring -----

$('login').onsubmit = (e) => {
  e.preventDefault();
  const name = $('login-name').value.trim().replace(/^@/, '');
  if (!NAME_RE.test(name)) {
    $('login-error').textContent = `A name is ${NAME_RULE}.`;
    return;
  }
  $('login-error').textContent = '';
  signIn(name);
};
$('login-name').oninput = () => { $('login-error').textContent = ''; };

// '#room' or 'room' joins a room; '@name' starts a direct message.
$('join').onsubmit = (e) => {
  e.preventDefault();
  const input = $('join-name');
  const raw = input.value.trim();
  if (!raw) return;
  if (raw.startsWith('@')) {
    if (openDm(raw)) input.value = '';
    return;
  }
  const room = raw.replace(/^#/, '');
  if (!NAME_RE.test(room)) {
    showError('side', { message: `A room name is ${NAME_RULE}.` }, 'form');
    return;
  }
  input.value = '';
  clearErrors('form');
  joinRoom(room);
};

$('dm-form').onsubmit = (e) => {
  e.preventDefault();
  const input = $('dm-name');
  if (input.value.trim() && openDm(input.value)) input.value = '';
};

for (const id of ['join-name', 'dm-name']) $(id).addEventListener('input', () => clearErrors('form'));
$('text').addEventListener('input', () => {
  clearErrors('lines');
  // The draft belongs to the conversation it is typed in.
  const text = $('text').value;
  if (text) state.drafts.set(state.view, text);
  else state.drafts.delete(state.view);
  saveLogsSoon();
  fitBox();
});
// Enter sends; Shift+Enter is a new line; Enter that ends an IME composition is not a send.
$('text').addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' || e.shiftKey || e.isComposing || e.keyCode === 229) return;
  e.preventDefault();
  sendTyped();
});
$('compose').onsubmit = (e) => {
  e.preventDefault();
  sendTyped();
};
// A tap on Send keeps the focus (and a phone's keyboard) in the box.
$('send').addEventListener('mousedown', (e) => e.preventDefault());

$('logout').onclick = () => {
  stop();
  signedOut();
  showLogin('');
};

$('banner-retry').onclick = () => {
  if (retryTimer && state.conn === 'waiting' && !client) connect();
  else client?.reconnectNow();
};
$('menu').onclick = () => setDrawer(!$('app').classList.contains('drawer-open'));
$('scrim').onclick = () => setDrawer(false);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') setDrawer(false); });
narrow.addEventListener('change', () => setDrawer(false));
// Back from offline, or a tab woken up: retry now rather than at the next tick.
window.addEventListener('online', () => { if (state.conn === 'waiting') client?.reconnectNow(); });
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.conn === 'waiting') client?.reconnectNow();
});

const tabName = store.get('sessionStorage', TAB_NAME);
if (tabName && NAME_RE.test(tabName)) signIn(tabName);
else showLogin('');
