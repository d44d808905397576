// Runs in a child process whose globalThis.WebSocket is Node's built-in (WHATWG, the same
// interface as a browser's): no WebSocket option is passed. Prints what happened as JSON.

import { WshubClient } from '../dist/index.js';

const url = process.argv[2];
const result = { hasGlobal: typeof globalThis.WebSocket === 'function' };
const a = new WshubClient({ url, clientId: 'global-a', heartbeatIntervalMs: 0 });
const b = new WshubClient({ url, clientId: 'global-b', heartbeatIntervalMs: 0 });
try {
  await a.connect();
  await b.connect();
  await a.joinRoom('global');
  await b.joinRoom('global');
  const received = new Promise((resolve) => b.on('room_message', (m) => resolve(m)));
  const direct = new Promise((resolve) => a.on('direct_message', (m) => resolve(m)));
  result.published = await a.sendToRoom('global', { text: 'from the global WebSocket' });
  result.received = await received;
  await b.sendDirect('global-a', 'dm');
  result.direct = (await direct).content;
  result.pong = typeof (await a.ping()).server_ts;
} catch (e) {
  result.error = `${e.code ?? ''} ${e.message}`;
} finally {
  await a.close();
  await b.close();
}
process.stdout.write(JSON.stringify(result));
