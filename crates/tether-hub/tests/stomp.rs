//! STOMP over real WebSocket connections: version and heart-beat negotiation, topics shared
//! with tether.json clients, work queues with acks, NACK and redelivery, transactions,
//! receipts, tokens, and every kind of bad input (an ERROR frame, then a close).

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tether::{ClientConfig, Message};
use tether_hub::stomp::frame::{Command, Decoder, Frame, Limits, Version};
use tether_hub::stomp::StompOptions;

mod common;
use common::*;

/// A STOMP client that writes frames by hand.
struct Stomp {
    ws: tether::WebSocket,
    decoder: Decoder,
    version: Version,
    frames: VecDeque<Frame>,
    beats: usize,
}

impl Stomp {
    async fn open(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Self {
        let mut config = ClientConfig::default().with_proxy(tether::Proxy::None);
        if let Some(p) = protocol {
            config = config.with_protocol(p);
        }
        let (ws, resp) = tether::connect_with(&format!("ws://{addr}{path}"), &config).await.unwrap();
        assert_eq!(resp.protocol.as_deref(), protocol);
        Self {
            ws,
            decoder: Decoder::new(Version::V1_2, Limits::default()),
            version: Version::V1_2,
            frames: VecDeque::new(),
            beats: 0,
        }
    }

    /// Opens with `v12.stomp` and connects; returns the client and CONNECTED.
    async fn connect(addr: SocketAddr, headers: &[(&str, &str)]) -> (Self, Frame) {
        let mut c = Self::open(addr, "/ws", Some("v12.stomp")).await;
        let mut f = Frame::new(Command::Connect).header("accept-version", "1.2").header("host", "localhost");
        for (n, v) in headers {
            f = f.header(*n, *v);
        }
        c.send(&f).await;
        let reply = c.recv().await;
        assert_eq!(reply.command, Command::Connected, "{reply:?}");
        (c, reply)
    }

    async fn raw(&mut self, bytes: &[u8]) {
        let msg = match std::str::from_utf8(bytes) {
            Ok(t) => Message::text(t.to_owned()),
            Err(_) => Message::binary(bytes.to_vec()),
        };
        self.ws.send(msg).await.unwrap();
    }

    async fn send(&mut self, f: &Frame) {
        self.raw(&f.to_bytes(self.version)).await;
    }

    /// The next frame from the server (heart-beats are counted, not returned).
    async fn recv(&mut self) -> Frame {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return f;
            }
            let msg = match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(m))) => m,
                other => panic!("expected a STOMP frame, got {other:?}"),
            };
            self.take(msg);
        }
    }

    fn take(&mut self, msg: Message) -> bool {
        let data = match msg {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
            _ => return false,
        };
        if data.iter().all(|b| matches!(b, b'\n' | b'\r')) {
            self.beats += 1;
            return true;
        }
        self.decoder.push(&data);
        while let Some(f) = self.decoder.next_frame().unwrap() {
            if f.command == Command::Connected {
                let v = f.get("version").and_then(Version::parse).unwrap_or(Version::V1_0);
                self.version = v;
                self.decoder.set_version(v);
            }
            self.frames.push_back(f);
        }
        true
    }

    /// Sends `f` with a receipt and waits for the RECEIPT.
    async fn sync(&mut self, f: Frame, receipt: &str) {
        self.send(&f.header("receipt", receipt)).await;
        // Messages may come before the receipt: they stay for `recv`.
        let mut before = Vec::new();
        loop {
            let r = self.recv().await;
            assert_ne!(r.command, Command::Error, "{r:?}");
            if r.command == Command::Receipt && r.get("receipt-id") == Some(receipt) {
                break;
            }
            before.push(r);
        }
        for f in before.into_iter().rev() {
            self.frames.push_front(f);
        }
    }

    /// The server's ERROR frame and then its close code.
    async fn error(&mut self) -> (Frame, u16) {
        let e = self.recv().await;
        assert_eq!(e.command, Command::Error, "{e:?}");
        (e, self.close_code().await)
    }

    async fn close_code(&mut self) -> u16 {
        let read = async {
            while let Some(m) = self.ws.next().await {
                match m {
                    Ok(Message::Close(f)) => return f.map_or(1005, |f| f.code.0),
                    Ok(m) => {
                        self.take(m);
                    }
                    Err(e) => panic!("connection failed: {e}"),
                }
            }
            panic!("ended without a close frame")
        };
        tokio::time::timeout(WAIT, read).await.unwrap()
    }

    /// Nothing arrives for a moment (heart-beats aside).
    async fn quiet(&mut self) {
        assert!(self.frames.is_empty(), "unexpected {:?}", self.frames);
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(150), self.ws.next()).await {
            self.take(m);
            assert!(self.frames.is_empty(), "unexpected {:?}", self.frames);
        }
    }
}

fn subscribe(dest: &str, id: &str, ack: &str) -> Frame {
    Frame::new(Command::Subscribe).header("destination", dest).header("id", id).header("ack", ack)
}

fn send(dest: &str, body: &str) -> Frame {
    Frame::new(Command::Send).header("destination", dest).body(body.to_owned())
}

fn body(f: &Frame) -> &str {
    std::str::from_utf8(&f.body).unwrap()
}

#[tokio::test]
async fn versions_are_negotiated() {
    let hub = start().await;
    let (_, connected) = Stomp::connect(hub.addr, &[("heart-beat", "0,0")]).await;
    assert_eq!(connected.get("version"), Some("1.2"));
    assert!(connected.get("server").unwrap().starts_with("tether/"));
    assert!(connected.get("session").is_some());
    assert_eq!(connected.get("heart-beat"), Some("10000,10000"));

    // The subprotocol caps the version; CONNECT picks the newest both speak.
    let mut c = Stomp::open(hub.addr, "/ws", Some("v11.stomp")).await;
    c.send(&Frame::new(Command::Stomp).header("accept-version", "1.0,1.1,1.2").header("host", "x")).await;
    assert_eq!(c.recv().await.get("version"), Some("1.1"));

    // No accept-version: 1.0, which has no version header. /stomp speaks STOMP without a
    // subprotocol.
    let mut c = Stomp::open(hub.addr, "/stomp", None).await;
    c.raw(b"CONNECT\nlogin:old\n\n\0").await;
    let f = c.recv().await;
    assert_eq!((f.command, f.get("version")), (Command::Connected, None));
    assert_eq!(f.get("user-name"), Some("old"));

    // No common version: an ERROR naming the versions this server speaks.
    let mut c = Stomp::open(hub.addr, "/ws", Some("v10.stomp")).await;
    c.raw(b"CONNECT\naccept-version:1.2\n\n\0").await;
    let (e, code) = c.error().await;
    assert_eq!(
        (e.get("message"), e.get("version"), code),
        (Some("unsupported STOMP version"), Some("1.0"), 1002)
    );
}

#[tokio::test]
async fn topics_are_hub_channels_shared_with_json_clients() {
    let hub = start().await;
    let mut json_client = Client::connect(hub.addr, "jay").await;
    json_client.ok("subscribe", json!({"channel": "chat:lobby"})).await;
    let (mut s, _) = Stomp::connect(hub.addr, &[("login", "sam")]).await;
    s.sync(subscribe("/topic/chat:lobby", "sub-0", "auto"), "r1").await;

    // STOMP text reaches JSON as a string, with who sent it.
    // The STOMP client's subscription is a join, as any other.
    assert_eq!(json_client.push().await["join"]["user"], "sam");
    s.sync(send("/topic/chat:lobby", "hello from stomp"), "r2").await;
    let p = json_client.push().await;
    assert_eq!(p["pub"]["data"], "hello from stomp");
    assert_eq!(p["pub"]["info"]["user"], "sam");
    let m = s.recv().await;
    assert_eq!((m.command, body(&m)), (Command::Message, "hello from stomp"));
    assert_eq!(m.get("content-type"), Some("text/plain;charset=utf-8"));

    // JSON data reaches STOMP as JSON; the destination's colon is escaped on the wire and
    // comes back whole.
    json_client.ok("publish", json!({"channel": "chat:lobby", "data": {"n": 1}})).await;
    assert_eq!(json_client.push().await["pub"]["data"], json!({"n": 1}));
    let m = s.recv().await;
    assert_eq!(body(&m), r#"{"n":1}"#);
    assert_eq!(m.get("destination"), Some("/topic/chat:lobby"));
    assert_eq!(m.get("subscription"), Some("sub-0"));
    assert_eq!(m.get("content-type"), Some("application/json"));
    assert_eq!(m.get("publisher-user"), Some("jay"));
    assert_eq!(m.get("offset"), Some("2"));
    // A STOMP body that is JSON stays JSON; content-type text/plain keeps it a string.
    s.send(&send("/topic/chat:lobby", r#"{"x":[1,2]}"#)).await;
    s.send(&send("/topic/chat:lobby", "[1]").header("content-type", "text/plain")).await;
    assert_eq!(json_client.push().await["pub"]["data"], json!({"x": [1, 2]}));
    assert_eq!(json_client.push().await["pub"]["data"], json!("[1]"));
    assert_eq!(body(&s.recv().await), r#"{"x":[1,2]}"#);
    assert_eq!(body(&s.recv().await), "[1]");

    // Presence lists the STOMP client; a second subscription id on the same topic gets its
    // own copy; after UNSUBSCRIBE of both, presence no longer does.
    let presence = json_client.ok("presence", json!({"channel": "chat:lobby"})).await;
    assert!(presence["clients"].as_array().unwrap().iter().any(|c| c["user"] == "sam"), "{presence}");
    s.sync(subscribe("/topic/chat:lobby", "sub-1", "client"), "r3").await;
    json_client.ok("publish", json!({"channel": "chat:lobby", "data": 3})).await;
    let (a, b) = (s.recv().await, s.recv().await);
    let mut ids = [a.get("subscription").unwrap(), b.get("subscription").unwrap()];
    ids.sort_unstable();
    assert_eq!(ids, ["sub-0", "sub-1"]);
    // An ACK of a topic message is accepted (there is nothing to redeliver).
    s.sync(Frame::new(Command::Ack).header("id", b.get("ack").unwrap()), "r4").await;
    for id in ["sub-0", "sub-1"] {
        s.sync(Frame::new(Command::Unsubscribe).header("id", id), "u").await;
    }
    let presence = json_client.ok("presence", json!({"channel": "chat:lobby"})).await;
    assert_eq!(presence["clients"].as_array().unwrap().len(), 1, "{presence}");

    // The history header replays the last publications before live ones.
    let (mut late, _) = Stomp::connect(hub.addr, &[]).await;
    late.sync(subscribe("/topic/chat:lobby", "h", "auto").header("history", "2"), "r5").await;
    assert_eq!(body(&late.recv().await), "[1]");
    assert_eq!(body(&late.recv().await), "3");
    late.quiet().await;
}

#[tokio::test]
async fn subscribers_sharing_a_frame_each_get_their_own_subscription_id() {
    // Subscribers with the same id share one frame per publication; the others get
    // theirs: ids alternate, and one long id (no short key) is there twice.
    let hub = start().await;
    let ids = ["x", "y", "x", "a-subscription-id-longer-than-15", "x", "a-subscription-id-longer-than-15"];
    let mut clients = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (mut s, _) = Stomp::connect(hub.addr, &[]).await;
        s.sync(subscribe("/topic/chat:ids", id, "auto"), &format!("r{i}")).await;
        clients.push(s);
    }
    let mut json_client = Client::connect(hub.addr, "jay").await;
    for n in 0..3 {
        json_client.ok("publish", json!({"channel": "chat:ids", "data": n})).await;
    }
    for (s, id) in clients.iter_mut().zip(ids) {
        for n in 0..3 {
            let m = s.recv().await;
            assert_eq!((m.get("subscription"), body(&m)), (Some(id), n.to_string().as_str()));
        }
    }
}

/// A burst published while the fan-out has not run goes to each STOMP subscriber as one
/// batch (under one lock of its connection), each MESSAGE with its own subscription id
/// (ids alternate, so the frames shared between subscribers are too), in order; a stalled
/// subscriber (a small receive buffer, never read) among them is closed with 4008.
#[tokio::test]
async fn a_burst_to_many_stomp_subscribers_arrives_in_order_and_a_stalled_one_is_closed() {
    let mut options = namespaces();
    options.max_queued_bytes = 64 * 1024;
    let hub = start_with(options, |_| {}).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let url = tether::Url::parse(&format!("ws://{}/ws", hub.addr)).unwrap();
    let (ws, _) = tether::client_handshake(stream, &url, &ClientConfig::default().with_protocol("v12.stomp"))
        .await
        .unwrap();
    let mut stalled = Stomp {
        ws,
        decoder: Decoder::new(Version::V1_2, Limits::default()),
        version: Version::V1_2,
        frames: VecDeque::new(),
        beats: 0,
    };
    stalled
        .send(&Frame::new(Command::Connect).header("accept-version", "1.2").header("host", "localhost"))
        .await;
    assert_eq!(stalled.recv().await.command, Command::Connected);
    stalled.sync(subscribe("/topic/chat:many", "x", "auto"), "s").await;
    let ids = ["x", "y", "a-subscription-id-longer-than-15"];
    let mut clients = Vec::new();
    for i in 0..66 {
        let (mut s, _) = Stomp::connect(hub.addr, &[]).await;
        s.sync(subscribe("/topic/chat:many", ids[i % 3], "auto"), &format!("r{i}")).await;
        clients.push(s);
    }
    let slow = || hub.hub.metrics.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed);
    // Bursts of 20 publications of 2 KiB, each published without a pause (the memory
    // broker never waits); the fast ones read each burst before the next.
    let pad = "x".repeat(2048);
    let mut bursts = 0;
    while slow() == 0 {
        assert!(bursts < 500, "the stalled subscriber was never disconnected");
        for i in 0..20 {
            let data = bytes::Bytes::from(format!("\"{}:{pad}\"", bursts * 20 + i));
            hub.hub.publish("chat:many", data, None).await.unwrap();
        }
        for (i, s) in clients.iter_mut().enumerate() {
            for n in 0..20 {
                let m = s.recv().await;
                // A JSON string arrives as its text.
                let want = format!("{}:{pad}", bursts * 20 + n);
                assert_eq!((m.get("subscription"), body(&m)), (Some(ids[i % 3]), want.as_str()));
            }
        }
        bursts += 1;
    }
    assert_eq!(slow(), 1, "only the stalled one is too slow");
    assert_eq!(stalled.close_code().await, 4008);
}

#[tokio::test]
async fn queues_share_work_and_redeliver() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    let (mut b, _) = Stomp::connect(hub.addr, &[]).await;
    // Messages sent before anyone consumes wait in the queue.
    a.sync(send("/queue/chat:jobs", "job-1"), "s1").await;
    a.sync(subscribe("/queue/chat:jobs", "w", "client-individual"), "r1").await;
    let m1 = a.recv().await;
    assert_eq!((body(&m1), m1.get("subscription")), ("job-1", Some("w")));
    b.sync(subscribe("/queue/chat:jobs", "w", "client-individual"), "r2").await;
    // Round robin: the next one goes to b.
    a.sync(send("/queue/chat:jobs", "job-2").header("priority", "high"), "s2").await;
    let m2 = b.recv().await;
    assert_eq!((body(&m2), m2.get("priority")), ("job-2", Some("high")));
    a.quiet().await;

    // b NACKs: job-2 goes to the next consumer in turn (a), marked redelivered.
    b.sync(Frame::new(Command::Nack).header("id", m2.get("ack").unwrap()), "n1").await;
    let again = a.recv().await;
    assert_eq!((body(&again), again.get("redelivered")), ("job-2", Some("true")));
    a.sync(Frame::new(Command::Ack).header("id", again.get("ack").unwrap()), "k1").await;
    // a still holds job-1 unacknowledged; when a goes away, b gets it.
    drop(a);
    let m = b.recv().await;
    assert_eq!((body(&m), m.get("redelivered")), ("job-1", Some("true")));
    b.sync(Frame::new(Command::Ack).header("id", m.get("ack").unwrap()), "k2").await;
    // Acknowledged twice is an error.
    b.send(&Frame::new(Command::Ack).header("id", m.get("ack").unwrap())).await;
    let (e, code) = b.error().await;
    assert!(e.get("message").unwrap().contains("no unacknowledged message"), "{e:?}");
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn queues_carry_binary_bodies_and_client_acks_are_cumulative() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    a.sync(subscribe("/queue/chat:bin", "s", "client"), "r").await;
    let bytes: Vec<u8> = vec![0, 159, 146, 150, 0xff, b'\n'];
    let frame = Frame::new(Command::Send)
        .header("destination", "/queue/chat:bin")
        .header("content-type", "application/octet-stream")
        .body(bytes.clone());
    a.send(&frame).await;
    let m = a.recv().await;
    assert_eq!(&m.body[..], &bytes[..]);
    assert_eq!(m.get("content-type"), Some("application/octet-stream"));
    a.send(&send("/queue/chat:bin", "two")).await;
    let m2 = a.recv().await;
    // One ACK of the second covers both: nothing comes back after a reconnect.
    a.sync(Frame::new(Command::Ack).header("id", m2.get("ack").unwrap()), "k").await;
    a.sync(Frame::new(Command::Unsubscribe).header("id", "s"), "u").await;
    a.sync(subscribe("/queue/chat:bin", "s2", "auto"), "r2").await;
    a.quiet().await;
    // Binary bodies cannot go to a topic (JSON clients could not read them).
    a.send(&Frame::new(Command::Send).header("destination", "/topic/chat:x").body(vec![0xffu8, 0])).await;
    let (e, _) = a.error().await;
    assert!(e.get("message").unwrap().contains("not UTF-8"), "{e:?}");
}

#[tokio::test]
async fn transactions_hold_frames_until_commit() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    let (mut b, _) = Stomp::connect(hub.addr, &[]).await;
    b.sync(subscribe("/topic/chat:tx", "t", "auto"), "r").await;
    a.sync(Frame::new(Command::Begin).header("transaction", "tx1"), "b1").await;
    a.sync(send("/topic/chat:tx", "one").header("transaction", "tx1"), "s1").await;
    a.sync(send("/topic/chat:tx", "two").header("transaction", "tx1"), "s2").await;
    b.quiet().await;
    a.sync(Frame::new(Command::Commit).header("transaction", "tx1"), "c1").await;
    assert_eq!(body(&b.recv().await), "one");
    assert_eq!(body(&b.recv().await), "two");
    a.sync(Frame::new(Command::Begin).header("transaction", "tx2"), "b2").await;
    a.sync(send("/topic/chat:tx", "never").header("transaction", "tx2"), "s3").await;
    a.sync(Frame::new(Command::Abort).header("transaction", "tx2"), "a2").await;
    b.quiet().await;
    // A transaction that was committed is over.
    a.send(&Frame::new(Command::Commit).header("transaction", "tx1").header("receipt", "c9")).await;
    let (e, code) = a.error().await;
    assert_eq!(e.get("receipt-id"), Some("c9"));
    assert!(e.get("message").unwrap().contains("no transaction \"tx1\""), "{e:?}");
    assert_eq!(code, 1002);
}

#[tokio::test]
async fn acks_in_a_transaction_wait_for_commit() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    a.sync(subscribe("/queue/chat:q", "s", "client-individual"), "r").await;
    a.sync(send("/queue/chat:q", "m"), "s").await;
    let m = a.recv().await;
    a.sync(Frame::new(Command::Begin).header("transaction", "t"), "b").await;
    a.sync(Frame::new(Command::Nack).header("id", m.get("ack").unwrap()).header("transaction", "t"), "n")
        .await;
    a.quiet().await;
    a.sync(Frame::new(Command::Commit).header("transaction", "t"), "c").await;
    assert_eq!(a.recv().await.get("redelivered"), Some("true"));
}

#[tokio::test]
async fn frames_split_and_batched_across_messages() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    a.sync(subscribe("/topic/chat:s", "s", "auto"), "r").await;
    let one = send("/topic/chat:s", "split").to_bytes(Version::V1_2);
    for piece in one.chunks(5) {
        a.raw(piece).await;
    }
    assert_eq!(body(&a.recv().await), "split");
    let mut two = send("/topic/chat:s", "first").to_bytes(Version::V1_2).to_vec();
    two.extend_from_slice(b"\r\n");
    two.extend_from_slice(&send("/topic/chat:s", "second").header("receipt", "x").to_bytes(Version::V1_2));
    a.raw(&two).await;
    let got: Vec<Frame> = vec![a.recv().await, a.recv().await, a.recv().await];
    assert_eq!(body(&got[0]), "first");
    assert_eq!(body(&got[1]), "second");
    assert_eq!(got[2].get("receipt-id"), Some("x"));
}

#[tokio::test]
async fn heart_beats_both_ways() {
    let stomp = StompOptions { heart_beat: (50, 50), ..StompOptions::default() };
    let hub = start_with(namespaces(), |o| o.stomp = stomp).await;
    // The server sends a beat at the client's rate (max of 50 and 80 ms).
    let (mut a, c) = Stomp::connect(hub.addr, &[("heart-beat", "0,80")]).await;
    assert_eq!(c.get("heart-beat"), Some("50,50"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(10), a.ws.next()).await {
        a.take(m);
    }
    assert!((2..=6).contains(&a.beats), "beats in 400 ms at 80 ms: {}", a.beats);

    // A client that promised beats every 60 ms and goes silent is closed.
    let (mut b, _) = Stomp::connect(hub.addr, &[("heart-beat", "60,0")]).await;
    let (e, code) = b.error().await;
    assert_eq!((e.get("message"), code), (Some("heart-beat timeout"), 4012));

    // One that keeps beating stays.
    let (mut c, _) = Stomp::connect(hub.addr, &[("heart-beat", "100,0")]).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.raw(b"\n").await;
    }
    c.sync(send("/topic/chat:hb", "alive"), "r").await;
}

#[tokio::test]
async fn tokens_in_passcode_or_authorization() {
    let hub = start_with_tokens().await;
    let t = token(json!({"sub": "alice", "exp": now() + 600, "channels": ["news:a"]}));
    let (mut a, c) = Stomp::connect(hub.addr, &[("login", "ignored"), ("passcode", &t)]).await;
    assert_eq!(c.get("user-name"), Some("alice"));
    a.sync(subscribe("/topic/news:a", "s", "auto"), "r").await;
    // The token's channel list applies.
    a.send(&subscribe("/topic/news:b", "s2", "auto")).await;
    let (e, code) = a.error().await;
    assert!(e.get("message").unwrap().contains("permission denied"), "{e:?}");
    assert_eq!(code, 1008);

    let bearer = format!("Bearer {t}");
    let (_, c) = Stomp::connect(hub.addr, &[("Authorization", &bearer)]).await;
    assert_eq!(c.get("user-name"), Some("alice"));

    let mut bad = Stomp::open(hub.addr, "/ws", Some("v12.stomp")).await;
    bad.send(&Frame::new(Command::Connect).header("accept-version", "1.2").header("passcode", "not-a-token"))
        .await;
    let (e, code) = bad.error().await;
    assert_eq!((e.get("message"), code), (Some("authentication failed"), 1008));
}

#[tokio::test]
async fn disconnect_with_receipt_closes_normally() {
    let hub = start().await;
    let (mut a, _) = Stomp::connect(hub.addr, &[]).await;
    a.send(&Frame::new(Command::Disconnect).header("receipt", "bye")).await;
    assert_eq!(a.recv().await.get("receipt-id"), Some("bye"));
    assert_eq!(a.close_code().await, 1000);
}

/// Sends `input` after CONNECT and expects an ERROR whose message contains `want`, then
/// a close with `code`.
async fn refused(addr: SocketAddr, input: &[u8], want: &str, code: u16) {
    let (mut c, _) = Stomp::connect(addr, &[]).await;
    c.raw(input).await;
    let (e, got) = c.error().await;
    let message = e.get("message").unwrap_or_default();
    assert!(message.contains(want), "for {:?}: {message:?}", String::from_utf8_lossy(input));
    assert_eq!(got, code, "for {:?}", String::from_utf8_lossy(input));
    assert_eq!(e.get("content-type"), Some("text/plain"));
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_and_a_close() {
    let stomp = StompOptions {
        limits: Limits { max_frame_size: 1024, max_headers: 8, max_header_length: 200 },
        max_transaction_frames: 2,
        ..StompOptions::default()
    };
    let mut options = namespaces();
    options.max_channels_per_connection = 2;
    options.queue_limits.max_messages = 2;
    let hub = start_with(options, |o| o.stomp = stomp).await;
    let addr = hub.addr;
    refused(addr, b"SEND\ndestination\n\n\0", "malformed header", 1002).await;
    refused(addr, b"PUBLISH\n\n\0", "unknown command", 1002).await;
    refused(addr, b"SEND\nx:a\\tb\n\n\0", "invalid escape", 1002).await;
    refused(addr, b"SEND\ncontent-length:2\n\nabc\0", "no NUL", 1002).await;
    refused(addr, b"SEND\ncontent-length:-1\n\n\0", "invalid content-length", 1002).await;
    let big = [b"SEND\ndestination:/topic/chat:a\n\n".as_slice(), &[b'x'; 2000], b"\0"].concat();
    refused(addr, &big, "frame too large", 1009).await;
    let many: String = (0..9).map(|i| format!("h{i}:v\n")).collect();
    refused(addr, format!("SEND\n{many}\n\0").as_bytes(), "too many headers", 1009).await;
    refused(addr, format!("SEND\nh:{}\n\n\0", "v".repeat(300)).as_bytes(), "header line too long", 1009)
        .await;
    refused(addr, b"SEND\n\nno destination\0", "without a destination", 1002).await;
    refused(addr, b"SEND\ndestination:/exchange/x\n\n\0", "unknown destination", 1002).await;
    refused(addr, b"SEND\ndestination:/topic/nope:x\n\nhi\0", "unknown channel", 1008).await;
    refused(addr, b"SEND\ndestination:/topic/news:x\n\nhi\0", "permission denied", 1008).await;
    refused(
        addr,
        b"SEND\ndestination:/topic/chat:x\ncontent-type:application/json\n\n{oops\0",
        "not valid JSON",
        1002,
    )
    .await;
    refused(addr, b"SUBSCRIBE\ndestination:/topic/chat:a\n\n\0", "without an id", 1002).await;
    refused(
        addr,
        b"SUBSCRIBE\ndestination:/topic/chat:a\nid:1\nack:sometimes\n\n\0",
        "unknown ack mode",
        1002,
    )
    .await;
    refused(
        addr,
        b"SUBSCRIBE\ndestination:/topic/chat:a\nid:1\n\n\0SUBSCRIBE\ndestination:/topic/chat:b\nid:1\n\n\0",
        "already in use",
        1002,
    )
    .await;
    let three: String =
        (0..3).map(|i| format!("SUBSCRIBE\ndestination:/topic/chat:{i}\nid:{i}\n\n\0")).collect();
    refused(addr, three.as_bytes(), "too many subscriptions", 1008).await;
    refused(addr, b"UNSUBSCRIBE\nid:nope\n\n\0", "no subscription", 1002).await;
    refused(addr, b"ACK\nid:q999\n\n\0", "no unacknowledged message", 1002).await;
    refused(addr, b"ACK\nid:zz\n\n\0", "unknown message", 1002).await;
    refused(addr, b"NACK\n\n\0", "without an id", 1002).await;
    refused(addr, b"BEGIN\n\n\0", "without a transaction", 1002).await;
    refused(addr, b"BEGIN\ntransaction:t\n\n\0BEGIN\ntransaction:t\n\n\0", "already begun", 1002).await;
    refused(addr, b"ABORT\ntransaction:t\n\n\0", "no transaction", 1002).await;
    refused(addr, b"SEND\ndestination:/topic/chat:a\ntransaction:none\n\n\0", "no transaction", 1002).await;
    let held: String = "BEGIN\ntransaction:t\n\n\0".to_owned()
        + &"SEND\ndestination:/topic/chat:a\ntransaction:t\n\nx\0".repeat(3);
    refused(addr, held.as_bytes(), "too many frames in transactions", 1008).await;
    refused(addr, b"MESSAGE\n\n\0", "is a server frame", 1002).await;
    refused(addr, b"CONNECT\naccept-version:1.2\n\n\0", "already connected", 1002).await;
    refused(addr, b"CONNECT\n\n\0", "already connected", 1002).await;
    let full = "SEND\ndestination:/queue/chat:full\n\nx\0".repeat(3);
    refused(addr, full.as_bytes(), "is full", 1008).await;

    // Before CONNECT, nothing else is accepted; a bad heart-beat header is refused.
    let mut c = Stomp::open(addr, "/ws", Some("v12.stomp")).await;
    c.raw(b"SEND\ndestination:/topic/chat:a\n\n\0").await;
    let (e, code) = c.error().await;
    assert_eq!((e.get("message"), code), (Some("send CONNECT first"), 1002));
    let mut c = Stomp::open(addr, "/ws", Some("v12.stomp")).await;
    c.raw(b"CONNECT\naccept-version:1.2\nheart-beat:soon\n\n\0").await;
    let (e, _) = c.error().await;
    assert!(e.get("message").unwrap().contains("invalid heart-beat"), "{e:?}");
    // A message cut off mid-frame and never finished is not an error by itself; binary
    // garbage is.
    let mut c = Stomp::open(addr, "/ws", Some("v12.stomp")).await;
    c.raw(&[0xff, 0xfe, b'\n']).await;
    let (e, _) = c.error().await;
    assert!(e.get("message").unwrap().contains("unknown command"), "{e:?}");
    // The hub is still fine.
    let (mut ok, _) = Stomp::connect(addr, &[]).await;
    ok.sync(send("/topic/chat:a", "still here"), "r").await;
}
