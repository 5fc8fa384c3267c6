// @stomp/stompjs (the reference STOMP client for browsers and Node) against `tether serve`,
// next to a tether.json client on the same channel. Covers: connect with heart-beats, a
// topic shared with JSON, a work queue with client-individual acks, NACK redelivery and
// redelivery on disconnect, cumulative client acks, a binary body, transactions (commit and
// abort), receipts, and heart-beats both ways.
// usage: node stomp_node.mjs ws://127.0.0.1:PORT   (the hub runs with 100 ms heart-beats)
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import assert from 'node:assert/strict';

const base = process.argv[2];
const timer = setTimeout(() => { console.error('stomp-node: timed out'); process.exit(1); }, 30000);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Resolves when `pred()` holds, polling; fails after `ms`.
async function until(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/// A connected stompjs client; `log` collects its debug lines.
async function stomp(name, extra = {}) {
  const log = [];
  const client = new Client({
    webSocketFactory: () => new WebSocket(`${base}/ws`, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
    connectHeaders: { login: name },
    reconnectDelay: 0,
    heartbeatIncoming: 100,
    heartbeatOutgoing: 100,
    debug: (line) => log.push(line),
    ...extra,
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(`${name}: ERROR ${f.headers.message}`));
    client.onWebSocketError = () => reject(new Error(`${name}: websocket error`));
  });
  client.activate();
  const frame = await connected;
  client.log = log;
  client.connectedFrame = frame;
  return client;
}

/// A tether.json client: `messages` collects pushes.
async function jsonClient(name) {
  const ws = new WebSocket(`${base}/ws`, 'tether.json');
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const replies = new Map();
  const pushes = [];
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.push) pushes.push(m.push); else replies.get(m.id)?.(m);
  });
  let id = 0;
  const call = (method, params) => new Promise((resolve) => {
    id += 1;
    replies.set(id, resolve);
    ws.send(JSON.stringify({ id, [method]: params }));
  });
  const r = await call('connect', { name });
  assert.ok(r.result, JSON.stringify(r));
  return { ws, call, pushes };
}

/// Subscribes with a receipt and waits for it: the subscription is then in place.
function subscribe(client, destination, callback, headers = {}) {
  return new Promise((resolve) => {
    const receipt = `sub-${destination}-${Math.random()}`;
    client.watchForReceipt(receipt, resolve);
    client.subscribe(destination, callback, { ...headers, receipt });
  });
}

/// Publishes with a receipt and waits for it.
function publishWithReceipt(client, params, receipt) {
  return new Promise((resolve) => {
    client.watchForReceipt(receipt, resolve);
    client.publish({ ...params, headers: { ...(params.headers ?? {}), receipt } });
  });
}

try {
  // 1. Connect: version 1.2 and the server's heart-beat offer.
  const alice = await stomp('alice');
  assert.equal(alice.connectedFrame.headers.version, '1.2');
  assert.equal(alice.connectedFrame.headers['heart-beat'], '100,100');
  assert.match(alice.connectedFrame.headers.server, /^tether\//);
  assert.equal(alice.connectedFrame.headers['user-name'], 'alice');
  console.log('stomp-node: connected, STOMP 1.2, heart-beat 100,100');

  // 2. A topic is a hub channel: STOMP and tether.json see each other's messages.
  const jay = await jsonClient('jay');
  const sub = await jay.call('subscribe', { channel: 'chat:lobby' });
  assert.ok(sub.result, JSON.stringify(sub));
  const lobby = [];
  await subscribe(alice, '/topic/chat:lobby', (m) => lobby.push(m));
  await publishWithReceipt(alice, { destination: '/topic/chat:lobby', body: 'hello from stompjs' }, 'r-topic');
  await until('the JSON client to get the STOMP message', () => jay.pushes.some((p) => p.pub));
  const fromStomp = jay.pushes.find((p) => p.pub);
  assert.equal(fromStomp.pub.data, 'hello from stompjs');
  assert.equal(fromStomp.pub.info.user, 'alice');
  const pub = await jay.call('publish', { channel: 'chat:lobby', data: { text: 'hi from json' } });
  assert.ok(pub.result, JSON.stringify(pub));
  await until('stompjs to get the JSON message', () => lobby.length === 2);
  assert.equal(lobby[0].body, 'hello from stompjs');
  assert.deepEqual(JSON.parse(lobby[1].body), { text: 'hi from json' });
  assert.equal(lobby[1].headers['content-type'], 'application/json');
  assert.equal(lobby[1].headers.destination, '/topic/chat:lobby');
  assert.equal(lobby[1].headers['publisher-user'], 'jay');
  const presence = await jay.call('presence', { channel: 'chat:lobby' });
  assert.ok(presence.result.clients.some((c) => c.user === 'alice'), JSON.stringify(presence));
  console.log('stomp-node: /topic/chat:lobby shared with a tether.json client both ways; presence lists stompjs');

  // 3. A work queue: each job to one consumer; NACK redelivers.
  const bob = await stomp('bob');
  const got = { alice: [], bob: [] };
  let nacked = null;
  const consumer = (name) => (m) => {
    got[name].push(m);
    if (name === 'bob' && !nacked && m.headers.redelivered !== 'true') {
      nacked = m.body;
      m.nack();
    } else {
      m.ack();
    }
  };
  await subscribe(alice, '/queue/chat:work', consumer('alice'), { ack: 'client-individual' });
  await subscribe(bob, '/queue/chat:work', consumer('bob'), { ack: 'client-individual' });
  const carol = await stomp('carol');
  for (let i = 1; i <= 4; i++) {
    await publishWithReceipt(carol, { destination: '/queue/chat:work', body: `job-${i}` }, `r-job-${i}`);
  }
  await until('5 deliveries (4 jobs, 1 redelivery)', () => got.alice.length + got.bob.length === 5);
  await sleep(100);
  const all = [...got.alice, ...got.bob];
  assert.equal(all.length, 5, 'no extra deliveries');
  assert.ok(got.alice.length > 0 && got.bob.length > 0, 'both consumers got work');
  assert.ok(nacked, 'bob NACKed one');
  const redelivered = all.filter((m) => m.headers.redelivered === 'true');
  assert.equal(redelivered.length, 1);
  assert.equal(redelivered[0].body, nacked);
  assert.deepEqual(all.map((m) => m.body).filter((b) => b !== nacked).sort(), ['job-1', 'job-2', 'job-3', 'job-4'].filter((b) => b !== nacked));
  console.log(`stomp-node: 4 jobs over 2 consumers (deliveries: alice ${got.alice.length}, bob ${got.bob.length}); the NACKed ${nacked} came back once, marked redelivered`);

  // 4. Unacknowledged messages come back when their consumer goes away; a client-mode ACK
  //    covers every earlier message; binary bodies pass unchanged.
  const held = [];
  const dave = await stomp('dave');
  await subscribe(dave, '/queue/chat:held', (m) => held.push(m), { ack: 'client' });
  await publishWithReceipt(carol, { destination: '/queue/chat:held', body: 'keep-1' }, 'r-h1');
  await publishWithReceipt(carol, { destination: '/queue/chat:held', body: 'keep-2' }, 'r-h2');
  await until('dave to hold 2', () => held.length === 2);
  await dave.deactivate();
  const erin = await stomp('erin');
  const back = [];
  await subscribe(erin, '/queue/chat:held', (m) => back.push(m), { ack: 'client' });
  await until('erin to get both back', () => back.length === 2);
  assert.deepEqual(back.map((m) => [m.body, m.headers.redelivered]), [['keep-1', 'true'], ['keep-2', 'true']]);
  back[1].ack(); // cumulative: covers keep-1 too
  await sleep(50);
  await erin.deactivate();
  const frank = await stomp('frank');
  const after = [];
  await subscribe(frank, '/queue/chat:held', (m) => after.push(m));
  const bytes = Uint8Array.from([0, 1, 2, 253, 254, 255]);
  await publishWithReceipt(carol, { destination: '/queue/chat:held', binaryBody: bytes, headers: { 'content-type': 'application/octet-stream' } }, 'r-bin');
  await until('the binary message', () => after.length === 1);
  assert.deepEqual([...after[0].binaryBody], [...bytes], 'binary body');
  console.log('stomp-node: disconnect redelivered 2 held messages; cumulative ACK left none; a binary body came through unchanged');

  // 5. Transactions: nothing is delivered before COMMIT, nothing after ABORT.
  const txGot = [];
  await subscribe(bob, '/topic/chat:tx', (m) => txGot.push(m.body));
  const tx = alice.begin();
  alice.publish({ destination: '/topic/chat:tx', body: 'tx-1', headers: { transaction: tx.id } });
  alice.publish({ destination: '/topic/chat:tx', body: 'tx-2', headers: { transaction: tx.id } });
  await sleep(150);
  assert.deepEqual(txGot, [], 'delivered before commit');
  tx.commit();
  await until('the committed messages', () => txGot.length === 2);
  const tx2 = alice.begin();
  alice.publish({ destination: '/topic/chat:tx', body: 'aborted', headers: { transaction: tx2.id } });
  tx2.abort();
  await publishWithReceipt(alice, { destination: '/topic/chat:tx', body: 'tx-3' }, 'r-tx3');
  await until('tx-3', () => txGot.length === 3);
  assert.deepEqual(txGot, ['tx-1', 'tx-2', 'tx-3']);
  console.log('stomp-node: transaction commit delivered 2 in order, abort delivered none');

  // 6. Heart-beats both ways: alice has been connected for a while, beating at 100 ms.
  await sleep(400);
  const pongs = alice.log.filter((l) => l.includes('<<< PONG')).length;
  const pings = alice.log.filter((l) => l.includes('>>> PING')).length;
  assert.ok(pongs >= 3, `server heart-beats seen by stompjs: ${pongs}`);
  assert.ok(pings >= 3, `heart-beats sent by stompjs: ${pings}`);
  assert.ok(!alice.log.some((l) => l.includes('did not receive server activity')), 'stompjs saw the server go silent');
  assert.ok(alice.connected, 'alice is still connected');
  console.log(`stomp-node: heart-beats ${pongs} received, ${pings} sent, connection kept`);

  // 7. DISCONNECT with a receipt: deactivate waits for it.
  for (const c of [alice, bob, carol, frank]) await c.deactivate();
  jay.ws.close();
  console.log('stomp-node: all passed');
} catch (e) {
  console.error('stomp-node: FAILED:', e);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
}
