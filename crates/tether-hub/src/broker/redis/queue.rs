//! STOMP work queues over Redis: each message goes to one consumer in the whole cluster, and
//! what a dead node held goes to the others.
//!
//! Per queue `Q` (with prefix `P`):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:queue:{Q}` | stream + consumer group `tether` | the messages, waiting or held by a node; fields `b` (body), `r` (delivered before), `h<name>` (headers) |
//! | `P:node:<id>` | string | a node's heartbeat, expiring `presence_ttl` after its last refresh |
//!
//! - A send appends to the stream (refused when it holds `max_messages`).
//! - Each node reads (`XREADGROUP`, consumer name = its node id) only the queues it has
//!   consumers of, on a connection of its own (the read blocks), and hands the messages to
//!   its local [`Queues`](crate::hub::queue::Queues), which deliver them round robin.
//! - A handled message (ACK, or sent to an `auto` consumer) is acknowledged and deleted.
//! - When a node's last consumer of a queue leaves, it gives back what it still holds: a
//!   copy at the end of the stream (marked redelivered where it was delivered before) and
//!   the original acknowledged and deleted, in one step.
//! - A node whose heartbeat has expired is dead: any node consuming the queue claims what
//!   it held (checked every `presence_ttl / 3`) and delivers it again, marked redelivered.
//!
//! A message is delivered at least once: a node cut off from Redis for longer than
//! `presence_ttl` may see its messages claimed by another while its own consumers still
//! work on them.

use super::RedisBroker;
use crate::broker::BrokerEvents;
use crate::hub::event::HubError;
use crate::hub::queue::{Arrival, QueueError, QueueMessage, Store};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// The consumer group every node reads a queue's stream in.
const GROUP: &str = "tether";
/// Messages taken per read and per claim.
const BATCH: usize = 64;
/// How long a read waits for messages.
const BLOCK: Duration = Duration::from_millis(1000);

/// Adds a message: KEYS[1] the stream; ARGV = group, the most messages (0: no limit), this
/// node, the entry it replaces ("" for none), then the fields. Answers 0 when the queue is
/// full, or when another node holds the entry being replaced; 1 when done.
const PUT: &str = r"
local stream, group, max, me, old = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
if old ~= '' then
  local ok, p = pcall(redis.call, 'xpending', stream, group, old, old, 1)
  if ok and p[1] and p[1][2] ~= me then return 0 end
  if ok then
    redis.call('xack', stream, group, old)
    redis.call('xdel', stream, old)
  end
end
if redis.call('exists', stream) == 0 then
  redis.call('xgroup', 'create', stream, group, '0', 'mkstream')
end
if max > 0 and redis.call('xlen', stream) >= max then return 0 end
redis.call('xadd', stream, '*', unpack(ARGV, 5))
return 1
";

/// Claims what dead nodes held: KEYS[1] the stream; ARGV = group, this node, the heartbeat
/// key prefix, the most entries. Answers the claimed entries; forgets dead consumers that
/// hold nothing any more.
const CLAIM: &str = r"
local stream, group, me, prefix, count = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local ok, consumers = pcall(redis.call, 'xinfo', 'consumers', stream, group)
if not ok then return {} end
local out = {}
for _, c in ipairs(consumers) do
  local name, pending = c[2], c[4]
  if name ~= me and redis.call('exists', prefix .. name) == 0 and #out < count then
    if pending > 0 then
      local ids = {}
      for _, e in ipairs(redis.call('xpending', stream, group, '-', '+', count - #out, name)) do
        ids[#ids + 1] = e[1]
      end
      if #ids > 0 then
        for _, e in ipairs(redis.call('xclaim', stream, group, me, 0, unpack(ids))) do
          if type(e) == 'table' then out[#out + 1] = e end
        end
      end
      pending = pending - #ids
    end
    if pending <= 0 then redis.call('xgroup', 'delconsumer', stream, group, name) end
  end
end
return out
";

/// What the queues ask of Redis, in the order they asked.
enum Job {
    Consume(Arc<str>, bool),
    Done(Arc<str>, Vec<Arc<str>>),
    GiveBack(Arc<str>, Vec<(Arc<QueueMessage>, bool)>),
    /// Answers once the jobs before it are done (or failed, to be retried).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The [`Store`] the local queues talk to: it only queues jobs for the worker task.
struct Link(mpsc::UnboundedSender<Job>);

impl Store for Link {
    fn consume(&self, queue: &Arc<str>, on: bool) {
        let _ = self.0.send(Job::Consume(queue.clone(), on));
    }

    fn done(&self, queue: &Arc<str>, keys: Vec<Arc<str>>) {
        let _ = self.0.send(Job::Done(queue.clone(), keys));
    }

    fn give_back(&self, queue: &Arc<str>, messages: Vec<(Arc<QueueMessage>, bool)>) {
        let _ = self.0.send(Job::GiveBack(queue.clone(), messages));
    }
}

/// The queues of one node over Redis.
pub(crate) struct RedisQueues {
    broker: Arc<RedisBroker>,
    /// The local queues' jobs, until the worker starts; and where they come from.
    jobs: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    sender: mpsc::UnboundedSender<Job>,
    /// This node's consumer name (its id).
    node: String,
    /// Queues this node consumes (it has consumers of them).
    active: Mutex<Vec<Arc<str>>>,
    /// The reading connection's client id (0: none), to wake its blocked read.
    reader: AtomicU64,
    wake: tokio::sync::Notify,
    put: Script,
    claim: Script,
}

impl RedisQueues {
    /// The queues of node `node`; [`start`](Self::start) starts moving messages.
    pub(crate) fn new(broker: Arc<RedisBroker>, node: &str) -> Arc<Self> {
        let (sender, jobs) = mpsc::unbounded_channel();
        Arc::new(Self {
            broker,
            jobs: Mutex::new(Some(jobs)),
            sender,
            node: node.to_owned(),
            active: Mutex::new(Vec::new()),
            reader: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            put: Script::new(PUT),
            claim: Script::new(CLAIM),
        })
    }

    /// What the local queues tell about their messages.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        Arc::new(Link(self.sender.clone()))
    }

    /// Starts the tasks that move messages between Redis and `hub`'s queues while the hub
    /// lives (once).
    pub(crate) fn start(self: &Arc<Self>, hub: Weak<dyn BrokerEvents>) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(jobs) = jobs {
            tokio::spawn(self.clone().work(jobs, hub.clone()));
            tokio::spawn(self.clone().read(hub));
        }
    }

    fn key(&self, queue: &str) -> String {
        format!("{}:queue:{{{queue}}}", self.broker.options().prefix)
    }

    fn heartbeat_prefix(&self) -> String {
        format!("{}:node:", self.broker.options().prefix)
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Vec<Arc<str>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once the jobs queued so far were carried out (or failed, to be retried).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.sender.send(Job::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Adds a message to `queue`, for whichever node's consumer comes first.
    pub(crate) async fn send(
        &self,
        queue: &str,
        body: &Bytes,
        headers: &[(String, String)],
        max: usize,
    ) -> Result<(), QueueError> {
        let mut conn = self.broker.conn().map_err(|_| QueueError::Unavailable)?;
        let mut call = self.put.key(self.key(queue));
        call.arg(GROUP).arg(max.max(1)).arg(&self.node).arg("");
        fields(&mut call, body, headers, false);
        let added: u64 = call.invoke_async(&mut conn).await.map_err(|e| {
            tracing::debug!("redis: send to queue {queue}: {e}");
            QueueError::Unavailable
        })?;
        if added == 0 {
            return Err(QueueError::Full(queue.to_owned(), max));
        }
        Ok(())
    }

    /// Carries out the queues' jobs in order; every `presence_ttl / 3` refreshes this node's
    /// heartbeat, retries what failed, and claims what dead nodes held.
    async fn work(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<Job>, hub: Weak<dyn BrokerEvents>) {
        let period = (self.broker.options().presence_ttl / 3).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        let mut failed: Vec<Job> = Vec::new();
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { return };
                    if let Err(job) = self.run(job, &hub).await {
                        failed.push(job);
                    }
                }
                _ = tick.tick() => {
                    if hub.strong_count() == 0 {
                        return;
                    }
                    self.heartbeat().await;
                    for job in std::mem::take(&mut failed) {
                        if let Err(job) = self.run(job, &hub).await {
                            failed.push(job);
                        }
                    }
                    let active = self.active().clone();
                    for queue in active {
                        self.claim(&queue, &hub).await;
                    }
                }
            }
        }
    }

    /// One job; a job that Redis did not take is handed back to be retried.
    async fn run(&self, job: Job, hub: &Weak<dyn BrokerEvents>) -> Result<(), Job> {
        match job {
            Job::Consume(queue, on) => {
                {
                    let mut active = self.active();
                    active.retain(|q| *q != queue);
                    if on {
                        active.push(queue.clone());
                    }
                }
                self.wake.notify_one();
                self.unblock().await;
                if on {
                    self.claim(&queue, hub).await;
                }
                Ok(())
            }
            Job::Done(queue, keys) => {
                let Ok(mut conn) = self.broker.conn() else { return Err(Job::Done(queue, keys)) };
                let key = self.key(&queue);
                let ids: Vec<&str> = keys.iter().map(|k| &**k).collect();
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("XACK").arg(&key).arg(GROUP).arg(&ids).ignore();
                pipe.cmd("XDEL").arg(&key).arg(&ids).ignore();
                match pipe.query_async::<()>(&mut conn).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        tracing::debug!("redis: acknowledge in queue {queue}: {e}");
                        Err(Job::Done(queue, keys))
                    }
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
            Job::GiveBack(queue, messages) => {
                tracing::debug!("redis: queue {queue}: giving back {} messages", messages.len());
                let mut left = Vec::new();
                for (message, redelivered) in messages {
                    if self.give_back(&queue, &message, redelivered).await.is_err() {
                        left.push((message, redelivered));
                    }
                }
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(Job::GiveBack(queue, left))
                }
            }
        }
    }

    async fn give_back(
        &self,
        queue: &str,
        message: &QueueMessage,
        redelivered: bool,
    ) -> Result<(), HubError> {
        let mut conn = self.broker.conn()?;
        let mut call = self.put.key(self.key(queue));
        call.arg(GROUP).arg(0).arg(&self.node).arg(message.key.as_deref().unwrap_or(""));
        fields(&mut call, &message.body, &message.headers, redelivered);
        let _: u64 = call.invoke_async(&mut conn).await.map_err(|e| {
            tracing::debug!("redis: give back to queue {queue}: {e}");
            HubError::Unavailable
        })?;
        Ok(())
    }

    /// Takes over what dead nodes held in `queue` and hands it to the local consumers.
    async fn claim(&self, queue: &Arc<str>, hub: &Weak<dyn BrokerEvents>) {
        loop {
            let Ok(mut conn) = self.broker.conn() else { return };
            let reply: redis::RedisResult<Value> = self
                .claim
                .key(self.key(queue))
                .arg(GROUP)
                .arg(&self.node)
                .arg(self.heartbeat_prefix())
                .arg(BATCH)
                .invoke_async(&mut conn)
                .await;
            let entries = match reply {
                Ok(v) => entries(&v, true),
                Err(e) => {
                    tracing::debug!("redis: claim in queue {queue}: {e}");
                    return;
                }
            };
            let (n, Some(h)) = (entries.len(), hub.upgrade()) else { return };
            if n == 0 {
                return;
            }
            tracing::info!("redis: queue {queue}: took over {n} messages of a node that is gone");
            h.queue_arrivals(queue, entries);
            if n < BATCH {
                return;
            }
        }
    }

    /// Says this node is alive for another `presence_ttl`.
    async fn heartbeat(&self) {
        let Ok(mut conn) = self.broker.conn() else { return };
        if let Err(e) = self.heartbeat_on(&mut conn).await {
            tracing::debug!("redis: heartbeat: {e}");
        }
    }

    async fn heartbeat_on(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        redis::cmd("SET")
            .arg(format!("{}{}", self.heartbeat_prefix(), self.node))
            .arg(1)
            .arg("PX")
            .arg(super::millis(self.broker.options().presence_ttl))
            .query_async(conn)
            .await
    }

    /// Makes the reader's blocked read return, so that it reads the queues now active.
    async fn unblock(&self) {
        let id = self.reader.load(Ordering::Relaxed);
        let Ok(mut conn) = self.broker.conn() else { return };
        if id != 0 {
            let r: redis::RedisResult<Value> =
                redis::cmd("CLIENT").arg("UNBLOCK").arg(id).query_async(&mut conn).await;
            if let Err(e) = r {
                tracing::debug!("redis: unblock the queue reader: {e}");
            }
        }
    }

    /// Reads new messages of the active queues, on a connection of its own, for as long as
    /// the hub lives.
    async fn read(self: Arc<Self>, hub: Weak<dyn BrokerEvents>) {
        let options = self.broker.options().clone();
        let mut conn: Option<MultiplexedConnection> = None;
        let mut ready: HashSet<Arc<str>> = HashSet::new();
        let mut backoff = Duration::from_millis(50);
        loop {
            if hub.strong_count() == 0 {
                return;
            }
            let queues = self.active().clone();
            if queues.is_empty() {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(BLOCK) => {}
                }
                continue;
            }
            let c = match &mut conn {
                Some(c) => c,
                None => match self.open_reader(&options).await {
                    Ok(c) => {
                        ready.clear();
                        backoff = Duration::from_millis(50);
                        conn.insert(c)
                    }
                    Err(e) => {
                        tracing::debug!("redis: queue reader: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(options.max_backoff);
                        continue;
                    }
                },
            };
            let r = self.read_once(c, &queues, &mut ready).await;
            match r {
                Ok(batches) => {
                    let Some(h) = hub.upgrade() else { return };
                    for (queue, entries) in batches {
                        tracing::debug!("redis: queue {queue}: read {} messages", entries.len());
                        h.queue_arrivals(&queue, entries);
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => ready.clear(),
                Err(e) => {
                    tracing::debug!("redis: queue reader: {e}");
                    conn = None;
                    self.reader.store(0, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(options.max_backoff);
                }
            }
        }
    }

    async fn open_reader(&self, options: &super::RedisOptions) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.command_timeout))
            .set_response_timeout(Some(options.command_timeout + BLOCK));
        let client = self
            .broker
            .client()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "not connected to Redis yet")))?;
        let mut c = client.get_multiplexed_async_connection_with_config(&config).await?;
        // Alive before reading: no other node may take what this one is about to read.
        self.heartbeat_on(&mut c).await?;
        let id: u64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await?;
        self.reader.store(id, Ordering::Relaxed);
        Ok(c)
    }

    /// One blocking read of every queue in `queues` (creating their groups where needed).
    async fn read_once(
        &self,
        c: &mut MultiplexedConnection,
        queues: &[Arc<str>],
        ready: &mut HashSet<Arc<str>>,
    ) -> redis::RedisResult<Vec<(Arc<str>, Vec<Arrival>)>> {
        for q in queues {
            if ready.contains(q) {
                continue;
            }
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.key(q))
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(c)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e),
            }
            ready.insert(q.clone());
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.node).arg("COUNT").arg(BATCH);
        cmd.arg("BLOCK").arg(super::millis(BLOCK)).arg("STREAMS");
        for q in queues {
            cmd.arg(self.key(q));
        }
        for _ in queues {
            cmd.arg(">");
        }
        let reply: Value = cmd.query_async(c).await?;
        let per_stream: Vec<(&Value, &Value)> = match &reply {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| match super::as_array(i) {
                    Some([k, v]) => Some((k, v)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        for (key, list) in per_stream {
            let queue = super::as_str(key).and_then(|k| queues.iter().find(|q| self.key(q) == k)).cloned();
            if let Some(queue) = queue {
                out.push((queue, entries(list, false)));
            }
        }
        Ok(out)
    }
}

/// The stream fields of a message: `b` body, `r` when it was delivered before, `h<name>`
/// per header.
fn fields(
    call: &mut redis::ScriptInvocation<'_>,
    body: &Bytes,
    headers: &[(String, String)],
    redelivered: bool,
) {
    call.arg("b").arg(&body[..]);
    if redelivered {
        call.arg("r").arg(1);
    }
    for (name, value) in headers {
        call.arg(format!("h{name}")).arg(value);
    }
}

/// Messages from stream entries `[[id, [field, value, …]], …]`; `claimed` marks them all
/// redelivered (another node had them).
fn entries(list: &Value, claimed: bool) -> Vec<Arrival> {
    use crate::broker::redis::{as_array, as_bytes, as_str};
    let mut out = Vec::new();
    for e in as_array(list).unwrap_or_default() {
        let Some([id, f]) = as_array(e) else { continue };
        let Some(key) = as_str(id) else { continue };
        let pairs: Vec<(&Value, &Value)> = match f {
            Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
            other => as_array(other).unwrap_or_default().chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
        };
        let mut a =
            Arrival { key: key.into(), body: Bytes::new(), headers: Vec::new(), redelivered: claimed };
        for (name, value) in pairs {
            let (Some(name), Some(value)) = (as_bytes(name), as_bytes(value)) else { continue };
            match name {
                b"b" => a.body = Bytes::copy_from_slice(value),
                b"r" => a.redelivered = true,
                [b'h', header @ ..] => a.headers.push((
                    String::from_utf8_lossy(header).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )),
                _ => {}
            }
        }
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn stream_entries_decode() {
        let list = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("b"), bulk("job"), bulk("hcontent-type"), bulk("text/plain")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Array(vec![bulk("b"), bulk(""), bulk("r"), bulk("1")])]),
            Value::Nil,
        ]);
        let got = entries(&list, false);
        assert_eq!(got.len(), 2);
        assert_eq!((&*got[0].key, &got[0].body[..], got[0].redelivered), ("1-0", &b"job"[..], false));
        assert_eq!(got[0].headers, [("content-type".to_owned(), "text/plain".to_owned())]);
        assert_eq!((&*got[1].key, got[1].redelivered), ("2-0", true));
        assert!(entries(&list, true).iter().all(|a| a.redelivered));
        assert!(entries(&Value::Nil, false).is_empty());
    }
}
