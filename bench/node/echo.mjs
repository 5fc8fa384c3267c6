// Node `ws` echo server, after the echo example in ws's README: every text or binary
// message goes back to its sender. The address comes from the first argument (HOST:PORT).
// No permessage-deflate (ws's server default), like the other servers in the benchmark.
import { WebSocketServer } from 'ws';

const [host, port] = (process.argv[2] || '127.0.0.1:9001').split(':');
const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.error(`listening on ws://${host}:${port}/`));
