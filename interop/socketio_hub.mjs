// socket.io-client (npm 4.8.x) in Node against `tether serve` at /socket.io/: chat with a
// tether.json WebSocket client in one channel, over the default transport (polling upgraded
// to WebSocket), polling only and WebSocket only; presence and history; recovery after a
// reconnect (the hub's, by offset and epoch); refusals (bad token, unknown namespace,
// unknown event); and, with two hubs sharing Redis, a publication from one node reaching
// socket.io-client subscribers on the other.
// usage: node socketio_hub.mjs http://127.0.0.1:PORT [http://127.0.0.1:PORT2 (second node)]
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const [base, other] = process.argv.slice(2);
const timer = setTimeout(() => { console.error('socketio-hub: timed out'); process.exit(1); }, 60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/// A tether.json WebSocket client: call(), pushes.
async function jsonClient(url, name) {
  const socket = new WebSocket(`${url.replace('http', 'ws')}/ws`, 'tether.json');
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  const replies = new Map();
  const pushes = [];
  socket.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.push) pushes.push(m.push); else replies.get(m.id)?.(m);
  };
  let id = 0;
  const c = { socket, pushes };
  c.call = (method, params) => new Promise((resolve, reject) => {
    id += 1;
    const n = id;
    replies.set(n, (m) => (m.error ? reject(new Error(`${name} ${method}: ${m.error.message}`)) : resolve(m.result)));
    socket.send(JSON.stringify({ id: n, [method]: params }));
  });
  c.pubs = (channel) => pushes.filter((p) => p.channel === channel && p.pub).map((p) => p.pub.data);
  await c.call('connect', { name });
  return c;
}

/// A socket.io-client connected to the hub, with what it was pushed.
async function sioClient(url, name, opts = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, auth: { name }, ...opts });
  const pubs = [];
  socket.on('publication', (channel, pub) => pubs.push({ channel, ...pub }));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  const call = async (event, ...args) => {
    const r = await socket.timeout(5000).emitWithAck(event, ...args);
    if (r.error) throw new Error(`${name} ${event}: ${r.error.message} (${r.error.code})`);
    return r.result;
  };
  return { socket, pubs, call, data: (channel) => pubs.filter((p) => p.channel === channel).map((p) => p.data) };
}

const peer = await jsonClient(base, 'json-peer');
for (const [mode, transports] of [['default', undefined], ['polling', ['polling']], ['websocket', ['websocket']]]) {
  const channel = `chat:sio-${mode}`;
  const c = await sioClient(base, `sio-${mode}`, transports ? { transports } : {});
  if (mode === 'default') {
    await until('the upgrade to websocket', () => c.socket.io.engine.transport.name === 'websocket');
  } else {
    assert.equal(c.socket.io.engine.transport.name, transports[0]);
  }
  const sub = await c.call('subscribe', channel);
  assert.equal(typeof sub.epoch, 'string');
  await peer.call('subscribe', { channel });
  await peer.call('publish', { channel, data: { text: `hello ${mode}`, n: 1 } });
  const pos = await c.call('publish', channel, { text: `hi from ${mode}` });
  assert.equal(pos.offset, sub.offset + 2, 'publish acks with the offset');
  await until(`${mode}: both messages at the socket.io client`, () => c.data(channel).length === 2);
  await until(`${mode}: both messages at the json client`, () => peer.pubs(channel).length === 2);
  assert.deepEqual(c.data(channel), [{ text: `hello ${mode}`, n: 1 }, { text: `hi from ${mode}` }]);
  assert.deepEqual(c.pubs.filter((p) => p.channel === channel).map((p) => p.offset), [sub.offset + 1, sub.offset + 2]);
  for (let i = 0; i < 50; i += 1) peer.call('publish', { channel, data: i });
  await until(`${mode}: 50 more in order`, () => c.data(channel).length === 52);
  assert.deepEqual(c.data(channel).slice(2), [...Array(50).keys()]);
  const presence = await c.call('presence', channel);
  assert.ok(presence.clients.some((x) => x.user === `sio-${mode}`), 'presence lists the socket.io client');
  const history = await c.call('history', { channel, limit: 3 });
  assert.deepEqual(history.publications.map((p) => p.data), [47, 48, 49]);
  c.socket.disconnect();
  console.log(`socketio-hub: ${mode}: chat with tether.json, 52 in order, presence, history`);
}

// Recovery after a reconnect: away, two publications missed, back with offset and epoch.
{
  const channel = 'chat:sio-recover';
  await peer.call('publish', { channel, data: 'before' });
  const first = await sioClient(base, 'first');
  const sub = await first.call('subscribe', channel);
  first.socket.disconnect();
  await peer.call('publish', { channel, data: 'missed 1' });
  await peer.call('publish', { channel, data: 'missed 2' });
  const again = await sioClient(base, 'again');
  const r = await again.call('subscribe', { channel, recover: { offset: sub.offset, epoch: sub.epoch } });
  assert.equal(r.recovered, true);
  assert.deepEqual(r.publications.map((p) => p.data), ['missed 1', 'missed 2']);
  again.socket.disconnect();
  console.log('socketio-hub: recovery after a reconnect');
}

// Refusals.
await assert.rejects(sioClient(base, 'x', { auth: { token: 'not a jwt' } }), (e) => {
  assert.ok(e.data && typeof e.data.code === 'number', `a code: ${JSON.stringify(e.data)}`);
  return true;
});
await assert.rejects(
  new Promise((resolve, reject) => {
    const s = io(`${base}/elsewhere`, { forceNew: true, reconnection: false });
    s.once('connect', resolve);
    s.once('connect_error', reject);
  }),
  (e) => e.message === 'Invalid namespace',
);
{
  const c = await sioClient(base, 'odd');
  const r = await c.socket.timeout(2000).emitWithAck('teleport', 'chat:x');
  assert.equal(r.error.code, 104);
  await assert.rejects(c.call('publish', 'nowhere:x', 1), /\(10[0-9]\)/);
  c.socket.disconnect();
  console.log('socketio-hub: refusals (token, namespace, unknown event, channel)');
}

// Two nodes over Redis: published on one, delivered on the other.
if (other) {
  const channel = 'chat:sio-nodes';
  const far = await sioClient(other, 'far');
  await far.call('subscribe', channel);
  const near = await sioClient(base, 'near', { transports: ['polling'] });
  await near.call('subscribe', channel);
  await near.call('publish', channel, 'across nodes');
  await until('the publication on the other node', () => far.data(channel).length === 1);
  await until('and on this one', () => near.data(channel).length === 1);
  assert.deepEqual(far.data(channel), ['across nodes']);
  far.socket.disconnect();
  near.socket.disconnect();
  console.log('socketio-hub: two nodes over Redis');
}

peer.socket.close();
clearTimeout(timer);
console.log('socketio-hub: all passed');
process.exit(0);
