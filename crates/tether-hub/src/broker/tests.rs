//! The same scenarios against every broker, through the hub core as front-ends use it:
//! publish order, recovery, presence (with expiry of entries no node refreshes), and queue
//! delivery and redelivery. The memory broker runs in process; the Redis broker runs
//! against a private `redis-server` started here on a loopback port (scripts/test.sh
//! installs it; without it these tests fail rather than skip).

use super::memory::MemoryBroker;
use super::Broker;
use crate::hub::queue::{AckMode, Delivery, QueueOutlet};
use crate::hub::{Access, BrokerHandle, ClientId, Event, Hub, Outlet, StreamPosition};
use crate::options::{HubOptions, NamespaceOptions};
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a scenario waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);
/// Presence entries that no node refreshes expire after this.
const PRESENCE_TTL: Duration = Duration::from_millis(400);

/// What one connection received.
#[derive(Default)]
struct Recorder {
    /// Publications: (offset, data).
    publications: Mutex<Vec<(u64, String)>>,
    /// Queue deliveries: (tag, body, redelivered).
    deliveries: Mutex<Vec<(u64, String, bool)>>,
}

impl Outlet for Recorder {
    fn push(&self, event: &Arc<Event>) -> bool {
        if let Some(p) = event.publication() {
            let data = String::from_utf8_lossy(&p.data).into_owned();
            self.publications.lock().unwrap().push((p.offset, data));
        }
        true
    }
    fn disconnect(&self, _: u16, _: &str) {}
}

impl QueueOutlet for Recorder {
    fn deliver(&self, _subscription: &str, d: &Delivery) -> bool {
        let body = String::from_utf8_lossy(&d.message.body).into_owned();
        self.deliveries.lock().unwrap().push((d.tag, body, d.redelivered));
        true
    }
}

impl Recorder {
    fn publications(&self) -> Vec<(u64, String)> {
        self.publications.lock().unwrap().clone()
    }
    fn deliveries(&self) -> Vec<(u64, String, bool)> {
        self.deliveries.lock().unwrap().clone()
    }
}

/// Waits until `done` holds (or fails the test after [`WAIT`]).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn options() -> HubOptions {
    let mut o = HubOptions::default();
    let room = NamespaceOptions { history_size: 100, allow_publish: true, ..NamespaceOptions::chat() };
    o.namespaces.insert("room".into(), room);
    o
}

fn connect(hub: &Hub, user: &str) -> (ClientId, Arc<Recorder>) {
    let r = Arc::new(Recorder::default());
    let (id, _) = hub.connect(user.into(), Access::default(), r.clone());
    (id, r)
}

async fn subscribe(
    hub: &Hub,
    id: ClientId,
    channel: &str,
    recover: Option<StreamPosition>,
) -> (StreamPosition, bool, Vec<u64>) {
    let mut got = None;
    hub.subscribe(id, channel, recover, |s| {
        let offsets = s.publications.iter().filter_map(|e| e.publication().map(|p| p.offset)).collect();
        got = Some((StreamPosition { offset: s.offset, epoch: s.epoch.clone() }, s.recovered, offsets));
    })
    .await
    .unwrap();
    got.unwrap()
}

/// Two publishers at once, two subscribers: both see every publication once, in offset
/// order, and the offsets the publishers were told are exactly 1..=N.
async fn publish_order(hub: Arc<Hub>) {
    let (a, ra) = connect(&hub, "a");
    let (b, rb) = connect(&hub, "b");
    subscribe(&hub, a, "room:order", None).await;
    subscribe(&hub, b, "room:order", None).await;
    let publisher = |tag: &'static str| {
        let hub = hub.clone();
        tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..50 {
                let data = Bytes::from(format!("\"{tag}{i}\""));
                offsets.push(hub.publish("room:order", data, None).await.unwrap().offset);
            }
            offsets
        })
    };
    let (x, y) = (publisher("x"), publisher("y"));
    let mut told: Vec<u64> = x.await.unwrap().into_iter().chain(y.await.unwrap()).collect();
    told.sort_unstable();
    assert_eq!(told, (1..=100).collect::<Vec<_>>());
    until("100 publications at both subscribers", || {
        ra.publications().len() == 100 && rb.publications().len() == 100
    })
    .await;
    let offsets: Vec<u64> = ra.publications().iter().map(|p| p.0).collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>());
    assert_eq!(ra.publications(), rb.publications());
    // Each publisher's own publications arrive in the order it sent them.
    for tag in ["x", "y"] {
        let mine: Vec<String> = ra
            .publications()
            .into_iter()
            .map(|p| p.1)
            .filter(|d| d.starts_with(&format!("\"{tag}")))
            .collect();
        let sent: Vec<String> = (0..50).map(|i| format!("\"{tag}{i}\"")).collect();
        assert_eq!(mine, sent);
    }
}

/// A subscriber that comes back with its last position gets exactly what it missed; one
/// with another epoch learns that it cannot recover.
async fn recovery(hub: Arc<Hub>) {
    let (a, _ra) = connect(&hub, "a");
    let (pos, _, _) = subscribe(&hub, a, "room:rec", None).await;
    for i in 0..3 {
        hub.publish("room:rec", Bytes::from(i.to_string()), None).await.unwrap();
    }
    let seen = StreamPosition { offset: pos.offset + 1, epoch: pos.epoch.clone() };
    for i in 3..6 {
        hub.publish("room:rec", Bytes::from(i.to_string()), None).await.unwrap();
    }
    let (b, rb) = connect(&hub, "b");
    let (now, recovered, missed) = subscribe(&hub, b, "room:rec", Some(seen)).await;
    assert!(recovered);
    assert_eq!(now.offset, pos.offset + 6);
    assert_eq!(missed, (pos.offset + 2..=pos.offset + 6).collect::<Vec<_>>());
    hub.publish("room:rec", Bytes::from_static(b"7"), None).await.unwrap();
    until("the live publication after recovery", || rb.publications().len() == 1).await;
    assert_eq!(rb.publications()[0].0, pos.offset + 7);

    let (c, _rc) = connect(&hub, "c");
    let other = StreamPosition { offset: 1, epoch: "another epoch".into() };
    let (_, recovered, missed) = subscribe(&hub, c, "room:rec", Some(other)).await;
    assert!(!recovered);
    assert!(missed.is_empty());
}

/// Presence lists subscribers by client id and forgets one that leaves; an entry that no
/// node refreshes (its node died) expires.
async fn presence(hub: Arc<Hub>, broker: Arc<dyn Broker>) {
    let (a, _ra) = connect(&hub, "ann");
    let (b, _rb) = connect(&hub, "bob");
    subscribe(&hub, a, "room:who", None).await;
    subscribe(&hub, b, "room:who", None).await;
    let users =
        |list: Vec<Arc<crate::hub::ClientInfo>>| list.iter().map(|c| c.user.to_string()).collect::<Vec<_>>();
    assert_eq!(users(hub.presence("room:who", None).await.unwrap()), ["ann", "bob"]);
    hub.unsubscribe(b, "room:who").unwrap();
    let start = Instant::now();
    loop {
        let now = users(hub.presence("room:who", None).await.unwrap());
        if now == ["ann"] {
            break;
        }
        assert!(start.elapsed() < WAIT, "bob still present: {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ghost =
        Arc::new(crate::hub::ClientInfo { client: "zz.c1".into(), user: "ghost".into(), anonymous: false });
    broker.presence_add("room:who", std::slice::from_ref(&ghost)).await.unwrap();
    assert_eq!(users(hub.presence("room:who", None).await.unwrap()), ["ann", "ghost"]);
    tokio::time::sleep(PRESENCE_TTL + Duration::from_millis(200)).await;
    // ann's node refreshes her entry; nobody refreshes the ghost's.
    assert_eq!(users(hub.presence("room:who", None).await.unwrap()), ["ann"]);
}

/// Each message goes to one consumer; a NACK and a consumer that disconnects give
/// messages back, marked redelivered, to the other consumer.
async fn queues(hub: Arc<Hub>) {
    let (a, ra) = connect(&hub, "a");
    let (b, rb) = connect(&hub, "b");
    hub.queue_subscribe(a, "s", "room:jobs", AckMode::Individual, ra.clone()).unwrap().unwrap();
    for i in 0..4 {
        hub.queue_send(a, "room:jobs", Bytes::from(format!("m{i}")), Vec::new()).await.unwrap().unwrap();
    }
    until("four deliveries to the only consumer", || ra.deliveries().len() == 4).await;
    let bodies: Vec<String> = ra.deliveries().into_iter().map(|d| d.1).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
    assert!(ra.deliveries().iter().all(|d| !d.2));
    let tags: Vec<u64> = ra.deliveries().iter().map(|d| d.0).collect();
    hub.queue_settle(a, tags[0], true).unwrap();
    hub.queue_settle(a, tags[1], false).unwrap();
    hub.settled().await;
    until("m1 back to its consumer, redelivered", || ra.deliveries().len() == 5).await;
    assert_eq!(ra.deliveries()[4].1, "m1");
    assert!(ra.deliveries()[4].2);

    hub.queue_subscribe(b, "s", "room:jobs", AckMode::Individual, rb.clone()).unwrap().unwrap();
    hub.disconnect(a);
    hub.settled().await;
    until("a's three unacknowledged messages at b", || rb.deliveries().len() == 3).await;
    let mut bodies: Vec<String> = rb.deliveries().into_iter().map(|d| d.1).collect();
    bodies.sort();
    assert_eq!(bodies, ["m1", "m2", "m3"]);
    assert!(rb.deliveries().iter().all(|d| d.2));
    for d in rb.deliveries() {
        hub.queue_settle(b, d.0, true).unwrap();
    }
    hub.settled().await;
    assert_eq!(hub.queue_waiting("room:jobs"), 0);
}

/// Every scenario on a fresh hub over the broker `make` builds.
async fn all_scenarios(make: impl Fn() -> Arc<dyn Broker>) {
    async fn hub(broker: Arc<dyn Broker>) -> Arc<Hub> {
        let hub = Arc::new(Hub::with_broker(options(), BrokerHandle(broker)));
        until("the broker to be up", || hub.broker_up()).await;
        hub
    }
    publish_order(hub(make()).await).await;
    recovery(hub(make()).await).await;
    let broker = make();
    presence(hub(broker.clone()).await, broker).await;
    queues(hub(make()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker() {
    all_scenarios(|| Arc::new(MemoryBroker::new(Some(PRESENCE_TTL))) as Arc<dyn Broker>).await;
}

/// A private `redis-server` on a loopback port, without persistence; killed on drop.
#[cfg(feature = "redis")]
struct RedisServer {
    port: u16,
    child: std::process::Child,
}

#[cfg(feature = "redis")]
impl RedisServer {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server; scripts/test.sh does)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker() {
    let server = RedisServer::start();
    let n = std::sync::atomic::AtomicUsize::new(0);
    all_scenarios(|| {
        let mut o = super::redis::RedisOptions::new(format!("redis://127.0.0.1:{}", server.port));
        // A key prefix per hub: each scenario starts from empty channels and queues.
        o.prefix = format!("t{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        o.presence_ttl = PRESENCE_TTL;
        super::redis::broker(o).unwrap().0
    })
    .await;
}
