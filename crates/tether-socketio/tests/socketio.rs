//! Socket.IO v5 over the conformance fixture and a server of the test's own, rule by rule,
//! from the protocol's documentation (github.com/socketio/socket.io-protocol): CONNECT and
//! namespaces, events and acks, binary attachments, malformed packets, DISCONNECT, the
//! connect timeout, middleware, rooms, acks from the server.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tether::WebSocket;
use tether_socketio::{AckError, Args, Config, SocketIo, TestServer};

const WS: &str = "/socket.io/?EIO=4&transport=websocket";

async fn fixture() -> SocketAddr {
    let server = TestServer::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// A WebSocket session connected to the main namespace, the `auth` event read.
async fn connected(addr: SocketAddr) -> WebSocket {
    let mut s = ws(addr, WS).await;
    assert!(next(&mut s, 2).await.unwrap().starts_with('0'));
    send(&mut s, "40").await;
    assert!(next_data(&mut s, 2).await.unwrap().starts_with("40{\"sid\":"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("42[\"auth\",{}]"));
    s
}

#[tokio::test]
async fn connect_to_namespaces_with_and_without_auth() {
    let addr = fixture().await;
    for (connect, reply, auth) in [
        ("40", "40", "42[\"auth\",{}]"),
        ("40{\"token\":\"123\"}", "40", "42[\"auth\",{\"token\":\"123\"}]"),
        ("40/custom,", "40/custom,", "42/custom,[\"auth\",{}]"),
        ("40/custom,{\"token\":\"abc\"}", "40/custom,", "42/custom,[\"auth\",{\"token\":\"abc\"}]"),
    ] {
        let mut s = ws(addr, WS).await;
        next(&mut s, 2).await.unwrap();
        send(&mut s, connect).await;
        let got = next_data(&mut s, 2).await.unwrap();
        let handshake: serde_json::Value = serde_json::from_str(got.strip_prefix(reply).unwrap()).unwrap();
        assert_eq!(handshake.as_object().unwrap().keys().collect::<Vec<_>>(), ["sid"], "{connect}");
        assert_eq!(next_data(&mut s, 2).await.as_deref(), Some(auth), "{connect}");
    }
    let mut s = ws(addr, WS).await;
    next(&mut s, 2).await.unwrap();
    send(&mut s, "40/random").await;
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("44/random,{\"message\":\"Invalid namespace\"}"));
}

#[tokio::test]
async fn events_and_acks_with_and_without_attachments() {
    let addr = fixture().await;
    let mut s = connected(addr).await;
    send(&mut s, "42[\"message\",1,\"2\",{\"3\":[true],\"1\":null}]").await;
    assert_eq!(
        next_data(&mut s, 2).await.as_deref(),
        Some("42[\"message-back\",1,\"2\",{\"3\":[true],\"1\":null}]"),
        "key order kept"
    );
    send(&mut s, "42456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]").await;
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("43456[1,\"2\",{\"3\":[false]}]"));

    let placeholders = "{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}";
    send(&mut s, &format!("452-[\"message\",{placeholders}]")).await;
    futures_util::SinkExt::send(&mut s, tether::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    futures_util::SinkExt::send(&mut s, tether::Message::binary(vec![4u8, 5, 6])).await.unwrap();
    assert_eq!(next_data(&mut s, 2).await.unwrap(), format!("452-[\"message-back\",{placeholders}]"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("bin:010203"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("bin:040506"));

    send(&mut s, &format!("452-789[\"message-with-ack\",{placeholders}]")).await;
    futures_util::SinkExt::send(&mut s, tether::Message::binary(vec![1u8])).await.unwrap();
    futures_util::SinkExt::send(&mut s, tether::Message::binary(vec![2u8])).await.unwrap();
    assert_eq!(next_data(&mut s, 2).await.unwrap(), format!("462-789[{placeholders}]"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("bin:01"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("bin:02"));
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    let addr = fixture().await;
    for bad in [
        "4abc",
        "42{}",
        "42abc[\"message-with-ack\",1]",
        "42[]",
        "42[\"disconnect\"]",
        "4299999999999999999999[\"message\"]",
        "451-[\"message\",{\"_placeholder\":true,\"num\":3}]",
        "4511-[\"message\"]",
        "44{\"message\":\"only servers send this\"}",
        "40",
    ] {
        let mut s = connected(addr).await;
        send(&mut s, bad).await;
        assert!(closes(&mut s, 2).await, "{bad}");
    }
    // Binary with no packet awaiting it.
    let mut s = connected(addr).await;
    futures_util::SinkExt::send(&mut s, tether::Message::binary(vec![1u8])).await.unwrap();
    assert!(closes(&mut s, 2).await);
    // An event for a namespace not joined.
    let mut s = connected(addr).await;
    send(&mut s, "42/custom,[\"message\"]").await;
    assert!(closes(&mut s, 2).await);
}

#[tokio::test]
async fn disconnect_of_one_namespace_leaves_the_others() {
    let addr = fixture().await;
    let mut s = connected(addr).await;
    send(&mut s, "40/custom,").await;
    assert!(next_data(&mut s, 2).await.unwrap().starts_with("40/custom,"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("42/custom,[\"auth\",{}]"));
    send(&mut s, "41/custom,").await;
    send(&mut s, "42[\"message\",\"to main\"]").await;
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("42[\"message-back\",\"to main\"]"));
    send(&mut s, "41").await;
    // The Engine.IO session stays: the next thing is a ping, answered.
    assert_eq!(next(&mut s, 2).await.as_deref(), Some("2"));
    send(&mut s, "3").await;
    send(&mut s, "40").await;
    assert!(next_data(&mut s, 2).await.unwrap().starts_with("40{"), "and can join again");
}

#[tokio::test]
async fn no_connect_in_time_closes_the_connection() {
    let addr = fixture().await;
    let mut s = ws(addr, WS).await;
    assert!(next(&mut s, 2).await.unwrap().starts_with('0'));
    let started = tokio::time::Instant::now();
    loop {
        match next(&mut s, 3).await {
            Some(m) if m == "2" => send(&mut s, "3").await,
            Some(m) => panic!("unexpected {m}"),
            None => break,
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
}

/// A server with middleware, rooms and acks from the server, over polling and WebSocket.
async fn app() -> SocketAddr {
    let io = SocketIo::new(Config::default());
    let ns = io.ns("/", |socket| {
        socket.on("join", |socket, event| async move {
            socket.join(event.get::<String>(0).unwrap());
        });
        socket.on("shout", |socket, event| async move {
            let room: String = event.get(0).unwrap();
            let n = socket.to(room).emit("heard", &Args::one(socket.id()).unwrap());
            socket.emit("shouted", &Args::one(&n).unwrap());
        });
        socket.on("ask", |socket, _| async move {
            let answer = socket.emit_with_ack("q", &Args::new(), Duration::from_millis(300)).await;
            let text = match answer {
                Ok(args) => args.get::<String>(0).unwrap(),
                Err(AckError::Timeout) => "timeout".to_owned(),
                Err(e) => e.to_string(),
            };
            socket.emit("answer", &Args::one(&text).unwrap());
        });
    });
    ns.middleware(|h| async move {
        if h.auth.get().contains("\"ok\"") {
            Ok(())
        } else {
            Err("go away".to_owned())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tether_socketio::serve(listener, "/socket.io/", io, std::future::pending()));
    addr
}

async fn join_app(addr: SocketAddr) -> (WebSocket, String) {
    let mut s = ws(addr, WS).await;
    next(&mut s, 2).await.unwrap();
    send(&mut s, "40{\"t\":\"ok\"}").await;
    let reply = next_data(&mut s, 2).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    (s, v["sid"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn middleware_refuses_with_connect_error() {
    let addr = app().await;
    let mut s = ws(addr, WS).await;
    next(&mut s, 2).await.unwrap();
    send(&mut s, "40{\"t\":\"no\"}").await;
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("44{\"message\":\"go away\"}"));
    let (_s, sid) = join_app(addr).await;
    assert!(!sid.is_empty());
}

#[tokio::test]
async fn rooms_reach_their_members_but_not_the_sender() {
    let addr = app().await;
    let (mut a, a_id) = join_app(addr).await;
    let (mut b, _) = join_app(addr).await;
    let (mut c, _) = join_app(addr).await;
    send(&mut a, "42[\"join\",\"r\"]").await;
    send(&mut b, "42[\"join\",\"r\"]").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut a, "42[\"shout\",\"r\"]").await;
    assert_eq!(next_data(&mut a, 2).await.as_deref(), Some("42[\"shouted\",1]"));
    assert_eq!(next_data(&mut b, 2).await.unwrap(), format!("42[\"heard\",\"{a_id}\"]"));
    assert_eq!(next_data(&mut c, 1).await, None, "c is not in the room");
    // A socket is in the room of its own id.
    send(&mut b, &format!("42[\"shout\",\"{a_id}\"]")).await;
    assert_eq!(next_data(&mut b, 2).await.as_deref(), Some("42[\"shouted\",1]"));
    assert!(next_data(&mut a, 2).await.unwrap().starts_with("42[\"heard\""));
}

#[tokio::test]
async fn server_acks_are_answered_or_time_out() {
    let addr = app().await;
    let (mut s, _) = join_app(addr).await;
    send(&mut s, "42[\"ask\"]").await;
    let q = next_data(&mut s, 2).await.unwrap();
    let id = q.strip_prefix("42").unwrap().strip_suffix("[\"q\"]").unwrap();
    send(&mut s, &format!("43{id}[\"yes\"]")).await;
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("42[\"answer\",\"yes\"]"));
    send(&mut s, "42[\"ask\"]").await;
    assert!(next_data(&mut s, 2).await.unwrap().ends_with("[\"q\"]"));
    assert_eq!(next_data(&mut s, 2).await.as_deref(), Some("42[\"answer\",\"timeout\"]"));
}

#[tokio::test]
async fn socketio_over_polling() {
    let addr = app().await;
    let sid = open_polling(addr, "/socket.io/").await;
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(post(addr, &path, "40{\"t\":\"ok\"}").await.body, "ok");
    let reply = get(addr, &path).await.body;
    assert!(reply.starts_with("40{\"sid\":"), "{reply}");
    assert_eq!(post(addr, &path, "42[\"ask\"]").await.body, "ok");
    let q = get(addr, &path).await.body;
    let id = q.strip_prefix("42").unwrap().strip_suffix("[\"q\"]").unwrap().to_owned();
    assert_eq!(post(addr, &path, &format!("43{id}[\"by poll\"]")).await.body, "ok");
    assert_eq!(get(addr, &path).await.body, "42[\"answer\",\"by poll\"]");
}

/// A server with recovery kept for `keep`: `join(room)`, `tell(room, text)` to the whole room.
async fn recovering(keep: Duration, max_packets: usize) -> SocketAddr {
    let mut recovery = tether_socketio::Recovery::default();
    recovery.max_disconnection_duration = keep;
    recovery.max_packets = max_packets;
    let mut config = Config::default();
    config.recovery = Some(recovery);
    let io = SocketIo::new(config);
    io.ns("/", |socket| {
        let recovered = socket.recovered();
        socket.emit("hello", &Args::one(&recovered).unwrap());
        socket.on("join", |socket, event| async move { socket.join(event.get::<String>(0).unwrap()) });
        socket.on("tell", |socket, event| async move {
            let (room, text): (String, String) = (event.get(0).unwrap(), event.get(1).unwrap());
            socket.namespace().to(room).emit("told", &Args::one(&text).unwrap());
        });
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tether_socketio::serve(listener, "/socket.io/", io, std::future::pending()));
    addr
}

/// Connects with `auth`: the socket, its sid and pid, and the `hello` it got.
async fn join_with(addr: SocketAddr, auth: &str) -> (WebSocket, String, String, String) {
    let mut s = ws(addr, WS).await;
    next(&mut s, 2).await.unwrap();
    send(&mut s, &format!("40{auth}")).await;
    let reply = next_data(&mut s, 2).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(reply.strip_prefix("40").unwrap()).unwrap();
    let hello = next_data(&mut s, 2).await.unwrap();
    (s, v["sid"].as_str().unwrap().to_owned(), v["pid"].as_str().unwrap().to_owned(), hello)
}

/// The offset a broadcast carries last.
fn offset(packet: &str) -> String {
    let args: Vec<serde_json::Value> = serde_json::from_str(packet.strip_prefix("42").unwrap()).unwrap();
    args.last().unwrap().as_str().unwrap().to_owned()
}

#[tokio::test]
async fn recovery_restores_the_id_the_rooms_and_the_missed_broadcasts() {
    let addr = recovering(Duration::from_secs(60), 100).await;
    let (mut a, a_sid, a_pid, hello) = join_with(addr, "").await;
    assert_eq!(hello, "42[\"hello\",false]");
    let (mut b, ..) = join_with(addr, "").await;
    send(&mut a, "42[\"join\",\"r\"]").await;
    send(&mut b, "42[\"join\",\"r\"]").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut b, "42[\"tell\",\"r\",\"one\"]").await;
    let one = next_data(&mut a, 2).await.unwrap();
    assert!(one.starts_with("42[\"told\",\"one\",\""), "{one}");
    let last = offset(&one);
    drop(a); // the transport is lost
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut b, "42[\"tell\",\"r\",\"two\"]").await;
    send(&mut b, "42[\"tell\",\"elsewhere\",\"not for a\"]").await;
    send(&mut b, "42[\"tell\",\"r\",\"three\"]").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (mut a, sid, pid, first) =
        join_with(addr, &format!("{{\"pid\":\"{a_pid}\",\"offset\":\"{last}\"}}")).await;
    assert_eq!((sid.as_str(), pid.as_str()), (a_sid.as_str(), a_pid.as_str()), "the same ids");
    // The replay comes before the handler's hello.
    let mut got = vec![first];
    while got.len() < 3 {
        got.push(next_data(&mut a, 2).await.unwrap());
    }
    assert!(got[0].starts_with("42[\"told\",\"two\","), "{got:?}");
    assert!(got[1].starts_with("42[\"told\",\"three\","), "{got:?}");
    assert_eq!(got[2], "42[\"hello\",true]");
    send(&mut b, "42[\"tell\",\"r\",\"four\"]").await;
    assert!(next_data(&mut a, 2).await.unwrap().starts_with("42[\"told\",\"four\","), "the room was kept");

    // Once recovered, the pid cannot be used again from the same offset.
    drop(a);
    let (_, sid2, ..) = join_with(addr, &format!("{{\"pid\":\"{a_pid}\",\"offset\":\"nope\"}}")).await;
    assert_ne!(sid2, a_sid, "an unknown offset: a new socket");
}

#[tokio::test]
async fn recovery_ends_after_the_disconnection_duration_and_the_packet_bound() {
    let addr = recovering(Duration::from_millis(200), 100).await;
    let (mut a, a_sid, a_pid, _) = join_with(addr, "").await;
    send(&mut a, "42[\"join\",\"r\"]").await;
    send(&mut a, "42[\"tell\",\"r\",\"x\"]").await;
    let last = offset(&next_data(&mut a, 2).await.unwrap());
    drop(a);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, sid, ..) = join_with(addr, &format!("{{\"pid\":\"{a_pid}\",\"offset\":\"{last}\"}}")).await;
    assert_ne!(sid, a_sid, "too late");

    let addr = recovering(Duration::from_secs(60), 2).await;
    let (mut a, a_sid, a_pid, _) = join_with(addr, "").await;
    send(&mut a, "42[\"join\",\"r\"]").await;
    send(&mut a, "42[\"tell\",\"r\",\"x\"]").await;
    let last = offset(&next_data(&mut a, 2).await.unwrap());
    drop(a);
    let (mut b, ..) = join_with(addr, "").await;
    for _ in 0..3 {
        send(&mut b, "42[\"tell\",\"r\",\"y\"]").await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, sid, ..) = join_with(addr, &format!("{{\"pid\":\"{a_pid}\",\"offset\":\"{last}\"}}")).await;
    assert_ne!(sid, a_sid, "its offset left the log (max_packets 2)");
}
