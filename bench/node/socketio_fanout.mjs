// The Node socket.io server (npm socket.io 4.8.x) doing what `tether serve` does for the
// fan-out benchmark (bench/socketio_fanout.py): the event `subscribe` joins the room of its
// channel and acks `{result: {}}`; POST /api/publish `{channel, data}` emits `publication`
// (channel, {offset, data}) to that room, one broadcast encoded once by socket.io's
// adapter. No compression (socket.io's default), logging off.
// usage: node socketio_fanout.mjs [PORT]
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2] || 0);
const offsets = new Map();
const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/publish') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const { channel, data } = JSON.parse(Buffer.concat(chunks).toString());
    const offset = (offsets.get(channel) || 0) + 1;
    offsets.set(channel, offset);
    io.to(channel).emit('publication', channel, { offset, data });
    const body = JSON.stringify({ result: { offset } });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
const io = new Server(server, { serveClient: false, maxHttpBufferSize: 1e6 });
io.on('connection', (socket) => {
  socket.on('subscribe', (channel, ack) => {
    socket.join(channel);
    if (typeof ack === 'function') ack({ result: {} });
  });
});
server.listen(port, '127.0.0.1', () => {
  console.log(`socket.io server on http://127.0.0.1:${server.address().port}/socket.io/`);
});
process.on('SIGTERM', () => process.exit(0));
