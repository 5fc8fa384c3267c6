//! What the hub's integration tests share: a server on a free port, a tether.json client,
//! server API calls and tokens.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether::{ClientConfig, Message};
use tether_hub::{Hub, HubOptions, NamespaceOptions, ServeOptions, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const KEY: &str = "test-api-key-0123456789";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    /// The admin listener's address, when the options set one.
    pub(crate) admin: Option<SocketAddr>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) done: tokio::task::JoinHandle<()>,
}

pub(crate) fn namespaces() -> HubOptions {
    let mut options = HubOptions::default();
    options.namespaces.insert("chat".into(), NamespaceOptions::chat());
    let small = NamespaceOptions { history_size: 3, ..NamespaceOptions::chat() };
    options.namespaces.insert("small".into(), small);
    let quick = NamespaceOptions { history_ttl: Duration::from_millis(100), ..NamespaceOptions::chat() };
    options.namespaces.insert("quick".into(), quick);
    let plain = NamespaceOptions { allow_anonymous: true, ..NamespaceOptions::default() };
    options.namespaces.insert("news".into(), plain);
    options
}

pub(crate) async fn start_with(hub_options: HubOptions, f: impl FnOnce(&mut ServeOptions)) -> Running {
    let mut options =
        ServeOptions { listen: "127.0.0.1:0".into(), api_key: Some(KEY.into()), ..Default::default() };
    f(&mut options);
    let hub = Arc::new(Hub::new(hub_options));
    let server = Server::bind(hub.clone(), options).await.unwrap();
    let addr = server.local_addr().unwrap();
    let admin = server.admin_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running { addr, admin, hub, stop: Some(tx), done }
}

pub(crate) async fn start() -> Running {
    start_with(namespaces(), |_| {}).await
}

/// A tether.json client: calls wait for their reply; pushes are kept in order.
pub(crate) struct Client {
    pub(crate) ws: tether::WebSocket,
    pub(crate) next: u64,
    pub(crate) pushes: VecDeque<Value>,
}

impl Client {
    pub(crate) async fn open(addr: SocketAddr) -> Self {
        let config = ClientConfig::default().with_protocol("tether.json").with_proxy(tether::Proxy::None);
        let (ws, resp) = tether::connect_with(&format!("ws://{addr}/ws"), &config).await.unwrap();
        assert_eq!(resp.protocol.as_deref(), Some("tether.json"));
        Self { ws, next: 1, pushes: VecDeque::new() }
    }

    pub(crate) async fn connect(addr: SocketAddr, name: &str) -> Self {
        let mut c = Self::open(addr).await;
        let r = c.call("connect", json!({ "name": name })).await;
        assert_eq!(r["result"]["user"], name);
        c
    }

    pub(crate) async fn recv(&mut self) -> Value {
        match tokio::time::timeout(WAIT, self.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Sends a command and returns the whole reply (`result` or `error`).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws.send(Message::text(json!({ "id": id, method: params }).to_string())).await.unwrap();
        loop {
            let v = self.recv().await;
            if v.get("push").is_some() {
                self.pushes.push_back(v["push"].clone());
            } else {
                assert_eq!(v["id"], id, "reply out of order: {v}");
                return v;
            }
        }
    }

    pub(crate) async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    pub(crate) async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        let v = self.recv().await;
        assert!(v.get("push").is_some(), "expected a push, got {v}");
        v["push"].clone()
    }

    /// Reads past other messages to the server's close frame: its code and reason.
    pub(crate) async fn closed(&mut self) -> Option<(u16, String)> {
        let read = async {
            while let Some(m) = self.ws.next().await {
                match m {
                    Ok(Message::Close(f)) => return f.map(|f| (f.code.0, f.reason.to_string())),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
            None
        };
        tokio::time::timeout(WAIT, read).await.unwrap()
    }

    pub(crate) async fn no_push(&mut self) {
        assert!(self.pushes.is_empty(), "unexpected push {:?}", self.pushes);
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(150), self.ws.next()).await {
            panic!("unexpected message {m:?}");
        }
    }
}

pub(crate) async fn api(addr: SocketAddr, method: &str, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.unwrap().unwrap();
    let status: u16 = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

pub(crate) const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

pub(crate) fn token(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub(crate) async fn start_with_tokens() -> Running {
    let public = include_bytes!("../keys/rsa-public.pem");
    let jwt = tether_hub::Jwt::new(Some(SECRET), Some(public)).unwrap();
    start_with(namespaces(), |o| o.auth = Arc::new(jwt)).await
}
