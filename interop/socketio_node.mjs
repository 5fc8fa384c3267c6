// socket.io-client (the reference client, npm 4.8.x) in Node against tether-socketio's
// example server (crates/tether-socketio/examples/socketio_chat.rs): the default transport
// (polling upgraded to WebSocket), polling only and WebSocket only; events with
// acknowledgements and their timeout, binary arguments, rooms, a second namespace, the auth
// middleware's refusal, a server-side ack, a server-side disconnect, and reconnection.
// usage: node socketio_node.mjs http://127.0.0.1:PORT
import { io } from 'socket.io-client';
import assert from 'node:assert/strict';

const [base] = process.argv.slice(2);
const timer = setTimeout(() => { console.error('socketio-node: timed out'); process.exit(1); }, 60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// Every argument of an ack (emitWithAck resolves with the first one only).
function ack(socket, ms, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(ms).emit(...args, (err, ...back) => (err ? reject(err) : resolve(back)));
  });
}

function connect(nsp, opts) {
  const socket = io(base + nsp, { forceNew: true, reconnection: false, auth: { token: 'secret' }, ...opts });
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (e) => reject(e));
  });
}

const transports = { default: undefined, polling: ['polling'], websocket: ['websocket'] };
for (const [name, t] of Object.entries(transports)) {
  const a = await connect('/', t ? { transports: t } : {});
  const b = await connect('/', t ? { transports: t } : {});
  if (name === 'default') {
    await until('the upgrade to websocket', () => a.io.engine.transport.name === 'websocket');
  } else {
    assert.equal(a.io.engine.transport.name, t[0]);
  }

  // An ack carries the arguments back, binary ones as buffers, JSON in key order.
  const bin = Buffer.from([1, 2, 3, 250]);
  const back = await ack(a, 2000, 'echo', { z: 1, a: [true, null, 'é'] }, bin, 'x');
  assert.deepEqual(back[0], { z: 1, a: [true, null, 'é'] });
  assert.deepEqual(Object.keys(back[0]), ['z', 'a']);
  assert.ok(Buffer.isBuffer(back[1]) && back[1].equals(bin), `binary back: ${back[1]}`);
  assert.equal(back[2], 'x');

  // An ack nobody sends times out on the client.
  await assert.rejects(a.timeout(200).emitWithAck('no-such-event', 1), /timed out/);

  // Rooms: b hears a's message in the room, a does not hear itself.
  const heard = [];
  b.on('said', (from, text) => heard.push([from, text]));
  a.on('said', () => heard.push(['self']));
  a.emit('join', 'room1');
  b.emit('join', 'room1');
  await sleep(100);
  const n = await a.timeout(2000).emitWithAck('say', 'room1', `hello over ${name}`);
  assert.equal(n, 1);
  await until('the room message', () => heard.length >= 1);
  await sleep(100);
  assert.deepEqual(heard, [[a.id, `hello over ${name}`]]);

  // The server asks, the client answers its ack.
  a.on('question', (q, cb) => cb(q === '6*7' ? 42 : 0));
  const verdict = new Promise((r) => a.once('verdict', r));
  a.emit('quiz');
  assert.equal(await verdict, '42');

  // The server leaves the namespace: "io server disconnect", no reconnection.
  const reason = new Promise((r) => b.once('disconnect', r));
  b.emit('kick');
  assert.equal(await reason, 'io server disconnect');
  a.disconnect();
  console.log(`ok: ${name}: acks, binary, timeout, rooms, server ack, server disconnect`);
}

// The middleware refuses without the token.
await assert.rejects(connect('/', { auth: { token: 'wrong' } }), (e) => e.message === 'unauthorized');
// An unknown namespace.
await assert.rejects(connect('/nowhere', {}), (e) => e.message === 'Invalid namespace');
// A second namespace on the same connection (one Engine.IO session for both).
const main = io(base, { auth: { token: 'secret' }, reconnection: false });
const admin = main.io.socket('/admin');
const stats = await new Promise((r) => admin.once('stats', r));
assert.ok(stats >= 1, `stats ${stats}`);
assert.equal(main.io.engine.id !== undefined, true);
admin.disconnect();
await sleep(100);
assert.equal(main.connected, true, 'leaving /admin leaves / up');
assert.equal(await main.timeout(2000).emitWithAck('echo', 'still here'), 'still here');
main.disconnect();
console.log('ok: middleware refusal, invalid namespace, two namespaces on one session');

// Reconnection: the server drops the transport, the client comes back by itself.
const r = io(base, { auth: { token: 'secret' }, reconnectionDelay: 100, reconnectionDelayMax: 200 });
await new Promise((res) => r.once('connect', res));
const firstId = r.id;
const dropped = new Promise((res) => r.once('disconnect', res));
const reconnected = new Promise((res) => dropped.then(() => r.once('connect', res)));
r.emit('drop');
assert.equal(await dropped, 'transport close');
await reconnected;
assert.notEqual(r.id, firstId);
assert.equal(await r.timeout(2000).emitWithAck('echo', 'back'), 'back');
r.disconnect();
console.log('ok: reconnection after the server dropped the transport');

// Connection state recovery: away for a moment, back with the same id, the room kept, and
// the broadcasts missed meanwhile replayed in order.
const away = io(base, { auth: { token: 'secret' }, reconnectionDelay: 300, reconnectionDelayMax: 300 });
const awayConnected = new Promise((res) => away.once('connect', res)); // before any await
const other = await connect('/', {});
await awayConnected;
const news = [];
away.on('news', (text) => news.push(text));
away.emit('join', 'news-room');
await sleep(100);
other.emit('announce', 'news-room', 'one');
await until('the first broadcast', () => news.length === 1);
const awayId = away.id;
const gone = new Promise((res) => away.once('disconnect', res));
const back = new Promise((res) => gone.then(() => away.once('connect', res)));
away.emit('drop');
assert.equal(await gone, 'transport close');
other.emit('announce', 'news-room', 'two');
other.emit('announce', 'news-room', 'three');
await back;
assert.equal(away.recovered, true, 'recovered');
assert.equal(away.id, awayId, 'the same id');
await until('the missed broadcasts', () => news.length === 3);
assert.deepEqual(news, ['one', 'two', 'three']);
assert.equal(await away.timeout(2000).emitWithAck('recovered'), true, 'the server says so too');
other.emit('announce', 'news-room', 'four');
await until('a broadcast after the recovery (the room was kept)', () => news.length === 4);
away.disconnect();
other.disconnect();
console.log('ok: connection state recovery (same id, room kept, missed broadcasts replayed)');

clearTimeout(timer);
process.exit(0);
