// End to end: the chat example (examples/chat) in Chromium, on a two-node wshub cluster over a
// NATS started here.
//
// The site is assembled in a temporary directory from examples/chat's page files plus the
// SDK's build (clients/js/dist) under sdk/, the way examples/chat/serve.sh does it, so the
// repository never holds a copy of the SDK. Alice's page talks to node A, Bob's to node B.
//
// Needs: the SDK built (`cd clients/js && npm ci && npm run build`), the server binary
// ($WSHUB_BIN, else ../target/debug/wshub), nats-server (PATH or /usr/sbin) and Chromium
// ($CHROMIUM_BIN, else /usr/bin/chromium). Screenshots go to target/e2e/.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const WSHUB_BIN = path.resolve(here, process.env.WSHUB_BIN || '../target/debug/wshub');
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SDK_DIST = path.join(repo, 'clients/js/dist');
const EXAMPLE = path.join(repo, 'examples/chat');
const SHOTS = path.join(repo, 'target/e2e');
/** How long any single expectation may take (a message crossing nodes takes milliseconds). */
const WAIT = 10_000;

// ---- processes ----

/** Every child started here; killed at the end, and on any exit of this process. */
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function findNatsServer() {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) {
    const p = path.join(dir || '.', 'nats-server');
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  throw new Error('nats-server not found in PATH or /usr/sbin (apt-get install nats-server)');
}

/** The environment of the servers: ours without WSHUB_* (they would override the config) or RUST_LOG. */
function childEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('WSHUB_') && k !== 'RUST_LOG') env[k] = v;
  }
  return env;
}

/** Starts a process, keeping the tail of its output for failure messages. */
function start(name, bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
  const proc = { name, child, output: '', exited: undefined, exitInfo: undefined };
  children.add(child);
  proc.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      proc.exitInfo = { code, signal };
      resolve(proc.exitInfo);
    });
    child.once('error', (e) => {
      children.delete(child);
      proc.output += `spawn error: ${e.message}\n`;
      proc.exitInfo = { code: null, signal: null, error: e };
      resolve(proc.exitInfo);
    });
  });
  const keep = (chunk) => {
    // Without colour codes, and only the tail: it is for failure messages.
    proc.output = (proc.output + chunk.toString().replace(/\x1b\[[0-9;]*m/g, '')).slice(-6000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  return proc;
}

/** SIGTERM, then SIGKILL if it is still there after a second. */
async function stop(proc) {
  if (!proc || proc.exitInfo) return;
  proc.child.kill('SIGTERM');
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 1000);
  await proc.exited;
  clearTimeout(timer);
}

async function waitFor(what, check, proc, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    if (proc?.exitInfo) throw new Error(`${proc.name} exited (${JSON.stringify(proc.exitInfo)}) before ${what}:\n${proc.output}`);
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ''}${proc ? `\n${proc.name} output:\n${proc.output}` : ''}`);
}

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// ---- the site ----

/** examples/chat's page files at the root, the SDK's build under sdk/. */
function assembleSite(dir) {
  if (!existsSync(path.join(SDK_DIST, 'index.js'))) {
    throw new Error(`${SDK_DIST}/index.js is missing: build the SDK first (cd clients/js && npm ci && npm run build)`);
  }
  for (const file of readdirSync(EXAMPLE)) {
    if (/\.(html|css|js)$/.test(file)) cpSync(path.join(EXAMPLE, file), path.join(dir, file));
  }
  cpSync(SDK_DIST, path.join(dir, 'sdk'), { recursive: true });
}

// ---- the cluster ----

const tmp = mkdtempSync(path.join(os.tmpdir(), 'wshub-e2e-'));
let nats;
const nodes = [];
let browser;

function nodeConfig({ port, nodeId, natsUrl, site }) {
  return [
    'server:',
    `  addr: "127.0.0.1:${port}"`,
    `  static_dir: ${JSON.stringify(site)}`,
    'rooms:',
    '  presence_events: true',
    'auth:',
    '  enabled: false',
    'cluster:',
    '  enabled: true',
    '  bus_type: nats',
    `  node_id: ${nodeId}`,
    '  nats:',
    `    urls: [${JSON.stringify(natsUrl)}]`,
    'log:',
    '  level: warn',
    '',
  ].join('\n');
}

before(async () => {
  assert.ok(existsSync(WSHUB_BIN), `no wshub binary at ${WSHUB_BIN}: cargo build --bin wshub, or set WSHUB_BIN`);
  assert.ok(existsSync(CHROMIUM_BIN), `no Chromium at ${CHROMIUM_BIN} (apt-get install chromium), or set CHROMIUM_BIN`);
  const site = path.join(tmp, 'site');
  mkdirSync(site);
  assembleSite(site);

  // The cluster state (rooms, members, presence) lives in NATS key-value buckets, which need
  // JetStream; the store directory is ours and temporary.
  const natsPort = await freePort();
  mkdirSync(path.join(tmp, 'nats'));
  nats = start('nats-server', findNatsServer(), ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', path.join(tmp, 'nats')]);
  await waitFor(`nats-server on port ${natsPort}`, () => portOpen(natsPort), nats);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;

  for (const nodeId of ['e2e-a', 'e2e-b']) {
    const port = await freePort();
    const config = path.join(tmp, `${nodeId}.yaml`);
    writeFileSync(config, nodeConfig({ port, nodeId, natsUrl, site }));
    const proc = start(nodeId, WSHUB_BIN, ['serve', '--config', config]);
    nodes.push({ id: nodeId, port, proc, base: `http://127.0.0.1:${port}/` });
  }
  await Promise.all(
    nodes.map((n) =>
      waitFor(
        `${n.id}: GET /health/ready = 200`,
        async () => (await fetch(`${n.base}health/ready`)).status === 200,
        n.proc,
      ),
    ),
  );

  browser = await chromium.launch({ executablePath: CHROMIUM_BIN, headless: true, args: ['--no-sandbox'] });
});

after(async () => {
  await browser?.close().catch(() => {});
  await Promise.all(nodes.map((n) => stop(n.proc)));
  await stop(nats);
  rmSync(tmp, { recursive: true, force: true });
});

// ---- the pages ----

/** A page in its own browser context (its own session), with its console kept for failures. */
async function openPage(node, label) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const log = [];
  page.on('console', (m) => log.push(`[${label} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[${label} pageerror] ${e.stack || e.message}`));
  page.on('requestfailed', (r) => log.push(`[${label} requestfailed] ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) log.push(`[${label} http ${r.status()}] ${r.url()}`);
  });
  const response = await page.goto(node.base);
  assert.equal(response?.status(), 200, `GET / on ${node.id}`);
  return { page, context, log, label, node };
}

async function connectAs(p, name) {
  await p.page.fill('#name', name);
  await p.page.click('#connect');
  await p.page.waitForSelector('body[data-state="connected"]');
  assert.equal(await p.page.textContent('#node'), p.node.id, `${name}'s page is connected to ${p.node.id}`);
}

const member = (p, id) => p.page.locator(`#members li[data-client-id="${id}"]`);

/** Waits for a locator to appear (or, with `gone`, to disappear), failing with `what` in words. */
async function expect(what, locator, { gone = false } = {}) {
  try {
    await locator.waitFor({ state: gone ? 'detached' : 'visible', timeout: WAIT });
  } catch (e) {
    throw new Error(`${what}: not seen within ${WAIT / 1000} s (${e.message.split('\n')[0]})`, { cause: e });
  }
}

async function shoot(p, file) {
  mkdirSync(SHOTS, { recursive: true });
  const target = path.join(SHOTS, file);
  rmSync(target, { force: true });
  await p.page.screenshot({ path: target, fullPage: true });
  return target;
}

function assertPng(file) {
  assert.ok(existsSync(file), `${file} exists`);
  const bytes = readFileSync(file);
  assert.ok(bytes.length > 1000, `${file} is a real image (${bytes.length} bytes)`);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${file} is a PNG`);
}

test('chat across two nodes: rooms, messages, presence', { timeout: 60_000 }, async () => {
  for (const stale of ['alice-failure.png', 'bob-failure.png']) rmSync(path.join(SHOTS, stale), { force: true });
  const pages = [];
  try {
    const alice = await openPage(nodes[0], 'alice');
    pages.push(alice);
    const bob = await openPage(nodes[1], 'bob');
    pages.push(bob);

    // Alice (node A) types the room name: join creates lobby.
    await connectAs(alice, 'alice');
    await alice.page.fill('#room-input', 'lobby');
    await alice.page.click('#join');
    await expect('alice is in lobby', alice.page.locator('#current-room[data-room="lobby"]'));
    await expect("alice's member list shows alice", member(alice, 'alice'));

    // Bob (node B) sees lobby in the room list (cluster-wide) and joins it from there.
    await connectAs(bob, 'bob');
    await expect("lobby in bob's room list (node B)", bob.page.locator('#rooms li[data-room="lobby"] button'));
    await bob.page.click('#rooms li[data-room="lobby"] button');
    await expect('bob is in lobby', bob.page.locator('#current-room[data-room="lobby"]'));

    // Presence: alice learns about bob from a presence_join that crossed nodes; bob's list
    // comes from members(), which reads the cluster state.
    await expect("bob in alice's member list (presence_join from node B)", member(alice, 'bob'));
    await expect("alice in bob's member list (members() across nodes)", member(bob, 'alice'));
    await expect("bob in his own member list", member(bob, 'bob'));

    // A message from node A to node B, and one back.
    const text = `hello from alice ${Date.now()}`;
    await alice.page.fill('#message-input', text);
    await alice.page.click('#send');
    const received = bob.page.locator('#messages li.message', { hasText: text });
    await expect(`alice's message "${text}" on bob's page (node A -> node B)`, received);
    assert.equal(await received.count(), 1, 'the message is shown once');
    assert.equal(await received.getAttribute('data-sender'), 'alice');
    assert.equal(await received.locator('.sender').textContent(), 'alice');
    assert.equal(await received.locator('.text').textContent(), text);
    // The sender shows its own message once (the server does not echo it).
    await expect("alice's own message on her page", alice.page.locator('#messages li.message.mine', { hasText: text }));

    await bob.page.fill('#message-input', 'hi alice');
    await bob.page.click('#send');
    await expect(
      "bob's reply on alice's page (node B -> node A)",
      alice.page.locator('#messages li.message[data-sender="bob"]', { hasText: 'hi alice' }),
    );
    assert.equal(await alice.page.locator('#messages li.message', { hasText: text }).count(), 1);

    const shots = [await shoot(alice, 'chat-alice.png'), await shoot(bob, 'chat-bob.png')];
    for (const file of shots) assertPng(file);

    // Bob leaves the room: alice's list drops him (presence_leave across nodes) ...
    await bob.page.click('#leave');
    await expect("bob gone from alice's member list after he left", member(alice, 'bob'), { gone: true });
    // ... comes back, and then closes his page: the disconnect removes him again.
    await bob.page.click('#rooms li[data-room="lobby"] button');
    await expect("bob back in alice's member list after rejoining", member(alice, 'bob'));
    await bob.context.close();
    pages.splice(pages.indexOf(bob), 1);
    await expect("bob gone from alice's member list after his page closed", member(alice, 'bob'), { gone: true });
    assert.deepEqual(await alice.page.locator('#members li').evaluateAll((els) => els.map((e) => e.dataset.clientId)), ['alice']);

    // Nothing went wrong in the pages along the way.
    assert.equal(await alice.page.isHidden('#error'), true, `error shown on alice's page: ${await alice.page.textContent('#error')}`);
    for (const p of [alice, bob]) {
      assert.deepEqual(p.log.filter((l) => / (pageerror|http \d+|console\.error)\]/.test(l)), [], `uncaught errors, console errors or failed requests in ${p.label}'s page`);
    }
  } catch (e) {
    // Everything that helps explain the failure: page state, console, server output.
    const report = [];
    for (const p of pages) {
      report.push(`--- ${p.label}: ${await p.page.evaluate(() => document.body.innerText).catch(() => '(page gone)')}`);
      report.push(...p.log);
      mkdirSync(SHOTS, { recursive: true });
      await p.page.screenshot({ path: path.join(SHOTS, `${p.label}-failure.png`) }).catch(() => {});
    }
    for (const n of nodes) report.push(`--- ${n.id} output:\n${n.proc.output || '(nothing)'}`);
    throw new Error(`${e.message}\n\n${report.join('\n')}`, { cause: e });
  } finally {
    for (const p of pages) await p.context.close().catch(() => {});
  }
});
