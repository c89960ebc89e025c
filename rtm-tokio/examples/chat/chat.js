// RTM chat page: the chat UI on the RTM client (@rtm/client, clients/js in
// the repository), whose browser bundle /rtm-client.js defines the global RTM.
// The client keeps the connection: it authenticates with the name on every
// (re)connect, re-sends the room subscriptions (push tags), backs off between
// attempts with jitter, and fails calls in flight when the connection drops.
// All user text goes through textContent, never innerHTML.
//
// Storage: the signed-in name, the open conversation and the messages are
// per tab (sessionStorage), so each tab may be a different user; the last
// name used is remembered for the sign-in form (localStorage), never used to
// sign in by itself; the rooms joined are remembered per name (localStorage).
'use strict';

const RETRY = { initialMs: 500, maxMs: 5000, factor: 2, jitter: 'equal' }; // reconnect backoff
const CONNECT_TIMEOUT_MS = 10000; // a socket still opening after this is retried
const MAX_LOG = 500; // messages kept per conversation
const KEEP_LOG = 100; // of which kept across a reload of the tab
const NAME_RE = /^[A-Za-z0-9_-]{1,32}$/;
const NAME_RULE = '1 to 32 letters, digits, - or _';

const TAB_NAME = 'rtm-chat-name'; // sessionStorage: who this tab is
const TAB_VIEW = 'rtm-chat-view'; // sessionStorage: the open conversation
const TAB_LOGS = 'rtm-chat-logs:'; // sessionStorage + name: the messages
const LAST_NAME = 'rtm-chat-last-name'; // localStorage: offered on the sign-in form
const ROOMS = 'rtm-chat-rooms:'; // localStorage + name: the rooms joined

const $ = (id) => document.getElementById(id);
const narrow = window.matchMedia('(max-width: 700px)');

// Storage may be disabled or full: the chat works without it.
const store = {
  get: (area, key) => { try { return window[area].getItem(key); } catch { return null; } },
  set: (area, key, value) => { try { window[area].setItem(key, value); } catch { /* not kept */ } },
  remove: (area, key) => { try { window[area].removeItem(key); } catch { /* nothing to do */ } },
};

const state = {
  name: '',
  rooms: [],
  view: null, // 'room:<name>' or 'dm:<user>'
  logs: new Map(), // view -> [{ from, text, ts }]
  unread: new Map(), // view -> count
  online: [], // names signed in on this server (presence is per server)
  conn: 'idle', // 'connecting' | 'online' | 'waiting' (a retry is scheduled) | 'idle'
  everOnline: false, // this sign-in has been online once: a drop is a "disconnect"
  retryAt: 0,
  server: { cluster: false, broker: 'none', reason: null }, // from status()
  errors: { main: null, side: null }, // slot -> { tag } of the error shown there
};

// ----- the RTM connection (one RTM.Client per sign-in) -----

let client = null;
let tickTimer = null;
let attempts = 0; // failed connections since the last sign-in succeeded

const RTM_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/rtm';
const ROOM_EVENT = 'room-message';

function connect() {
  stop();
  const c = (client = new RTM.Client(RTM_URL, {
    auth: state.name,
    reconnect: RETRY,
    openTimeoutMs: CONNECT_TIMEOUT_MS,
  }));
  const mine = (fn) => (...args) => { if (client === c) fn(...args); };
  c.subscribe(ROOM_EVENT, mine((room, from, text, ts) => addMessage('room:' + room, from, text, ts)));
  c.subscribe('dm', mine((from, text, ts, to) => addMessage('dm:' + (from === state.name ? to : from), from, text, ts)));
  c.subscribe('presence', mine((names) => setOnline(names)));
  c.subscribe('status', mine((status) => setServerStatus(status)));
  c.on('connecting', mine(({ attempt }) => {
    attempts = attempt;
    setConn('connecting');
  }));
  c.on('reconnecting', mine(({ delayMs }) => {
    state.retryAt = Date.now() + delayMs;
    setConn('waiting');
  }));
  c.on('open', mine(() => started(c)));
  c.on('error', mine((err) => {
    if (err.code !== 'rtm/auth-rejected') return; // a denied room, a bad frame: nothing to undo
    stop();
    signedOut();
    showLogin(err.message || 'sign-in refused');
  }));
  // The rooms are push subscriptions the client holds: sent once open, re-sent after every reconnect.
  for (const room of state.rooms) subscribe(room);
  setConn('connecting');
}

// Open (signed in, rooms re-sent): remember the name, announce ourselves, ask the cluster state.
async function started(c) {
  store.set('sessionStorage', TAB_NAME, state.name);
  store.set('localStorage', LAST_NAME, state.name);
  call('hello').then(
    (names) => { if (client === c) setOnline(names); },
    (err) => { if (client === c && !lost(err)) showError('main', err, 'conn'); },
  );
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
  const c = client;
  client = null;
  c?.close(); // what is pending fails with rtm/closed: ignored, as the client is no longer ours
  setConn('idle');
}

// The connection went, or the client was closed: nothing to report but that.
const lost = (err) => err?.code === 'rtm/disconnected' || err?.code === 'rtm/closed';

// A call fails at once with rtm/disconnected while not connected (the text stays in the box).
function call(fn, ...args) {
  if (!client) return Promise.reject(new RTM.RtmError('rtm/disconnected', 'not connected'));
  return client.callWith({ whenOffline: 'fail' }, fn, ...args);
}

// ----- connection and cluster status: the status line and the banner -----

function setConn(conn) {
  state.conn = conn;
  clearInterval(tickTimer);
  // While a retry is scheduled, the banner counts down to it.
  if (conn === 'waiting') tickTimer = setInterval(renderBanner, 1000);
  renderStatus();
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
  renderSide();
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
  const lost = state.everOnline ? 'Disconnected from the server.' : 'Cannot reach the server.';
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

// ----- rooms and messages -----

function loadRooms(name) {
  let rooms = null;
  try { rooms = JSON.parse(store.get('localStorage', ROOMS + name)); } catch { /* none saved */ }
  return Array.isArray(rooms) && rooms.every((r) => typeof r === 'string' && NAME_RE.test(r)) ? rooms : ['lobby'];
}

const saveRooms = () => store.set('localStorage', ROOMS + state.name, JSON.stringify(state.rooms));

function loadLogs(name) {
  state.logs.clear();
  let saved = null;
  try { saved = JSON.parse(store.get('sessionStorage', TAB_LOGS + name)); } catch { /* none saved */ }
  if (!Array.isArray(saved)) return;
  for (const [view, log] of saved) {
    if (typeof view === 'string' && /^(room|dm):/.test(view) && Array.isArray(log)) state.logs.set(view, log);
  }
}

let saveTimer = null;
function saveLogsSoon() {
  if (saveTimer) return;
  saveTimer = setTimeout(() => {
    saveTimer = null;
    if (!state.name) return;
    const logs = [...state.logs].map(([view, log]) => [view, log.slice(-KEEP_LOG)]);
    store.set('sessionStorage', TAB_LOGS + state.name, JSON.stringify(logs));
  }, 300);
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
  }
  show('room:' + room);
}

function leaveRoom(room) {
  state.rooms = state.rooms.filter((r) => r !== room);
  saveRooms();
  client?.unsubscribePush(ROOM_EVENT, ['room:' + room]).catch(() => {});
  closeView('room:' + room);
}

// A direct message to anyone: online here or not (on another server of the cluster).
function openDm(name) {
  name = name.trim().replace(/^@/, '');
  if (!NAME_RE.test(name)) {
    showError('side', { message: `A user name is ${NAME_RULE}.` }, 'form');
    return false;
  }
  if (!state.logs.has('dm:' + name)) state.logs.set('dm:' + name, []);
  clearErrors('form');
  show('dm:' + name);
  return true;
}

function closeView(view) {
  state.unread.delete(view);
  if (view.startsWith('dm:')) state.logs.delete(view);
  saveLogsSoon();
  if (state.view === view) setView(state.rooms.length ? 'room:' + state.rooms[0] : null);
  render();
}

function addMessage(view, from, text, ts) {
  const log = state.logs.get(view) || [];
  log.push({ from: String(from), text: String(text), ts: Number(ts) });
  if (log.length > MAX_LOG) log.shift();
  state.logs.set(view, log);
  saveLogsSoon();
  if (view === state.view) {
    const list = $('log');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    if (log.length === 1) list.replaceChildren();
    list.append(messageItem(log[log.length - 1]));
    if (atBottom || from === state.name) list.scrollTop = list.scrollHeight;
  } else {
    state.unread.set(view, (state.unread.get(view) || 0) + 1);
  }
  renderSide();
}

function setOnline(names) {
  if (!Array.isArray(names)) return;
  const online = names.map(String);
  // The same list again (announcements come for every arrival and
  // departure): nothing to redraw, and no element replaced under the mouse.
  if (online.length === state.online.length && online.every((name, i) => name === state.online[i])) return;
  state.online = online;
  renderSide();
  renderTitle();
}

// ----- errors: each says which condition it reports, and goes when that does -----

const TAGS = { 'rtm/disconnected': 'conn', 'rtm/broker-unavailable': 'broker' };

function describe(err) {
  switch (err.code) {
    case 'rtm/disconnected': return 'Not connected: reconnecting. Your message is still in the box.';
    case 'rtm/broker-unavailable': return 'Not sent: the cluster link (Redis) is down. Try again when it is back.';
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

function show(view) {
  setView(view);
  state.unread.delete(view);
  showError('main', null);
  setDrawer(false);
  render();
  if (!narrow.matches) $('text').focus(); // on a phone that would pop up the keyboard
}

function render() {
  renderTitle();
  $('compose').hidden = !state.view;
  const log = state.logs.get(state.view) || [];
  const list = $('log');
  const empty = state.view ? 'No messages yet.' : 'Join a room, or message someone by name.';
  list.replaceChildren(...(log.length ? log.map(messageItem) : [el('li', 'empty', empty)]));
  list.scrollTop = list.scrollHeight;
  renderSide();
}

function renderTitle() {
  const [kind, target] = splitView(state.view);
  $('title').textContent = kind === 'room' ? '# ' + target : kind === 'dm' ? '@ ' + target : 'RTM chat';
  let note = '';
  if (kind === 'dm' && target !== state.name) {
    if (state.online.includes(target)) note = 'online';
    else if (state.server.cluster) note = 'not on this server: reaches them on any server of the cluster';
    else note = 'not online: they will not see messages sent now';
  }
  $('title-note').textContent = note;
  $('text').placeholder = kind === 'room' ? 'Message # ' + target : kind === 'dm' ? 'Message @ ' + target : 'Write a message';
}

function renderSide() {
  $('rooms').replaceChildren(...state.rooms.map((room) => {
    return sideItem('room:' + room, '# ' + room, () => leaveRoom(room), 'leave ' + room);
  }));
  // People online here, plus anyone we have a conversation with.
  const talked = [...state.logs.keys()].filter((v) => v.startsWith('dm:')).map((v) => v.slice(3));
  const people = [...new Set([...state.online, ...talked])].sort();
  $('online').replaceChildren(...people.map((name) => {
    if (name === state.name && !talked.includes(name)) return el('li', 'self', name + ' (you)');
    const close = talked.includes(name) ? () => closeView('dm:' + name) : null;
    const li = sideItem('dm:' + name, name === state.name ? name + ' (you)' : name, close, 'close the conversation');
    if (!state.online.includes(name)) {
      li.classList.add('offline');
      li.title = state.server.cluster ? 'not on this server' : 'not online';
    }
    return li;
  }));
  $('people-note').textContent = state.server.cluster ? 'online on this server' : 'online';
  // Unread messages elsewhere: on the menu button (phones) and the tab's title.
  let unread = 0;
  for (const count of state.unread.values()) unread += count;
  $('menu-badge').textContent = String(unread);
  $('menu-badge').hidden = !unread;
  document.title = (unread ? `(${unread}) ` : '') + (state.name ? state.name + ' · RTM chat' : 'RTM chat');
}

function sideItem(view, label, close, closeTitle) {
  const li = el('li', view === state.view ? 'active' : '');
  const name = el('button', 'name', label);
  name.type = 'button';
  name.onclick = () => show(view);
  li.append(name);
  const count = state.unread.get(view);
  if (count) li.append(el('span', 'badge', String(count)));
  if (close) {
    const x = el('button', 'leave', '×');
    x.type = 'button';
    x.title = closeTitle;
    x.setAttribute('aria-label', closeTitle);
    x.onclick = close;
    li.append(x);
  }
  return li;
}

function messageItem(m) {
  const li = el('li', m.from === state.name ? 'mine' : '');
  const time = new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.append(el('span', 'time', time), el('span', 'from', m.from), el('span', 'text', m.text));
  return li;
}

// 'room:lobby' -> ['room', 'lobby']
const splitView = (view) => (view ? [view.slice(0, view.indexOf(':')), view.slice(view.indexOf(':') + 1)] : [null, null]);

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
  const saved = store.get('sessionStorage', TAB_VIEW);
  const [kind, target] = splitView(saved);
  const known = (kind === 'room' && state.rooms.includes(target)) || (kind === 'dm' && NAME_RE.test(target || ''));
  setView(known ? saved : state.rooms.length ? 'room:' + state.rooms[0] : null);
  if (kind === 'dm' && known && !state.logs.has(saved)) state.logs.set(saved, []);
  render();
}

function signIn(name) {
  state.name = name;
  state.everOnline = false;
  attempts = 0;
  showApp();
  connect();
}

// Forget this tab's user (not the name offered on the form).
function signedOut() {
  store.remove('sessionStorage', TAB_NAME);
  store.remove('sessionStorage', TAB_VIEW);
  store.remove('sessionStorage', TAB_LOGS + state.name);
  state.logs.clear();
  state.unread.clear();
  state.online = [];
  state.view = null;
  state.server = { cluster: false, broker: 'none', reason: null };
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
$('text').addEventListener('input', () => clearErrors('send'));

$('compose').onsubmit = (e) => {
  e.preventDefault();
  const input = $('text');
  const text = input.value;
  const [kind, target] = splitView(state.view);
  if (!kind || !text.trim()) return;
  call(kind === 'room' ? 'say' : 'dm', target, text).then(() => {
    if (input.value === text) input.value = ''; // not what was typed since
    for (const tag of ['send', 'conn', 'broker']) clearErrors(tag);
  }, (err) => showError('main', err, 'send'));
};

$('logout').onclick = () => {
  stop();
  signedOut();
  showLogin('');
};

$('banner-retry').onclick = () => client?.reconnectNow();
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
