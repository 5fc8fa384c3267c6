// The Node `ws` pub/sub server (npm ws 8.x) for bench/fanout_compare.py, as a `ws` user
// writes one: a text message subscribes the client to the topic of that name and is
// answered "ok"; POST /publish/<topic> sends its body to every open subscriber of that
// topic in a loop (`ws` frames each send on its own) and answers "ok". No compression,
// logging off; a subscriber with more than 1 MiB buffered is terminated (tether's
// slow-consumer limit).
// usage: node ws_fanout.mjs PORT
import http from 'node:http';
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] || 0);
const topics = new Map();
const LIMIT = 1024 * 1024;
const server = http.createServer((req, res) => {
  const m = /^\/publish\/(.+)$/.exec(req.url);
  if (req.method !== 'POST' || !m) {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString();
    const subs = topics.get(decodeURIComponent(m[1]));
    if (subs) {
      for (const ws of subs) {
        if (ws.bufferedAmount > LIMIT) ws.terminate();
        else ws.send(body);
      }
    }
    res.writeHead(200, { 'content-length': 2 }).end('ok');
  });
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on('connection', (ws) => {
  const mine = [];
  ws.on('message', (data) => {
    const topic = data.toString();
    let subs = topics.get(topic);
    if (!subs) topics.set(topic, (subs = new Set()));
    subs.add(ws);
    mine.push(topic);
    ws.send('ok');
  });
  ws.on('close', () => {
    for (const t of mine) topics.get(t)?.delete(ws);
  });
});
server.listen(port, '127.0.0.1', () => {
  console.log(`ws fanout on ws://127.0.0.1:${server.address().port}/`);
});
process.on('SIGTERM', () => process.exit(0));
