// The demo page in real Chromium against a running `tether serve`:
// two pages join the same room, one sends and the other shows it; a publish through the
// server API appears in both; a page that goes away and comes back recovers what it missed.
// Screenshots go to target/web-chat-*.png.
// usage: node web/tests/chat.mjs http://127.0.0.1:PORT/ API_KEY
import assert from 'node:assert/strict';
// playwright-core is installed in interop/ (interop/run.sh), with the shared launch options.
import { chromium, launchOptions } from '../../interop/chromium_launch.mjs';
const [base, key] = process.argv.slice(2);
const T = { timeout: 10000 };

const browser = await chromium.launch(launchOptions());

async function open(context, name) {
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`${name}: page error ${e.message}`); });
  await page.goto(base, T);
  await page.waitForSelector('#status:text("connected")', T);
  return page;
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

try {
  const annContext = await browser.newContext({ viewport: { width: 1100, height: 620 } });
  const bobContext = await browser.newContext({ viewport: { width: 1100, height: 620 } });
  const ann = await open(annContext, 'ann');
  const bob = await open(bobContext, 'bob');
  await join(ann, 'ann', 'lobby');
  await join(bob, 'bob', 'lobby');
  await ann.waitForSelector('#online li:text("bob")', T);
  console.log('chat: both pages joined chat:lobby and see each other online');

  await say(ann, 'hello from ann');
  await shows(bob, 'hello from ann');
  console.log('chat: a message typed in one page appears in the other');

  await apiPublish({ name: 'api', text: 'published through the server API' });
  await shows(ann, 'published through the server API');
  await shows(bob, 'published through the server API');
  console.log('chat: a server API publish appears in both pages');

  // Bob goes away (his position stays in localStorage); two messages are sent meanwhile.
  await bob.close();
  await ann.waitForSelector('#messages li.system:has-text("bob left")', T);
  await say(ann, 'while bob was away (1)');
  await shows(ann, 'while bob was away (1)');
  await apiPublish({ name: 'api', text: 'while bob was away (2)' });
  await shows(ann, 'while bob was away (2)');
  const back = await open(bobContext, 'bob again');
  await back.waitForSelector('#note:has-text("Recovered 2 missed message(s)")', T);
  await shows(back, 'while bob was away (1)');
  await shows(back, 'while bob was away (2)');
  const note = await back.textContent('#note');
  console.log(`chat: the reloaded page recovered what it missed ("${note}")`);

  await ann.screenshot({ path: 'target/web-chat-ann.png' });
  await back.screenshot({ path: 'target/web-chat-bob.png' });
  console.log('chat: screenshots in target/web-chat-ann.png and target/web-chat-bob.png');
} finally {
  await browser.close();
}
