// Gaps in live traffic, made for real: two wshub nodes on one Redis (Redis pub/sub bus, Redis
// Streams history). Node A reaches Redis through a TCP proxy, node B directly. Cutting the proxy
// cuts A off from the broker while the reader's WebSocket to A stays up; publications made on B
// meanwhile are stored (B appends them to the shared history) but never reach A, so they never
// arrive live. The next publication that does arrive is more than one offset past the last one
// delivered: the client must fetch the missing ones with `history` and deliver them in order, or
// fall back to reconnecting when it can't. While A is cut off, its `join_room` fails with 1004:
// a rejoin then is retried, not given up.
//
// Needs redis-server: scripts/test.sh installs it; without it these tests fail, never skip.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { ErrorCode, WshubClient } from '../dist/index.js';
import { freePort, startHub } from '../test-support/hub.js';
import { token } from '../test-support/jwt.js';
import { Proxy } from '../test-support/proxy.js';
import { collect, until } from '../test-support/wait.js';

const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => existsSync(p));
const SECRET = 'js-sdk-gap-secret';
const HISTORY_SIZE = 20;
const READER = ['join:room', 'leave:room', 'send:message', 'read:message'];

let redis;
let link; // node A's way to Redis
let nodeA;
let nodeB;
let probe; // a client on node A that can read histories
const clients = [];
const proxies = [];

function make(user, perms, url = nodeA.url, options = {}) {
  const c = new WshubClient({
    url,
    WebSocket,
    token: token(SECRET, user, perms),
    heartbeatIntervalMs: 0,
    reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    ...options,
  });
  clients.push(c);
  return c;
}

async function startRedis() {
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  process.on('exit', () => child.kill('SIGKILL'));
  await until(
    () =>
      new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      }),
    10_000,
    'redis-server listening',
  );
  return { port, child };
}

function nodeConfig(id, redisPort) {
  return {
    auth: { enabled: true, secret_key: SECRET, allow_anonymous: false },
    admin: { api_key: 'gap-admin' },
    rooms: { history: { size: HISTORY_SIZE } },
    cluster: {
      enabled: true,
      bus_type: 'redis',
      node_id: id,
      redis: { addrs: [`127.0.0.1:${redisPort}`], retry_interval: '200ms' },
    },
  };
}

async function busState(hub) {
  return (await (await fetch(`${hub.httpUrl}/health`)).json()).bus.state;
}

/** Cuts node A off from Redis (pub/sub, history and cluster state alike) until `restoreA`. */
async function cutOffA() {
  link.refuse();
  link.cut();
  await until(async () => (await busState(nodeA)) !== 'connected', 5000, 'node A to see Redis gone');
}

/**
 * Lets node A reach Redis again, and waits until it is back for good: its bus reconnected, and
 * its state store and history answer (they reconnect on their own schedule; until they do, the
 * reader's `history` would fail with 1004 and the client take the reconnect path instead).
 */
async function restoreA(room) {
  link.refuse(false);
  await until(async () => (await busState(nodeA)) === 'connected', 10_000, 'node A back on Redis');
  await until(
    () => probe.history(room, { limit: 1 }).then(() => true, () => false),
    10_000,
    `node A to read the history of ${room}`,
  );
}

/** A publication made on node B (admin API): `{n}`. */
async function publishOnB(room, n) {
  const res = await nodeB.api('POST', '/api/broadcast/room', { room_id: room, message: { n } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
}

/**
 * After A is back: publishes on B until one arrives, proving A hears the bus again. Those
 * published while A was still resubscribing never arrive live either: part of the same gap.
 */
async function publishUntilDelivered(room, got, next) {
  for (let tries = 0; tries < 50; tries++) {
    const n = next();
    await publishOnB(room, n);
    try {
      await until(() => got.some((m) => m.n === n), 300, `${n} delivered`);
      return n;
    } catch {
      // not (yet) heard live: publish another
    }
  }
  throw new Error('nothing published on B reached the reader on A');
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('gaps in live traffic (two nodes on Redis)', () => {
  before(() => assert.ok(REDIS_SERVER, 'redis-server not found: run scripts/test.sh, which installs it'));
  before(async () => {
    redis = await startRedis();
    link = await new Proxy(redis.port).start();
    [nodeA, nodeB] = await Promise.all([
      startHub(nodeConfig('gap-a', link.port)),
      startHub(nodeConfig('gap-b', redis.port)),
    ]);
    probe = make('probe', ['read:message']);
    await probe.connect();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await Promise.all([link?.close(), ...proxies.map((p) => p.close())]);
    redis?.child.kill('SIGKILL');
  });

  test('publications that never arrived live are fetched from the history and delivered in order, on the same connection', async () => {
    const reader = make('reader-fill', READER);
    await reader.connect();
    await reader.joinRoom('fill');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n, offset: m.offset, sender: m.sender_id }));
    const gaps = collect(reader, 'gap');
    const states = collect(reader, 'state');
    const recoveries = collect(reader, 'recovery');
    let n = 0;
    for (let i = 0; i < 3; i++) await publishOnB('fill', ++n);
    await until(() => got.length === 3, 3000, 'the first three');

    await cutOffA();
    await publishOnB('fill', ++n);
    await publishOnB('fill', ++n);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(got.length, 3, 'nothing published on B reaches the reader while A is cut off');
    await restoreA('fill');
    // The reader's own publications, made after the gap opened: the server never delivers them
    // to their sender live, and filling the gap must not either — whether the client saw the
    // ack (sendToRoom) or not (a raw request).
    const own = await reader.sendToRoom('fill', { n: 'own-acked' });
    assert.equal(own.offset, 6);
    const raw = await reader.request('room_message', { room_id: 'fill', content: { n: 'own-raw' } });
    assert.equal(raw.data.offset, 7);
    const trigger = await publishUntilDelivered('fill', got, () => ++n);
    await reader.ping();

    assert.deepEqual(got.map((m) => m.n), range(1, trigger), `every publication of B once, in order: ${JSON.stringify({ got, gaps })}`);
    const offsets = got.map((m) => m.offset);
    assert.deepEqual(offsets, [...range(1, 5), ...range(8, trigger + 2)]);
    assert.ok(got.every((m) => m.sender !== 'reader-fill'), 'own publications are not delivered to the reader');
    assert.equal(reader.position('fill').offset, trigger + 2);

    assert.ok(gaps.length >= 1, 'a gap was seen');
    assert.equal(gaps[0].roomId, 'fill');
    assert.equal(gaps[0].after, 3);
    assert.equal(gaps[0].missing, 0);
    assert.equal(gaps[0].error, undefined);
    assert.ok(gaps.every((g) => g.missing === 0 && g.error === undefined));
    const stats = reader.stats;
    assert.equal(stats.gaps, gaps.length);
    assert.equal(stats.gapFilled, gaps.reduce((sum, g) => sum + g.filled, 0));
    assert.ok(stats.gapFilled >= 2, `the two published while A was cut off came from the history (${stats.gapFilled})`);
    assert.equal(stats.gapMissing, 0);
    // All of it on the one connection.
    assert.equal(stats.reconnects, 0);
    assert.deepEqual(states, []);
    assert.deepEqual(recoveries, []);
    assert.equal(reader.state, 'connected');
  });

  test('a gap longer than the history window: what is still stored is delivered, the rest is reported missing', async () => {
    const reader = make('reader-window', READER);
    await reader.connect();
    await reader.joinRoom('window');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n, offset: m.offset }));
    const gaps = collect(reader, 'gap');
    let n = 0;
    for (let i = 0; i < 3; i++) await publishOnB('window', ++n);
    await until(() => got.length === 3, 3000, 'the first three');

    await cutOffA();
    for (let i = 0; i < 30; i++) await publishOnB('window', ++n);
    await restoreA('window');
    const trigger = await publishUntilDelivered('window', got, () => ++n);
    await reader.ping();

    // The history keeps the last HISTORY_SIZE: the trigger and the HISTORY_SIZE - 1 before it.
    const firstKept = trigger - HISTORY_SIZE + 1;
    assert.deepEqual(got.map((m) => m.n), [1, 2, 3, ...range(firstKept, trigger)]);
    assert.deepEqual(got.map((m) => m.offset), [1, 2, 3, ...range(firstKept, trigger)]);
    assert.equal(gaps.length, 1);
    assert.deepEqual(
      { ...gaps[0], epoch: undefined },
      { roomId: 'window', epoch: undefined, after: 3, before: trigger, filled: HISTORY_SIZE - 1, missing: firstKept - 4 },
    );
    assert.equal(reader.stats.gapMissing, firstKept - 4);
    assert.equal(reader.stats.reconnects, 0);
  });

  test('without read:message the history refuses the fill: the client reconnects and the rejoin recovers the gap', async () => {
    const reader = make('reader-no-read', ['join:room', 'send:message']);
    await reader.connect();
    await reader.joinRoom('fallback');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n }));
    const gaps = collect(reader, 'gap');
    const recoveries = collect(reader, 'recovery');
    const states = collect(reader, 'state');
    let n = 0;
    for (let i = 0; i < 3; i++) await publishOnB('fallback', ++n);
    await until(() => got.length === 3, 3000, 'the first three');

    await cutOffA();
    await publishOnB('fallback', ++n);
    await publishOnB('fallback', ++n);
    await restoreA('fallback');
    const trigger = await publishUntilDelivered('fallback', got, () => ++n);
    await until(() => reader.state === 'connected', 5000, 'connected again');
    await reader.ping();

    assert.deepEqual(got.map((m) => m.n), range(1, trigger));
    assert.ok(gaps.length >= 1);
    assert.equal(gaps[0].error?.code, ErrorCode.Forbidden);
    assert.deepEqual(gaps[0].error?.details, { permission: 'read:message:fallback' });
    assert.equal(gaps[0].after, 3);
    assert.equal(gaps[0].filled, 0);
    const disconnect = states.find((s) => s.state === 'disconnected');
    assert.equal(disconnect?.reason, 'could not fill a gap in fallback');
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0].recovered, true);
    assert.equal(reader.stats.reconnects, 1);
    assert.equal(reader.stats.gapFilled, 0);
  });

  test('without read:message and without reconnects, the gap stays: reported missing, and live traffic goes on', async () => {
    const reader = make('reader-no-reconnect', ['join:room', 'send:message'], nodeA.url, { reconnect: false });
    await reader.connect();
    await reader.joinRoom('stays');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n }));
    const gaps = collect(reader, 'gap');
    const states = collect(reader, 'state');
    let n = 0;
    for (let i = 0; i < 3; i++) await publishOnB('stays', ++n);
    await until(() => got.length === 3, 3000, 'the first three');

    await cutOffA();
    await publishOnB('stays', ++n);
    await publishOnB('stays', ++n);
    await restoreA('stays');
    const trigger = await publishUntilDelivered('stays', got, () => ++n);
    await publishUntilDelivered('stays', got, () => ++n);
    await reader.ping();

    assert.deepEqual(got.map((m) => m.n), [1, 2, 3, trigger, trigger + 1]);
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0].error?.code, ErrorCode.Forbidden);
    assert.equal(gaps[0].missing, trigger - 4);
    assert.equal(reader.stats.gapMissing, trigger - 4);
    assert.deepEqual(states, [], 'the connection stayed up');
  });

  test('a rejoin refused for now (1004: the node cannot reach the cluster state) is retried until it recovers the room', async () => {
    const ws = await new Proxy(nodeA.port).start();
    proxies.push(ws);
    const reader = make('reader-rejoin', READER, ws.url);
    await reader.connect();
    await reader.joinRoom('rejoin');
    const got = collect(reader, 'room_message', (m) => ({ n: m.content.n }));
    const recoveries = collect(reader, 'recovery');
    const states = collect(reader, 'state');
    const errors = collect(reader, 'error');
    let n = 0;
    for (let i = 0; i < 3; i++) await publishOnB('rejoin', ++n);
    await until(() => got.length === 3, 3000, 'the first three');

    // A loses Redis, then the reader loses A: it reconnects at once, but A can't rejoin it.
    await cutOffA();
    ws.cut();
    for (let i = 0; i < 3; i++) await publishOnB('rejoin', ++n);
    const refused = () => states.filter((s) => s.state === 'reconnecting' && [ErrorCode.ServerError, ErrorCode.Timeout].includes(s.error?.code));
    await until(() => refused().length >= 2, 10_000, 'two refused rejoins');
    assert.deepEqual(reader.joinedRooms, ['rejoin'], 'the room is still tracked');
    assert.deepEqual(recoveries, [], 'no rejoin completed or was given up');
    await publishOnB('rejoin', ++n);
    await restoreA('rejoin');
    await until(() => reader.state === 'connected', 10_000, 'connected again');
    await publishUntilDelivered('rejoin', got, () => ++n);
    await reader.ping();

    assert.deepEqual(got.map((m) => m.n), range(1, n));
    assert.equal(recoveries.length, 1);
    assert.equal(recoveries[0].recovered, true);
    assert.deepEqual(errors, []);
    assert.ok(reader.stats.reconnects >= 3, `reconnected after each refused rejoin (${reader.stats.reconnects})`);
  });
});
