//! Several `tether serve` nodes over one real `redis-server` (which the test script installs):
//! cross-node fan-out and order, recovery on another node, presence after `kill -9`, and the
//! fault run (a node killed and Redis restarted under a steady publisher).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::{ClientConfig, Message};
use tether_hub::stomp::frame::{Command as Verb, Decoder, Frame, Limits, Version};

const BIN: &str = env!("CARGO_BIN_EXE_tether");
const WAIT: Duration = Duration::from_secs(10);

#[path = "common/redis.rs"]
mod redis;
use redis::{free_port, Redis};

const KEY: &str = "cluster-test-key-0123456789";

const CONFIG: &str = r#"
api_key = "cluster-test-key-0123456789"

[namespaces.ticker]
allow_anonymous = true

[namespaces.chat]
history_size = 2000
history_ttl_seconds = 600
presence = true
join_leave = true
allow_publish = true
allow_anonymous = true

[queues]
max_messages = 30

[redis]
presence_ttl_ms = 1000
max_backoff_ms = 300
"#;

/// A `tether serve --broker redis://…` process; killed on drop.
struct Node {
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start(redis: &Redis, dir: &std::path::Path) -> Self {
        Self::start_url(&redis.url(), dir)
    }

    fn start_url(broker: &str, dir: &std::path::Path) -> Self {
        let conf = dir.join("node.toml");
        std::fs::write(&conf, CONFIG).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--broker", broker, "--config"])
            .arg(&conf)
            .env("TETHER_LOG", "tether_hub=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_owned());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(WAIT).expect("node did not start");
        let node = Self { child, addr, log };
        node.wait_log("redis: connected");
        node
    }

    fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(start.elapsed() < WAIT, "no {needle:?} in {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what each node logged.
        if std::thread::panicking() {
            eprintln!("node {} log:\n{}", self.addr, self.log.lock().unwrap().join("\n"));
        }
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cluster-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tether.json client.
struct Client {
    ws: tether::WebSocket,
    next: u64,
    pushes: VecDeque<Value>,
}

impl Client {
    async fn connect(url: &str, name: &str) -> Result<Self, String> {
        let config = ClientConfig::default().with_protocol("tether.json").with_proxy(tether::Proxy::None);
        let (ws, _) = tether::connect_with(url, &config).await.map_err(|e| e.to_string())?;
        let mut c = Self { ws, next: 1, pushes: VecDeque::new() };
        c.ok("connect", json!({ "name": name })).await?;
        Ok(c)
    }

    async fn recv(&mut self) -> Result<Value, String> {
        match tokio::time::timeout(WAIT, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Ok(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(f)))) => Err(format!("closed: {f:?}")),
            Ok(Some(Ok(_))) => Box::pin(self.recv()).await,
            Ok(other) => Err(format!("connection ended: {other:?}")),
            Err(_) => Err("nothing received in time".into()),
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next;
        self.next += 1;
        let cmd = json!({ "id": id, method: params }).to_string();
        self.ws.send(Message::text(cmd)).await.map_err(|e| e.to_string())?;
        loop {
            let v = self.recv().await?;
            if v.get("push").is_some() {
                self.pushes.push_back(v["push"].clone());
            } else {
                assert_eq!(v["id"], id, "reply out of order: {v}");
                return Ok(v);
            }
        }
    }

    async fn ok(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let r = self.call(method, params).await?;
        match r.get("error") {
            Some(e) => Err(format!("{method}: {e}")),
            None => Ok(r["result"].clone()),
        }
    }

    async fn push(&mut self) -> Result<Value, String> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        let v = self.recv().await?;
        v.get("push").cloned().ok_or_else(|| format!("expected a push, got {v}"))
    }

    /// The next publication push in `channel` (skipping join and leave).
    async fn publication(&mut self) -> Result<Value, String> {
        loop {
            let p = self.push().await?;
            if p.get("pub").is_some() {
                return Ok(p["pub"].clone());
            }
        }
    }

    async fn presence(&mut self, channel: &str) -> Vec<String> {
        let r = self.ok("presence", json!({ "channel": channel })).await.unwrap();
        let mut users: Vec<String> =
            r["clients"].as_array().unwrap().iter().map(|c| c["user"].as_str().unwrap().to_owned()).collect();
        users.sort();
        users
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_nodes_in_one_order_and_recover_on_another_node() {
    let redis = Redis::start();
    let dir = temp_dir("order");
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis, &dir)).collect();
    let mut subs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut c = Client::connect(&n.url(), &format!("sub{i}")).await.unwrap();
        let r = c.ok("subscribe", json!({ "channel": "chat:room" })).await.unwrap();
        assert_eq!(r["offset"], 0, "{r}");
        subs.push((c, r["epoch"].as_str().unwrap().to_owned()));
    }
    // Every node's subscriber was given the same epoch.
    assert!(subs.iter().all(|(_, e)| *e == subs[0].1));
    // Presence lists the subscribers of every node.
    assert_eq!(subs[1].0.presence("chat:room").await, ["sub0", "sub1", "sub2"]);
    // Two publishers on two nodes at once.
    let publish = |url: String, who: &'static str| async move {
        let mut p = Client::connect(&url, who).await.unwrap();
        for i in 0..50 {
            p.ok("publish", json!({ "channel": "chat:room", "data": { "who": who, "i": i } })).await.unwrap();
        }
    };
    tokio::join!(publish(nodes[0].url(), "a"), publish(nodes[1].url(), "b"));
    let mut orders = Vec::new();
    for (c, _) in &mut subs {
        let mut got = Vec::new();
        for want in 1..=100u64 {
            let p = c.publication().await.unwrap();
            assert_eq!(p["offset"], want, "offsets run without gaps: {p}");
            got.push(p["data"].clone());
        }
        for who in ["a", "b"] {
            let seq: Vec<u64> =
                got.iter().filter(|d| d["who"] == who).map(|d| d["i"].as_u64().unwrap()).collect();
            assert_eq!(seq, (0..50).collect::<Vec<_>>(), "each publisher's order holds");
        }
        orders.push(got);
    }
    assert!(orders.iter().all(|o| *o == orders[0]), "every node delivers one order");
    // sub0 leaves at offset 100; five more are published on node 2; it comes back on node 1.
    let (c0, epoch) = subs.remove(0);
    drop(c0);
    let mut p = Client::connect(&nodes[2].url(), "late").await.unwrap();
    for i in 0..5 {
        let r = p.ok("publish", json!({ "channel": "chat:room", "data": { "late": i } })).await.unwrap();
        assert_eq!(r["offset"], 101 + i);
        assert_eq!(r["epoch"], epoch.as_str());
    }
    let mut back = Client::connect(&nodes[1].url(), "sub0").await.unwrap();
    let r = back
        .ok("subscribe", json!({ "channel": "chat:room", "recover": { "epoch": epoch, "offset": 100 } }))
        .await
        .unwrap();
    assert_eq!(r["recovered"], true, "{r}");
    let offsets: Vec<u64> =
        r["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [101, 102, 103, 104, 105]);
    assert_eq!(r["publications"][4]["data"]["late"], 4);
    // A position from another epoch cannot be recovered, and says so.
    let mut other = Client::connect(&nodes[0].url(), "other").await.unwrap();
    let r = other
        .ok("subscribe", json!({ "channel": "chat:room", "recover": { "epoch": "nope", "offset": 3 } }))
        .await
        .unwrap();
    assert_eq!((r["recovered"].clone(), r["offset"].clone()), (json!(false), json!(105)));
    // History is shared too.
    let h = other.ok("history", json!({ "channel": "chat:room", "limit": 2 })).await.unwrap();
    assert_eq!(h["publications"][1]["offset"], 105);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_forgets_the_clients_of_a_killed_node() {
    let redis = Redis::start();
    let dir = temp_dir("presence");
    let a = Node::start(&redis, &dir);
    let mut b = Node::start(&redis, &dir);
    let mut watcher = Client::connect(&a.url(), "watcher").await.unwrap();
    watcher.ok("subscribe", json!({ "channel": "chat:p" })).await.unwrap();
    let mut doomed = Client::connect(&b.url(), "doomed").await.unwrap();
    doomed.ok("subscribe", json!({ "channel": "chat:p" })).await.unwrap();
    // The join crosses nodes.
    let join = watcher.push().await.unwrap();
    assert_eq!(join["join"]["user"], "doomed", "{join}");
    // Still listed after several refreshes (presence_ttl is 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(watcher.presence("chat:p").await, ["doomed", "watcher"]);
    b.kill9();
    let killed = Instant::now();
    loop {
        if watcher.presence("chat:p").await == ["watcher"] {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "presence still lists a client of a dead node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Gone within the presence TTL (and its refresh period), not at once.
    assert!(killed.elapsed() >= Duration::from_millis(200), "{:?}", killed.elapsed());
    drop(doomed);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A STOMP 1.2 client (frames by hand, with the hub's own codec).
struct Stomp {
    ws: tether::WebSocket,
    decoder: Decoder,
    frames: VecDeque<Frame>,
}

impl Stomp {
    async fn connect(url: &str) -> Self {
        let config = ClientConfig::default().with_protocol("v12.stomp").with_proxy(tether::Proxy::None);
        let (ws, _) = tether::connect_with(url, &config).await.unwrap();
        let mut c =
            Self { ws, decoder: Decoder::new(Version::V1_2, Limits::default()), frames: VecDeque::new() };
        c.send(Frame::new(Verb::Connect).header("accept-version", "1.2").header("host", "localhost")).await;
        let reply = c.recv().await.unwrap();
        assert_eq!(reply.command, Verb::Connected, "{reply:?}");
        c
    }

    async fn send(&mut self, f: Frame) {
        let bytes = f.to_bytes(Version::V1_2);
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next frame, or `None` when nothing comes within `within`.
    async fn recv_within(&mut self, within: Duration) -> Option<Frame> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Some(f);
            }
            match tokio::time::timeout(within, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => self.decoder.push(t.as_bytes()),
                Ok(Some(Ok(Message::Binary(b)))) => self.decoder.push(&b),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("STOMP connection ended: {other:?}"),
                Err(_) => return None,
            }
            while let Some(f) = self.decoder.next_frame().unwrap() {
                self.frames.push_back(f);
            }
        }
    }

    async fn recv(&mut self) -> Option<Frame> {
        self.recv_within(WAIT).await
    }

    /// Sends `f` with a receipt and waits for it; frames that come first stay for `recv`.
    async fn sync(&mut self, f: Frame, receipt: &str) {
        self.send(f.header("receipt", receipt)).await;
        let mut before = Vec::new();
        loop {
            let r = self.recv().await.expect("no RECEIPT");
            assert_ne!(r.command, Verb::Error, "{r:?}");
            if r.command == Verb::Receipt && r.get("receipt-id") == Some(receipt) {
                break;
            }
            before.push(r);
        }
        for f in before.into_iter().rev() {
            self.frames.push_front(f);
        }
    }

    /// Messages until none comes for `quiet`: (body, ack id, redelivered).
    async fn messages(&mut self, quiet: Duration) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        while let Some(f) = self.recv_within(quiet).await {
            assert_eq!(f.command, Verb::Message, "{f:?}");
            out.push((
                String::from_utf8(f.body.to_vec()).unwrap(),
                f.get("ack").unwrap().to_owned(),
                f.get("redelivered") == Some("true"),
            ));
        }
        out
    }
}

fn stomp_send(queue: &str, body: &str) -> Frame {
    Frame::new(Verb::Send).header("destination", format!("/queue/{queue}")).body(body.as_bytes().to_vec())
}

fn stomp_subscribe(queue: &str, id: &str, ack: &str) -> Frame {
    Frame::new(Verb::Subscribe)
        .header("destination", format!("/queue/{queue}"))
        .header("id", id)
        .header("ack", ack)
}

fn bodies(got: &[(String, String, bool)]) -> Vec<String> {
    got.iter().map(|g| g.0.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_go_to_one_consumer_and_a_dead_nodes_go_to_another() {
    let redis = Redis::start();
    let dir = temp_dir("queue");
    let mut a = Node::start(&redis, &dir);
    let b = Node::start(&redis, &dir);
    let c = Node::start(&redis, &dir);
    let mut producer = Stomp::connect(&c.url()).await;
    // Sent before anyone consumes: the messages wait in Redis.
    for i in 1..=4 {
        producer.send(stomp_send("chat:jobs", &format!("m{i}"))).await;
    }
    producer.sync(stomp_send("chat:jobs", "m5"), "sent").await;
    let mut first = Stomp::connect(&a.url()).await;
    first.sync(stomp_subscribe("chat:jobs", "w", "client-individual"), "s").await;
    let got_a = first.messages(Duration::from_millis(500)).await;
    assert_eq!(bodies(&got_a), ["m1", "m2", "m3", "m4", "m5"]);
    assert!(got_a.iter().all(|g| !g.2));

    // Two consumers on two nodes: every message goes to exactly one of them.
    let mut second = Stomp::connect(&b.url()).await;
    second.sync(stomp_subscribe("chat:jobs", "w", "client-individual"), "s").await;
    for i in 6..=24 {
        producer.send(stomp_send("chat:jobs", &format!("m{i}"))).await;
    }
    producer.sync(stomp_send("chat:jobs", "m25"), "sent").await;
    let more_a = first.messages(Duration::from_millis(500)).await;
    let got_b = second.messages(Duration::from_millis(300)).await;
    let mut all: Vec<String> = bodies(&more_a);
    all.extend(bodies(&got_b));
    all.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    let want: Vec<String> = (6..=25).map(|i| format!("m{i}")).collect();
    assert_eq!(all, want, "a got {:?}, b got {:?}", bodies(&more_a), bodies(&got_b));
    // The first consumer ACKs one message; it holds the rest when its node dies.
    first.sync(Frame::new(Verb::Ack).header("id", got_a[0].1.as_str()), "k").await;
    let held: Vec<String> = bodies(&got_a)[1..].iter().chain(&bodies(&more_a)).cloned().collect();

    a.kill9();
    let killed = Instant::now();
    let mut again = Vec::new();
    while again.len() < held.len() && killed.elapsed() < Duration::from_secs(10) {
        again.extend(second.messages(Duration::from_millis(300)).await);
    }
    let mut redelivered = bodies(&again);
    redelivered.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    let mut held_sorted = held.clone();
    held_sorted.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(redelivered, held_sorted, "after {:?}", killed.elapsed());
    assert!(again.iter().all(|g| g.2), "taken over from a dead node: redelivered {again:?}");
    // Not before the dead node's heartbeat expired (presence_ttl is 1 s).
    assert!(killed.elapsed() >= Duration::from_millis(300), "{:?}", killed.elapsed());

    // The second consumer ACKs all but three and goes away: a consumer on the third node
    // gets those three, redelivered, and nothing else.
    let mut third = Stomp::connect(&c.url()).await;
    third.sync(stomp_subscribe("chat:jobs", "w", "auto"), "s").await;
    let mine: Vec<&(String, String, bool)> = got_b.iter().chain(&again).collect();
    let (acked, unacked) = mine.split_at(mine.len() - 3);
    let (last, acked) = acked.split_last().unwrap();
    for m in acked {
        second.send(Frame::new(Verb::Ack).header("id", m.1.as_str())).await;
    }
    second.sync(Frame::new(Verb::Ack).header("id", last.1.as_str()), "acked").await;
    assert!(third.messages(Duration::from_millis(300)).await.is_empty());
    second.sync(Frame::new(Verb::Disconnect), "bye").await;
    let moved = third.messages(Duration::from_millis(1500)).await;
    let mut moved_bodies = bodies(&moved);
    moved_bodies.sort();
    let mut want: Vec<String> = unacked.iter().map(|m| m.0.clone()).collect();
    want.sort();
    assert_eq!(moved_bodies, want);
    assert!(moved.iter().all(|g| g.2), "{moved:?}");
    // Everything was handled: nothing is left in Redis for anyone.
    let mut late = Stomp::connect(&b.url()).await;
    late.sync(stomp_subscribe("chat:jobs", "w", "auto"), "s").await;
    assert!(late.messages(Duration::from_millis(1500)).await.is_empty());

    // A full queue (30 messages, counted in Redis) refuses a send with an ERROR frame.
    let mut filler = Stomp::connect(&b.url()).await;
    for i in 1..30 {
        filler.send(stomp_send("chat:full", &format!("f{i}"))).await;
    }
    filler.sync(stomp_send("chat:full", "f30"), "30").await;
    filler.send(stomp_send("chat:full", "f31")).await;
    let e = filler.recv().await.unwrap();
    assert_eq!(e.command, Verb::Error, "{e:?}");
    assert!(e.get("message").unwrap().contains("is full"), "{e:?}");

    // With Redis down, a send is refused with an ERROR frame, not dropped.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer.send(stomp_send("chat:jobs", "lost?").header("receipt", "r")).await;
    let e = producer.recv().await.unwrap();
    assert_eq!(e.command, Verb::Error, "{e:?}");
    assert!(e.get("message").unwrap().contains("broker unavailable"), "{e:?}");
    drop((third, late));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `redis-cli -p PORT ARGS…`, its output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `redis-server --sentinel` watching the master on `master` as `tether-test`, with a
/// quick failover; killed on drop.
struct Sentinel {
    port: u16,
    child: Child,
}

impl Sentinel {
    fn start(master: u16, dir: &std::path::Path) -> Self {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor tether-test 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds tether-test 500\nsentinel failover-timeout tether-test 2000\n"
        );
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "redis sentinel did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_a_sentinel_failover_to_the_new_master() {
    let dir = temp_dir("sentinel");
    let master = Redis::start();
    let replica = Redis::replica_of(master.port);
    let sentinel = Sentinel::start(master.port, &dir);
    // Sentinel must know the replica before it can promote it.
    let start = Instant::now();
    while !redis_cli(sentinel.port, &["SENTINEL", "REPLICAS", "tether-test"])
        .contains(&replica.port.to_string())
    {
        assert!(start.elapsed() < Duration::from_secs(20), "sentinel never saw the replica");
        std::thread::sleep(Duration::from_millis(100));
    }
    let node = Node::start_url(&format!("redis+sentinel://127.0.0.1:{}/tether-test", sentinel.port), &dir);
    let mut c = Client::connect(&node.url(), "s").await.unwrap();
    c.ok("subscribe", json!({ "channel": "chat:s" })).await.unwrap();
    c.ok("publish", json!({ "channel": "chat:s", "data": "before" })).await.unwrap();
    assert_eq!(c.publication().await.unwrap()["data"], "before");

    drop(master);
    let killed = Instant::now();
    // Refused while there is no master; accepted again once Sentinel has promoted the
    // replica and the node has asked it where the master is.
    let mut refused = 0;
    loop {
        match c.call("publish", json!({ "channel": "chat:s", "data": "after" })).await {
            Ok(r) if r.get("error").is_none() => break,
            Ok(r) => {
                assert_eq!(r["error"]["code"], 112, "{r}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "no new master after {:?}", killed.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refused > 0);
    assert!(
        redis_cli(replica.port, &["ROLE"]).starts_with("master"),
        "{}",
        redis_cli(replica.port, &["ROLE"])
    );
    // The subscriber gets the new publication, whether its node kept it or it must resubscribe.
    let mut fresh = Client::connect(&node.url(), "t").await.unwrap();
    fresh.ok("subscribe", json!({ "channel": "chat:s" })).await.unwrap();
    fresh.ok("publish", json!({ "channel": "chat:s", "data": "later" })).await.unwrap();
    assert_eq!(fresh.publication().await.unwrap()["data"], "later");
    drop((c, node, sentinel));
    let _ = std::fs::remove_dir_all(&dir);
}

/// What one subscriber of the fault run saw.
#[derive(Debug, Default)]
struct Seen {
    numbers: Vec<u64>,
    reconnects: u32,
    failures: Vec<String>,
}

/// Subscribes on node `first` and follows the channel to the `end` marker, moving to the
/// next node (and recovering from its last position) whenever its connection ends.
async fn follow(urls: Arc<Vec<String>>, first: usize, name: String, deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut node = first;
    let mut position: Option<(String, u64)> = None;
    while Instant::now() < deadline {
        let mut c = match Client::connect(&urls[node], &name).await {
            Ok(c) => c,
            Err(_) => {
                node = (node + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let params = match &position {
            Some((epoch, offset)) => {
                json!({ "channel": "chat:fault", "recover": { "epoch": epoch, "offset": offset } })
            }
            None => json!({ "channel": "chat:fault" }),
        };
        let r = match c.ok("subscribe", params).await {
            Ok(r) => r,
            Err(e) => {
                seen.failures.push(format!("subscribe on node {node}: {e}"));
                node = (node + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let epoch = r["epoch"].as_str().unwrap().to_owned();
        let mut pubs: VecDeque<Value> = VecDeque::new();
        if position.is_some() {
            seen.reconnects += 1;
            if r["recovered"] != true {
                seen.failures.push(format!("not recovered on node {node}: {r}"));
            }
            pubs.extend(r["publications"].as_array().cloned().unwrap_or_default());
        } else {
            position = Some((epoch.clone(), r["offset"].as_u64().unwrap()));
        }
        loop {
            let p = match pubs.pop_front() {
                Some(p) => p,
                None => match c.publication().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if p["data"]["end"] == true {
                return seen;
            }
            seen.numbers.push(p["data"]["n"].as_u64().unwrap());
            let offset = p["offset"].as_u64().unwrap();
            let epoch = position.as_ref().map_or(epoch.clone(), |(e, _)| e.clone());
            position = Some((epoch, offset));
        }
        node = (node + 1) % urls.len();
    }
    seen.failures.push("deadline passed before the end marker".into());
    seen
}

/// The issue's fault run: 3 nodes, 300 subscribers, a steady publisher; one node killed with
/// SIGKILL, then Redis killed and restarted. Every subscriber must see every accepted message
/// exactly once, in order, and publishes during the outage must be refused. Redis keeps its
/// data (AOF, synced before each answer): one that loses it may have answered the publishing
/// node and died before writing the publication to the others, which no node can tell
/// (docs/OPERATIONS.md, "If Redis loses its data"; a new epoch after such a loss is
/// `health_and_metrics_report_redis_down_and_publishes_are_refused`'s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_and_a_redis_restart_lose_no_accepted_message() {
    let dir = temp_dir("fault");
    let mut redis = Redis::persistent(&dir);
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&redis, &dir)).collect();
    let urls = Arc::new(nodes.iter().map(Node::url).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut followers = Vec::new();
    for i in 0..300 {
        followers.push(tokio::spawn(follow(urls.clone(), i % 3, format!("s{i}"), deadline)));
    }
    // Wait until all 300 are subscribed (presence lists them, across the nodes).
    let mut publisher = Client::connect(&urls[0], "publisher").await.unwrap();
    publisher.ok("subscribe", json!({ "channel": "chat:fault" })).await.unwrap();
    let start = Instant::now();
    while publisher.presence("chat:fault").await.len() < 301 {
        assert!(start.elapsed() < WAIT, "the subscribers did not all subscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.ok("unsubscribe", json!({ "channel": "chat:fault" })).await.unwrap();
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    let run = Instant::now();
    let (mut killed, mut restarted) = (false, false);
    let mut n = 0;
    while run.elapsed() < Duration::from_millis(6500) {
        n += 1;
        let r =
            publisher.call("publish", json!({ "channel": "chat:fault", "data": { "n": n } })).await.unwrap();
        match r.get("error") {
            None => accepted.push(n),
            Some(e) => {
                assert_eq!(e["code"], 112, "a refused publish says the broker is unavailable: {r}");
                refused.push(n);
            }
        }
        if !killed && run.elapsed() > Duration::from_millis(1500) {
            nodes[2].kill9();
            killed = true;
        }
        if !restarted && run.elapsed() > Duration::from_millis(3500) {
            redis.restart(Duration::from_millis(500));
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The end marker, once Redis is back for the publisher's node.
    let start = Instant::now();
    while publisher
        .call("publish", json!({ "channel": "chat:fault", "data": { "end": true } }))
        .await
        .unwrap()
        .get("error")
        .is_some()
    {
        assert!(start.elapsed() < WAIT, "publishing never came back after the Redis restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reconnected = 0;
    for (i, f) in followers.into_iter().enumerate() {
        let seen = f.await.unwrap();
        assert!(seen.failures.is_empty(), "subscriber {i}: {:?}", seen.failures);
        assert_eq!(seen.numbers, accepted, "subscriber {i} saw every accepted message once, in order");
        reconnected += u32::from(seen.reconnects > 0);
    }
    eprintln!(
        "fault run: {} published, {} accepted, {} refused during the Redis outage, {reconnected} subscribers moved nodes",
        n,
        accepted.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "the Redis outage refused publishes");
    assert!(reconnected >= 100, "the killed node's subscribers moved: {reconnected}");
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET path` on `addr`: the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_report_redis_down_and_publishes_are_refused() {
    let mut redis = Redis::start();
    let dir = temp_dir("health");
    let node = Node::start(&redis, &dir);
    assert_eq!(http_get(&node.addr, "/healthz"), (200, "ok\n".into()));
    assert!(http_get(&node.addr, "/metrics").1.contains("\ntether_broker_up 1\n"));
    let mut c = Client::connect(&node.url(), "c").await.unwrap();
    c.ok("subscribe", json!({ "channel": "chat:h" })).await.unwrap();
    // Redis goes away (no restart yet).
    let _ = redis.child.kill();
    let _ = redis.child.wait();
    let start = Instant::now();
    while http_get(&node.addr, "/healthz").0 != 503 {
        assert!(start.elapsed() < WAIT, "healthz never reported the lost broker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http_get(&node.addr, "/healthz").1, "broker unavailable\n");
    let r = c.call("publish", json!({ "channel": "chat:h", "data": 1 })).await.unwrap();
    assert_eq!(r["error"]["code"], 112, "{r}");
    let r = c.call("subscribe", json!({ "channel": "chat:other" })).await.unwrap();
    assert_eq!(r["error"]["code"], 112, "{r}");
    let r = c.call("presence", json!({ "channel": "chat:h" })).await.unwrap();
    assert_eq!(r["error"]["code"], 112, "{r}");
    let metrics = http_get(&node.addr, "/metrics").1;
    assert!(metrics.contains("\ntether_broker_up 0\n"), "{metrics}");
    assert!(metrics.contains("\ntether_broker_errors_total 3\n"), "{metrics}");
    // The connection stayed open; Redis comes back and so does the node.
    c.ok("ping", json!({})).await.unwrap();
    redis = Redis::on(redis.port);
    let start = Instant::now();
    while http_get(&node.addr, "/healthz").0 != 200 {
        assert!(start.elapsed() < WAIT, "healthz never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.ok("publish", json!({ "channel": "chat:h", "data": 2 })).await.unwrap();
    assert_eq!(r["offset"], 1, "Redis lost its data: a new epoch starts at 1");
    let p = c.publication().await.unwrap();
    assert_eq!(p["data"], 2);
    drop(redis);
    // A broker that is not a Redis URL stops the start.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--broker", "http://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be \"memory\" or a redis://, rediss:// or redis+sentinel:// URL"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_fanout_spreads_subscribers_over_nodes() {
    let redis = Redis::start();
    let dir = temp_dir("bench");
    let nodes: Vec<Node> = (0..2).map(|_| Node::start(&redis, &dir)).collect();
    let (a, b) = (nodes[0].url(), nodes[1].url());
    let out = Command::new(BIN)
        .args(["bench", &a, "--mode", "fanout", "--subscribe-url", &a, "--subscribe-url", &b, "-c", "6"])
        .args(["--rate", "40", "-d", "0.5", "--api-key", KEY, "--json", "-q"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&json).unwrap();
    // Every publication (posted on node a) reaches all six subscribers, three on each node.
    assert!(v["published"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["delivered"], v["published"].as_u64().unwrap() * 6, "{v}");
    assert_eq!(v["errors"], json!({}), "{v}");
    // The option is for fan-out only.
    let out = Command::new(BIN).args(["bench", &a, "--subscribe-url", &b]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "error: --subscribe-url is for --mode fanout");
    let _ = std::fs::remove_dir_all(&dir);
}
