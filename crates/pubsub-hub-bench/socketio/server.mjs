// The socket.io side of the gateway benchmark: socket.io 4 with @socket.io/redis-adapter
// on the benchmark's private Redis, set up as its documentation shows, so that several
// such processes form one system as gateway nodes do. Started by src/gateway.rs as
//
//   node server.mjs PORT REDIS_URL
//
// It prints `listening PORT` once it accepts connections. Rooms play the part of channels:
//   - `join` (with an acknowledgement): the socket joins the room it names;
//   - `pub` (room, data): the server emits `m` with `data` to the room, through the
//     adapter, as a backend that publishes from a socket.io node does.
// Only the WebSocket transport is offered (the driver speaks it directly) and per-message
// compression is off, as on the gateway.

import { createServer } from 'node:http';

import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';
import { Server } from 'socket.io';

const [port, redisUrl] = process.argv.slice(2);
const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
pubClient.on('error', (e) => console.error(`redis (pub): ${e}`));
subClient.on('error', (e) => console.error(`redis (sub): ${e}`));
await Promise.all([pubClient.connect(), subClient.connect()]);

const http = createServer();
const io = new Server(http, {
  adapter: createAdapter(pubClient, subClient),
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
});
io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(String(room));
    if (typeof ack === 'function') {
      ack('ok');
    }
  });
  socket.on('pub', (room, data) => {
    io.to(String(room)).emit('m', data);
  });
});

function stop() {
  io.close();
  Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

http.listen(Number(port), '127.0.0.1', () => {
  console.log(`listening ${http.address().port}`);
});
