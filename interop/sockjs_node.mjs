// sockjs-client (the reference SockJS client, npm 1.6.x) in Node against `tether serve`:
// tether.json over every transport sockjs-client has in Node (websocket, xhr-streaming,
// xhr-polling, eventsource), chatting in one channel with a plain WebSocket client; recovery
// after a reconnect; @stomp/stompjs over SockJS at /stomp-sockjs; and, against a hub with
// SockJS's WebSocket off, the client's own fallback (no transport named: xhr-streaming).
// usage: node sockjs_node.mjs http://127.0.0.1:PORT http://127.0.0.1:PORT2
//   (the first hub with WebSocket on, the second with [sockjs] websocket = false)
import SockJS from 'sockjs-client';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const [base, wsOff] = process.argv.slice(2);
const timer = setTimeout(() => { console.error('sockjs-node: timed out'); process.exit(1); }, 60000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/// A tether.json client over `open()`'s socket (SockJS or WebSocket): call(), pushes.
async function jsonClient(socket, name) {
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onclose = (e) => reject(new Error(`${name}: closed before open: ${e.code} ${e.reason}`));
  });
  const replies = new Map();
  const pushes = [];
  const c = { socket, pushes, closed: null };
  socket.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.push) pushes.push(m.push); else replies.get(m.id)?.(m);
  };
  socket.onclose = (e) => { c.closed = { code: e.code, reason: e.reason }; };
  let id = 0;
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

const sockjs = (path, transports) => new SockJS(`${base}${path}`, null, transports ? { transports } : {});

// Chat between a SockJS client on each transport and a WebSocket client, in one channel.
const wsPeer = await jsonClient(new WebSocket(`${base.replace('http', 'ws')}/ws`, 'tether.json'), 'ws-peer');
for (const transport of ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource']) {
  const channel = `chat:node-${transport}`;
  const s = sockjs('/sockjs', [transport]);
  const c = await jsonClient(s, `sockjs-${transport}`);
  assert.equal(s.transport, transport, `${transport} in use`);
  await c.call('subscribe', { channel });
  await wsPeer.call('subscribe', { channel });
  await wsPeer.call('publish', { channel, data: { text: `hello ${transport} \u2028 </script>` } });
  await c.call('publish', { channel, data: { text: `hi from ${transport}` } });
  await until(`${transport}: the peer's message`, () => c.pubs(channel).length === 2);
  await until(`${transport}: the SockJS client's message at the peer`, () => wsPeer.pubs(channel).length === 2);
  assert.deepEqual(c.pubs(channel).map((d) => d.text), [`hello ${transport} \u2028 </script>`, `hi from ${transport}`]);
  // Many messages, in order, across responses (xhr-polling takes one batch per request).
  for (let i = 0; i < 50; i += 1) wsPeer.call('publish', { channel, data: i });
  await until(`${transport}: 50 messages`, () => c.pubs(channel).length === 52);
  assert.deepEqual(c.pubs(channel).slice(2), [...Array(50).keys()]);
  console.log(`sockjs-node: tether.json over ${transport}: chat with a WebSocket client, 52 messages in order`);
  s.close();
}

// Recovery: a SockJS client leaves, misses two publications, comes back and recovers them.
{
  const channel = 'chat:node-recover';
  await wsPeer.call('publish', { channel, data: 'before' });
  const first = await jsonClient(sockjs('/sockjs', ['xhr-streaming']), 'first');
  const sub = await first.call('subscribe', { channel });
  first.socket.close();
  await wsPeer.call('publish', { channel, data: 'missed 1' });
  await wsPeer.call('publish', { channel, data: 'missed 2' });
  const again = await jsonClient(sockjs('/sockjs', ['xhr-polling']), 'again');
  const r = await again.call('subscribe', { channel, recover: { offset: sub.offset, epoch: sub.epoch } });
  assert.equal(r.recovered, true);
  assert.deepEqual(r.publications.map((p) => p.data), ['missed 1', 'missed 2']);
  console.log('sockjs-node: recovery after a reconnect over SockJS');
  again.socket.close();
}

// @stomp/stompjs over SockJS, beside a tether.json client on the same topic.
for (const transport of ['websocket', 'xhr-streaming']) {
  const channel = `chat:stomp-${transport}`;
  const got = [];
  const client = new Client({
    webSocketFactory: () => new SockJS(`${base}/stomp-sockjs`, null, { transports: [transport] }),
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(`stomp ERROR ${f.headers.message}`));
  });
  client.activate();
  await connected;
  client.subscribe(`/topic/${channel}`, (m) => got.push(m.body));
  await sleep(100);
  client.publish({ destination: `/topic/${channel}`, body: 'from stomp', headers: { 'content-type': 'text/plain' } });
  // The STOMP SEND is on its way over HTTP: the JSON publish goes once it is back.
  await until(`stomp over ${transport}: its own message`, () => got.length === 1);
  await wsPeer.call('subscribe', { channel });
  await wsPeer.call('publish', { channel, data: 'from json' });
  await until(`stomp over ${transport}: both messages`, () => got.length === 2);
  assert.deepEqual(got, ['from stomp', 'from json']);
  console.log(`sockjs-node: @stomp/stompjs over SockJS ${transport}, with tether.json on the same topic`);
  await client.deactivate();
}

// WebSocket off: the client falls back by itself, and takes the transports it is given.
{
  const info = await (await fetch(`${wsOff}/sockjs/info`)).json();
  assert.equal(info.websocket, false);
  const channel = 'chat:fallback';
  const peer = await jsonClient(new WebSocket(`${wsOff.replace('http', 'ws')}/ws`, 'tether.json'), 'peer');
  await peer.call('subscribe', { channel });
  for (const [transports, want] of [[null, 'xhr-streaming'], [['xhr-polling'], 'xhr-polling'], [['eventsource'], 'eventsource']]) {
    const s = new SockJS(`${wsOff}/sockjs`, null, transports ? { transports } : {});
    const c = await jsonClient(s, `fallback-${want}`);
    assert.equal(s.transport, want);
    await c.call('subscribe', { channel });
    await c.call('publish', { channel, data: want });
    await until(`fallback ${want}`, () => peer.pubs(channel).includes(want));
    console.log(`sockjs-node: WebSocket off, ${transports ? 'configured' : 'fell back to'} ${want}`);
    s.close();
  }
  peer.socket.close();
}

wsPeer.socket.close();
clearTimeout(timer);
console.log('sockjs-node: all passed');
