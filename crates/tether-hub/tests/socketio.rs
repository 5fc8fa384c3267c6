//! Socket.IO on the hub (docs/PROTOCOL.md, "Socket.IO"), read off the wire: CONNECT with the
//! hub's auth, commands as events with acks, publications and joins as events, beside a
//! tether.json client; refusals; polling and WebSocket (the fast path and Engine.IO's
//! checks before the 101); the slow-consumer close; the session limit; shutdown.

mod common;

use common::{namespaces, now, start_with, start_with_tokens, token, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tether::{Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WS: &str = "/socket.io/?EIO=4&transport=websocket";

/// A Socket.IO client over a raw WebSocket: Engine.IO pings answered, acks by id.
struct Sio {
    ws: WebSocket,
    next: u64,
    events: Vec<Value>,
}

impl Sio {
    async fn open(addr: SocketAddr) -> Self {
        let (mut ws, _) = tether::connect(&format!("ws://{addr}{WS}")).await.unwrap();
        let open = Self::text(&mut ws).await.unwrap();
        assert!(open.starts_with("0{\"sid\""), "{open}");
        Self { ws, next: 0, events: Vec::new() }
    }

    async fn text(ws: &mut WebSocket) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, ws.next()).await.ok()?? {
                Ok(Message::Text(t)) if t.as_str() == "2" => ws.send(Message::text("3")).await.ok()?,
                Ok(Message::Text(t)) => return Some(t.as_str().to_owned()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// CONNECT with `auth`: the CONNECT answer's JSON, or the CONNECT_ERROR's.
    async fn connect(&mut self, auth: Value) -> Result<Value, Value> {
        self.send(&format!("40{auth}")).await;
        let m = Self::text(&mut self.ws).await.unwrap();
        match (m.strip_prefix("40"), m.strip_prefix("44")) {
            (Some(ok), _) => Ok(serde_json::from_str(ok).unwrap()),
            (_, Some(err)) => Err(serde_json::from_str(err).unwrap()),
            _ => panic!("unexpected {m}"),
        }
    }

    /// Emits `event` with `args` and waits for its ack: its first argument.
    async fn call(&mut self, event: &str, args: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut all = vec![json!(event)];
        all.extend(args.as_array().unwrap().iter().cloned());
        self.send(&format!("42{id}{}", Value::Array(all))).await;
        loop {
            let m = Self::text(&mut self.ws).await.expect("the ack");
            if let Some(ack) = m.strip_prefix(&format!("43{id}")) {
                let args: Vec<Value> = serde_json::from_str(ack).unwrap();
                return args[0].clone();
            }
            self.events.push(Self::event(&m));
        }
    }

    fn event(m: &str) -> Value {
        serde_json::from_str(m.strip_prefix("42").unwrap_or_else(|| panic!("an event: {m}"))).unwrap()
    }

    /// The next event (`[name, args...]`).
    async fn event_next(&mut self) -> Value {
        if !self.events.is_empty() {
            return self.events.remove(0);
        }
        let m = Self::text(&mut self.ws).await.expect("an event");
        Self::event(&m)
    }

    async fn closed(&mut self) -> bool {
        tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                    Some(Ok(Message::Text(t))) => self.events.push(Self::event(&t)),
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

#[tokio::test]
async fn chat_between_socketio_and_tether_json() {
    let hub = start_with(namespaces(), |_| {}).await;
    let mut s = Sio::open(hub.addr).await;
    let connected = s.connect(json!({ "name": "sio" })).await.unwrap();
    assert_eq!(connected["user"], "sio");
    assert_eq!(connected["sid"], connected["client"], "the socket id is the hub's client id");
    let sub = s.call("subscribe", json!(["chat:room"])).await;
    assert_eq!(sub["result"]["offset"], 0);
    let mut json_client = Client::connect(hub.addr, "json").await;
    json_client.ok("subscribe", json!({ "channel": "chat:room" })).await;
    let joined = s.event_next().await;
    assert_eq!(
        joined,
        json!(["join", "chat:room", { "client": joined[2]["client"], "user": "json", "anonymous": true }])
    );
    json_client.ok("publish", json!({ "channel": "chat:room", "data": { "text": "hi", "k": [1] } })).await;
    let publication = s.event_next().await;
    assert_eq!(publication[0], "publication");
    assert_eq!(publication[1], "chat:room");
    assert_eq!(
        (publication[2]["offset"].clone(), publication[2]["data"].clone()),
        (json!(1), json!({ "text": "hi", "k": [1] }))
    );
    let r = s.call("publish", json!(["chat:room", "hello json"])).await;
    assert_eq!(r["result"]["offset"], 2);
    let own = json_client.push().await;
    assert_eq!(own["pub"]["offset"], 1, "its own first");
    let push = json_client.push().await;
    assert_eq!(
        (push["pub"]["data"].clone(), push["pub"]["info"]["user"].clone()),
        (json!("hello json"), json!("sio"))
    );
    let presence = s.call("presence", json!([{ "channel": "chat:room" }])).await;
    assert_eq!(presence["result"]["clients"].as_array().unwrap().len(), 2);
    let history = s.call("history", json!([{ "channel": "chat:room", "limit": 1 }])).await;
    assert_eq!(history["result"]["publications"][0]["data"], "hello json");
    assert_eq!(s.call("ping", json!([])).await, json!({ "result": {} }));
    assert_eq!(s.call("unsubscribe", json!(["chat:room"])).await, json!({ "result": {} }));
}

#[tokio::test]
async fn errors_come_back_in_the_ack_and_bad_packets_close() {
    let hub = start_with(namespaces(), |_| {}).await;
    let mut s = Sio::open(hub.addr).await;
    s.connect(json!({})).await.unwrap();
    let r = s.call("teleport", json!(["chat:x"])).await;
    assert_eq!(r["error"]["code"], 104);
    let r = s.call("publish", json!(["nowhere:x", 1])).await;
    assert!(r["error"]["code"].as_u64().is_some(), "{r}");
    let r = s.call("subscribe", json!([[1, 2]])).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    s.send("4abc").await;
    assert!(s.closed().await, "a malformed packet closes");

    let mut s = Sio::open(hub.addr).await;
    s.send("40/admin,").await;
    assert_eq!(Sio::text(&mut s.ws).await.unwrap(), "44/admin,{\"message\":\"Invalid namespace\"}");
    s.connect(json!({})).await.unwrap();
    s.send("40").await;
    assert!(s.closed().await, "a second CONNECT closes");

    let mut s = Sio::open(hub.addr).await;
    s.send("42[\"subscribe\",\"chat:x\"]").await;
    assert!(s.closed().await, "an event before CONNECT closes");
}

#[tokio::test]
async fn connect_takes_the_hubs_tokens() {
    let hub = start_with_tokens().await;
    let mut s = Sio::open(hub.addr).await;
    let err = s.connect(json!({ "token": "not a token" })).await.unwrap_err();
    assert!(err["data"]["code"].as_u64().is_some(), "{err}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    let t = token(json!({ "sub": "alice", "exp": now() + 60 }));
    let ok = s.connect(json!({ "token": t })).await.unwrap();
    assert_eq!(ok["user"], "alice");
    assert!(ok["expires"].as_u64().is_some());
}

/// A raw HTTP/1.1 request: status and body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str, extra: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        // One chunk is enough for these small answers.
        body.split_once("\r\n").map_or("", |(_, rest)| rest.split("\r\n").next().unwrap_or("")).to_owned()
    } else {
        body.to_owned()
    };
    (status, body)
}

#[tokio::test]
async fn polling_carries_the_same_protocol() {
    let hub = start_with(namespaces(), |_| {}).await;
    let (status, open) = http(hub.addr, "GET", "/socket.io/?EIO=4&transport=polling", "", "").await;
    assert_eq!(status, 200);
    let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(http(hub.addr, "POST", &path, "40{\"name\":\"poller\"}", "").await, (200, "ok".into()));
    let (_, answer) = http(hub.addr, "GET", &path, "", "").await;
    assert!(answer.starts_with("40{") && answer.contains("\"user\":\"poller\""), "{answer}");
    assert_eq!(http(hub.addr, "POST", &path, "427[\"subscribe\",\"chat:p\"]", "").await.0, 200);
    let (_, ack) = http(hub.addr, "GET", &path, "", "").await;
    assert!(ack.starts_with("437[{\"result\":{\"epoch\":"), "{ack}");
    let mut other = Client::connect(hub.addr, "other").await;
    other.ok("publish", json!({ "channel": "chat:p", "data": 5 })).await;
    let (_, publication) = http(hub.addr, "GET", &path, "", "").await;
    assert!(
        publication.starts_with("42[\"publication\",\"chat:p\",{\"offset\":1,\"data\":5"),
        "{publication}"
    );
}

#[tokio::test]
async fn engine_io_checks_answer_before_the_websocket_opens() {
    let hub = start_with(namespaces(), |_| {}).await;
    let addr = hub.addr;
    for query in ["EIO=3&transport=websocket", "EIO=4&transport=websocket&sid=nope"] {
        let e = tether::connect(&format!("ws://{addr}/socket.io/?{query}")).await.expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("400"), "{query}: {text}");
    }
    let (status, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling&sid=nope", "", "").await;
    assert_eq!((status, body.as_str()), (400, "{\"code\":1,\"message\":\"Session ID unknown\"}"));
}

#[tokio::test]
async fn sessions_over_the_limit_get_503_and_shutdown_closes_the_rest() {
    let mut hub = start_with(namespaces(), |o| o.socketio.engine.max_sessions = 1).await;
    let mut s = Sio::open(hub.addr).await;
    s.connect(json!({})).await.unwrap();
    let (status, _) = http(hub.addr, "GET", "/socket.io/?EIO=4&transport=polling", "", "").await;
    assert_eq!(status, 503);
    let (_, metrics) =
        http(hub.addr, "GET", "/metrics", "", &format!("Authorization: apikey {}\r\n", common::KEY)).await;
    assert!(metrics.contains("tether_socketio_sessions{prefix=\"/socket.io/\"} 1"), "{metrics}");
    let _ = hub.stop.take().unwrap().send(());
    assert!(s.closed().await, "shutdown closes Socket.IO sessions");
}

#[tokio::test]
async fn a_slow_subscriber_is_told_and_closed() {
    let mut hub_options = namespaces();
    hub_options.max_queued_bytes = 20_000;
    let hub = start_with(hub_options, |_| {}).await;
    // Over polling, nobody polls: everything queues.
    let (_, open) = http(hub.addr, "GET", "/socket.io/?EIO=4&transport=polling", "", "").await;
    let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    http(hub.addr, "POST", &path, "40", "").await;
    http(hub.addr, "POST", &path, "42[\"subscribe\",\"chat:slow\"]", "").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut publisher = Client::connect(hub.addr, "pub").await;
    for i in 0..40 {
        publisher
            .ok("publish", json!({ "channel": "chat:slow", "data": "x".repeat(1000) + &i.to_string() }))
            .await;
    }
    let (status, body) = http(hub.addr, "GET", &path, "", "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("42[\"closing\",{\"code\":4008"),
        "told why: {}",
        &body[body.len().saturating_sub(200)..]
    );
    assert!(body.ends_with('1'), "then closed");
    assert_eq!(http(hub.addr, "GET", &path, "", "").await.0, 400);
}

#[tokio::test]
async fn the_hubs_origin_policy_and_message_limit_apply() {
    let hub = start_with(namespaces(), |o| o.server.config.max_message_size = 2_000).await;
    let (status, open) = http(hub.addr, "GET", "/socket.io/?EIO=4&transport=polling", "", "").await;
    assert_eq!(status, 200);
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["maxPayload"], 2_000, "clients are told the hub's message limit");
    let (status, body) = http(
        hub.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "",
        "Origin: http://elsewhere.example\r\n",
    )
    .await;
    assert_eq!((status, body.trim()), (403, "Origin not allowed."), "another site's page");
    // The helper's Host is 127.0.0.1: the page's own origin passes.
    let same = "Origin: http://127.0.0.1\r\n";
    assert_eq!(http(hub.addr, "GET", "/socket.io/?EIO=4&transport=polling", "", same).await.0, 200);
}
