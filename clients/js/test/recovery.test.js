// Recovery: publications sent while a client is disconnected reach it after the reconnect, each
// exactly once and in order (memory history on a single node). The connection is cut by a TCP
// proxy, so the server keeps running and keeps the history.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { WshubClient } from '../dist/index.js';
import { startHub } from '../test-support/hub.js';
import { Proxy } from '../test-support/proxy.js';
import { collect, nextEvent, until, waitForState } from '../test-support/wait.js';

let hub;
let smallHub;
const clients = [];

function make(url, options = {}) {
  const c = new WshubClient({ url, WebSocket, heartbeatIntervalMs: 0, reconnect: { minDelayMs: 20, maxDelayMs: 100 }, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  [hub, smallHub] = await Promise.all([
    startHub({ rooms: { history: { size: 1000 } }, admin: { api_key: 'k' } }),
    startHub({ rooms: { history: { size: 3 } } }),
  ]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([hub.stop(), smallHub.stop()]);
});

test('messages published while disconnected arrive once each, in order, followed by live ones', async () => {
  const proxy = await new Proxy(hub.port).start();
  try {
    const reader = make(proxy.url, { clientId: 'reader' });
    const writer = make(hub.url, { clientId: 'writer' });
    await reader.connect();
    await writer.connect();
    await reader.joinRoom('feed');
    await writer.joinRoom('feed');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n, offset: m.offset, sender: m.sender_id }));
    const recoveries = collect(reader, 'recovery');
    let n = 0;
    const publish = async () => {
      n += 1;
      // Alternate the two publishing paths: a client and the admin API.
      if (n % 2) await writer.sendToRoom('feed', { n });
      else {
        const res = await hub.api('POST', '/api/broadcast/room', { room_id: 'feed', message: { n } });
        assert.equal(res.status, 200);
      }
    };

    for (let i = 0; i < 20; i++) await publish();
    await until(() => got.length === 20, 3000, 'the first 20');
    // The reader's own publication just before the cut: never shown to it, live or replayed.
    const own = await reader.sendToRoom('feed', { n: 'own' });
    assert.equal(own.offset, 21);

    proxy.refuse();
    proxy.cut();
    await waitForState(reader, 'reconnecting');
    for (let i = 0; i < 30; i++) await publish();
    assert.equal(got.length, 20, 'nothing arrives while disconnected');

    // Keep publishing while the reader reconnects, so replay and live traffic overlap.
    let publishing = true;
    const background = (async () => {
      while (publishing && n < 150) await publish();
    })();
    proxy.refuse(false);
    await waitForState(reader, 'connected');
    await new Promise((r) => setTimeout(r, 50));
    publishing = false;
    await background;
    const total = n;
    await until(() => got.length >= total, 5000, `all ${total} messages`);
    await reader.ping(); // anything duplicated would have arrived before this reply

    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0].recovered, true);
    assert.deepEqual(got.map((m) => m.n), Array.from({ length: total }, (_, i) => i + 1));
    const offsets = got.map((m) => m.offset);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'offsets increase');
    assert.equal(new Set(offsets).size, offsets.length, 'no offset twice');
    assert.ok(!offsets.includes(21), "the reader's own publication is not delivered to it");
    assert.ok(total > 50, `some messages were published during the reconnect (${total})`);
    assert.deepEqual(reader.position('feed').offset, total + 1);
  } finally {
    await proxy.close();
  }
});

test('close() then connect() resumes the rooms where the application left them', async () => {
  const c = make(hub.url, { clientId: 'pauser' });
  await c.connect();
  await c.joinRoom('resume');
  const got = collect(c, 'room_message', (m) => m.content);
  for (const m of ['a', 'b']) await hub.api('POST', '/api/broadcast/room', { room_id: 'resume', message: m });
  await until(() => got.length === 2, 3000, 'two live messages');
  // Keep the room alive while we are away (rooms made by joining vanish when empty).
  const keeper = make(hub.url, { clientId: 'keeper' });
  await keeper.connect();
  await keeper.joinRoom('resume');

  await c.close();
  for (const m of ['c', 'd', 'e']) await hub.api('POST', '/api/broadcast/room', { room_id: 'resume', message: m });
  const recovery = nextEvent(c, 'recovery');
  await c.connect();
  const [event] = await recovery;
  assert.equal(event.recovered, true);
  await until(() => got.length === 5, 3000, 'the missed three');
  assert.deepEqual(got, ['a', 'b', 'c', 'd', 'e']);
});

test('a position saved by one client instance resumes in another (e.g. after a page reload)', async () => {
  const keeper = make(hub.url, { clientId: 'keeper-2' });
  await keeper.connect();
  await keeper.joinRoom('saved');
  const first = make(hub.url, { clientId: 'first-life' });
  await first.connect();
  await first.joinRoom('saved');
  const seen = collect(first, 'room_message');
  await keeper.sendToRoom('saved', 1);
  await until(() => seen.length === 1, 3000, 'one message');
  const saved = first.position('saved');
  assert.deepEqual(saved, { epoch: seen[0].epoch, offset: 1 });
  await first.close();

  await keeper.sendToRoom('saved', 2);
  await keeper.sendToRoom('saved', 3);
  const second = make(hub.url, { clientId: 'second-life' });
  await second.connect();
  const got = collect(second, 'room_message', (m) => m.content);
  const joined = await second.joinRoom('saved', { since: saved });
  assert.equal(joined.recovered, true);
  await until(() => got.length === 2, 3000, 'the two after the saved position');
  assert.deepEqual(got, [2, 3]);
});

test('beyond the history window: recovered false, position moves to the room, live messages continue', async () => {
  const proxy = await new Proxy(smallHub.port).start();
  try {
    const reader = make(proxy.url, { clientId: 'slow-reader' });
    const writer = make(smallHub.url, { clientId: 'fast-writer' });
    await reader.connect();
    await writer.connect();
    await reader.joinRoom('window');
    await writer.joinRoom('window');
    const got = collect(reader, 'room_message', (m) => m.content);
    await writer.sendToRoom('window', 1);
    await until(() => got.length === 1, 3000, 'the first message');

    proxy.refuse();
    proxy.cut();
    await waitForState(reader, 'reconnecting');
    // Ten publications, but the server keeps only three: recovery is impossible.
    for (let i = 2; i <= 11; i++) await writer.sendToRoom('window', i);
    const recovery = nextEvent(reader, 'recovery');
    proxy.refuse(false);
    const [event] = await recovery;
    assert.equal(event.recovered, false);
    assert.equal(event.offset, 11);
    assert.deepEqual(reader.position('window'), { epoch: event.epoch, offset: 11 });
    await waitForState(reader, 'connected');

    // What the application does about the gap: reload what the server still has.
    const history = await reader.history('window');
    assert.deepEqual(history.publications.map((p) => p.data.content), [9, 10, 11]);
    await writer.sendToRoom('window', 12);
    await until(() => got.length === 2, 3000, 'the next live message');
    assert.deepEqual(got, [1, 12]);
  } finally {
    await proxy.close();
  }
});
