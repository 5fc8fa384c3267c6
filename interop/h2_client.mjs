// WebSocket over HTTP/2 (RFC 8441) from Node's own http2 module, a client independent of
// tether: h2c with prior knowledge, the server's SETTINGS_ENABLE_CONNECT_PROTOCOL, extended
// CONNECT with :protocol websocket, the WebSocket framing (masked, RSV1 for
// permessage-deflate) written here on the HTTP/2 stream, and the refusals.
// usage: node interop/h2_client.mjs echo http://127.0.0.1:PORT   (the hyper_echo example)
//        node interop/h2_client.mjs hub  http://127.0.0.1:PORT   (tether serve, h2c)
//        node interop/h2_client.mjs chat http://127.0.0.1:PORT   (the axum_chat example)
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import zlib from 'node:zlib';
import crypto from 'node:crypto';

const [mode, base] = process.argv.slice(2);
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms).unref());

// One masked client frame.
function frame(opcode, payload, rsv1 = false) {
  const len = payload.length;
  const head = [0x80 | (rsv1 ? 0x40 : 0) | opcode];
  if (len < 126) head.push(0x80 | len);
  else if (len < 65536) head.push(0x80 | 126, len >> 8, len & 0xff);
  else throw new Error('test frames stay small');
  const mask = crypto.randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4];
  return Buffer.concat([Buffer.from(head), mask, body]);
}

// A WebSocket on an HTTP/2 stream: whole frames from the server, in order.
class StreamSocket {
  constructor(stream) {
    this.stream = stream;
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.waiting = null;
    stream.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
  }
  parse() {
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      assert.equal(b1 & 0x80, 0, 'a server frame must not be masked');
      let len = b1 & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) return; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) return; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      if (this.buf.length < off + len) return;
      this.frames.push({ fin: !!(b0 & 0x80), rsv1: !!(b0 & 0x40), opcode: b0 & 0x0f, payload: this.buf.subarray(off, off + len) });
      this.buf = this.buf.subarray(off + len);
      if (this.waiting) { const w = this.waiting; this.waiting = null; w(); }
    }
  }
  async next() {
    while (this.frames.length === 0) await Promise.race([new Promise((r) => { this.waiting = r; }), timeout(5000, 'a frame')]);
    return this.frames.shift();
  }
  send(opcode, payload, { compress = false } = {}) {
    let data = Buffer.from(payload);
    if (compress) {
      data = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      assert.ok(data.subarray(-4).equals(TAIL));
      data = data.subarray(0, -4);
    }
    this.stream.write(frame(opcode, data, compress));
  }
  // A data message's payload, inflated when RSV1 is set (no context takeover either way).
  async message() {
    const f = await this.next();
    assert.ok(f.fin && (f.opcode === 1 || f.opcode === 2), `expected a whole data frame, got opcode ${f.opcode}`);
    return { ...f, data: f.rsv1 ? zlib.inflateRawSync(Buffer.concat([f.payload, TAIL]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }) : f.payload };
  }
  async close(code) {
    const p = Buffer.alloc(2);
    p.writeUInt16BE(code);
    this.stream.write(frame(8, p));
    const f = await this.next();
    assert.equal(f.opcode, 8);
    assert.equal(f.payload.readUInt16BE(0), code);
    await Promise.race([new Promise((r) => this.stream.on('close', r)), timeout(5000, 'the stream end')]);
  }
}

const session = http2.connect(base);
session.on('error', (e) => { throw e; });
await Promise.race([new Promise((r) => session.once('remoteSettings', r)), timeout(5000, 'SETTINGS')]);
assert.equal(session.remoteSettings.enableConnectProtocol, true, 'the server must advertise SETTINGS_ENABLE_CONNECT_PROTOCOL');
console.log('h2: the server advertised SETTINGS_ENABLE_CONNECT_PROTOCOL');

// Extended CONNECT; resolves with the response headers and the stream.
function connect(path, headers = {}) {
  const stream = session.request({
    ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': 'http', ':path': path,
    'sec-websocket-version': '13', origin: base, ...headers,
  }, { endStream: false });
  return Promise.race([new Promise((resolve) => stream.once('response', (h) => resolve({ headers: h, stream }))), timeout(5000, `${path}: the response`)]);
}

async function refusals(path) {
  let r = await connect(path, { ':protocol': 'webtransport' });
  assert.equal(r.headers[':status'], 400, 'another :protocol is refused with 400');
  r = await connect(path, { 'sec-websocket-version': '8' });
  assert.equal(r.headers[':status'], 426);
  assert.equal(r.headers['sec-websocket-version'], '13');
  r = await connect(path, { origin: 'http://elsewhere.example' });
  assert.equal(r.headers[':status'], 403, 'a foreign origin is refused');
  console.log('h2: refusals: another :protocol 400, version 8 426 (with 13), a foreign origin 403');
}

const offer = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
if (mode === 'echo') {
  const { headers, stream } = await connect('/ws', { 'sec-websocket-protocol': 'chat, echo', 'sec-websocket-extensions': offer });
  assert.equal(headers[':status'], 200);
  assert.equal(headers['sec-websocket-protocol'], 'echo');
  assert.equal(headers['sec-websocket-accept'], undefined, 'RFC 8441: no accept key');
  assert.match(headers['sec-websocket-extensions'], /^permessage-deflate/);
  const ws = new StreamSocket(stream);
  const text = 'over an HTTP/2 stream, compressed '.repeat(60);
  ws.send(1, text, { compress: true });
  const back = await ws.message();
  assert.ok(back.rsv1, 'the echo comes back compressed');
  assert.equal(back.data.toString(), text);
  // A second WebSocket on the same connection, at the same time, without compression.
  const other = await connect('/ws');
  assert.equal(other.headers[':status'], 200);
  assert.equal(other.headers['sec-websocket-extensions'], undefined);
  const ws2 = new StreamSocket(other.stream);
  ws2.send(2, Buffer.from([1, 2, 3]));
  assert.deepEqual([...(await ws2.message()).data], [1, 2, 3]);
  ws.send(1, 'still here');
  assert.equal((await ws.message()).data.toString(), 'still here');
  await ws.close(1000);
  await ws2.close(1000);
  console.log(`h2: two WebSockets on one connection: subprotocol echo, permessage-deflate (${text.length} bytes sent in ${back.payload.length} compressed back), close 1000`);
  await refusals('/ws');
} else if (mode === 'hub') {
  const { headers, stream } = await connect('/ws', { 'sec-websocket-protocol': 'tether.json' });
  assert.equal(headers[':status'], 200);
  assert.equal(headers['sec-websocket-protocol'], 'tether.json');
  const ws = new StreamSocket(stream);
  ws.send(1, JSON.stringify({ id: 1, connect: { name: 'node-h2' } }));
  const reply = JSON.parse((await ws.message()).data);
  assert.equal(reply.id, 1);
  assert.equal(reply.result.user, 'node-h2');
  await ws.close(1000);
  const nope = await connect('/nope');
  assert.equal(nope.headers[':status'], 404);
  console.log('h2: tether.json over HTTP/2 to the hub: connect answered; /nope 404');
  await refusals('/ws');
} else if (mode === 'chat') {
  // Two members of the room on one HTTP/2 connection, one with permessage-deflate: what
  // either says reaches both.
  const a = await connect('/ws', { 'sec-websocket-protocol': 'chat', 'sec-websocket-extensions': offer });
  assert.equal(a.headers[':status'], 200);
  assert.equal(a.headers['sec-websocket-protocol'], 'chat');
  assert.match(a.headers['sec-websocket-extensions'], /^permessage-deflate/);
  const b = await connect('/ws', { 'sec-websocket-protocol': 'chat' });
  assert.equal(b.headers[':status'], 200);
  const [wa, wb] = [new StreamSocket(a.stream), new StreamSocket(b.stream)];
  const text = 'hello room, over HTTP/2 '.repeat(40);
  wa.send(1, text, { compress: true });
  for (const w of [wa, wb]) assert.equal((await w.message()).data.toString(), text);
  wb.send(1, 'and back');
  const [fromB, toB] = [await wa.message(), await wb.message()];
  assert.equal(fromB.data.toString(), 'and back');
  assert.equal(toB.data.toString(), 'and back');
  assert.ok(!toB.rsv1, 'no compression where none was negotiated');
  await wa.close(1000);
  await wb.close(1000);
  console.log('h2: two chat members on one connection (one compressed) hear each other; close 1000');
  await refusals('/ws');
} else {
  throw new Error(`unknown mode ${mode}`);
}
session.close();
