// A TCP proxy in front of a hub, to cut connections the way a network does: the server stays up
// (and keeps its history), the client just loses its socket.

import net from 'node:net';

export class Proxy {
  constructor(targetPort) {
    this.targetPort = targetPort;
    this.sockets = new Set();
    this.refusing = false;
    this.accepted = 0;
    this.server = net.createServer((client) => this.onConnection(client));
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  onConnection(client) {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted += 1;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const pair = [client, upstream];
    for (const s of pair) {
      this.sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        this.sockets.delete(s);
        for (const other of pair) other.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Cuts every open connection (no close frame: the client sees an abnormal closure). */
  cut() {
    for (const s of this.sockets) s.destroy();
  }

  /** While refusing, new connections are dropped at once (the client's attempts fail). */
  refuse(on = true) {
    this.refusing = on;
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}
