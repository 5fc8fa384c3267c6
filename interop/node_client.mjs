// Node `ws` client against a tether server: text, binary, 1 MiB, ping, close with code and reason.
// usage: node node_client.mjs ws://127.0.0.1:PORT/path [ca.pem for wss://]
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

const url = process.argv[2];
const timer = setTimeout(() => { console.error('node client: timed out'); process.exit(1); }, 15000);
const ca = process.argv[3];
const ws = new WebSocket(url, ca ? { ca: readFileSync(ca) } : {});
const inbox = [];
let waiter = null;
const next = () => new Promise((resolve) => { if (inbox.length) resolve(inbox.shift()); else waiter = resolve; });
const push = (item) => { if (waiter) { const w = waiter; waiter = null; w(item); } else inbox.push(item); };
ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
ws.on('pong', (data) => push({ kind: 'pong', data }));
ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
ws.on('error', (e) => { console.error('node client: error', e.message); process.exit(1); });

await new Promise((resolve) => ws.once('open', resolve));
// ws offers permessage-deflate by default; the server must have accepted it.
assert.match(ws.extensions, /permessage-deflate/);
console.log(`node client: negotiated ${ws.extensions}`);
ws.send('héllo from node');
let m = await next();
assert.equal(m.isBinary, false); assert.equal(m.data.toString(), 'héllo from node');
console.log('node client: text ok');

const bin = Buffer.from([0, 1, 2, 255]);
ws.send(bin);
m = await next();
assert.equal(m.isBinary, true); assert.deepEqual(m.data, bin);
console.log('node client: binary ok');

const big = Buffer.alloc(1 << 20); for (let i = 0; i < big.length; i++) big[i] = i % 251;
ws.send(big);
m = await next();
assert.equal(m.isBinary, true); assert.ok(m.data.equals(big));
console.log('node client: 1 MiB ok');

ws.ping('ping-payload');
m = await next();
assert.equal(m.kind, 'pong'); assert.equal(m.data.toString(), 'ping-payload');
console.log('node client: ping ok');

ws.close(4000, 'done');
m = await next();
assert.equal(m.kind, 'close'); assert.equal(m.code, 4000);
console.log(`node client: close ok (${m.code})`);
clearTimeout(timer);
