// RTM chat page: a minimal RTM client speaking the wire protocol over a
// WebSocket (auth, invoke, subscribe, events) and the chat UI on top.
// All user text goes through textContent, never innerHTML.
'use strict';

const RECONNECT_DELAY_MS = 1000; // as the JS RTM client's reconnectDelayMs
const MAX_LOG = 500; // messages kept per conversation
const $ = (id) => document.getElementById(id);

const state = {
  name: localStorage.getItem('rtm-chat-name') || '',
  rooms: loadRooms(),
  view: null, // 'room:<name>' or 'dm:<user>'
  logs: new Map(), // view -> [{ from, text, ts }]
  unread: new Map(), // view -> count
  online: [],
};

// ----- the RTM connection -----

let ws = null;
let stopped = true;
let reconnectTimer = null;
let seq = 0;
const pending = new Map(); // request id -> { resolve, reject, auth }

const events = {
  'room-message': (room, from, text, ts) => addMessage('room:' + room, from, text, ts),
  dm: (from, text, ts, to) => addMessage('dm:' + (from === state.name ? to : from), from, text, ts),
  presence: (names) => setOnline(names),
};

function connect() {
  clearTimeout(reconnectTimer);
  stopped = false;
  setStatus('connecting…', false);
  const socket = (ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/rtm'));
  socket.onopen = () => start();
  socket.onmessage = (e) => receive(e.data);
  socket.onclose = (e) => closed(socket, e);
}

// Right after open: authenticate, then re-join the rooms and announce ourselves.
async function start() {
  try {
    await request({ type: 'auth', data: [state.name] });
  } catch (err) {
    stop();
    showLogin(err.message || 'sign-in refused');
    return;
  }
  localStorage.setItem('rtm-chat-name', state.name);
  setStatus('online', true);
  showApp();
  for (const room of state.rooms) subscribe(room);
  call('hello').then(setOnline, showError);
}

function closed(socket, event) {
  if (ws !== socket) return;
  ws = null;
  for (const p of pending.values()) p.reject({ code: 'rtm/disconnected', message: 'connection lost' });
  pending.clear();
  if (stopped || event.code === 4003) return; // signed out, or the name was refused
  setStatus('reconnecting…', false);
  reconnectTimer = setTimeout(connect, RECONNECT_DELAY_MS);
}

function stop() {
  stopped = true;
  clearTimeout(reconnectTimer);
  ws?.close(1000);
}

function request(fields) {
  return new Promise((resolve, reject) => {
    if (ws?.readyState !== WebSocket.OPEN) return reject({ code: 'rtm/disconnected', message: 'not connected, retrying…' });
    const id = Date.now().toString(36) + '-' + ++seq;
    pending.set(id, { resolve, reject, auth: fields.type === 'auth' });
    ws.send(JSON.stringify({ id, ...fields }));
  });
}

const call = (fn, ...args) => request({ type: 'invoke', function: fn, data: args });

function receive(text) {
  let msg;
  try { msg = JSON.parse(text); } catch { return; }
  if (typeof msg.id === 'string') {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    const data = msg.data;
    if (data && typeof data === 'object' && data.error) p.reject(data.error);
    else if (p.auth && !data) p.reject(msg.error || { code: 'rtm/auth-error', message: 'sign-in refused' });
    else p.resolve(data);
  } else if (typeof msg.event === 'string' && Array.isArray(msg.data)) {
    events[msg.event]?.(...msg.data);
  }
}

// ----- rooms and messages -----

function loadRooms() {
  let rooms = null;
  try { rooms = JSON.parse(localStorage.getItem('rtm-chat-rooms')); } catch { /* none saved */ }
  return Array.isArray(rooms) && rooms.every((r) => typeof r === 'string') ? rooms : ['lobby'];
}

const saveRooms = () => localStorage.setItem('rtm-chat-rooms', JSON.stringify(state.rooms));

function subscribe(room) {
  request({ type: 'subscribe', event: 'room-message', tags: ['room:' + room] }).catch(showError);
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
  request({ type: 'unsubscribe', event: 'room-message', tags: ['room:' + room] }).catch(() => {});
  if (state.view === 'room:' + room) state.view = state.rooms.length ? 'room:' + state.rooms[0] : null;
  render();
}

function addMessage(view, from, text, ts) {
  const log = state.logs.get(view) || [];
  log.push({ from: String(from), text: String(text), ts: Number(ts) });
  if (log.length > MAX_LOG) log.shift();
  state.logs.set(view, log);
  if (view === state.view) {
    const list = $('log');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    if (log.length === 1) list.replaceChildren();
    list.append(messageItem(log[log.length - 1]));
    if (atBottom) list.scrollTop = list.scrollHeight;
  } else {
    state.unread.set(view, (state.unread.get(view) || 0) + 1);
    renderSide();
  }
}

function setOnline(names) {
  if (Array.isArray(names)) state.online = names.map(String);
  renderSide();
}

// ----- rendering -----

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(view) {
  state.view = view;
  state.unread.delete(view);
  showError(null);
  render();
  $('text').focus();
}

function render() {
  const [kind, target] = splitView(state.view);
  $('title').textContent = kind === 'room' ? '# ' + target : kind === 'dm' ? '@ ' + target : 'Join a room';
  $('compose').hidden = !kind;
  const log = state.logs.get(state.view) || [];
  const list = $('log');
  list.replaceChildren(...(log.length ? log.map(messageItem) : [el('li', 'empty', 'No messages yet.')]));
  list.scrollTop = list.scrollHeight;
  renderSide();
}

function renderSide() {
  $('rooms').replaceChildren(...state.rooms.map((room) => {
    const li = sideItem('room:' + room, '# ' + room);
    const leave = el('button', 'leave', '×');
    leave.title = 'leave ' + room;
    leave.onclick = (e) => { e.stopPropagation(); leaveRoom(room); };
    li.append(leave);
    return li;
  }));
  // Online users, plus anyone we have a conversation with (shown as offline).
  const talked = [...state.logs.keys()].filter((v) => v.startsWith('dm:')).map((v) => v.slice(3));
  const people = [...new Set([...state.online, ...talked])].sort();
  $('online').replaceChildren(...people.map((name) => {
    if (name === state.name) return el('li', 'self', name + ' (you)');
    const li = sideItem('dm:' + name, name);
    if (!state.online.includes(name)) li.classList.add('offline');
    return li;
  }));
}

function sideItem(view, label) {
  const li = el('li', view === state.view ? 'active' : '');
  li.append(el('span', 'name', label));
  const count = state.unread.get(view);
  if (count) li.append(el('span', 'badge', String(count)));
  li.onclick = () => show(view);
  return li;
}

function messageItem(m) {
  const li = el('li', m.from === state.name ? 'mine' : '');
  const time = new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  li.append(el('span', 'time', time), el('span', 'from', m.from), document.createTextNode(m.text));
  return li;
}

// 'room:lobby' -> ['room', 'lobby']
const splitView = (view) => (view ? [view.slice(0, view.indexOf(':')), view.slice(view.indexOf(':') + 1)] : [null, null]);

function setStatus(text, ok) {
  $('status').textContent = text;
  $('status').classList.toggle('ok', ok);
}

const showError = (err) => { $('error').textContent = err ? err.message || err.code || String(err) : ''; };

function showLogin(message) {
  $('app').hidden = true;
  $('login').hidden = false;
  $('login-name').value = state.name;
  $('login-error').textContent = message || '';
  $('login-name').focus();
}

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = state.name;
  if (!state.view && state.rooms.length) state.view = 'room:' + state.rooms[0];
  render();
}

// ----- wiring -----

$('login').onsubmit = (e) => {
  e.preventDefault();
  state.name = $('login-name').value.trim(); // the server decides what is valid
  $('login-error').textContent = '';
  connect();
};

$('join').onsubmit = (e) => {
  e.preventDefault();
  const room = $('join-name').value.trim().replace(/^#/, '');
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(room)) return showError({ message: 'a room name is 1 to 32 letters, digits, - or _' });
  $('join-name').value = '';
  joinRoom(room);
};

$('compose').onsubmit = (e) => {
  e.preventDefault();
  const input = $('text');
  const [kind, target] = splitView(state.view);
  if (!kind || !input.value.trim()) return;
  call(kind === 'room' ? 'say' : 'dm', target, input.value).then(() => {
    input.value = '';
    showError(null);
  }, showError);
};

$('logout').onclick = () => {
  stop();
  localStorage.removeItem('rtm-chat-name');
  state.logs.clear();
  state.unread.clear();
  state.online = [];
  showLogin('');
};

if (state.name) { showApp(); connect(); } else showLogin('');
