// The demo page in real Chromium against a running `tether serve`:
// two pages join the same room, one sends and the other shows it; a publish through the
// server API appears in both; a page that goes away and comes back recovers what it missed.
// No error state shows on join; the ticker is full from history on load; a dropped
// connection comes back calmly and recovers; the page fits a phone (390 px).
// Screenshots go to target/web-demo-1280.png, target/web-demo-390.png, target/web-chat-bob.png.
// Given an https:// address (the hub with a test CA's certificate), the pages must load over
// HTTP/2 and every WebSocket of the run must go over that HTTP/2 connection (RFC 8441): the
// hub's /metrics counts WebSocket sessions by HTTP version, and the test reads it before and
// after. (Node's fetch then needs the CA in NODE_EXTRA_CA_CERTS, which run.sh sets.)
// With a third argument `sockjs`, every page loads with `?transport=sockjs` while the
// browser's WebSockets are blocked (each one is closed before it opens, as a proxy that
// strips Upgrade would): sockjs-client must fall back to HTTP streaming, the hub must open
// no WebSocket at all, and everything above must still hold. sockjs-client comes from
// interop/node_modules in place of its CDN address.
// usage: node web/tests/chat.mjs http(s)://127.0.0.1:PORT/ API_KEY [sockjs]
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
// playwright-core is installed in interop/ (interop/run.sh), with the shared launch options.
import { chromium, launchOptions } from '../../interop/chromium_launch.mjs';
const [base, key, mode] = process.argv.slice(2);
const sockjs = mode === 'sockjs';
const sockjsClient = fileURLToPath(new URL('../../interop/node_modules/sockjs-client/dist/sockjs.min.js', import.meta.url));
// Each run's messages carry a tag, so that history from an earlier run on the same hub never
// stands in for this run's messages.
const tag = `#${Date.now().toString(36)}`;
const page_url = sockjs ? new URL('?transport=sockjs', base).href : base;
const T = { timeout: 10000 };
const https = base.startsWith('https:');
const shots = sockjs ? 'target/web-sockjs' : https ? 'target/web-h2' : 'target/web-demo';

const browser = await chromium.launch(launchOptions());

async function open(context, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`${name}: page error ${e.message}`); });
  await page.goto(page_url, T);
  await page.waitForSelector('#status:text("connected")', T);
  const used = await page.getAttribute('#status', 'data-transport');
  assert.equal(used, sockjs ? 'xhr-streaming' : 'websocket', `${name}: connected over ${used}`);
  if (https) {
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    assert.equal(protocol, 'h2', `${name}: the page loaded over ${protocol}`);
  }
  return page;
}

// A new browser context; over https, one that takes the test CA's certificate. In sockjs
// mode its WebSockets are blocked and the sockjs-client CDN address is served locally.
async function context(options) {
  const ctx = await browser.newContext({ ...options, ignoreHTTPSErrors: https });
  if (sockjs) {
    await ctx.routeWebSocket(/.*/, (ws) => ws.close({ code: 1006, reason: 'blocked' }).catch(() => ws.close()));
    await ctx.route('https://cdn.jsdelivr.net/**', (route) => route.fulfill({ path: sockjsClient, contentType: 'application/javascript' }));
  }
  return ctx;
}

// WebSocket sessions the hub opened so far, by HTTP version.
async function sessions() {
  const text = await (await fetch(new URL('/metrics', base))).text();
  const count = (v) => Number(text.match(new RegExp(`tether_websocket_sessions_total\\{http="${v}"\\} (\\d+)`))[1]);
  return { h1: count('1.1'), h2: count('2') };
}

async function join(page, name, room) {
  await page.fill('#name', name);
  await page.fill('#room', room);
  await page.click('#join button');
  // A new name reconnects first; then the room is joined and the input enabled.
  await page.waitForSelector('#text:not([disabled])', T);
  await page.waitForSelector(`#online li:text("${name}")`, T);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send button');
}

const shows = (page, text) => page.waitForSelector(`#messages li:has-text("${text}")`, T);

async function apiPublish(data) {
  const res = await fetch(new URL('/api/publish', base), {
    method: 'POST',
    headers: { Authorization: `apikey ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'chat:lobby', data }),
  });
  const body = await res.text();
  assert.equal(res.status, 200, body);
  return JSON.parse(body).result;
}

async function apiHistory(channel) {
  const res = await fetch(new URL('/api/history', base), {
    method: 'POST',
    headers: { Authorization: `apikey ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel }),
  });
  return (await res.json()).result.publications;
}

// Records every state the status line shows, from now on.
async function watchStatus(page) {
  await page.evaluate(() => {
    window.statusSeen = [];
    const s = document.getElementById('status');
    new MutationObserver(() => window.statusSeen.push(`${s.className}: ${s.textContent}`))
      .observe(s, { attributes: true, childList: true, characterData: true, subtree: true });
  });
}

try {
  const before = await sessions();
  // The demo feed publishes one symbol every 0.5 s, in turn: once every symbol has two
  // prices in history, a new page must show all four rows with their change at once. Live
  // updates alone could not fill four changes in 3 s (that takes 8 updates, 3.5 s).
  for (let i = 0; (await apiHistory('ticker:prices')).length < 8; i++) {
    assert.ok(i < 100, 'the demo feed did not publish 8 prices in 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  const annContext = await context({ viewport: { width: 1280, height: 800 } });
  const bobContext = await context({ viewport: { width: 1100, height: 620 } });
  const ann = await open(annContext, 'ann');
  const rows = await ann.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#prices tr')].map((tr) => [...tr.children].map((td) => td.textContent));
    return rows.length === 4 && rows.every((r) => r.length === 3 && r[1] && r[2] && r[2] !== '–') && rows;
  }, null, { timeout: 3000 });
  console.log(`ticker: all four rows filled from history on load: ${JSON.stringify(await rows.jsonValue())}`);
  const bob = await open(bobContext, 'bob');
  // Joining under a new name reconnects: the page must not flash an error meanwhile.
  await watchStatus(ann);
  await join(ann, 'ann', 'lobby');
  const seenOnJoin = await ann.evaluate(() => window.statusSeen);
  assert.ok(seenOnJoin.length > 0, 'the status did not change on join');
  assert.ok(seenOnJoin.every((s) => !s.includes('closed') && !/disconnected|lost|reconnecting/.test(s)), JSON.stringify(seenOnJoin));
  assert.equal(await ann.locator('#messages li.system:has-text("lost")').count(), 0);
  console.log(`demo: joining showed only ${JSON.stringify([...new Set(seenOnJoin)])}`);
  await join(bob, 'bob', 'lobby');
  await ann.waitForSelector('#online li:text("bob")', T);
  console.log('chat: both pages joined chat:lobby and see each other online');

  await say(ann, `hello from ann ${tag}`);
  await shows(bob, `hello from ann ${tag}`);
  console.log('chat: a message typed in one page appears in the other');

  await apiPublish({ name: 'api', text: `published through the server API ${tag}` });
  await shows(ann, `published through the server API ${tag}`);
  await shows(bob, `published through the server API ${tag}`);
  console.log('chat: a server API publish appears in both pages');

  // Bob goes away (his position stays in localStorage); two messages are sent meanwhile.
  await bob.close();
  await ann.waitForSelector('#messages li.system:has-text("bob left")', T);
  await say(ann, `while bob was away (1) ${tag}`);
  await shows(ann, `while bob was away (1) ${tag}`);
  await apiPublish({ name: 'api', text: `while bob was away (2) ${tag}` });
  await shows(ann, `while bob was away (2) ${tag}`);
  const back = await open(bobContext, 'bob again');
  await back.waitForSelector('#note:has-text("Recovered 2 missed message(s)")', T);
  await shows(back, `while bob was away (1) ${tag}`);
  await shows(back, `while bob was away (2) ${tag}`);
  const note = await back.textContent('#note');
  console.log(`chat: the reloaded page recovered what it missed ("${note}")`);

  // The page's own "drop the connection": it reconnects (showing a countdown, calmly)
  // and recovers what was sent meanwhile.
  await watchStatus(ann);
  await ann.click('#drop');
  await say(back, `while ann was dropped ${tag}`);
  await ann.waitForSelector('#note:has-text("Recovered 1 missed message(s)")', T);
  await shows(ann, `while ann was dropped ${tag}`);
  const seenOnDrop = await ann.evaluate(() => window.statusSeen);
  assert.ok(seenOnDrop.some((s) => /wait: reconnecting in \d s/.test(s)), JSON.stringify(seenOnDrop));
  assert.ok(seenOnDrop.at(-1) === 'status open: connected', JSON.stringify(seenOnDrop));
  console.log(`demo: a dropped connection came back (${JSON.stringify([...new Set(seenOnDrop)])}) and recovered 1 message`);

  await ann.screenshot({ path: `${shots}-1280.png` });
  await back.screenshot({ path: `${shots}-bob.png` });
  // A phone's width: nothing wider than the screen.
  const phoneContext = await context({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
  const phone = await open(phoneContext, 'cy');
  await join(phone, 'cy', 'lobby');
  await phone.waitForSelector('#prices tr:nth-child(4)', T);
  const width = await phone.evaluate(() => ({ page: document.documentElement.scrollWidth, screen: window.innerWidth }));
  assert.ok(width.page <= width.screen, `the page is ${width.page} px wide on a ${width.screen} px screen`);
  await phone.screenshot({ path: `${shots}-390.png`, fullPage: true });
  console.log(`demo: at 390 px the page is ${width.page} px wide; screenshots in ${shots}-1280.png and ${shots}-390.png`);
  const after = await sessions();
  const opened = { h1: after.h1 - before.h1, h2: after.h2 - before.h2 };
  if (sockjs) {
    assert.ok(opened.h1 === 0 && opened.h2 === 0, `WebSocket sessions by HTTP version: ${JSON.stringify(opened)}`);
    console.log('sockjs: with WebSockets blocked every page ran over SockJS xhr-streaming; the hub opened no WebSocket');
  } else if (https) {
    assert.ok(opened.h2 >= 4 && opened.h1 === 0, `WebSocket sessions by HTTP version: ${JSON.stringify(opened)}`);
    console.log(`https: every page loaded over h2 and all ${opened.h2} WebSocket sessions ran over HTTP/2 (hub metric: ${JSON.stringify(opened)})`);
  } else {
    // Chromium speaks HTTP/1.1 to a plain http:// server: every WebSocket took the upgrade.
    assert.ok(opened.h1 >= 4 && opened.h2 === 0, `WebSocket sessions by HTTP version: ${JSON.stringify(opened)}`);
    console.log(`http: all ${opened.h1} WebSocket sessions were HTTP/1.1 upgrades (hub metric: ${JSON.stringify(opened)})`);
  }
} finally {
  await browser.close();
}
