// Reconnecting: a killed and restarted server, URL rotation, dead-connection detection,
// giving up, and the closes after which the client must not reconnect.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import WebSocket from 'ws';

import { CloseCode, ErrorCode, WshubClient, WshubError } from '../dist/index.js';
import { freePort, startHub } from '../test-support/hub.js';
import { Proxy } from '../test-support/proxy.js';
import { collect, nextEvent, until, waitForState } from '../test-support/wait.js';

let hub;
const clients = [];
const fast = { minDelayMs: 20, maxDelayMs: 200 };

function make(options) {
  const c = new WshubClient({ WebSocket, heartbeatIntervalMs: 0, url: hub.url, reconnect: fast, ...options });
  clients.push(c);
  return c;
}

before(async () => {
  hub = await startHub({ rooms: { history: { size: 100 } } });
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await hub.stop();
});

test('server killed and restarted on the same port: reconnect, rejoin, report the gap, carry on', async () => {
  const alice = make({ clientId: 'alice-r' });
  const bob = make({ clientId: 'bob-r' });
  await alice.connect();
  await bob.connect();
  await alice.joinRoom('survivors');
  await bob.joinRoom('survivors');
  const got = collect(bob, 'room_message', (m) => m.content);
  await alice.sendToRoom('survivors', 'before');
  await until(() => got.length === 1, 3000, 'the first message');
  const epochBefore = bob.position('survivors').epoch;

  const states = collect(bob, 'state');
  const recoveries = collect(bob, 'recovery');
  // A request in flight when the server dies fails as ConnectionLost (it may or may not have run).
  const inFlight = bob
    .request('direct_message', { target_id: 'bob-r', content: 'x' }, { timeoutMs: 10_000 })
    .then(() => assert.fail('expected ConnectionLost'), (e) => e);
  await hub.kill('SIGKILL');
  const lost = await inFlight;
  assert.equal(lost.code, ErrorCode.ConnectionLost);
  await waitForState(bob, 'reconnecting');

  // Called while disconnected: queued, sent once connected again.
  const queuedPing = bob.ping();
  await hub.start();
  await Promise.all([waitForState(alice, 'connected'), waitForState(bob, 'connected')]);
  assert.equal(typeof (await queuedPing).server_ts, 'number');

  const disconnected = states.find((s) => s.state === 'disconnected');
  assert.equal(disconnected.code, CloseCode.Abnormal);
  assert.ok(states.some((s) => s.state === 'reconnecting' && typeof s.delayMs === 'number'));
  // The memory history died with the process: a new epoch, and the client is told.
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].roomId, 'survivors');
  assert.equal(recoveries[0].recovered, false);
  assert.notEqual(recoveries[0].epoch, epochBefore);

  await alice.sendToRoom('survivors', 'after');
  await until(() => got.length === 2, 3000, 'the message after the restart');
  assert.deepEqual(got, ['before', 'after']);
  assert.deepEqual(bob.position('survivors'), { epoch: recoveries[0].epoch, offset: 1 });
  assert.deepEqual((await bob.members('survivors')).members.map((m) => m.client_id).sort(), ['alice-r', 'bob-r']);

  // A clean shutdown (SIGTERM) closes with 1001, which is also followed by a reconnect.
  const goingAway = nextEvent(bob, 'state', (s) => s.state === 'disconnected');
  await hub.kill('SIGTERM');
  const [change] = await goingAway;
  assert.equal(change.code, CloseCode.GoingAway);
  await hub.start();
  await waitForState(bob, 'connected');
  await bob.ping();
});

test('reconnects rotate through the URLs', async () => {
  const p1 = await new Proxy(hub.port).start();
  const p2 = await new Proxy(hub.port).start();
  const deadUrl = `ws://127.0.0.1:${await freePort()}/ws`;
  try {
    const c = make({ url: [deadUrl, p1.url, p2.url] });
    const tried = collect(c, 'state', (s) => s.url);
    await c.connect();
    assert.equal(c.url, p1.url, 'the dead first URL was skipped');

    p1.refuse();
    p1.cut();
    await waitForState(c, 'disconnected');
    await waitForState(c, 'connected');
    assert.equal(c.url, p2.url, 'after losing p1, the next URL is tried first');

    p2.refuse();
    p2.cut();
    p1.refuse(false);
    await waitForState(c, 'disconnected');
    await waitForState(c, 'connected');
    assert.equal(c.url, p1.url, 'wrapped around past the dead URL');
    const connecting = tried.filter(Boolean);
    assert.deepEqual(connecting.slice(0, 3), [deadUrl, p1.url, p1.url]);
    assert.ok(connecting.includes(p2.url));
    assert.ok(connecting.filter((u) => u === deadUrl).length >= 2);
  } finally {
    await Promise.all([p1.close(), p2.close()]);
  }
});

test('a server that stops answering is detected by the heartbeat', async () => {
  const c = make({ heartbeatIntervalMs: 150, requestTimeoutMs: 300, connectTimeoutMs: 400 });
  await c.connect();
  await c.joinRoom('frozen');
  const dropped = nextEvent(c, 'state', (s) => s.state === 'disconnected', 3000);
  hub.pause();
  try {
    const [change] = await dropped;
    assert.equal(change.reason, 'heartbeat timeout');
    // Attempts against the frozen process time out in the handshake and are retried.
    const [retry] = await nextEvent(c, 'state', (s) => s.state === 'reconnecting' && s.error, 3000);
    assert.equal(retry.error.code, ErrorCode.ConnectFailed);
  } finally {
    hub.resume();
  }
  await waitForState(c, 'connected', 5000);
  assert.deepEqual(c.joinedRooms, ['frozen']);
  await c.ping();
});

test('gives up after giveUpAfterMs with growing delays', async () => {
  const c = make({ url: `ws://127.0.0.1:${await freePort()}/ws`, reconnect: { minDelayMs: 20, maxDelayMs: 80, giveUpAfterMs: 400 } });
  const waits = collect(c, 'state', (s) => (s.state === 'reconnecting' ? s.delayMs : undefined));
  const errors = collect(c, 'error');
  const err = await c.connect().then(() => assert.fail('expected to give up'), (e) => e);
  assert.ok(err instanceof WshubError);
  assert.equal(err.code, ErrorCode.ConnectFailed);
  assert.match(err.message, /gave up connecting after \d+ attempts/);
  assert.equal(c.state, 'closed');
  assert.deepEqual(errors, [err]);
  const delays = waits.filter((d) => d !== undefined);
  assert.ok(delays.length >= 3, `several attempts (${delays.length})`);
  assert.ok(delays[0] >= 10 && delays[0] <= 20, `first delay ${delays[0]} within [10, 20]`);
  assert.ok(delays.every((d) => d <= 80), 'capped at maxDelayMs');
  assert.ok(Math.max(...delays) >= 40, 'delays grew');
});

test('no reconnect after being replaced (4409) or disconnected by an admin (1000)', async () => {
  const first = make({ clientId: 'twin' });
  await first.connect();
  const firstClosed = nextEvent(first, 'state', (s) => s.state === 'closed');
  const second = make({ clientId: 'twin' });
  await second.connect();
  const [replaced] = await firstClosed;
  assert.equal(replaced.code, CloseCode.Replaced);
  assert.equal(replaced.previous, 'disconnected');

  const secondClosed = nextEvent(second, 'state', (s) => s.state === 'closed');
  assert.equal((await hub.api('DELETE', '/api/clients/twin')).status, 204);
  const [kicked] = await secondClosed;
  assert.equal(kicked.code, CloseCode.Normal);
  await second.ping().then(() => assert.fail('closed'), (e) => assert.equal(e.code, ErrorCode.ClientClosed));
});

test('reconnect: false stops at the first drop; shouldReconnect overrides the policy', async () => {
  const proxy = await new Proxy(hub.port).start();
  try {
    const once = make({ url: proxy.url, reconnect: false });
    const always = make({ url: proxy.url, clientId: 'stubborn', shouldReconnect: () => true });
    await once.connect();
    await always.connect();
    const onceClosed = nextEvent(once, 'state', (s) => s.state === 'closed');
    proxy.cut();
    await onceClosed;
    await waitForState(always, 'connected');
    // Even a normal close (admin disconnect) is followed by a reconnect with this policy.
    const back = nextEvent(always, 'state', (s) => s.state === 'connected');
    await hub.api('DELETE', '/api/clients/stubborn');
    await back;
    await always.ping();
  } finally {
    await proxy.close();
  }
});
