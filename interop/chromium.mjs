// Chromium's native WebSocket against a tether server: it offers permessage-deflate on every
// connection. Checks the negotiation, a text and a binary echo, and a clean close.
// usage: node chromium.mjs ws://127.0.0.1:PORT/path
import { chromium, launchOptions } from './chromium_launch.mjs';
import assert from 'node:assert/strict';

const url = process.argv[2];
const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage();
  const result = await page.evaluate(async (url) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('websocket error')); });
    const next = () => new Promise((resolve) => { ws.onmessage = (e) => resolve(e.data); });
    const rows = [];
    for (let i = 0; i < 2000; i++) rows.push({ id: i, symbol: 'ACME', price: 100 + (i % 7), side: i % 2 ? 'buy' : 'sell' });
    const text = JSON.stringify(rows);
    let reply = next(); ws.send(text);
    const textOk = (await reply) === text;
    const bin = new Uint8Array(65536).map((_, i) => i % 251);
    reply = next(); ws.send(bin);
    const got = new Uint8Array(await reply);
    const binOk = got.length === bin.length && got.every((v, i) => v === bin[i]);
    const closed = new Promise((resolve) => { ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean }); });
    ws.close(4000, 'done');
    return { extensions: ws.extensions, textOk, textLength: text.length, binOk, close: await closed };
  }, url);
  console.log(`chromium: negotiated "${result.extensions}"`);
  assert.match(result.extensions, /permessage-deflate/);
  assert.ok(result.textOk, 'text echo differs');
  assert.ok(result.binOk, 'binary echo differs');
  console.log(`chromium: text (${result.textLength} bytes) and binary (65536 bytes) echo ok`);
  // The close event carries the server's close frame: tether echoes the code (RFC 6455 5.5.1).
  assert.equal(result.close.code, 4000);
  assert.equal(result.close.wasClean, true);
  console.log(`chromium: close ok (${result.close.code}, clean)`);
} finally {
  await browser.close();
}
