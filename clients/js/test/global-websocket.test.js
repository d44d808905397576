// Without a WebSocket option the client uses globalThis.WebSocket: the browser case, exercised
// with Node's built-in WHATWG WebSocket in a child process.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import WebSocket from 'ws';

import { WshubClient } from '../dist/index.js';
import { startHub } from '../test-support/hub.js';

const here = path.dirname(fileURLToPath(import.meta.url));
let hub;

before(async () => {
  hub = await startHub({ rooms: { history: { size: 10 } } });
});

after(async () => {
  await hub.stop();
});

test("Node's built-in WebSocket (browser interface) works without the option", async () => {
  const major = Number(process.versions.node.split('.')[0]);
  // Node 20 and 21 keep the global WebSocket behind a flag; 22+ have it by default.
  const flags = major < 22 ? ['--experimental-websocket'] : [];
  const child = path.join(here, '..', 'test-support', 'global-websocket-child.mjs');
  const { stdout } = await promisify(execFile)(process.execPath, [...flags, child, hub.url], { timeout: 15_000 });
  const result = JSON.parse(stdout);
  assert.equal(result.error, undefined);
  assert.equal(result.hasGlobal, true);
  assert.equal(result.published.offset, 1);
  assert.deepEqual(result.received.content, { text: 'from the global WebSocket' });
  assert.equal(result.received.sender_id, 'global-a');
  assert.equal(result.direct, 'dm');
  assert.equal(result.pong, 'number');
});

test('a WebSocket installed as globalThis.WebSocket is picked up', async (t) => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  globalThis.WebSocket = WebSocket;
  t.after(() => {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
    else delete globalThis.WebSocket;
  });
  const c = new WshubClient({ url: hub.url, heartbeatIntervalMs: 0 });
  await c.connect();
  try {
    assert.match(c.clientId, /^[0-9a-f-]{36}$/);
    assert.equal(typeof (await c.ping()).rtt, 'number');
  } finally {
    await c.close();
  }
});
