// Socket.IO 4 peer for `wshub-bench --target socketio`: the same events as the socketioxide
// peer (bench/peers/socketioxide). Namespace "/", WebSocket transport only.
//
// usage: node server.js HOST PORT        (REDIS_URL=redis://127.0.0.1:6379 for the redis adapter)
//
// Events:
//   join (room, ack)          -> socket.join(room); ack()
//   publish (room, payload)   -> io.to(room).emit("message", payload): every member of the room,
//                                the sender included if it is a member (the bench's fan-out
//                                publisher is not one)
//   echo (value, ack)         -> ack(value)
// Nothing is logged per message.
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const host = process.argv[2] || "127.0.0.1";
const port = +(process.argv[3] || 9001);

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("publish", (room, payload) => {
    io.to(room).emit("message", payload);
  });
  socket.on("echo", (value, ack) => {
    if (typeof ack === "function") ack(value);
  });
});

async function main() {
  let adapter = "memory";
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pubClient = createClient({ url: process.env.REDIS_URL });
    const subClient = pubClient.duplicate();
    pubClient.on("error", (e) => console.error(`redis: ${e.message}`));
    subClient.on("error", (e) => console.error(`redis: ${e.message}`));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
    adapter = "redis";
  }
  httpServer.listen({ host, port, backlog: 65535 }, () => {
    console.error(`socket.io listening on ${host}:${port} (${adapter} adapter) pid=${process.pid}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
