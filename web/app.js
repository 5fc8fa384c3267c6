// The tether hub demo: a chat room and a live ticker over the tether.json protocol
// (docs/PROTOCOL.md), with the browser's own WebSocket API.
'use strict';

const $ = (id) => document.getElementById(id);
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
let ws;
let nextId = 1;
const pending = new Map();
let room = null;
const seen = new Set();

function call(method, params) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, [method]: params }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

function status(text, cls) {
  $('status').textContent = text;
  $('status').className = 'status ' + (cls || '');
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
}

async function refreshPresence() {
  const { clients } = await call('presence', { channel: room });
  const names = [...new Set(clients.map((c) => c.user || c.client))].sort();
  $('online').replaceChildren(...names.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
}

function savePosition(channel, offset, epoch) {
  localStorage.setItem('pos:' + channel, JSON.stringify({ offset, epoch }));
}

const prices = new Map();
function showPrice(data) {
  const prev = prices.get(data.symbol);
  prices.set(data.symbol, data.price);
  const rows = [...prices.entries()].sort().map(([symbol, price]) => {
    const tr = document.createElement('tr');
    tr.id = 'price-' + symbol;
    const change = symbol === data.symbol && prev !== undefined ? price - prev : 0;
    tr.innerHTML = '<td></td><td></td><td></td>';
    tr.children[0].textContent = symbol;
    tr.children[1].textContent = Number(price).toFixed(2);
    tr.children[2].textContent = change === 0 ? '' : (change > 0 ? '+' : '') + change.toFixed(2);
    tr.children[2].className = change > 0 ? 'up' : change < 0 ? 'down' : '';
    return tr;
  });
  $('prices').replaceChildren(...rows);
}

function onPush(push) {
  if (push.channel === room) {
    if (push.pub) {
      addMessage(push.pub);
      savePosition(room, push.pub.offset, currentEpoch);
    } else if (push.join || push.leave) {
      const who = (push.join || push.leave);
      system(`${who.user || who.client} ${push.join ? 'joined' : 'left'}`);
      refreshPresence();
    }
  } else if (push.channel === 'ticker:prices' && push.pub) {
    showPrice(push.pub.data);
  }
}

let currentEpoch = '';
async function join(name, roomName) {
  if (room) await call('unsubscribe', { channel: room });
  room = 'chat:' + roomName;
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

function connect() {
  ws = new WebSocket(url, 'tether.json');
  ws.onopen = async () => {
    status('connected', 'open');
    const name = localStorage.getItem('name') || '';
    await call('connect', { name });
    call('subscribe', { channel: 'ticker:prices' }).catch(() => {});
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
    status(`disconnected (${e.code}${e.reason ? ' ' + e.reason : ''}), reconnecting…`, 'closed');
    room = null;
    $('text').disabled = true;
    setTimeout(connect, 1000 + Math.random() * 1000);
  };
}

$('join').onsubmit = async (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  if (localStorage.getItem('name') !== name) {
    // The name is sent with connect: reconnect under the new one.
    localStorage.setItem('name', name);
    localStorage.setItem('room', $('room').value.trim());
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

connect();
