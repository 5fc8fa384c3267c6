// Node `ws` echo server for the tether client. "close-me" makes it close with 4001 "bye".
// Prints its URL on the first line of stdout.
import { WebSocketServer } from 'ws';

const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: { threshold: 0 }, maxPayload: 1 << 24 });
wss.on('listening', () => console.log(`ws://127.0.0.1:${wss.address().port}`));
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.toString() === 'close-me') ws.close(4001, 'bye');
    else ws.send(data, { binary: isBinary });
  });
  ws.on('close', (code, reason) => console.log(`node server: closed ${code} ${reason}`));
});
setTimeout(() => process.exit(0), 60000).unref();
