// Chromium loads tether echo's page from an HTTPS origin; the page opens a wss:// WebSocket
// to the same origin, and we type a message and wait for its echo, as a user would.
// The test CA is not installed anywhere: Chromium trusts exactly the server's key for this
// throwaway profile (--ignore-certificate-errors-spki-list), and nothing else.
// usage: node chromium_https.mjs https://localhost:PORT/ CERT.pem SCREENSHOT.png
import { chromium, launchOptions } from './chromium_launch.mjs';
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const [url, certFile, screenshot] = process.argv.slice(2);
const pem = readFileSync(certFile, 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/)[0];
const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
const pin = createHash('sha256').update(spki).digest('base64');

const profile = mkdtempSync(join(tmpdir(), 'tether-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  ...launchOptions([`--ignore-certificate-errors-spki-list=${pin}`]),
  viewport: { width: 900, height: 520 },
});
try {
  const page = await context.newPage();
  const response = await page.goto(url, { timeout: 15000 });
  assert.equal(response.status(), 200);
  assert.equal(await page.evaluate(() => location.protocol), 'https:');
  const endpoint = await page.textContent('#endpoint');
  assert.match(endpoint, /^wss:\/\/localhost:\d+\/echo$/);
  await page.waitForSelector('#status.open', { timeout: 10000 });
  for (const text of ['hello over wss', 'a second message']) {
    await page.fill('#text', text);
    await page.click('#send');
    await page.waitForSelector(`li.in:has-text("${text}")`, { timeout: 10000 });
  }
  const echoed = await page.$$eval('li.in', (items) => items.map((li) => li.textContent));
  assert.deepEqual(echoed, ['hello over wss', 'a second message']);
  console.log(`chromium (https page ${url}): ${await page.textContent('#status')}, echoed ${echoed.length} messages over ${endpoint}`);
  await page.screenshot({ path: screenshot });
  console.log(`chromium: screenshot in ${screenshot}`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
