// wshub chat demo: one ES module, no build step. The SDK is served next to this page at /sdk/
// (clients/js/dist, copied there when the site is assembled; see README.md).
//
// Identity: with the demo config (auth off) the name you type is the client id (`?client_id=`).
// On an auth-on server, open the page as `/#token=<jwt>` (from `wshub token`): the token is sent
// in-band and the name becomes the token's user id.

import { ErrorCode, WshubClient, WshubError } from '/sdk/index.js';

const $ = (id) => document.getElementById(id);
const ui = {
  nameForm: $('name-form'),
  name: $('name'),
  connect: $('connect'),
  status: $('status'),
  node: $('node'),
  error: $('error'),
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  join: $('join'),
  create: $('create'),
  rooms: $('rooms'),
  refreshRooms: $('refresh-rooms'),
  currentRoom: $('current-room'),
  leave: $('leave'),
  messages: $('messages'),
  messageForm: $('message-form'),
  messageInput: $('message-input'),
  send: $('send'),
  members: $('members'),
};

const ROOM_LIST_REFRESH_MS = 5000;
const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? undefined;

/** @type {WshubClient | undefined} */
let client;
/** The room shown, or undefined. */
let room;
/** client ids in `room` */
const members = new Set();
/** Presence events seen while a `members()` snapshot is on its way (replayed over it). */
let presenceDuringSnapshot;
let roomListTimer;

// ---- connection ----

ui.nameForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (client) void disconnect();
  else void connect(ui.name.value.trim());
});

async function connect(name) {
  if (!name && !token) return;
  showError();
  const c = new WshubClient({
    url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
    ...(token ? { token, tokenTransport: 'authenticate' } : { clientId: name }),
  });
  client = c;
  c.on('state', (change) => {
    if (client !== c) return;
    document.body.dataset.state = change.state;
    ui.status.textContent = describeState(change);
    if (change.state === 'connected') {
      ui.node.textContent = c.nodeId ?? '';
      ui.name.value = c.clientId ?? name;
    }
    if (change.state === 'closed') onClosed(change);
  });
  c.on('room_message', (msg) => {
    if (msg.room_id === room) addMessage(msg.sender_id, msg.content, msg.timestamp);
  });
  c.on('presence_join', (ev) => presence(ev.room_id, ev.client_id, true));
  c.on('presence_leave', (ev) => presence(ev.room_id, ev.client_id, false));
  c.on('room_deleted', (ev) => {
    if (ev.room_id === room) leftRoom(`room ${ev.room_id} was deleted`);
    void refreshRooms();
  });
  c.on('kicked', (ev) => {
    if (ev.room_id === room) leftRoom(`you were removed from ${ev.room_id} by ${ev.by}`);
  });
  // After a reconnect the SDK rejoins the room; presence may have changed meanwhile.
  c.on('recovery', (ev) => {
    if (ev.roomId !== room) return;
    if (ev.error) leftRoom(`could not rejoin ${ev.roomId}: ${ev.error.message}`);
    else void refreshMembers(room);
  });
  c.on('error', (e) => showError(e.message));

  setConnected(true);
  try {
    await c.connect();
  } catch (e) {
    if (client === c) showError(`cannot connect: ${errorText(e)}`);
    return;
  }
  if (client !== c) return;
  await refreshRooms();
  roomListTimer = setInterval(() => void refreshRooms(), ROOM_LIST_REFRESH_MS);
}

async function disconnect() {
  const c = client;
  client = undefined;
  clearInterval(roomListTimer);
  leftRoom();
  ui.rooms.replaceChildren();
  setConnected(false);
  document.body.dataset.state = 'idle';
  ui.status.textContent = 'not connected';
  ui.node.textContent = '';
  await c?.close();
}

function onClosed(change) {
  // 4409: the same name connected somewhere else (another tab or node) and took over.
  const why =
    change.code === 4409
      ? `"${client?.clientId}" connected from somewhere else; this page was disconnected`
      : change.error
        ? change.error.message
        : undefined;
  void disconnect();
  if (why) showError(why);
}

function describeState({ state, attempt, delayMs, code }) {
  switch (state) {
    case 'connecting':
      return attempt ? `connecting (attempt ${attempt + 1})` : 'connecting';
    case 'reconnecting':
      return `reconnecting in ${Math.round((delayMs ?? 0) / 100) / 10} s`;
    case 'disconnected':
      return code ? `disconnected (${code})` : 'disconnected';
    default:
      return state;
  }
}

function setConnected(on) {
  ui.name.disabled = on || Boolean(token);
  ui.connect.textContent = on ? 'Disconnect' : 'Connect';
  for (const el of [ui.roomInput, ui.join, ui.create, ui.refreshRooms]) el.disabled = !on;
}

// ---- rooms ----

ui.roomForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void enterRoom(ui.roomInput.value.trim());
});

ui.create.addEventListener('click', async () => {
  const id = ui.roomInput.value.trim();
  if (!id || !client) return;
  try {
    await client.createRoom(id);
  } catch (e) {
    // Somebody made it first: joining it is what the user wants anyway.
    if (!(e instanceof WshubError && e.code === ErrorCode.RoomAlreadyExists)) {
      showError(`cannot create ${id}: ${errorText(e)}`);
      return;
    }
  }
  await enterRoom(id);
});

ui.refreshRooms.addEventListener('click', () => void refreshRooms());

ui.leave.addEventListener('click', async () => {
  const id = room;
  if (!id || !client) return;
  leftRoom();
  try {
    await client.leaveRoom(id);
  } catch (e) {
    if (!(e instanceof WshubError && e.code === ErrorCode.NotInRoom)) showError(`leaving ${id}: ${errorText(e)}`);
  }
  await refreshRooms();
});

async function enterRoom(id) {
  if (!id || !client || id === room) return;
  showError();
  const c = client;
  const previous = room;
  if (previous) {
    leftRoom();
    try {
      await c.leaveRoom(previous);
    } catch (e) {
      if (!(e instanceof WshubError && e.code === ErrorCode.NotInRoom)) showError(`leaving ${previous}: ${errorText(e)}`);
    }
  }
  try {
    await c.joinRoom(id);
  } catch (e) {
    if (!(e instanceof WshubError && e.code === ErrorCode.AlreadyInRoom)) {
      showError(`cannot join ${id}: ${errorText(e)}`);
      return;
    }
  }
  if (client !== c) return;
  room = id;
  ui.currentRoom.textContent = id;
  ui.currentRoom.dataset.room = id;
  ui.messages.replaceChildren();
  addSystem(`you joined ${id}`);
  for (const el of [ui.messageInput, ui.send, ui.leave]) el.disabled = false;
  ui.roomInput.value = '';
  ui.messageInput.focus();
  await Promise.all([refreshMembers(id), refreshRooms()]);
}

function leftRoom(notice) {
  room = undefined;
  members.clear();
  presenceDuringSnapshot = undefined;
  renderMembers();
  ui.currentRoom.textContent = 'No room';
  delete ui.currentRoom.dataset.room;
  for (const el of [ui.messageInput, ui.send, ui.leave]) el.disabled = true;
  if (notice) addSystem(notice);
  markCurrentRoom();
}

async function refreshRooms() {
  const c = client;
  if (!c || c.state !== 'connected') return;
  let list;
  try {
    list = await c.listRooms();
  } catch (e) {
    showError(`listing rooms: ${errorText(e)}`);
    return;
  }
  if (client !== c) return;
  const items = [...list.rooms]
    .sort((a, b) => a.id.localeCompare(b.id))
    .map((r) => {
      const li = document.createElement('li');
      li.dataset.room = r.id;
      const button = document.createElement('button');
      button.type = 'button';
      const label = document.createElement('span');
      label.textContent = r.name && r.name !== r.id ? `${r.id} (${r.name})` : r.id;
      const count = document.createElement('span');
      count.className = 'count';
      count.textContent = String(r.members);
      count.title = 'members';
      button.append(label, count);
      button.addEventListener('click', () => void enterRoom(r.id));
      li.append(button);
      return li;
    });
  ui.rooms.replaceChildren(...items);
  markCurrentRoom();
}

function markCurrentRoom() {
  for (const li of ui.rooms.children) li.classList.toggle('current', li.dataset.room === room);
}

// ---- members (presence) ----

async function refreshMembers(id) {
  const c = client;
  if (!c) return;
  const seen = [];
  presenceDuringSnapshot = seen;
  let snapshot;
  try {
    snapshot = await c.members(id);
  } catch (e) {
    showError(`members of ${id}: ${errorText(e)}`);
    return;
  } finally {
    if (presenceDuringSnapshot === seen) presenceDuringSnapshot = undefined;
  }
  if (room !== id || client !== c) return;
  members.clear();
  for (const m of snapshot.members) members.add(m.client_id);
  // Events that raced the snapshot, in arrival order: the last word on each member wins.
  for (const [clientId, present] of seen) {
    if (present) members.add(clientId);
    else members.delete(clientId);
  }
  if (c.clientId) members.add(c.clientId);
  renderMembers();
}

function presence(roomId, clientId, present) {
  if (roomId !== room) return;
  presenceDuringSnapshot?.push([clientId, present]);
  if (present) members.add(clientId);
  else members.delete(clientId);
  renderMembers();
  addSystem(`${clientId} ${present ? 'joined' : 'left'}`);
}

function renderMembers() {
  const me = client?.clientId;
  // The room list is polled; keep the current room's count live from presence.
  const count = room && [...ui.rooms.children].find((li) => li.dataset.room === room)?.querySelector('.count');
  if (count) count.textContent = String(members.size);
  ui.members.replaceChildren(
    ...[...members].sort().map((id) => {
      const li = document.createElement('li');
      li.dataset.clientId = id;
      li.textContent = id;
      if (id === me) li.classList.add('me');
      return li;
    }),
  );
}

// ---- messages ----

ui.messageForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = ui.messageInput.value;
  const id = room;
  const c = client;
  if (!text.trim() || !id || !c) return;
  ui.messageInput.value = '';
  try {
    // Resolves with the server's ack; the server never echoes our own message back.
    await c.sendToRoom(id, { text });
  } catch (e) {
    showError(`not sent: ${errorText(e)}`);
    ui.messageInput.value ||= text;
    return;
  }
  if (room === id) addMessage(c.clientId ?? 'me', { text }, Date.now());
});

function addMessage(sender, content, timestamp) {
  const li = document.createElement('li');
  li.className = 'message';
  if (sender === client?.clientId) li.classList.add('mine');
  li.dataset.sender = sender;
  const time = document.createElement('time');
  const at = new Date(timestamp || Date.now());
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const who = document.createElement('span');
  who.className = 'sender';
  who.textContent = sender;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = contentText(content);
  li.append(time, who, body);
  append(li);
}

function addSystem(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  append(li);
}

function append(li) {
  const atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
  ui.messages.append(li);
  if (atBottom) li.scrollIntoView({ block: 'end' });
}

/** `{text}` from this page; anything else (API pushes, other clients) shown as JSON. */
function contentText(content) {
  if (typeof content === 'string') return content;
  if (content && typeof content === 'object' && typeof content.text === 'string') return content.text;
  return JSON.stringify(content);
}

// ---- errors ----

function showError(text) {
  ui.error.hidden = !text;
  ui.error.textContent = text ?? '';
}

function errorText(e) {
  if (e instanceof WshubError) return `${e.message} (${e.code})`;
  return e instanceof Error ? e.message : String(e);
}

// `?name=alice` fills in (and connects with) a name; handy for opening several tabs.
const preset = new URLSearchParams(location.search).get('name');
if (token) {
  ui.name.disabled = true;
  ui.name.placeholder = 'from token';
  void connect('');
} else if (preset) {
  ui.name.value = preset;
  void connect(preset);
}
