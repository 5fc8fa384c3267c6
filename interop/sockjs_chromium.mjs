// sockjs-client (npm 1.6.x) in Chromium against `tether serve`: tether.json over every
// transport sockjs-client has in a browser (websocket, xhr-streaming, xhr-polling,
// eventsource, jsonp-polling, and the iframe-hosted htmlfile, eventsource and xhr-polling),
// each chatting with a plain WebSocket client from Node in one channel; @stomp/stompjs over
// SockJS; and, against a hub with SockJS's WebSocket off, the fallback sockjs-client picks.
// The page is the hub's own origin; sockjs-client is loaded from interop/node_modules (the
// iframe page's CDN address is answered from there too).
// usage: node sockjs_chromium.mjs http://127.0.0.1:PORT http://127.0.0.1:PORT2
import WebSocket from 'ws';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { chromium, launchOptions } from './chromium_launch.mjs';

const [base, wsOff] = process.argv.slice(2);
const lib = (p) => fileURLToPath(new URL(`node_modules/${p}`, import.meta.url));
const sockjsPath = lib('sockjs-client/dist/sockjs.min.js');
const stompPath = lib('@stomp/stompjs/bundles/stomp.umd.min.js');
const timer = setTimeout(() => { console.error('sockjs-chromium: timed out'); process.exit(1); }, 90000);

// A tether.json WebSocket client in Node: the other side of each chat.
const peer = new WebSocket(`${base.replace('http', 'ws')}/ws`, 'tether.json');
await new Promise((resolve, reject) => { peer.once('open', resolve); peer.once('error', reject); });
let nextId = 0;
const replies = new Map();
const pubs = [];
peer.on('message', (d) => {
  const m = JSON.parse(d.toString());
  if (m.push?.pub) pubs.push({ channel: m.push.channel, data: m.push.pub.data });
  else replies.get(m.id)?.(m);
});
const call = (method, params) => new Promise((resolve) => {
  nextId += 1;
  replies.set(nextId, resolve);
  peer.send(JSON.stringify({ id: nextId, [method]: params }));
});
await call('connect', { name: 'node-peer' });

const browser = await chromium.launch(launchOptions());
async function page(origin) {
  const context = await browser.newContext();
  await context.route('https://cdn.jsdelivr.net/**', (r) => r.fulfill({ path: sockjsPath, contentType: 'application/javascript' }));
  const p = await context.newPage();
  p.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await p.goto(`${origin}/sockjs`);
  await p.addScriptTag({ path: sockjsPath });
  await p.addScriptTag({ path: stompPath });
  return p;
}

// In the page: open SockJS with `transports`, connect, subscribe, publish `text`, and wait
// for `want` messages on the channel; returns the transport used and what arrived.
const chatInPage = ({ url, transports, channel, text, want }) => new Promise((resolve, reject) => {
  const s = new SockJS(url, null, transports ? { transports } : {});
  const got = [];
  let id = 0;
  const send = (m, p) => s.send(JSON.stringify({ id: ++id, [m]: p }));
  s.onopen = () => {
    send('connect', { name: 'browser' });
    send('subscribe', { channel });
  };
  s.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.id === 2) {
      if (m.error) return reject(new Error(m.error.message));
      window.subscribed = true;
      send('publish', { channel, data: text });
    }
    if (m.push?.pub) got.push(m.push.pub.data);
    if (got.length === want) { resolve({ transport: s.transport, got }); s.close(); }
  };
  s.onclose = (e) => { if (got.length < want) reject(new Error(`closed ${e.code} ${e.reason}`)); };
});

try {
  const p = await page(base);
  const transports = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource', 'jsonp-polling',
    'iframe-htmlfile', 'iframe-eventsource', 'iframe-xhr-polling'];
  for (const t of transports) {
    const channel = `chat:chromium-${t}`;
    await call('subscribe', { channel });
    const result = p.evaluate(chatInPage, { url: `${base}/sockjs`, transports: [t], channel, text: `from ${t} </script>\u2028`, want: 3 });
    await p.waitForFunction(() => window.subscribed === true, null, { timeout: 10000 });
    await p.evaluate(() => { window.subscribed = false; });
    await call('publish', { channel, data: 'from node 1' });
    await call('publish', { channel, data: 'from node 2' });
    const r = await result;
    assert.equal(r.transport, t);
    assert.deepEqual([...r.got].sort(), ['from node 1', 'from node 2', `from ${t} </script>\u2028`].sort());
    const seen = () => pubs.some((x) => x.channel === channel && x.data === `from ${t} </script>\u2028`);
    for (let i = 0; !seen(); i += 1) { assert.ok(i < 200, `${t}: the browser's message did not reach node`); await new Promise((r2) => setTimeout(r2, 10)); }
    console.log(`sockjs-chromium: tether.json over ${t}, chatting with a Node WebSocket client`);
  }

  // @stomp/stompjs over SockJS in the page (xhr-polling: no WebSocket at all).
  const stomp = await p.evaluate((url) => new Promise((resolve, reject) => {
    const client = new StompJs.Client({
      webSocketFactory: () => new SockJS(url, null, { transports: ['xhr-polling'] }),
      reconnectDelay: 0, heartbeatIncoming: 0, heartbeatOutgoing: 0,
    });
    client.onConnect = () => {
      client.subscribe('/topic/chat:chromium-stomp', (m) => { resolve(m.body); client.deactivate(); });
      setTimeout(() => client.publish({ destination: '/topic/chat:chromium-stomp', body: 'stomp in chromium' }), 100);
    };
    client.onStompError = (f) => reject(new Error(f.headers.message));
    client.activate();
  }), `${base}/stomp-sockjs`);
  assert.equal(stomp, 'stomp in chromium');
  console.log('sockjs-chromium: @stomp/stompjs over SockJS xhr-polling');

  // WebSocket off on the hub: sockjs-client falls back by itself.
  const q = await page(wsOff);
  const r = await q.evaluate(chatInPage, { url: `${wsOff}/sockjs`, transports: null, channel: 'chat:off', text: 'fallback', want: 1 });
  assert.equal(r.transport, 'xhr-streaming');
  console.log(`sockjs-chromium: with the hub's SockJS WebSocket off, sockjs-client fell back to ${r.transport}`);
} finally {
  await browser.close();
  peer.close();
}
clearTimeout(timer);
console.log('sockjs-chromium: all passed');
