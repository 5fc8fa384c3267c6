// @stomp/stompjs in Chromium against `tether serve`: the page comes from the hub's own origin,
// loads stompjs' browser bundle, and talks STOMP over Chromium's native WebSocket, once with
// the STOMP subprotocols on /ws and once on /stomp without any, next to a tether.json client.
// Covers a topic both ways with JSON, a queue with NACK redelivery and ACK, a transaction,
// receipts and heart-beats.
// usage: node stomp_chromium.mjs http://127.0.0.1:PORT/   (the hub runs with 100 ms heart-beats)
import { chromium, launchOptions } from './chromium_launch.mjs';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const page_url = process.argv[2];
const bundle = fileURLToPath(new URL('./node_modules/@stomp/stompjs/bundles/stomp.umd.js', import.meta.url));
const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(page_url);
  await page.addScriptTag({ path: bundle });
  const r = await page.evaluate(async () => {
    const ws = `ws://${location.host}`;
    const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
    const until = async (what, pred) => {
      const end = Date.now() + 5000;
      while (!pred()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await sleep(10);
      }
    };
    const connect = (name, options) => new Promise((resolve, reject) => {
      const log = [];
      const client = new StompJs.Client({
        connectHeaders: { login: name }, reconnectDelay: 0, heartbeatIncoming: 100, heartbeatOutgoing: 100,
        debug: (l) => log.push(l), ...options,
      });
      client.onConnect = (frame) => { client.log = log; client.frame = frame; resolve(client); };
      client.onStompError = (f) => reject(new Error(`${name}: ERROR ${f.headers.message}`));
      client.onWebSocketError = () => reject(new Error(`${name}: websocket error`));
      client.activate();
    });
    const receipt = (client, params, id) => new Promise((resolve) => {
      client.watchForReceipt(id, resolve);
      client.publish({ ...params, headers: { ...(params.headers ?? {}), receipt: id } });
    });
    // SUBSCRIBE with a receipt: the subscription is in place when it resolves.
    const subscribe = (client, dest, cb, headers = {}) => new Promise((resolve) => {
      const id = `sub-receipt-${Math.random()}`;
      client.watchForReceipt(id, resolve);
      client.subscribe(dest, cb, { ...headers, receipt: id });
    });
    const out = {};
    // stompjs' own WebSocket with its subprotocols on /ws, and a plain one on /stomp.
    const a = await connect('ann', { brokerURL: `${ws}/ws` });
    const b = await connect('ben', { webSocketFactory: () => new WebSocket(`${ws}/stomp`) });
    out.versions = [a.frame.headers.version, b.frame.headers.version];
    out.protocols = [a.webSocket.protocol, b.webSocket.protocol];

    // A tether.json client in the same page.
    const j = new WebSocket(`${ws}/ws`, 'tether.json');
    const pushes = [];
    const replies = {};
    j.onmessage = (e) => { const m = JSON.parse(e.data); if (m.push) pushes.push(m.push); else replies[m.id] = m; };
    await new Promise((res) => { j.onopen = res; });
    j.send(JSON.stringify({ id: 1, connect: { name: 'jo' } }));
    j.send(JSON.stringify({ id: 2, subscribe: { channel: 'chat:browser' } }));
    await until('json subscribe', () => replies[2]);

    const topicA = [], topicB = [];
    await subscribe(a, '/topic/chat:browser', (m) => topicA.push(m.body));
    await subscribe(b, '/topic/chat:browser', (m) => topicB.push(m.body));
    await receipt(a, { destination: '/topic/chat:browser', body: 'from ann' }, 'r1');
    j.send(JSON.stringify({ id: 3, publish: { channel: 'chat:browser', data: { from: 'jo' } } }));
    await until('topic messages', () => topicA.length === 2 && topicB.length === 2 && pushes.some((p) => p.pub));
    out.topicB = [...topicB];
    out.jsonGot = pushes.find((p) => p.pub).pub.data;

    // A queue: ann NACKs the first job once, then ACKs everything.
    const queue = [];
    let nacked = false;
    await subscribe(a, '/queue/chat:browserq', (m) => {
      queue.push([m.body, m.headers.redelivered ?? '']);
      if (!nacked) { nacked = true; m.nack(); } else { m.ack(); }
    }, { ack: 'client-individual' });
    await receipt(b, { destination: '/queue/chat:browserq', body: 'job-1' }, 'r2');
    await receipt(b, { destination: '/queue/chat:browserq', body: 'job-2' }, 'r3');
    await until('queue deliveries', () => queue.length === 3);
    out.queue = queue;

    // A transaction from ben, delivered on commit only.
    const tx = b.begin();
    b.publish({ destination: '/topic/chat:browser', body: 'in tx', headers: { transaction: tx.id } });
    await sleep(150);
    out.beforeCommit = topicA.length;
    tx.commit();
    await until('commit', () => topicA.length === 3);
    out.afterCommit = topicA[2];

    await sleep(300);
    out.pongs = a.log.filter((l) => l.includes('<<< PONG')).length;
    out.pings = a.log.filter((l) => l.includes('>>> PING')).length;
    out.stillConnected = a.connected && b.connected;
    await a.deactivate();
    await b.deactivate();
    j.close();
    return out;
  });
  assert.deepEqual(errors, []);
  assert.deepEqual(r.versions, ['1.2', '1.2']);
  assert.deepEqual(r.protocols, ['v12.stomp', '']);
  console.log('stomp-chromium: stompjs connected over /ws (v12.stomp) and /stomp (no subprotocol), STOMP 1.2');
  assert.deepEqual(r.topicB, ['from ann', '{"from":"jo"}']);
  assert.equal(r.jsonGot, 'from ann');
  console.log('stomp-chromium: /topic/chat:browser shared by two stompjs clients and a tether.json client');
  // job-2 may come before or after job-1's redelivery (the NACK and the second SEND race).
  assert.deepEqual([...r.queue].sort(), [['job-1', ''], ['job-1', 'true'], ['job-2', '']]);
  assert.deepEqual(r.queue[0], ['job-1', '']);
  console.log('stomp-chromium: queue NACK redelivered job-1 (redelivered:true), then ACKs');
  assert.equal(r.beforeCommit, 2);
  assert.equal(r.afterCommit, 'in tx');
  console.log('stomp-chromium: transaction delivered on COMMIT only');
  assert.ok(r.pongs >= 3 && r.pings >= 3, `heart-beats: ${r.pongs} in, ${r.pings} out`);
  assert.ok(r.stillConnected);
  console.log(`stomp-chromium: heart-beats ${r.pongs} received, ${r.pings} sent; all passed`);
} finally {
  await browser.close();
}
