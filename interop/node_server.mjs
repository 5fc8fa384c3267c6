// Node `ws` echo server for the tether client. "close-me" makes it close with 4001 "bye".
// Prints its URL on the first line of stdout. With CERT and KEY (PEM files) it serves wss://.
// usage: node node_server.mjs [cert.pem key.pem]
import { WebSocketServer } from 'ws';
import { createServer } from 'node:https';
import { readFileSync } from 'node:fs';

const [cert, key] = process.argv.slice(2);
const options = { perMessageDeflate: { threshold: 0 }, maxPayload: 1 << 24 };
let wss;
if (cert) {
  const https = createServer({ cert: readFileSync(cert), key: readFileSync(key) });
  wss = new WebSocketServer({ server: https, ...options });
  https.listen(0, '127.0.0.1', () => console.log(`wss://127.0.0.1:${https.address().port}`));
} else {
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0, ...options });
  wss.on('listening', () => console.log(`ws://127.0.0.1:${wss.address().port}`));
}
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.toString() === 'close-me') ws.close(4001, 'bye');
    else ws.send(data, { binary: isBinary });
  });
  ws.on('close', (code, reason) => console.log(`node server: closed ${code} ${reason}`));
});
setTimeout(() => process.exit(0), 60000).unref();
