// socket.io-client (npm 4.8.x, its browser bundle) in Chromium: against tether-socketio's
// socketio_chat example (acks with binary arguments, a room shared with a socket.io-client
// in Node, the auth middleware's refusal, a second namespace, connection state recovery,
// over polling-then-WebSocket, polling only and WebSocket only), and against `tether serve`
// (chat with a tether.json client in Node, recovery after a reconnect, each transport).
// The pages are the servers' own origins; the bundle comes from interop/node_modules.
// usage: node socketio_chromium.mjs http://127.0.0.1:EXAMPLE_PORT http://127.0.0.1:HUB_PORT
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { chromium, launchOptions } from './chromium_launch.mjs';

const [example, hub] = process.argv.slice(2);
const bundle = fileURLToPath(new URL('node_modules/socket.io-client/dist/socket.io.min.js', import.meta.url));
const timer = setTimeout(() => { console.error('socketio-chromium: timed out'); process.exit(1); }, 90000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await chromium.launch(launchOptions());
async function page(origin) {
  const p = await (await browser.newContext()).newPage();
  p.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await p.goto(`${origin}/socket.io/?EIO=4&transport=polling`); // any page of the origin
  await p.addScriptTag({ path: bundle });
  return p;
}

try {
  // The library's example.
  const p = await page(example);
  const node = io(example, { auth: { token: 'secret' }, reconnection: false });
  await new Promise((r) => node.once('connect', r));
  node.emit('join', 'browsers');
  const heard = [];
  node.on('said', (from, text) => heard.push(text));
  await sleep(100);
  for (const transports of [null, ['polling'], ['websocket']]) {
    const name = transports ? transports[0] : 'polling+websocket';
    const r = await p.evaluate(async ({ transports, name }) => {
      const s = io({ auth: { token: 'secret' }, reconnection: false, ...(transports ? { transports } : {}) });
      await new Promise((res, rej) => { s.once('connect', res); s.once('connect_error', rej); });
      if (!transports) await new Promise((res) => { const t = setInterval(() => { if (s.io.engine.transport.name === 'websocket') { clearInterval(t); res(); } }, 10); });
      const bin = new Uint8Array([1, 2, 255]);
      const back = await new Promise((res) => s.timeout(3000).emit('echo', { k: 'é' }, bin, (err, ...a) => res(err ? [String(err)] : a)));
      s.emit('join', 'browsers');
      await new Promise((res) => setTimeout(res, 100));
      const n = await s.timeout(3000).emitWithAck('say', 'browsers', `from ${name}`);
      const transport = s.io.engine.transport.name;
      s.disconnect();
      return { back0: back[0], back1: Array.from(new Uint8Array(back[1])), n, transport };
    }, { transports, name });
    assert.deepEqual(r.back0, { k: 'é' });
    assert.deepEqual(r.back1, [1, 2, 255], 'binary arguments round trip');
    assert.equal(r.n, 1, 'the Node client is the other room member');
    assert.equal(r.transport, transports ? transports[0] : 'websocket');
    console.log(`socketio-chromium: example over ${name}: ack with binary, room shared with Node`);
  }
  assert.deepEqual(heard, ['from polling+websocket', 'from polling', 'from websocket']);
  node.disconnect();

  const refused = await p.evaluate(() => new Promise((res) => {
    const s = io({ auth: { token: 'wrong' }, reconnection: false });
    s.once('connect_error', (e) => res(e.message));
    s.once('connect', () => res('connected'));
  }));
  assert.equal(refused, 'unauthorized');
  const stats = await p.evaluate(() => new Promise((res) => {
    const m = io({ auth: { token: 'secret' }, reconnection: false });
    m.io.socket('/admin').once('stats', (n) => { m.disconnect(); res(n); });
  }));
  assert.ok(stats >= 1);
  // Connection state recovery: the page's socket is dropped, a broadcast is missed, and
  // the socket comes back with its id and the missed broadcast.
  const other = io(example, { auth: { token: 'secret' }, reconnection: false, forceNew: true });
  await new Promise((r) => other.once('connect', r));
  const rec = p.evaluate(() => new Promise((res) => {
    const s = io({ auth: { token: 'secret' }, reconnectionDelay: 300, reconnectionDelayMax: 300 });
    const news = [];
    let first;
    s.on('news', (t) => { news.push(t); if (t === 'one') { first = s.id; s.emit('drop'); } });
    s.on('connect', () => {
      if (!first) { s.emit('join', 'r'); setTimeout(() => s.emit('announce', 'r', 'one'), 100); return; }
      setTimeout(() => { const r = { recovered: s.recovered, same: s.id === first, news }; s.disconnect(); res(r); }, 300);
    });
    s.on('disconnect', (reason) => { if (reason === 'transport close') window.dropped = true; });
  }));
  await p.waitForFunction(() => window.dropped === true);
  other.emit('join', 'r');
  await sleep(50);
  other.emit('announce', 'r', 'two');
  const recovered = await rec;
  assert.deepEqual(recovered, { recovered: true, same: true, news: ['one', 'two'] });
  other.disconnect();
  console.log('socketio-chromium: example: middleware refusal, a second namespace, connection state recovery');

  // The hub.
  const peer = new WebSocket(`${hub.replace('http', 'ws')}/ws`, 'tether.json');
  await new Promise((r, j) => { peer.once('open', r); peer.once('error', j); });
  let id = 0;
  const replies = new Map();
  const got = [];
  peer.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (m.push?.pub) got.push(m.push.pub.data); else replies.get(m.id)?.(m);
  });
  const call = (method, params) => new Promise((r) => { id += 1; replies.set(id, r); peer.send(JSON.stringify({ id, [method]: params })); });
  await call('connect', { name: 'node-peer' });
  const hp = await page(hub);
  for (const transports of [null, ['polling'], ['websocket']]) {
    const name = transports ? transports[0] : 'default';
    const channel = `chat:chromium-sio-${name}`;
    await call('subscribe', { channel });
    await call('publish', { channel, data: 'before' });
    const r = await hp.evaluate(async ({ transports, channel }) => {
      const s = io({ auth: { name: 'browser' }, reconnection: false, ...(transports ? { transports } : {}) });
      await new Promise((res, rej) => { s.once('connect', res); s.once('connect_error', rej); });
      const pubs = [];
      s.on('publication', (c, p) => { if (c === channel) pubs.push(p.data); });
      const sub = await s.emitWithAck('subscribe', channel);
      const pos = await s.emitWithAck('publish', channel, { from: 'browser' });
      await new Promise((res) => { const t = setInterval(() => { if (pubs.length >= 1) { clearInterval(t); res(); } }, 10); });
      s.disconnect();
      // Back after two publications from the peer: recovered by offset and epoch.
      window.last = { offset: pos.result.offset, epoch: sub.result.epoch };
      return { pubs, transport: s.io.engine?.transport?.name };
    }, { transports, channel });
    await call('publish', { channel, data: 'missed 1' });
    await call('publish', { channel, data: 'missed 2' });
    const again = await hp.evaluate(async ({ channel }) => {
      const s = io({ auth: { name: 'browser-again' }, reconnection: false, forceNew: true });
      await new Promise((res) => s.once('connect', res));
      const r = await s.emitWithAck('subscribe', { channel, recover: window.last });
      s.disconnect();
      return r.result;
    }, { channel });
    assert.deepEqual(r.pubs, [{ from: 'browser' }], 'its own publication, as an event');
    assert.equal(again.recovered, true);
    assert.deepEqual(again.publications.map((x) => x.data), ['missed 1', 'missed 2']);
    assert.ok(got.some((d) => d && d.from === 'browser'), 'the Node peer got the browser\'s message');
    console.log(`socketio-chromium: hub over ${name}: chat with tether.json, recovery`);
  }
  peer.close();
} finally {
  await browser.close();
}
clearTimeout(timer);
console.log('socketio-chromium: all passed');
process.exit(0);
