//! The connection to Redis that channels use: one multiplexed RESP3 connection for
//! commands and Pub/Sub pushes, kept up with backoff, and the Lua scripts that keep a
//! channel's offset, history and presence consistent.

use super::sentinel::{sentinel_target, Target};
use super::wire::{as_array, as_bytes, as_str, as_u64, decode_info, decode_remote, encode_info, millis};
use super::RedisOptions;
use crate::broker::{BrokerEvents, Entry, Read, Since};
use crate::hub::event::{new_epoch, ClientInfo, HubError, StreamPosition};
use crate::options::NamespaceOptions;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Script, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Lua: `now`, Redis's clock in milliseconds (the nodes' clocks never matter).
macro_rules! lua_now_ms {
    () => {
        "local t = redis.call('time')\nlocal now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    };
}

/// Moves the offset, appends to history and publishes, in one step.
const PUBLISH: &str = concat!(
    lua_now_ms!(),
    r"
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('hset', KEYS[1], 'e', epoch)
  redis.call('del', KEYS[2])
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
redis.call('pexpire', KEYS[1], ARGV[5])
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('xadd', KEYS[2], 'maxlen', size, offset .. '-1', 't', now, 'i', ARGV[2], 'd', ARGV[1])
  redis.call('pexpire', KEYS[2], ARGV[4])
end
redis.call('publish', ARGV[7], 'p' .. offset .. ' ' .. epoch .. ' ' .. string.len(ARGV[2]) .. ' ' .. ARGV[2] .. ARGV[1])
return {epoch, offset}
"
);

/// The position (creating the channel's epoch if it has none) and history after an offset:
/// `{epoch, offset, o1, i1, d1, o2, …}`.
const READ: &str = concat!(
    lua_now_ms!(),
    r"
local m = redis.call('hmget', KEYS[1], 'e', 'o')
local epoch, offset = m[1], tonumber(m[2] or '0')
if not epoch then
  epoch = ARGV[5]
  offset = 0
  redis.call('hset', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('del', KEYS[2])
end
redis.call('pexpire', KEYS[1], ARGV[6])
local out = {epoch, offset}
local mode, from = ARGV[1], tonumber(ARGV[3]) + 1
if mode == 'none' then return out end
if mode ~= 'any' and ARGV[2] ~= epoch then
  if mode == 'catchup' then from = 1 else return out end
end
local oldest = now - tonumber(ARGV[4])
for _, e in ipairs(redis.call('xrange', KEYS[2], from .. '-0', '+')) do
  local f = e[2]
  if tonumber(f[2]) >= oldest then
    local id = e[1]
    out[#out + 1] = string.sub(id, 1, string.find(id, '-') - 1)
    out[#out + 1] = f[4]
    out[#out + 1] = f[6]
  end
end
return out
"
);

/// Adds or refreshes presence entries: ARGV = ttl ms, then client id and info pairs.
const PRESENCE_ADD: &str = concat!(
    lua_now_ms!(),
    r"
local ttl = tonumber(ARGV[1])
local deadline = now + ttl
for i = 2, #ARGV, 2 do
  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('zadd', KEYS[2], deadline, ARGV[i])
end
redis.call('pexpire', KEYS[1], ttl)
redis.call('pexpire', KEYS[2], ttl)
return 1
"
);

/// Drops expired presence entries and returns the rest as `{client, info, …}`.
const PRESENCE_GET: &str = concat!(
    lua_now_ms!(),
    r"
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
for _, c in ipairs(gone) do redis.call('hdel', KEYS[1], c) end
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
return redis.call('hgetall', KEYS[1])
"
);

/// The connection to Redis, shared by the hub's tasks.
pub(crate) struct RedisBroker {
    options: RedisOptions,
    target: Target,
    /// The client of the server connected to last (for connections of their own).
    client: Mutex<Option<redis::Client>>,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Channels this connection is subscribed to; subscription changes go one at a time.
    subscribed: tokio::sync::Mutex<HashSet<Arc<str>>>,
    /// Connections are numbered; `live` is the one in use (0: none) and `ended` the newest
    /// that has closed. The connection is up while `ended < live`: a connection that ends
    /// late, or reports its end twice, cannot mark its successor lost.
    generation: AtomicU64,
    live: AtomicU64,
    ended: AtomicU64,
    lost: tokio::sync::Notify,
    publish: Script,
    read: Script,
    presence_add: Script,
    presence_get: Script,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker").field("options", &self.options).finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> HubError {
    tracing::debug!("redis: {e}");
    HubError::Unavailable
}

impl RedisBroker {
    /// Checks the URL; connecting happens in [`start`](Self::start), in the background.
    pub(crate) fn new(options: RedisOptions) -> Result<Self, String> {
        let target = match sentinel_target(&options.url) {
            Some(t) => t.map_err(|e| format!("invalid Redis URL {:?}: {e}", options.url))?,
            None => {
                let info: redis::ConnectionInfo =
                    redis::IntoConnectionInfo::into_connection_info(options.url.as_str())
                        .map_err(|e| format!("invalid Redis URL {:?}: {e}", options.url))?;
                let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
                Target::Direct(
                    redis::Client::open(info.set_redis_settings(settings)).map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(Self {
            options,
            target,
            client: Mutex::new(None),
            conn: Mutex::new(None),
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
            generation: AtomicU64::new(0),
            live: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            lost: tokio::sync::Notify::new(),
            publish: Script::new(PUBLISH),
            read: Script::new(READ),
            presence_add: Script::new(PRESENCE_ADD),
            presence_get: Script::new(PRESENCE_GET),
        })
    }

    /// The options.
    pub(crate) fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The client of the server connected to last, for connections of their own.
    pub(crate) fn client(&self) -> Option<redis::Client> {
        self.client.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The server to connect to: the one configured, or the master Sentinel names now.
    async fn server(&self) -> redis::RedisResult<redis::Client> {
        let client = match &self.target {
            Target::Direct(client) => client.clone(),
            Target::Sentinel { sentinels, service, redis } => {
                let node = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(redis.clone());
                let mut sentinel = redis::sentinel::SentinelClient::build(
                    sentinels.clone(),
                    service.as_str(),
                    Some(node),
                    redis::sentinel::SentinelServerType::Master,
                )?;
                match tokio::time::timeout(self.options.command_timeout, sentinel.async_get_client()).await {
                    Ok(client) => client?,
                    Err(_) => {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "no Sentinel answered in time",
                        )))
                    }
                }
            }
        };
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }

    /// Whether the connection to Redis is up.
    pub(crate) fn is_up(&self) -> bool {
        let live = self.live.load(Ordering::Relaxed);
        live != 0 && self.ended.load(Ordering::Relaxed) < live
    }

    /// Starts the task that keeps the connection up (and presence fresh) while `hub` lives.
    pub(super) fn start(self: &Arc<Self>, hub: Weak<dyn BrokerEvents>) {
        let broker = self.clone();
        tokio::spawn(async move { broker.supervise(hub).await });
    }

    async fn supervise(self: Arc<Self>, hub: Weak<dyn BrokerEvents>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if hub.strong_count() == 0 {
                return;
            }
            match self.connect(hub.clone()).await {
                Ok((generation, conn)) => {
                    backoff = Duration::from_millis(50);
                    self.subscribed.lock().await.clear();
                    *self.lock_conn() = Some(conn);
                    self.live.store(generation, Ordering::Relaxed);
                    tracing::info!("redis: connected to {}", self.redacted_url());
                    let Some(h) = hub.upgrade() else { return };
                    h.connected();
                    drop(h);
                    // Wait until the connection drops (or the hub is gone).
                    loop {
                        tokio::select! {
                            () = self.lost.notified() => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {
                                if hub.strong_count() == 0 {
                                    return;
                                }
                            }
                        }
                        if !self.is_up() {
                            break;
                        }
                    }
                }
                Err(e) => tracing::warn!("redis: cannot connect to {}: {e}", self.redacted_url()),
            }
            self.mark_down(&hub);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    fn mark_down(&self, hub: &Weak<dyn BrokerEvents>) {
        *self.lock_conn() = None;
        if self.live.swap(0, Ordering::Relaxed) != 0 {
            tracing::warn!("redis: connection to {} lost", self.redacted_url());
        }
        if let Some(h) = hub.upgrade() {
            h.lost();
        }
    }

    fn redacted_url(&self) -> String {
        match self.options.url.split_once('@') {
            Some((scheme_user, host)) => {
                let scheme = scheme_user.split("://").next().unwrap_or("redis");
                format!("{scheme}://…@{host}")
            }
            None => self.options.url.clone(),
        }
    }

    /// A new connection and its number.
    async fn connect(
        self: &Arc<Self>,
        hub: Weak<dyn BrokerEvents>,
    ) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        let prefix = format!("{}.", self.options.prefix);
        let broker = Arc::downgrade(self);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let pushes = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            match push.kind {
                PushKind::Message => {
                    if let (Some(h), [Value::BulkString(ch), Value::BulkString(payload), ..]) =
                        (hub.upgrade(), push.data.as_slice())
                    {
                        let channel =
                            std::str::from_utf8(ch).ok().and_then(|c| c.strip_prefix(prefix.as_str()));
                        match (channel, decode_remote(payload)) {
                            (Some(channel), Some(remote)) => remote.hand_to(&*h, channel),
                            _ => tracing::warn!("redis: unreadable Pub/Sub message"),
                        }
                    }
                }
                PushKind::Disconnection => {
                    if let Some(b) = broker.upgrade() {
                        b.ended.fetch_max(generation, Ordering::Relaxed);
                        b.lost.notify_one();
                    }
                }
                _ => {}
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.command_timeout))
            .set_response_timeout(Some(self.options.command_timeout))
            .set_push_sender(pushes);
        let client = self.server().await?;
        Ok((generation, client.get_multiplexed_async_connection_with_config(&config).await?))
    }

    fn lock_conn(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The command connection, while it is up.
    pub(crate) fn conn(&self) -> Result<MultiplexedConnection, HubError> {
        if !self.is_up() {
            return Err(HubError::Unavailable);
        }
        self.lock_conn().clone().ok_or(HubError::Unavailable)
    }

    fn key(&self, channel: &str, kind: &str) -> String {
        format!("{}:{{{channel}}}:{kind}", self.options.prefix)
    }

    fn topic(&self, channel: &str) -> String {
        format!("{}.{channel}", self.options.prefix)
    }

    /// Subscribes this node to `channel`'s Pub/Sub stream, unless it is already.
    pub(crate) async fn ensure_subscribed(&self, channel: &Arc<str>) -> Result<(), HubError> {
        let mut subscribed = self.subscribed.lock().await;
        if subscribed.contains(channel) {
            return Ok(());
        }
        let mut conn = self.conn()?;
        conn.subscribe(self.topic(channel)).await.map_err(unavailable)?;
        subscribed.insert(channel.clone());
        Ok(())
    }

    /// Subscribes this node to every channel in `channels` (after a reconnect).
    pub(crate) async fn subscribe_all(&self, channels: &[Arc<str>]) -> Result<(), HubError> {
        let mut subscribed = self.subscribed.lock().await;
        let mut conn = self.conn()?;
        for chunk in channels.chunks(512) {
            let topics: Vec<String> = chunk.iter().map(|c| self.topic(c)).collect();
            conn.subscribe(&topics).await.map_err(unavailable)?;
            subscribed.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    /// Unsubscribes this node from `channel` if `still_unused` says no one here wants it any
    /// more (checked while no other subscription change runs).
    pub(crate) async fn release(&self, channel: &Arc<str>, still_unused: impl FnOnce() -> bool) {
        let mut subscribed = self.subscribed.lock().await;
        if !subscribed.contains(channel) || !still_unused() {
            return;
        }
        subscribed.remove(channel);
        if let Ok(mut conn) = self.conn() {
            if let Err(e) = conn.unsubscribe(self.topic(channel)).await {
                tracing::debug!("redis: unsubscribe {channel}: {e}");
            }
        }
    }

    /// Publishes to `channel`: a new offset, history (where the namespace keeps it), and
    /// every node's subscribers.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        data: &[u8],
        info: Option<&ClientInfo>,
        ns: &NamespaceOptions,
    ) -> Result<StreamPosition, HubError> {
        let mut conn = self.conn()?;
        let reply: Value = self
            .publish
            .key(self.key(channel, "m"))
            .key(self.key(channel, "h"))
            .arg(data)
            .arg(encode_info(info))
            .arg(ns.history_size)
            .arg(millis(ns.history_ttl))
            .arg(millis(self.options.meta_ttl.max(ns.history_ttl)))
            .arg(&*new_epoch())
            .arg(self.topic(channel))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match as_array(&reply) {
            Some([epoch, offset]) => position(epoch, offset),
            _ => Err(HubError::Unavailable),
        }
    }

    /// Reads `channel`'s position and the publications `since` says, oldest first.
    pub(crate) async fn read(
        &self,
        channel: &str,
        since: Since<'_>,
        ns: &NamespaceOptions,
    ) -> Result<Read, HubError> {
        let (mode, epoch, offset) = match since {
            Since::Nothing => ("none", "", 0),
            Since::Offset(o) => ("any", "", o),
            Since::Position(e, o) => ("position", e, o),
            Since::CatchUp(e, o) => ("catchup", e, o),
        };
        let mode = if ns.history_size == 0 { "none" } else { mode };
        let mut conn = self.conn()?;
        let reply: Value = self
            .read
            .key(self.key(channel, "m"))
            .key(self.key(channel, "h"))
            .arg(mode)
            .arg(epoch)
            .arg(offset)
            .arg(millis(ns.history_ttl))
            .arg(&*new_epoch())
            .arg(millis(self.options.meta_ttl.max(ns.history_ttl)))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let items = as_array(&reply).ok_or(HubError::Unavailable)?;
        let [epoch, offset, rest @ ..] = items else { return Err(HubError::Unavailable) };
        let position = position(epoch, offset)?;
        let mut entries = Vec::with_capacity(rest.len() / 3);
        for e in rest.chunks_exact(3) {
            let offset = as_u64(&e[0]).ok_or(HubError::Unavailable)?;
            let info = decode_info(as_bytes(&e[1]).ok_or(HubError::Unavailable)?);
            let data = Bytes::copy_from_slice(as_bytes(&e[2]).ok_or(HubError::Unavailable)?);
            entries.push(Entry { offset, info, data });
        }
        Ok(Read { position, entries })
    }

    /// Announces a join or leave to every node (best effort: a node that misses it shows
    /// presence correctly anyway).
    pub(crate) async fn announce(&self, channel: &str, join: bool, info: &ClientInfo) {
        let Ok(mut conn) = self.conn() else { return };
        let mut payload = vec![if join { b'j' } else { b'l' }];
        payload.extend_from_slice(&encode_info(Some(info)));
        let r: redis::RedisResult<Value> =
            redis::cmd("PUBLISH").arg(self.topic(channel)).arg(payload).query_async(&mut conn).await;
        if let Err(e) = r {
            tracing::debug!("redis: announce on {channel}: {e}");
        }
    }

    /// Adds (or refreshes) clients in `channel`'s presence.
    pub(crate) async fn presence_add(
        &self,
        channel: &str,
        clients: &[Arc<ClientInfo>],
    ) -> Result<(), HubError> {
        if clients.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut call = self.presence_add.key(self.key(channel, "p"));
        call.key(self.key(channel, "x")).arg(millis(self.options.presence_ttl));
        for c in clients {
            call.arg(&*c.client).arg(encode_info(Some(c)));
        }
        let _: Value = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        Ok(())
    }

    /// Takes a client out of `channel`'s presence.
    pub(crate) async fn presence_remove(&self, channel: &str, client: &str) {
        let Ok(mut conn) = self.conn() else { return };
        let mut pipe = redis::pipe();
        pipe.cmd("HDEL").arg(self.key(channel, "p")).arg(client).ignore();
        pipe.cmd("ZREM").arg(self.key(channel, "x")).arg(client).ignore();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!("redis: presence remove on {channel}: {e}");
        }
    }

    /// Everyone in `channel`'s presence, on every node.
    pub(crate) async fn presence(&self, channel: &str) -> Result<Vec<Arc<ClientInfo>>, HubError> {
        let mut conn = self.conn()?;
        let reply: Value = self
            .presence_get
            .key(self.key(channel, "p"))
            .key(self.key(channel, "x"))
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut list = Vec::new();
        match &reply {
            Value::Map(pairs) => {
                for (_, v) in pairs {
                    list.extend(as_bytes(v).and_then(decode_info));
                }
            }
            other => {
                for pair in as_array(other).unwrap_or_default().chunks_exact(2) {
                    list.extend(as_bytes(&pair[1]).and_then(decode_info));
                }
            }
        }
        list.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(list)
    }
}

/// A position from a script's `epoch, offset` answer.
fn position(epoch: &Value, offset: &Value) -> Result<StreamPosition, HubError> {
    Ok(StreamPosition {
        epoch: as_str(epoch).ok_or(HubError::Unavailable)?.into(),
        offset: as_u64(offset).ok_or(HubError::Unavailable)?,
    })
}
