// The tether hub demo: a chat room and a live ticker over the tether.json protocol
// (docs/PROTOCOL.md), with the browser's own WebSocket API, or over SockJS where WebSocket
// does not get through: `?transport=sockjs` lets sockjs-client pick (WebSocket first, then
// HTTP streaming and polling), `?transport=xhr-polling` (or any sockjs-client transport
// name) forces one; `&sockjs_url=` loads sockjs-client from elsewhere than its CDN.
'use strict';

const $ = (id) => document.getElementById(id);
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
const params = new URLSearchParams(location.search);
const transport = params.get('transport');
const sockjsUrl = params.get('sockjs_url') || 'https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js';
let ws;
let nextId = 1;
const pending = new Map();
let room = null;
const seen = new Set();
let currentEpoch = '';
// Reconnect attempts since the last open, for the back-off.
let attempts = 0;
// Set when the page closes the socket itself to reconnect under a new name.
let renaming = false;

function call(method, params) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, [method]: params }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

// cls: 'open' (connected), 'wait' (connecting or reconnecting), 'closed' (given up).
function status(text, cls) {
  $('status').textContent = text;
  $('status').className = 'status ' + cls;
}

function addMessage(pub) {
  if (seen.has(pub.offset)) return;
  seen.add(pub.offset);
  const li = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = (pub.data && pub.data.name) || (pub.info && pub.info.user) || 'server';
  li.append(who, document.createTextNode((pub.data && pub.data.text) || JSON.stringify(pub.data)));
  li.dataset.offset = pub.offset;
  // Keep offset order even when history and recovery arrive after live messages.
  const list = $('messages');
  const after = [...list.children].find((el) => el.dataset.offset && Number(el.dataset.offset) > pub.offset);
  list.insertBefore(li, after || null);
  list.scrollTop = list.scrollHeight;
}

function system(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  $('messages').append(li);
  $('messages').scrollTop = $('messages').scrollHeight;
}

function nameOf(client) {
  return client.user || client.client;
}

async function refreshPresence() {
  const { clients } = await call('presence', { channel: room });
  // One entry per person: a guest (no token) is never the user of the same name.
  const people = new Map();
  for (const c of clients) people.set((c.anonymous ? 'guest:' : 'user:') + nameOf(c), c);
  const items = [...people.values()]
    .sort((a, b) => nameOf(a).localeCompare(nameOf(b)))
    .map((c) => {
      const li = document.createElement('li');
      li.textContent = nameOf(c);
      if (c.anonymous) li.append(Object.assign(document.createElement('span'), { className: 'badge', textContent: 'guest' }));
      return li;
    });
  $('online').replaceChildren(...items);
}

function savePosition(channel, offset, epoch) {
  localStorage.setItem('pos:' + channel, JSON.stringify({ offset, epoch }));
}

// The ticker: every symbol's last price and last change, kept between updates.
const prices = new Map();
let tickerOffset = 0;
// The channel's epoch: when the hub restarts, offsets start again and the table with them.
let tickerEpoch = null;
// Pushes that arrive while the history is being read; applied after it, in order.
let tickerQueue = null;

function applyPrice(pub) {
  if (pub.offset <= tickerOffset || !pub.data || !pub.data.symbol) return;
  tickerOffset = pub.offset;
  const { symbol, price } = pub.data;
  const prev = prices.get(symbol);
  prices.set(symbol, { price, change: prev ? price - prev.price : null, at: pub.offset });
}

function renderPrices(flash) {
  const rows = [...prices.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([symbol, p]) => {
    const tr = document.createElement('tr');
    tr.id = 'price-' + symbol;
    if (flash && p.at === tickerOffset) tr.className = 'tick';
    tr.innerHTML = '<td></td><td></td><td></td>';
    tr.children[0].textContent = symbol;
    tr.children[1].textContent = Number(p.price).toFixed(2);
    const c = p.change;
    tr.children[2].textContent = c === null ? '–' : (c > 0 ? '+' : c < 0 ? '−' : '') + Math.abs(c).toFixed(2);
    tr.children[2].className = c > 0 ? 'up' : c < 0 ? 'down' : '';
    return tr;
  });
  if (rows.length) $('prices').replaceChildren(...rows);
}

async function startTicker() {
  tickerQueue = [];
  try {
    const sub = await call('subscribe', { channel: 'ticker:prices' });
    if (sub.epoch !== tickerEpoch) {
      tickerEpoch = sub.epoch;
      tickerOffset = 0;
      prices.clear();
    }
    // What was published before we came: every symbol at once, with its last change.
    const { publications } = await call('history', { channel: 'ticker:prices', limit: 20 });
    publications.forEach(applyPrice);
  } catch (e) {
    // No ticker namespace on this hub: the table keeps its hint.
  }
  tickerQueue.forEach(applyPrice);
  tickerQueue = null;
  renderPrices(false);
}

function onPush(push) {
  if (push.channel === room) {
    if (push.pub) {
      addMessage(push.pub);
      savePosition(room, push.pub.offset, currentEpoch);
    } else if (push.join || push.leave) {
      const who = push.join || push.leave;
      system(`${nameOf(who)} ${push.join ? 'joined' : 'left'}`);
      refreshPresence();
    }
  } else if (push.channel === 'ticker:prices' && push.pub) {
    if (tickerQueue) {
      tickerQueue.push(push.pub);
    } else {
      applyPrice(push.pub);
      renderPrices(true);
    }
  }
}

async function join(name, roomName) {
  if (room) await call('unsubscribe', { channel: room });
  room = 'chat:' + roomName;
  $('room-label').textContent = `room ${roomName}, as ${name}`;
  seen.clear();
  $('messages').replaceChildren();
  const stored = JSON.parse(localStorage.getItem('pos:' + room) || 'null');
  const sub = await call('subscribe', stored ? { channel: room, recover: stored } : { channel: room });
  currentEpoch = sub.epoch;
  const history = await call('history', { channel: room, limit: 50 });
  history.publications.forEach(addMessage);
  if (stored) {
    sub.publications.forEach(addMessage);
    $('note').textContent = sub.recovered
      ? `Recovered ${sub.publications.length} missed message(s) since offset ${stored.offset}.`
      : 'Could not recover missed messages (history trimmed or channel restarted); showing recent history.';
  } else {
    $('note').textContent = '';
  }
  savePosition(room, sub.offset, sub.epoch);
  await refreshPresence();
  $('text').disabled = false;
  $('send').querySelector('button').disabled = false;
  $('text').focus();
  localStorage.setItem('name', name);
  localStorage.setItem('room', roomName);
}

function reconnectLater() {
  attempts += 1;
  // 1 s, 2 s, 4 s … up to 10 s, with jitter so that many pages do not come back at once.
  const delay = Math.min(1000 * 2 ** (attempts - 1), 10000) + Math.random() * 500;
  const at = Date.now() + delay;
  const tick = () => {
    const left = Math.ceil((at - Date.now()) / 1000);
    if (left <= 0) return connect('reconnecting…');
    status(`reconnecting in ${left} s…`, attempts > 5 ? 'closed' : 'wait');
    setTimeout(tick, Math.min(1000, at - Date.now()));
  };
  tick();
}

function connect(label) {
  status(label || 'connecting…', 'wait');
  if (transport) {
    // SockJS speaks tether.json at /sockjs, with the WebSocket API's events and methods.
    const options = transport === 'sockjs' ? {} : { transports: [transport] };
    ws = new SockJS(location.origin + '/sockjs', null, options);
  } else {
    ws = new WebSocket(url, 'tether.json');
  }
  ws.onopen = async () => {
    attempts = 0;
    $('status').dataset.transport = ws.transport || 'websocket';
    $('status').title = 'over ' + $('status').dataset.transport;
    const name = localStorage.getItem('name') || '';
    try {
      await call('connect', { name });
    } catch (e) {
      return; // closed meanwhile: onclose reconnects
    }
    status('connected', 'open');
    $('drop').disabled = false;
    startTicker();
    if (name) {
      $('name').value = name;
      $('room').value = localStorage.getItem('room') || 'lobby';
      join(name, $('room').value).catch((e) => system('join failed: ' + e.message));
    }
  };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.push) return onPush(msg.push);
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(msg.error.message + ' (' + msg.error.code + ')'));
    else p.resolve(msg.result);
  };
  ws.onclose = (e) => {
    room = null;
    $('text').disabled = true;
    $('send').querySelector('button').disabled = true;
    $('drop').disabled = true;
    for (const p of pending.values()) p.reject(new Error('connection closed'));
    pending.clear();
    if (renaming) {
      // The page closed it to come back under the new name: no pause, nothing to report.
      renaming = false;
      return connect(`joining as ${localStorage.getItem('name')}…`);
    }
    if (e.code !== 1000 && e.code !== 4000) system(`connection lost (${e.code}${e.reason ? ' ' + e.reason : ''})`);
    reconnectLater();
  };
}

$('join').onsubmit = async (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  if (localStorage.getItem('name') !== name) {
    // The name is sent with connect: reconnect under the new one.
    localStorage.setItem('name', name);
    localStorage.setItem('room', $('room').value.trim());
    renaming = true;
    ws.close(1000, 'rename');
    return;
  }
  join(name, $('room').value.trim()).catch((err) => system('join failed: ' + err.message));
};

$('send').onsubmit = async (e) => {
  e.preventDefault();
  const text = $('text').value.trim();
  if (!text || !room) return;
  $('text').value = '';
  try {
    await call('publish', { channel: room, data: { name: localStorage.getItem('name'), text } });
  } catch (err) {
    system('not sent: ' + err.message);
  }
};

$('drop').onclick = () => {
  system('connection dropped from this page; it will reconnect and recover');
  ws.close(4000, 'dropped from the page');
};

$('origin').textContent = location.origin;
if (transport) {
  const script = document.createElement('script');
  script.src = sockjsUrl;
  script.onload = () => connect();
  script.onerror = () => status('cannot load sockjs-client from ' + sockjsUrl, 'closed');
  document.head.appendChild(script);
} else {
  connect();
}
