// Starts and stops real wshub processes for the tests.
//
// Each hub gets a temporary config file (JSON, which is valid YAML) and a free port, found by
// binding port 0 and releasing it. Every spawned process is remembered and killed when the test
// process exits, whatever the outcome, so a failing test never leaves a server behind.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The server binary: $WSHUB_BIN, else the workspace's debug build. */
export const WSHUB_BIN = path.resolve(packageDir, process.env.WSHUB_BIN || '../../target/debug/wshub');

const running = new Set();
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A TCP port nobody listens on right now. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Deep merge of plain objects (arrays and scalars replace). */
function merge(base, extra) {
  const out = { ...base };
  for (const [k, v] of Object.entries(extra ?? {})) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object' ? merge(base[k], v) : v;
  }
  return out;
}

export class Hub {
  /** @param {object} config merged over a quiet single-node default */
  constructor(config = {}) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'wshub-js-test-'));
    this.configPath = path.join(this.dir, 'wshub.yaml');
    // A short drain: SIGTERM closes every connection within 200 ms (the default 10 s spreads
    // the closes out, which tests of 1001 would wait for).
    this.config = merge({ log: { level: 'warn' }, shutdown: { drain_period: '200ms', timeout: '5s' } }, config);
    this.child = undefined;
    this.output = '';
    this.port = undefined;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the server (on its previous port when restarting) and waits for GET /health. */
  async start() {
    this.port ??= await freePort();
    this.config = merge(this.config, { server: { addr: `127.0.0.1:${this.port}` } });
    writeFileSync(this.configPath, JSON.stringify(this.config, null, 2));
    const child = spawn(WSHUB_BIN, ['serve', '--config', this.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    running.add(child);
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    exited.then(() => running.delete(child));
    const keep = (chunk) => {
      // Only the tail matters, for failure messages.
      this.output = (this.output + chunk.toString()).slice(-8000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', (e) => keep(`spawn error: ${e.message}\n`));

    const deadline = Date.now() + 15_000;
    let gone = false;
    exited.then(() => (gone = true));
    while (Date.now() < deadline) {
      if (gone) throw new Error(`wshub exited during start-up (${WSHUB_BIN}):\n${this.output}`);
      try {
        const res = await fetch(`${this.httpUrl}/health`);
        if (res.ok) return this;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await this.stop();
    throw new Error(`wshub did not answer /health within 15 s:\n${this.output}`);
  }

  /** Sends a signal and waits for the process to exit. */
  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await this.exited;
  }

  /** Pauses (SIGSTOP) or resumes (SIGCONT) the process: a server that stops answering. */
  pause() {
    this.child?.kill('SIGSTOP');
  }

  resume() {
    this.child?.kill('SIGCONT');
  }

  /** Kills the server and removes its files. */
  async stop() {
    if (this.child) {
      this.child.kill('SIGCONT');
      await this.kill('SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Calls the admin API; resolves with {status, body}. */
  async api(method, route, body) {
    const headers = { 'content-type': 'application/json' };
    const key = this.config.admin?.api_key;
    if (key) headers.authorization = `Bearer ${key}`;
    const res = await fetch(`${this.httpUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }

  /** A token from `wshub token` (signed with this hub's auth.secret_key and issuer). */
  token({ user, perms = [], ttl = '1h' }) {
    writeFileSync(this.configPath, JSON.stringify(this.config, null, 2));
    const args = ['token', '--config', this.configPath, '--user', user, '--ttl', ttl];
    for (const p of perms) args.push('--perm', p);
    const out = spawnSync(WSHUB_BIN, args, { encoding: 'utf8' });
    if (out.status !== 0) throw new Error(`wshub token failed: ${out.stderr}`);
    return out.stdout.trim();
  }
}

/** Starts a hub with `config`; the caller stops it (in an `after` hook). */
export async function startHub(config) {
  const hub = new Hub(config);
  try {
    return await hub.start();
  } catch (e) {
    await hub.stop();
    throw e;
  }
}
