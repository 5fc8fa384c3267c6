//! The hub over real WebSocket connections: the JSON protocol, history and recovery, epoch
//! change, presence and join/leave, slow consumers, limits, origins and the server API.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tether::{ClientConfig, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

#[tokio::test]
async fn publish_reaches_subscribers_with_offsets_and_publisher_info() {
    let hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    let mut b = Client::connect(hub.addr, "bob").await;
    let sub = a.ok("subscribe", json!({"channel": "chat:lobby"})).await;
    assert_eq!(sub["offset"], 0);
    b.ok("subscribe", json!({"channel": "chat:lobby"})).await;
    assert_eq!(a.push().await["join"]["user"], "bob");
    let r = b.ok("publish", json!({"channel": "chat:lobby", "data": {"text": "hi", "n": [1, 2]}})).await;
    assert_eq!(r["offset"], 1);
    for c in [&mut a, &mut b] {
        let p = c.push().await;
        assert_eq!(p["channel"], "chat:lobby");
        assert_eq!(
            p["pub"],
            json!({"offset": 1, "data": {"text": "hi", "n": [1, 2]}, "info": {"client": p["pub"]["info"]["client"], "user": "bob", "anonymous": true}})
        );
    }
    // A publish through the server API reaches them the same way, without publisher info.
    let (status, body) =
        api(hub.addr, "publish", json!({"channel": "chat:lobby", "data": "from api"}), Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["offset"], 2);
    for c in [&mut a, &mut b] {
        assert_eq!(c.push().await["pub"], json!({"offset": 2, "data": "from api"}));
    }
    assert_eq!(hub.hub.metrics.published.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[tokio::test]
async fn recovery_returns_missed_publications_or_says_it_cannot() {
    let hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    let first = a.ok("subscribe", json!({"channel": "chat:r"})).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    a.ok("publish", json!({"channel": "chat:r", "data": 1})).await;
    a.push().await;
    // A second client stays to keep the channel; the first goes away at offset 1.
    let mut keeper = Client::connect(hub.addr, "keeper").await;
    keeper.ok("subscribe", json!({"channel": "chat:r"})).await;
    drop(a);
    for n in 2..=4 {
        let (status, _) = api(hub.addr, "publish", json!({"channel": "chat:r", "data": n}), Some(KEY)).await;
        assert_eq!(status, 200);
    }
    let mut back = Client::connect(hub.addr, "ann").await;
    let r =
        back.ok("subscribe", json!({"channel": "chat:r", "recover": {"offset": 1, "epoch": epoch}})).await;
    assert_eq!(r["recovered"], true);
    assert_eq!(r["offset"], 4);
    let offsets: Vec<u64> =
        r["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(r["publications"][2]["data"], 4);
    // Up to date: recovered, nothing missed.
    let mut other = Client::connect(hub.addr, "x").await;
    let r =
        other.ok("subscribe", json!({"channel": "chat:r", "recover": {"offset": 4, "epoch": epoch}})).await;
    assert_eq!((r["recovered"].clone(), r["publications"].clone()), (json!(true), json!([])));
    // A wrong epoch: cannot recover.
    let mut other = Client::connect(hub.addr, "y").await;
    let r =
        other.ok("subscribe", json!({"channel": "chat:r", "recover": {"offset": 1, "epoch": "other"}})).await;
    assert_eq!(r["recovered"], false);
    assert_eq!(r["epoch"], epoch);
}

#[tokio::test]
async fn trimmed_history_cannot_be_recovered() {
    let hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    let sub = a.ok("subscribe", json!({"channel": "small:t"})).await;
    let epoch = sub["epoch"].clone();
    for n in 1..=5 {
        a.ok("publish", json!({"channel": "small:t", "data": n})).await;
    }
    // history_size 3 keeps offsets 3..=5: from offset 2 (needs 3..) recovery works, from 1 it does not.
    let mut b = Client::connect(hub.addr, "bob").await;
    let r = b.ok("subscribe", json!({"channel": "small:t", "recover": {"offset": 2, "epoch": epoch}})).await;
    assert_eq!(r["recovered"], true);
    assert_eq!(r["publications"].as_array().unwrap().len(), 3);
    let mut c = Client::connect(hub.addr, "cy").await;
    let r = c.ok("subscribe", json!({"channel": "small:t", "recover": {"offset": 1, "epoch": epoch}})).await;
    assert_eq!((r["recovered"].clone(), r["publications"].clone()), (json!(false), json!([])));
    let h = c.ok("history", json!({"channel": "small:t", "limit": 2})).await;
    let offsets: Vec<u64> =
        h["publications"].as_array().unwrap().iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [4, 5]);
}

#[tokio::test]
async fn epoch_changes_when_a_channel_ends_and_ttl_expires_history() {
    let hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    let first = a.ok("subscribe", json!({"channel": "quick:e"})).await;
    a.ok("publish", json!({"channel": "quick:e", "data": "x"})).await;
    a.ok("unsubscribe", json!({"channel": "quick:e"})).await;
    // History outlives the subscribers until its TTL (100 ms); then the channel is gone.
    tokio::time::sleep(Duration::from_millis(250)).await;
    hub.hub.sweep();
    let second = a
        .ok("subscribe", json!({"channel": "quick:e", "recover": {"offset": 1, "epoch": first["epoch"]}}))
        .await;
    assert_ne!(second["epoch"], first["epoch"]);
    assert_eq!(second["recovered"], false);
    assert_eq!(second["offset"], 0);
}

#[tokio::test]
async fn presence_and_join_leave() {
    let hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    a.ok("subscribe", json!({"channel": "chat:p"})).await;
    let mut b = Client::connect(hub.addr, "bob").await;
    b.ok("subscribe", json!({"channel": "chat:p"})).await;
    assert_eq!(a.push().await["join"]["user"], "bob");
    let p = a.ok("presence", json!({"channel": "chat:p"})).await;
    let users: Vec<&str> =
        p["clients"].as_array().unwrap().iter().map(|c| c["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["ann", "bob"]);
    let (_, api_presence) = api(hub.addr, "presence", json!({"channel": "chat:p"}), Some(KEY)).await;
    assert_eq!(api_presence["result"]["clients"].as_array().unwrap().len(), 2);
    b.ok("unsubscribe", json!({"channel": "chat:p"})).await;
    assert_eq!(a.push().await["leave"]["user"], "bob");
    b.ok("subscribe", json!({"channel": "chat:p"})).await;
    assert_eq!(a.push().await["join"]["user"], "bob");
    drop(b); // a disconnect is a leave too
    assert_eq!(a.push().await["leave"]["user"], "bob");
    // Without presence in the namespace: an error, and no join/leave.
    let mut c = Client::connect(hub.addr, "cy").await;
    c.ok("subscribe", json!({"channel": "news:n"})).await;
    let r = c.call("presence", json!({"channel": "news:n"})).await;
    assert_eq!(r["error"]["code"], 108);
}

#[tokio::test]
async fn errors_have_codes_and_keep_the_connection() {
    let hub = start().await;
    let mut a = Client::open(hub.addr).await;
    assert_eq!(a.call("subscribe", json!({"channel": "chat:x"})).await["error"]["code"], 101);
    a.ok("connect", json!({"name": "ann"})).await;
    assert_eq!(a.call("connect", json!({})).await["error"]["code"], 111);
    assert_eq!(a.call("subscribe", json!({"channel": "nope:x"})).await["error"]["code"], 102);
    assert_eq!(a.call("subscribe", json!({"channel": "plain"})).await["error"]["code"], 103, "anonymous");
    assert_eq!(a.call("publish", json!({"channel": "news:x", "data": 1})).await["error"]["code"], 103);
    a.ok("subscribe", json!({"channel": "chat:x"})).await;
    assert_eq!(a.call("subscribe", json!({"channel": "chat:x"})).await["error"]["code"], 105);
    assert_eq!(a.call("unsubscribe", json!({"channel": "chat:y"})).await["error"]["code"], 110);
    assert_eq!(a.call("history", json!({"channel": "chat:y"})).await["error"]["code"], 110);
    assert_eq!(a.call("frobnicate", json!({})).await["error"]["code"], 104);
    assert_eq!(a.call("subscribe", json!({"chanel": "x"})).await["error"]["code"], 107);
    a.ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(a.recv().await["error"]["code"], 107);
    a.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(a.recv().await["error"]["code"], 107);
    // Still connected and working.
    assert_eq!(a.ok("ping", json!({})).await, json!({}));
    a.ok("publish", json!({"channel": "chat:x", "data": "still here"})).await;
    assert_eq!(a.push().await["pub"]["data"], "still here");
}

#[tokio::test]
async fn slow_consumers_are_disconnected_with_4008() {
    let mut options = namespaces();
    options.max_queued_bytes = 64 * 1024;
    let hub = start_with(options, |_| {}).await;
    let mut fast = Client::connect(hub.addr, "fast").await;
    fast.ok("subscribe", json!({"channel": "chat:flood"})).await;
    // The slow one subscribes, then never reads again.
    let mut slow = Client::connect(hub.addr, "slow").await;
    slow.ok("subscribe", json!({"channel": "chat:flood"})).await;
    fast.push().await; // slow's join
    let big = "x".repeat(16 * 1024);
    let mut seen = 0;
    for _ in 0..400 {
        let (status, _) =
            api(hub.addr, "publish", json!({"channel": "chat:flood", "data": big}), Some(KEY)).await;
        assert_eq!(status, 200);
        // The fast one keeps up.
        while fast.push().await.get("pub").is_none() {}
        seen += 1;
        if hub.hub.metrics.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
    }
    assert_eq!(
        hub.hub.metrics.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "after {seen}"
    );
    // Presence no longer lists the slow one; the slow one finds a 4008 close when it reads.
    let p = fast.ok("presence", json!({"channel": "chat:flood"})).await;
    assert_eq!(p["clients"].as_array().unwrap().len(), 1);
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = slow.ws.next().await {
            if let Ok(Message::Close(frame)) = m {
                return frame;
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("a close frame");
    assert_eq!((close.code.0, close.reason.as_str()), (4008, "slow consumer"));
}

#[tokio::test]
async fn a_stalled_subscriber_among_fast_ones_is_closed_and_the_others_get_everything() {
    let mut options = namespaces();
    options.max_queued_bytes = 64 * 1024;
    let hub = start_with(options, |_| {}).await;
    // The stalled one subscribes first, then never reads again.
    let mut stalled = Client::connect(hub.addr, "stalled").await;
    stalled.ok("subscribe", json!({"channel": "chat:fan"})).await;
    // Five fast ones, each reading every publication in a task of its own; they stop at
    // the publication "end" and hand back the offsets and data they saw.
    let mut fast = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect(hub.addr, &format!("fast{i}")).await;
        c.ok("subscribe", json!({"channel": "chat:fan"})).await;
        fast.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let p = c.push().await;
                let Some(publication) = p.get("pub") else { continue }; // joins
                let data = publication["data"].as_str().unwrap().to_owned();
                if data == "end" {
                    return seen;
                }
                seen.push((publication["offset"].as_u64().unwrap(), data));
            }
        }));
    }
    // Publish without waiting for anyone until the stalled one is let go, then 20 more.
    let slow = || hub.hub.metrics.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed);
    let mut sent = Vec::new();
    let mut after = 0;
    while after < 20 {
        assert!(sent.len() < 2000, "the stalled subscriber was never disconnected");
        let data = format!("{}:{}", sent.len(), "x".repeat(16 * 1024));
        let (status, _) =
            api(hub.addr, "publish", json!({"channel": "chat:fan", "data": data}), Some(KEY)).await;
        assert_eq!(status, 200);
        sent.push(data);
        if slow() > 0 {
            after += 1;
        }
    }
    api(hub.addr, "publish", json!({"channel": "chat:fan", "data": "end"}), Some(KEY)).await;
    assert_eq!(slow(), 1, "only the stalled one is too slow");
    // Every fast subscriber got every publication, in order, with contiguous offsets.
    for f in fast {
        let seen = tokio::time::timeout(Duration::from_secs(30), f).await.unwrap().unwrap();
        let data: Vec<&String> = seen.iter().map(|(_, d)| d).collect();
        assert_eq!(data, sent.iter().collect::<Vec<_>>());
        assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1), "offsets not contiguous");
    }
    // The stalled one finds 4008 when it reads at last.
    assert_eq!(stalled.closed().await, Some((4008, "slow consumer".to_owned())));
}

/// A burst published while the fan-out has not run goes out as one batch, each WebSocket
/// subscriber taking all of it under one lock of its connection: a channel with more
/// subscribers than the hub delivers to one event at a time (64), and a stalled one among
/// them, whose socket has a small receive buffer so that its queue passes the limit soon.
#[tokio::test]
async fn a_burst_to_many_subscribers_arrives_whole_and_in_order_and_a_stalled_one_is_closed() {
    let mut options = namespaces();
    options.max_queued_bytes = 64 * 1024;
    let hub = start_with(options, |_| {}).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let url = tether::Url::parse(&format!("ws://{}/ws", hub.addr)).unwrap();
    let config = ClientConfig::default().with_protocol("tether.json");
    let (ws, _) = tether::client_handshake(stream, &url, &config).await.unwrap();
    let mut stalled = Client { ws, next: 1, pushes: Default::default() };
    stalled.ok("connect", json!({"name": "stalled"})).await;
    stalled.ok("subscribe", json!({"channel": "chat:many"})).await;
    let mut clients = Vec::new();
    for i in 0..65 {
        let mut c = Client::connect(hub.addr, &format!("c{i}")).await;
        c.ok("subscribe", json!({"channel": "chat:many"})).await;
        clients.push(c);
    }
    let slow = || hub.hub.metrics.slow_disconnects.load(std::sync::atomic::Ordering::Relaxed);
    // Bursts of 20 publications of 2 KiB (40 KiB, under the limit), each published without
    // a pause (the memory broker never waits), so the fan-out takes each burst at once;
    // the fast ones read each burst before the next, the stalled one never reads.
    let data = "x".repeat(2048);
    let mut offset = 0;
    let mut bursts = 0;
    while slow() == 0 {
        assert!(bursts < 500, "the stalled subscriber was never disconnected");
        let first = offset + 1;
        for i in 0..20 {
            let body = Bytes::from(format!("\"{}:{data}\"", bursts * 20 + i));
            offset = hub.hub.publish("chat:many", body, None).await.unwrap().offset;
        }
        for c in &mut clients {
            let mut want = first;
            while want <= offset {
                let p = c.push().await;
                let Some(publication) = p.get("pub") else { continue }; // joins
                assert_eq!(publication["offset"], want);
                let expected = format!("{}:{data}", bursts * 20 + (want - first) as usize);
                assert_eq!(publication["data"].as_str(), Some(expected.as_str()));
                want += 1;
            }
        }
        bursts += 1;
    }
    assert_eq!(slow(), 1, "only the stalled one is too slow");
    assert_eq!(stalled.closed().await, Some((4008, "slow consumer".to_owned())));
}

#[tokio::test]
async fn deflate_subscribers_get_each_publication_compressed_once_and_others_plain() {
    let mut options = namespaces();
    let open_ns =
        tether_hub::NamespaceOptions { allow_publish: true, allow_anonymous: true, ..Default::default() };
    options.namespaces.insert("z".into(), open_ns);
    let hub = start_with(options, |o| {
        o.server.config = o.server.config.clone().with_deflate(Some(tether_hub::http::deflate()));
    })
    .await;
    // Two clients that offer permessage-deflate (as browsers do) and one that does not.
    let open = |deflate: bool| async move {
        let config =
            ClientConfig::default().with_protocol("tether.json").with_proxy(tether::Proxy::None).with_config(
                tether::Config::default().with_deflate(deflate.then(tether::DeflateConfig::default)),
            );
        let (ws, resp) = tether::connect_with(&format!("ws://{}/ws", hub.addr), &config).await.unwrap();
        let answer = resp.headers.get("sec-websocket-extensions").map(|v| v.to_str().unwrap().to_owned());
        (Client { ws, next: 1, pushes: Default::default() }, answer)
    };
    let mut clients = Vec::new();
    for (name, deflate) in [("ann", true), ("bob", true), ("cat", false)] {
        let (mut c, answer) = open(deflate).await;
        let expected = deflate
            .then(|| "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_owned());
        assert_eq!(answer, expected);
        c.ok("connect", json!({"name": name})).await;
        c.ok("subscribe", json!({"channel": "z:z"})).await;
        clients.push(c);
    }
    let received = |c: &Client| c.ws.stats();
    let before: Vec<_> = clients.iter().map(received).collect();
    // A large publication from the server API, and one from a deflate client, which it
    // sends compressed.
    let text = "the quick brown fox jumps over the lazy dog; ".repeat(100);
    let (status, _) = api(hub.addr, "publish", json!({"channel": "z:z", "data": text}), Some(KEY)).await;
    assert_eq!(status, 200);
    clients[0].ok("publish", json!({"channel": "z:z", "data": {"echo": text}})).await;
    for c in &mut clients {
        let mut got = Vec::new();
        while got.len() < 2 {
            let p = c.push().await;
            if let Some(publication) = p.get("pub") {
                got.push(publication["data"].clone());
            }
        }
        assert_eq!(got, [json!(text), json!({"echo": text})]);
    }
    assert_eq!(clients[0].ws.stats().compressed_sent, 1, "the publish went compressed");
    let wire: Vec<u64> =
        clients.iter().zip(&before).map(|(c, b)| received(c).bytes_received - b.bytes_received).collect();
    let compressed: Vec<u64> = clients
        .iter()
        .zip(&before)
        .map(|(c, b)| received(c).compressed_received - b.compressed_received)
        .collect();
    // ann also got its (short, uncompressed) publish reply.
    assert_eq!(compressed, [2, 2, 0], "{wire:?}");
    assert!(wire[1] * 10 < wire[2], "compressed {} bytes against {} plain", wire[1], wire[2]);
}

#[tokio::test]
async fn limits_channels_message_size_and_per_ip() {
    let mut options = namespaces();
    options.max_channels_per_connection = 2;
    let hub = start_with(options, |o| {
        o.max_connections_per_ip = 3;
        o.server.config = tether::Config::default().with_max_message_size(1024).with_max_frame_size(1024);
    })
    .await;
    let mut a = Client::connect(hub.addr, "ann").await;
    a.ok("subscribe", json!({"channel": "chat:1"})).await;
    a.ok("subscribe", json!({"channel": "chat:2"})).await;
    assert_eq!(a.call("subscribe", json!({"channel": "chat:3"})).await["error"]["code"], 106);
    let b = Client::connect(hub.addr, "b").await;
    let _c = Client::connect(hub.addr, "c").await;
    let config = ClientConfig::default().with_protocol("tether.json").with_proxy(tether::Proxy::None);
    let url = format!("ws://{}/ws", hub.addr);
    let err = tether::connect_with(&url, &config).await.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
    // A connection that ends gives its place back (its session holds it).
    drop(b);
    let mut again = None;
    for _ in 0..100 {
        match tether::connect_with(&url, &config).await {
            Ok(ws) => {
                again = Some(ws);
                break;
            }
            Err(e) => assert!(e.to_string().contains("503"), "{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the place of a closed connection was not given back");
    // A message over the limit closes the connection with 1009.
    a.ws.send(Message::text(format!("{{\"id\":9,\"ping\":{{}},\"pad\":\"{}\"}}", "x".repeat(2000))))
        .await
        .unwrap();
    let closed = a.closed().await.map(|(code, _)| code);
    assert_eq!(closed, Some(1009));
}

#[tokio::test]
async fn origins_are_checked_against_the_host_by_default() {
    let hub = start().await;
    let url = format!("ws://{}/ws", hub.addr);
    let other = ClientConfig::default().with_origin("http://evil.example").with_proxy(tether::Proxy::None);
    let err = tether::connect_with(&url, &other).await.unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
    let same =
        ClientConfig::default().with_origin(format!("http://{}", hub.addr)).with_proxy(tether::Proxy::None);
    assert!(tether::connect_with(&url, &same).await.is_ok());
}

#[tokio::test]
async fn server_api_auth_and_methods() {
    let hub = start().await;
    let body = json!({"channel": "chat:api", "data": 1});
    assert_eq!(api(hub.addr, "publish", body.clone(), None).await.0, 401);
    assert_eq!(api(hub.addr, "publish", body.clone(), Some("wrong-key-wrong-key")).await.0, 401);
    let (status, r) = api(hub.addr, "publish", json!({"channel": "nope:x", "data": 1}), Some(KEY)).await;
    assert_eq!((status, r["error"].as_str().unwrap()), (404, "unknown channel"));
    assert_eq!(api(hub.addr, "publish", json!({"channel": 5}), Some(KEY)).await.0, 400);
    let mut a = Client::connect(hub.addr, "ann").await;
    a.ok("subscribe", json!({"channel": "chat:api"})).await;
    let (_, r) = api(
        hub.addr,
        "broadcast",
        json!({"channels": ["chat:api", "chat:other", "nope:x"], "data": "b"}),
        Some(KEY),
    )
    .await;
    assert_eq!(r["result"]["responses"][0]["result"]["offset"], 1);
    assert_eq!(r["result"]["responses"][2]["error"], "unknown channel");
    assert_eq!(a.push().await["pub"]["data"], "b");
    let (_, r) = api(hub.addr, "channels", json!({}), Some(KEY)).await;
    assert!(r["result"]["channels"]
        .as_array()
        .unwrap()
        .contains(&json!({"channel": "chat:api", "subscribers": 1})));
    let (_, r) = api(hub.addr, "history", json!({"channel": "chat:api"}), Some(KEY)).await;
    assert_eq!(r["result"]["publications"][0]["data"], "b");
    // `ann` connected anonymously: she is not the user "ann", whom the server API names.
    let (_, r) = api(hub.addr, "disconnect", json!({"user": "ann"}), Some(KEY)).await;
    assert_eq!(r["result"]["disconnected"], 0);
    a.ok("presence", json!({"channel": "chat:api"})).await;
}

#[tokio::test]
async fn anonymous_names_never_pass_for_users() {
    let hub = start_with_tokens().await;
    let mut guest = Client::connect(hub.addr, "ann").await;
    let mut user = Client::open(hub.addr).await;
    let r = user.ok("connect", json!({"token": token(json!({"sub": "ann"}))})).await;
    assert_eq!((r["user"].clone(), r.get("anonymous")), (json!("ann"), None));
    guest.ok("subscribe", json!({"channel": "chat:who"})).await;
    user.ok("subscribe", json!({"channel": "chat:who"})).await;
    // The guest is marked in join events, presence (client and server API) and publications.
    let join = guest.push().await;
    assert_eq!((join["join"]["user"].clone(), join["join"].get("anonymous")), (json!("ann"), None));
    let mut marks: Vec<(String, bool)> = guest.ok("presence", json!({"channel": "chat:who"})).await
        ["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["user"].as_str().unwrap().to_owned(), c["anonymous"] == json!(true)))
        .collect();
    marks.sort();
    assert_eq!(marks, [("ann".to_owned(), false), ("ann".to_owned(), true)]);
    let (_, r) = api(hub.addr, "presence", json!({"channel": "chat:who"}), Some(KEY)).await;
    let anonymous =
        r["result"]["clients"].as_array().unwrap().iter().filter(|c| c["anonymous"] == true).count();
    assert_eq!(anonymous, 1, "{r}");
    guest.ok("publish", json!({"channel": "chat:who", "data": "hi"})).await;
    let p = user.push().await;
    assert_eq!(
        (p["pub"]["info"]["user"].clone(), p["pub"]["info"]["anonymous"].clone()),
        (json!("ann"), json!(true))
    );
    // An anonymous connection cannot take over the user's identity by refreshing.
    let r = guest.call("refresh", json!({"token": token(json!({"sub": "ann"}))})).await;
    assert_eq!(r["error"]["code"], 101, "{r}");
    // Disconnecting the user "ann" leaves the guest who chose that name.
    let (_, r) = api(hub.addr, "disconnect", json!({"user": "ann"}), Some(KEY)).await;
    assert_eq!(r["result"]["disconnected"], 1);
    assert_eq!(user.closed().await.map(|(code, _)| code), Some(4010));
    guest.ok("presence", json!({"channel": "chat:who"})).await;
}

#[tokio::test]
async fn health_metrics_and_page() {
    let hub = start_with(namespaces(), |o| o.demo_page = true).await;
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/healthz").await.ends_with("\r\n\r\nok\n"));
    let page = get("/").await;
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    assert!(page.starts_with("HTTP/1.0 200") && page.contains("<script src=\"/app.js\">"), "{page}");
    assert!(get("/app.js").await.contains("tether.json"));
    // Without the demo page (the default), `/` says where the endpoints are.
    let plain = start().await;
    let mut s = tokio::net::TcpStream::connect(plain.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.0 404") && page.contains("served with --demo"), "{page}");
    let mut a = Client::connect(hub.addr, "ann").await;
    a.ok("subscribe", json!({"channel": "chat:m"})).await;
    let metrics = get("/metrics").await;
    for line in [
        "tether_connections 1",
        "tether_subscriptions 1",
        "tether_namespace_subscriptions{namespace=\"chat\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("tether_bytes_in_total") > 40);
    assert!(value("tether_bytes_out_total") > 80, "the connect and subscribe replies");
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001() {
    let mut hub = start().await;
    let mut a = Client::connect(hub.addr, "ann").await;
    a.ok("subscribe", json!({"channel": "chat:s"})).await;
    let _ = hub.stop.take().unwrap().send(());
    let code = a.closed().await;
    assert_eq!(code, Some((1001, "server shutting down".to_owned())));
    tokio::time::timeout(WAIT, &mut hub.done).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err(), "still accepting after shutdown");
}

#[tokio::test]
async fn every_subscriber_gets_each_publication_once() {
    let hub = start().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = Client::connect(hub.addr, &format!("u{i}")).await;
        c.ok("subscribe", json!({"channel": "news:e"})).await;
        clients.push(c);
    }
    api(hub.addr, "publish", json!({"channel": "news:e", "data": {"k": "v"}}), Some(KEY)).await;
    for c in &mut clients {
        assert_eq!(c.push().await, json!({"channel": "news:e", "pub": {"offset": 1, "data": {"k": "v"}}}));
        c.no_push().await;
    }
}

#[tokio::test]
async fn max_connections_and_channel_name_length() {
    let hub = start_with(namespaces(), |o| o.server.max_connections = 2).await;
    let mut a = Client::connect(hub.addr, "a").await;
    let _b = Client::connect(hub.addr, "b").await;
    let config = ClientConfig::default().with_protocol("tether.json").with_proxy(tether::Proxy::None);
    let err = tether::connect_with(&format!("ws://{}/ws", hub.addr), &config).await.unwrap_err();
    assert!(matches!(&err, tether::Error::Handshake(e) if e.to_string().contains("503")), "{err}");
    let metrics = hub.hub.metrics.render(&[]);
    assert!(metrics.contains("tether_connections_refused_total 1\n"), "{metrics}");
    let long = format!("chat:{}", "x".repeat(251));
    assert_eq!(a.call("subscribe", json!({"channel": long})).await["error"]["code"], 102);
    a.ok("subscribe", json!({"channel": &long[..255]})).await;
}

#[tokio::test]
async fn tokens_name_the_user_and_limit_channels() {
    let hub = start_with_tokens().await;
    let mut a = Client::open(hub.addr).await;
    let t = token(json!({"sub": "alice", "exp": now() + 600, "channels": ["news:a"]}));
    let r = a.ok("connect", json!({"token": t})).await;
    assert_eq!(r["user"], "alice");
    assert_eq!(r["expires"], now_plus(&r, 600));
    assert_eq!(a.call("subscribe", json!({"channel": "news:b"})).await["error"]["code"], 103);
    a.ok("subscribe", json!({"channel": "news:a"})).await;
    // news allows anonymous subscribers only; a token holder needs no such permission.
    let mut anon = Client::connect(hub.addr, "anon").await;
    anon.ok("subscribe", json!({"channel": "news:b"})).await;
    // RS256 from the issuer's key pair; no exp: does not expire.
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("keys/rsa-private.pem")).unwrap();
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "rob"}),
        &key,
    )
    .unwrap();
    let mut b = Client::open(hub.addr).await;
    let r = b.ok("connect", json!({"token": t})).await;
    assert_eq!(r["user"], "rob");
    assert!(r.get("expires").is_none());
}

fn now_plus(reply: &Value, secs: u64) -> Value {
    // The expiry we put in, whichever second the token was made in.
    let e = reply["expires"].as_u64().unwrap();
    assert!((now() + secs - 2..=now() + secs).contains(&e), "{e}");
    json!(e)
}

#[tokio::test]
async fn bad_and_expired_tokens_are_refused_with_distinct_codes() {
    let hub = start_with_tokens().await;
    let mut a = Client::open(hub.addr).await;
    let expired = token(json!({"sub": "alice", "exp": now() - 10}));
    let r = a.call("connect", json!({"token": expired})).await;
    assert_eq!(
        (r["error"]["code"].clone(), r["error"]["message"].clone()),
        (json!(109), json!("token expired"))
    );
    let forged = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": "alice"}), &key).unwrap()
    };
    let r = a.call("connect", json!({"token": forged})).await;
    assert_eq!(r["error"]["code"], 101);
    assert_eq!(a.call("connect", json!({"token": "not.a.jwt"})).await["error"]["code"], 101);
    assert_eq!(
        a.call("connect", json!({"token": token(json!({"exp": now() + 60}))})).await["error"]["code"],
        101,
        "no sub"
    );
    // Still connected: an anonymous connect works after the refusals.
    a.ok("connect", json!({"name": "anon"})).await;
    // Without any key configured, tokens are refused.
    let plain = start().await;
    let mut c = Client::open(plain.addr).await;
    let r = c.call("connect", json!({"token": token(json!({"sub": "alice"}))})).await;
    assert_eq!(r["error"]["code"], 101);
}

#[tokio::test]
async fn an_expiring_token_must_be_refreshed() {
    let hub = start_with_tokens().await;
    // Not refreshed: closed with 4002 once exp passes.
    let mut a = Client::open(hub.addr).await;
    a.ok("connect", json!({"token": token(json!({"sub": "alice", "exp": now() + 1}))})).await;
    let code = a.closed().await;
    assert_eq!(code, Some((4002, "token expired".to_owned())));
    // Refreshed in time: stays. A token for someone else is refused.
    let mut b = Client::open(hub.addr).await;
    b.ok("connect", json!({"token": token(json!({"sub": "bob", "exp": now() + 1}))})).await;
    let other = b.call("refresh", json!({"token": token(json!({"sub": "eve", "exp": now() + 600}))})).await;
    assert_eq!(other["error"]["code"], 101);
    let r = b.ok("refresh", json!({"token": token(json!({"sub": "bob", "exp": now() + 600}))})).await;
    now_plus(&r, 600);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(b.ok("ping", json!({})).await, json!({}));
}
