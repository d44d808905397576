// Every request method and pushed event against a real wshub (auth off, history and presence on).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { ErrorCode, WshubClient, WshubError } from '../dist/index.js';
import { startHub } from '../test-support/hub.js';
import { collect, nextEvent, until } from '../test-support/wait.js';

let hub;
const clients = [];

async function client(clientId, options = {}) {
  const c = new WshubClient({ url: hub.url, WebSocket, clientId, heartbeatIntervalMs: 0, ...options });
  clients.push(c);
  await c.connect();
  return c;
}

/** Asserts that `promise` rejects with a WshubError of `code`; returns the error. */
async function rejectsWith(promise, code) {
  const err = await promise.then(
    () => assert.fail(`expected error ${code}, got a reply`),
    (e) => e,
  );
  assert.ok(err instanceof WshubError, `expected a WshubError, got ${err}`);
  assert.equal(err.code, code, `expected code ${code}, got ${err.code} (${err.message})`);
  assert.equal(typeof err.message, 'string');
  return err;
}

before(async () => {
  hub = await startHub({ rooms: { history: { size: 100 }, presence_events: true } });
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await hub.stop();
});

describe('requests', () => {
  test('connect reports the client and node ids and state changes', async () => {
    const c = new WshubClient({ url: hub.url, WebSocket, clientId: 'ids', heartbeatIntervalMs: 0 });
    clients.push(c);
    const states = collect(c, 'state', (s) => s.state);
    assert.equal(c.state, 'idle');
    await c.connect();
    assert.equal(c.state, 'connected');
    assert.equal(c.clientId, 'ids');
    assert.match(c.nodeId, /^node-/);
    assert.deepEqual(states, ['connecting', 'connected']);
    await c.connect(); // already connected: resolves at once
    await c.close();
    assert.equal(c.state, 'closed');
    assert.deepEqual(states, ['connecting', 'connected', 'closed']);
  });

  test('ping answers with pong', async () => {
    const c = await client('pinger');
    const before = Date.now();
    const pong = await c.ping();
    assert.ok(pong.ts >= before && pong.ts <= Date.now());
    assert.ok(pong.server_ts >= pong.ts - 1000);
    assert.equal(typeof pong.rtt, 'number');
  });

  test('join, publish with ack, receive in order, leave', async () => {
    const alice = await client('alice-1');
    const bob = await client('bob-1');
    const joined = await alice.joinRoom('lobby-1');
    assert.equal(joined.room_id, 'lobby-1');
    assert.equal(joined.status, 'joined');
    assert.equal(typeof joined.epoch, 'string');
    assert.equal(joined.offset, 0);
    await bob.joinRoom('lobby-1');
    assert.deepEqual(bob.joinedRooms, ['lobby-1']);

    const got = collect(bob, 'room_message');
    const acks = [];
    for (let i = 1; i <= 20; i++) acks.push(await alice.sendToRoom('lobby-1', { n: i }));
    assert.deepEqual(acks.map((a) => a.offset), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.ok(acks.every((a) => a.room_id === 'lobby-1' && a.epoch === joined.epoch));
    await until(() => got.length === 20, 3000, '20 room messages');
    assert.deepEqual(got.map((m) => m.content.n), acks.map((_, i) => i + 1));
    assert.ok(got.every((m) => m.sender_id === 'alice-1' && m.room_id === 'lobby-1'));
    assert.deepEqual(bob.position('lobby-1'), { epoch: joined.epoch, offset: 20 });

    const left = await bob.leaveRoom('lobby-1');
    assert.deepEqual(left, { room_id: 'lobby-1', status: 'left' });
    assert.deepEqual(bob.joinedRooms, []);
    await rejectsWith(bob.leaveRoom('lobby-1'), ErrorCode.NotInRoom);
  });

  test('the sender does not receive its own room message', async () => {
    const alice = await client('alice-echo');
    const bob = await client('bob-echo');
    await alice.joinRoom('echo');
    await bob.joinRoom('echo');
    const aliceGot = collect(alice, 'room_message');
    await alice.sendToRoom('echo', 'mine');
    await bob.sendToRoom('echo', 'theirs');
    await until(() => aliceGot.length === 1, 3000, "bob's message");
    assert.deepEqual(aliceGot.map((m) => m.content), ['theirs']);
  });

  test('sendToRoom with an idempotency key is applied once', async () => {
    const alice = await client('alice-idem');
    const bob = await client('bob-idem');
    await alice.joinRoom('idem');
    await bob.joinRoom('idem');
    const got = collect(bob, 'room_message');
    const first = await alice.sendToRoom('idem', 'once', { idempotencyKey: 'k-1' });
    const retry = await alice.sendToRoom('idem', 'once', { idempotencyKey: 'k-1' });
    assert.equal(retry.offset, first.offset);
    await alice.sendToRoom('idem', 'next');
    await until(() => got.length === 2, 3000, 'two messages');
    assert.deepEqual(got.map((m) => m.content), ['once', 'next']);
  });

  test('sendDirect reaches the target; unknown target is 4000', async () => {
    const alice = await client('alice-dm');
    const bob = await client('bob-dm');
    const received = nextEvent(bob, 'direct_message');
    await alice.sendDirect('bob-dm', { text: 'psst' });
    const [dm, envelope] = await received;
    assert.deepEqual(dm.content, { text: 'psst' });
    assert.equal(dm.sender_id, 'alice-dm');
    assert.equal(envelope.message_type, 'direct_message');
    const err = await rejectsWith(alice.sendDirect('nobody-here', 'x'), ErrorCode.ClientNotFound);
    assert.equal(err.fromServer, true);
  });

  test('broadcast reaches every other client', async () => {
    const alice = await client('alice-bc');
    const bob = await client('bob-bc');
    const carol = await client('carol-bc');
    const aliceGot = collect(alice, 'broadcast');
    const both = Promise.all([nextEvent(bob, 'broadcast', (m) => m.content === 'hello all'), nextEvent(carol, 'broadcast', (m) => m.content === 'hello all')]);
    await alice.broadcast('hello all');
    const [[toBob], [toCarol]] = await both;
    assert.equal(toBob.sender_id, 'alice-bc');
    assert.equal(toCarol.sender_id, 'alice-bc');
    await alice.ping(); // anything for alice would have arrived before this reply
    assert.deepEqual(aliceGot.filter((m) => m.content === 'hello all'), []);
  });

  test('createRoom, listRooms, members, deleteRoom (members get room_deleted)', async () => {
    const admin = await client('admin-rooms');
    const member = await client('member-rooms');
    const created = await admin.createRoom('made', { name: 'Made here', maxClients: 2 });
    assert.deepEqual(created, { room_id: 'made', name: 'Made here', max_clients: 2 });
    await rejectsWith(admin.createRoom('made'), ErrorCode.RoomAlreadyExists);

    await member.joinRoom('made');
    const list = await admin.listRooms();
    const made = list.rooms.find((r) => r.id === 'made');
    assert.deepEqual(made, { id: 'made', name: 'Made here', max_clients: 2, members: 1 });

    const members = await admin.members('made');
    assert.deepEqual(members, { room_id: 'made', members: [{ client_id: 'member-rooms' }] });

    const deletedEvent = nextEvent(member, 'room_deleted');
    assert.deepEqual(await admin.deleteRoom('made'), { room_id: 'made' });
    const [deleted] = await deletedEvent;
    assert.equal(deleted.room_id, 'made');
    assert.deepEqual(member.joinedRooms, [], 'a deleted room is not rejoined later');
    await rejectsWith(admin.deleteRoom('made'), ErrorCode.RoomNotFound);
    await rejectsWith(admin.members('made'), ErrorCode.RoomNotFound);
  });

  test('a full room refuses with 3002', async () => {
    const a = await client('full-a');
    const b = await client('full-b');
    await a.createRoom('tiny', { maxClients: 1 });
    await a.joinRoom('tiny');
    await rejectsWith(b.joinRoom('tiny'), ErrorCode.RoomFull);
    assert.deepEqual(b.joinedRooms, []);
  });

  test('history returns stored publications, with since and limit', async () => {
    const a = await client('hist-a');
    await a.joinRoom('hist');
    for (let i = 1; i <= 5; i++) await a.sendToRoom('hist', `m${i}`);
    const all = await a.history('hist');
    assert.equal(all.room_id, 'hist');
    assert.deepEqual(all.publications.map((p) => p.offset), [1, 2, 3, 4, 5]);
    assert.deepEqual(all.publications.map((p) => p.data.content), ['m1', 'm2', 'm3', 'm4', 'm5']);
    assert.ok(all.publications.every((p) => p.message_type === 'room_message' && p.data.epoch === all.epoch));
    const some = await a.history('hist', { since: 2, limit: 2 });
    assert.deepEqual(some.publications.map((p) => p.offset), [3, 4]);
    await rejectsWith(a.history('no-such-room'), ErrorCode.RoomNotFound);
  });

  test('kick removes a member, which gets a kicked event', async () => {
    const boss = await client('boss');
    const victim = await client('victim');
    await boss.joinRoom('kickable');
    await victim.joinRoom('kickable');
    const kickedEvent = nextEvent(victim, 'kicked');
    assert.deepEqual(await boss.kick('kickable', 'victim'), { room_id: 'kickable', client_id: 'victim' });
    const [notice] = await kickedEvent;
    assert.deepEqual(notice, { room_id: 'kickable', by: 'boss' });
    assert.deepEqual(victim.joinedRooms, []);
    await rejectsWith(boss.kick('kickable', 'victim'), ErrorCode.NotInRoom);
    await rejectsWith(boss.kick('kickable', 'never-connected'), ErrorCode.ClientNotFound);
  });

  test('presence_join and presence_leave', async () => {
    const watcher = await client('watcher');
    await watcher.joinRoom('presence');
    const other = await client('comer');
    const joinEvent = nextEvent(watcher, 'presence_join', (e) => e.client_id === 'comer');
    await other.joinRoom('presence');
    const [joined] = await joinEvent;
    assert.deepEqual(joined, { room_id: 'presence', client_id: 'comer' });
    const leaveEvent = nextEvent(watcher, 'presence_leave', (e) => e.client_id === 'comer');
    await other.leaveRoom('presence');
    const [left] = await leaveEvent;
    assert.deepEqual(left, { room_id: 'presence', client_id: 'comer' });
  });

  test('admin API pushes arrive as events', async () => {
    const c = await client('api-target');
    await c.joinRoom('api-room');
    const roomMsg = nextEvent(c, 'room_message');
    const res = await hub.api('POST', '/api/broadcast/room', { room_id: 'api-room', message: { from: 'api' } });
    assert.equal(res.status, 200);
    const [m] = await roomMsg;
    assert.deepEqual(m.content, { from: 'api' });
    assert.equal(m.sender_id, 'server');
    const dm = nextEvent(c, 'direct_message');
    assert.equal((await hub.api('POST', '/api/clients/api-target/messages', { message: 'to you' })).status, 200);
    assert.equal((await dm)[0].content, 'to you');
    const bc = nextEvent(c, 'message', (env) => env.message_type === 'broadcast');
    assert.equal((await hub.api('POST', '/api/broadcast', { message: 'everyone' })).status, 200);
    assert.equal((await bc)[0].data.content, 'everyone');
  });
});

describe('errors', () => {
  test('posting to a room without being a member is 3003; to a missing room 3000', async () => {
    const member = await client('insider');
    await member.joinRoom('members-only');
    const c = await client('outsider');
    await rejectsWith(c.sendToRoom('members-only', 'x'), ErrorCode.NotInRoom);
    await rejectsWith(c.sendToRoom('no-such-room', 'x'), ErrorCode.RoomNotFound);
  });

  test('joining twice is 3004', async () => {
    const c = await client('twice');
    await c.joinRoom('twice-room');
    await rejectsWith(c.joinRoom('twice-room'), ErrorCode.AlreadyInRoom);
    assert.deepEqual(c.joinedRooms, ['twice-room'], 'the failed second join keeps the room');
  });

  test('bad input is 1001, an unknown type is 1000 without echoing the type', async () => {
    const c = await client('bad-input');
    await rejectsWith(c.joinRoom(''), ErrorCode.InvalidFormat);
    const err = await rejectsWith(c.request('no_such_type', {}), ErrorCode.Unknown);
    assert.equal(err.details, undefined);
    assert.equal(JSON.stringify(err).includes('no_such_type'), false);
    assert.equal(err.requestId > 0, true);
  });

  test('request() returns the whole reply envelope', async () => {
    const c = await client('generic');
    const env = await c.request('list_rooms', {});
    assert.equal(env.message_type, 'room_list');
    assert.ok(Array.isArray(env.data.rooms));
    assert.equal(typeof env.message_id, 'number');
  });

  test('a request without a reply times out with RequestTimeout', async () => {
    const c = await client('timeout');
    // The server acknowledges nothing for a successful direct_message, so a plain request waits.
    const started = Date.now();
    const err = await rejectsWith(
      c.request('direct_message', { target_id: 'timeout', content: 'self' }, { timeoutMs: 150 }),
      ErrorCode.RequestTimeout,
    );
    assert.ok(Date.now() - started >= 140);
    assert.match(err.message, /no reply to direct_message within 150 ms/);
    assert.equal(err.fromServer, false);
    // The connection is still fine.
    await c.ping();
  });

  test('calls before connect() reject with ClientClosed', async () => {
    const c = new WshubClient({ url: hub.url, WebSocket });
    await rejectsWith(c.ping(), ErrorCode.ClientClosed);
  });

  test('close() rejects requests still waiting', async () => {
    const c = await client('closer');
    const pending = c.request('direct_message', { target_id: 'closer', content: 'x' }, { timeoutMs: 5000 });
    const closing = c.close();
    await rejectsWith(pending, ErrorCode.ClientClosed);
    await closing;
    await rejectsWith(c.ping(), ErrorCode.ClientClosed);
  });

  test('invalid options fail fast', () => {
    assert.throws(() => new WshubClient({ url: 'http://x/ws', WebSocket }), /ws:\/\/ or wss:\/\//);
    assert.throws(() => new WshubClient({ url: [], WebSocket }), /url/);
    assert.throws(() => new WshubClient({ url: 'ws://127.0.0.1:1/ws' }), /no WebSocket implementation/);
  });
});
