// Authentication against a real wshub with auth on: the three token transports, refusals
// (HTTP 401, error 2003 + close 4401, 2000 without a token), permissions (2001), and token
// refresh when the server reports expiry (2002).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';

import { CloseCode, ErrorCode, WshubClient, WshubError } from '../dist/index.js';
import { startHub } from '../test-support/hub.js';
import { claims, token as signToken } from '../test-support/jwt.js';
import { Proxy } from '../test-support/proxy.js';
import { collect, nextEvent, until, waitForState } from '../test-support/wait.js';

const SECRET = 'js-sdk-test-secret';
const GRACE_MS = 2000;
let hub;
let openHub;
const clients = [];

function make(options) {
  const c = new WshubClient({ WebSocket, heartbeatIntervalMs: 0, url: hub.url, ...options });
  clients.push(c);
  return c;
}

async function rejectsWith(promise, code) {
  const err = await promise.then(
    () => assert.fail(`expected error ${code}`),
    (e) => e,
  );
  assert.ok(err instanceof WshubError, `expected a WshubError, got ${err}`);
  assert.equal(err.code, code, `expected ${code}, got ${err.code} (${err.message})`);
  return err;
}

before(async () => {
  [hub, openHub] = await Promise.all([
    startHub({
      auth: {
        enabled: true,
        secret_key: SECRET,
        allow_anonymous: false,
        in_band: true,
        handshake_timeout: '1s',
        expiry_grace: `${GRACE_MS / 1000}s`,
        leeway: '0s',
      },
      admin: { api_key: 'admin-key' },
    }),
    startHub({
      auth: {
        enabled: true,
        secret_key: SECRET,
        allow_anonymous: true,
        anonymous_permissions: ['join:room:public-*', 'read:message'],
        leeway: '0s',
      },
      rooms: { history: { size: 50 } },
    }),
  ]);
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all([hub?.stop(), openHub?.stop()]);
});

describe('token transports', () => {
  for (const tokenTransport of ['query', 'protocol', 'authenticate']) {
    test(`${tokenTransport}: the token's user and permissions apply`, async () => {
      const user = `user-${tokenTransport}`;
      const jwt = hub.token({ user, perms: ['join:room:chat-*', 'send:message', 'read:message'] });
      const c = make({ token: jwt, tokenTransport });
      const authenticated = collect(c, 'authenticated');
      await c.connect();
      assert.equal(c.clientId, user);
      const joined = await c.joinRoom('chat-1');
      assert.equal(joined.status, 'joined');
      const err = await rejectsWith(c.joinRoom('ops'), ErrorCode.Forbidden);
      assert.deepEqual(err.details, { permission: 'join:room:ops' });
      assert.deepEqual(c.joinedRooms, ['chat-1']);
      if (tokenTransport === 'authenticate') {
        assert.equal(authenticated.length, 1);
        assert.equal(authenticated[0].client_id, user);
        assert.equal(authenticated[0].expires_at, claims(jwt).exp);
      }
    });
  }

  test('a missing permission names it in details (broadcast, create, delete)', async () => {
    const c = make({ token: hub.token({ user: 'limited', perms: ['join:room'] }) });
    await c.connect();
    assert.deepEqual((await rejectsWith(c.broadcast('x'), ErrorCode.Forbidden)).details, { permission: 'broadcast:message' });
    assert.deepEqual((await rejectsWith(c.createRoom('r1'), ErrorCode.Forbidden)).details, { permission: 'create:room:r1' });
    assert.deepEqual((await rejectsWith(c.deleteRoom('r1'), ErrorCode.Forbidden)).details, { permission: 'delete:room:r1' });
    assert.deepEqual((await rejectsWith(c.listRooms(), ErrorCode.Forbidden)).details, { permission: 'read:message' });
  });
});

describe('refusals', () => {
  test('a bad token in the query: HTTP 401 becomes 2003, and the client does not retry', async () => {
    const c = make({ token: signToken('not-the-secret', 'mallory', ['join:room']), reconnect: { minDelayMs: 10 } });
    const states = collect(c, 'state', (s) => s.state);
    const err = await rejectsWith(c.connect(), ErrorCode.InvalidToken);
    assert.deepEqual(err.details, { status: 401, url: hub.url });
    assert.equal(c.state, 'closed');
    assert.deepEqual(states, ['connecting', 'closed']);
  });

  test('a bad token in-band: the server answers 2003 and closes with 4401', async () => {
    // What the server does, seen on a raw socket...
    const ws = new WebSocket(hub.url);
    const frames = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ message_type: 'authenticate', data: { token: 'garbage' }, request_id: 1 }));
    const [code] = await new Promise((r) => ws.once('close', (...args) => r(args)));
    assert.equal(code, CloseCode.Unauthorized);
    assert.equal(frames[0].message_type, 'error');
    assert.equal(frames[0].data.code, ErrorCode.InvalidToken);
    assert.equal(frames[0].request_id, 1);

    // ...and what the client makes of it.
    const c = make({ token: 'garbage', tokenTransport: 'authenticate' });
    const err = await rejectsWith(c.connect(), ErrorCode.InvalidToken);
    assert.equal(err.fromServer, true);
    assert.equal(c.state, 'closed');
  });

  test('an expired token is refused with 2002 in-band', async () => {
    const expired = signToken(SECRET, 'late', ['join:room'], -60);
    const c = make({ token: expired, tokenTransport: 'authenticate' });
    await rejectsWith(c.connect(), ErrorCode.TokenExpired);
  });

  test('no token when one is required: 2000 after the handshake timeout', async () => {
    const c = make({});
    const started = Date.now();
    const err = await rejectsWith(c.connect(), ErrorCode.Unauthorized);
    assert.ok(Date.now() - started >= 900, 'the server waits handshake_timeout for an in-band token');
    assert.equal(err.fromServer, true);
  });

  test('a token from another user cannot replace an authenticated identity (2001)', async () => {
    const c = make({ token: hub.token({ user: 'erin', perms: ['join:room'] }) });
    await c.connect();
    await rejectsWith(c.authenticate(hub.token({ user: 'frank', perms: ['admin:system'] })), ErrorCode.Forbidden);
    assert.equal(c.clientId, 'erin');
    await c.ping();
  });
});

// Both wait for real expiry; they use separate clients, so they run side by side.
describe('expiry and refresh', { concurrency: true }, () => {
  test('getToken is called on connect and on 2002, and the connection survives the grace period', async () => {
    // The first token is short-lived, straight from `wshub token`; refreshes are long-lived.
    const short = hub.token({ user: 'grace', perms: ['join:room', 'read:message'], ttl: '2s' });
    const exp = claims(short).exp;
    const issued = [];
    const getToken = async () => {
      const t = issued.length === 0 ? short : signToken(SECRET, 'grace', ['join:room', 'read:message'], 3600);
      issued.push(t);
      return t;
    };
    const proxy = await new Proxy(hub.port).start();
    try {
      const c = make({ url: proxy.url, getToken, reconnect: { minDelayMs: 20, maxDelayMs: 100 } });
      const states = collect(c, 'state', (s) => s.state);
      const errors = collect(c, 'error');
      await c.connect();
      await c.joinRoom('refresh-room');
      assert.equal(issued.length, 1);

      const [refreshed] = await nextEvent(c, 'authenticated', () => true, 5000);
      assert.equal(issued.length, 2, 'getToken called again after 2002');
      assert.equal(refreshed.client_id, 'grace');
      assert.ok(refreshed.expires_at > exp + 1000, 'the new expiry is the refreshed token');

      // Past the original expiry plus the grace period, the connection is still the same one.
      const deadline = exp * 1000 + GRACE_MS + 300;
      await new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())));
      const members = await c.members('refresh-room');
      assert.deepEqual(members.members, [{ client_id: 'grace' }]);
      assert.deepEqual(states, ['connecting', 'connected'], 'never disconnected');
      assert.deepEqual(errors, []);

      // A reconnect asks for a token again.
      proxy.cut();
      await waitForState(c, 'disconnected');
      await waitForState(c, 'connected');
      assert.equal(issued.length, 3);
      assert.deepEqual(c.joinedRooms, ['refresh-room']);
    } finally {
      await proxy.close();
    }
  });

  test('without getToken, 2002 is reported and the server closes with 4401 after the grace', async () => {
    const c = make({ token: signToken(SECRET, 'static', ['join:room'], 1) });
    await c.connect();
    const [expired] = await nextEvent(c, 'error', (e) => e.code === ErrorCode.TokenExpired, 4000);
    assert.equal(expired.details.grace_seconds, GRACE_MS / 1000);
    const [closed] = await nextEvent(c, 'state', (s) => s.state === 'closed', GRACE_MS + 3000);
    assert.equal(closed.code, CloseCode.Unauthorized);
    assert.equal(closed.previous, 'disconnected', 'no reconnect without a way to refresh the token');
  });
});

describe('anonymous upgrade', () => {
  test('an anonymous client that authenticates becomes the user and keeps its rooms', async () => {
    const c = new WshubClient({ url: openHub.url, WebSocket, heartbeatIntervalMs: 0 });
    clients.push(c);
    await c.connect();
    const anonymousId = c.clientId;
    assert.match(anonymousId, /^[0-9a-f-]{36}$/);
    await c.joinRoom('public-lobby');
    await rejectsWith(c.joinRoom('private'), ErrorCode.Forbidden);

    const recovery = nextEvent(c, 'recovery', (e) => e.roomId === 'public-lobby');
    const jwt = openHub.token({ user: 'dave', perms: ['join:room', 'read:message', 'send:message'] });
    const auth = await c.authenticate(jwt);
    assert.equal(auth.client_id, 'dave');
    const [rejoined] = await recovery;
    assert.equal(rejoined.recovered, true);
    await until(() => c.clientId === 'dave', 2000, 'the new client id');
    const members = await c.members('public-lobby');
    assert.deepEqual(members.members.map((m) => m.client_id), ['dave']);
    await c.joinRoom('private');
    assert.deepEqual(c.joinedRooms.sort(), ['private', 'public-lobby']);
  });
});
