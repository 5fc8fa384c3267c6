//! `tether bridge` against real services: `redis-server` through a WebSocket (PING, a 1 MiB
//! value, a pipeline of 10,000 commands), a chained tunnel (`redis-cli` to a TCP-listening
//! bridge, over WebSocket, to a WebSocket-listening bridge, to Redis), UDP echo both ways
//! with datagram boundaries kept, and every refusal with its code, reason and log line.

#![allow(clippy::unwrap_used)]

#[path = "common/redis.rs"]
mod redis;

use futures_util::{SinkExt, StreamExt};
use redis::{free_port, Redis};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::{ClientConfig, Message, Proxy, WebSocket};

const BIN: &str = env!("CARGO_BIN_EXE_tether");
const WAIT: Duration = Duration::from_secs(20);

/// A `tether bridge` process; killed on drop.
struct Bridge {
    child: Child,
    /// What it listens on, as its log says: `ws://127.0.0.1:PORT/`, `tcp://127.0.0.1:PORT`…
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("bridge")
            .args(args)
            .env("TETHER_LOG", "info")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("bridge listening on ") {
                    let url = line[at + 20..].split(' ').next().unwrap_or_default().to_owned();
                    let _ = tx.send(url);
                }
                keep.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(WAIT) {
            Ok(url) => Self { child, url, log },
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("bridge did not start: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
            }
        }
    }

    /// The `HOST:PORT` it listens on.
    fn addr(&self) -> &str {
        self.url.split_once("://").unwrap().1.trim_end_matches('/')
    }

    /// Waits until a log line contains `needle`.
    fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
            assert!(start.elapsed() < WAIT, "no {needle:?} in the log: {:?}", self.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("bridge {} log:\n{}", self.url, self.log.lock().unwrap().join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn direct() -> ClientConfig {
    ClientConfig::default().with_proxy(Proxy::None)
}

async fn open(url: &str) -> WebSocket {
    tokio::time::timeout(WAIT, tether::connect_with(url, &direct())).await.unwrap().unwrap().0
}

/// Reads binary messages until `done` says the bytes so far are complete.
async fn read_until(ws: &mut WebSocket, mut done: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            Some(Ok(_)) => {}
            other => panic!("connection ended after {} bytes: {other:?}", got.len()),
        }
    }
    got
}

/// The next close frame's code and reason.
async fn closed(ws: &mut WebSocket) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.0, f.reason),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test]
async fn redis_through_a_websocket() {
    let redis = Redis::start();
    let to = format!("tcp://127.0.0.1:{}", redis.port);
    // Messages up to 2 MiB (the default is 1 MiB; a test below checks it).
    let bridge =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &to, "--max-message-size", "2097152"]);
    let mut ws = open(&bridge.url).await;

    ws.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");

    // A 1 MiB value, both ways.
    let value: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(resp(&[b"SET", b"big", &value]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+OK\r\n");
    ws.send(Message::binary(resp(&[b"GET", b"big"]))).await.unwrap();
    let want = [format!("${}\r\n", value.len()).into_bytes(), value.clone(), b"\r\n".to_vec()].concat();
    let got = read_until(&mut ws, |b| b.len() >= want.len()).await;
    assert!(got == want, "GET returned {} bytes, not the {} sent", got.len(), want.len());

    // 10,000 commands pipelined, 100 to a message; 10,000 answers in order.
    let mut sent = 0;
    for chunk in 0..100 {
        let batch: Vec<u8> =
            (0..100).flat_map(|i| resp(&[b"ECHO", format!("{}", chunk * 100 + i).as_bytes()])).collect();
        sent += 100;
        ws.send(Message::binary(batch)).await.unwrap();
    }
    let want: Vec<u8> = (0..sent)
        .flat_map(|i: usize| {
            let s = i.to_string();
            format!("${}\r\n{s}\r\n", s.len()).into_bytes()
        })
        .collect();
    let got = read_until(&mut ws, |b| b.len() >= want.len()).await;
    assert!(got == want, "pipeline answers differ ({} bytes, {} expected)", got.len(), want.len());

    ws.close().await.ok();
    bridge.wait_log("closed");
    let line = bridge.log.lock().unwrap().iter().find(|l| l.contains("closed")).cloned().unwrap();
    assert!(line.contains("bytes_to_target=") && line.contains("bytes_from_target="), "{line}");
}

#[test]
fn redis_cli_through_a_chained_tunnel() {
    let redis = Redis::start();
    let ws_side = Bridge::start(&[
        "--listen",
        "ws://127.0.0.1:0/",
        "--route",
        &format!("db=tcp://127.0.0.1:{}", redis.port),
    ]);
    let to = format!("{}db", ws_side.url);
    let tcp_side = Bridge::start(&["--listen", "tcp://127.0.0.1:0", "--to", &to]);
    let port = tcp_side.addr().rsplit_once(':').unwrap().1.to_owned();
    let cli = |args: &[&str]| {
        let out =
            Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &port]).args(args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "tunnel", "through two bridges"]), "OK");
    assert_eq!(cli(&["GET", "tunnel"]), "through two bridges");
    tcp_side.wait_log("closed");
    ws_side.wait_log("route=db");
}

/// A UDP echo service on a loopback port, for `seconds`.
fn udp_echo() -> u16 {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    port
}

fn datagram(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

#[tokio::test]
async fn udp_both_ways_keeps_datagram_boundaries() {
    let echo = udp_echo();
    let ws_side =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("udp://127.0.0.1:{echo}")]);
    let mut ws = open(&ws_side.url).await;
    let sizes = [1usize, 1000, 60_000, 5];
    for (i, n) in sizes.iter().enumerate() {
        ws.send(Message::binary(datagram(*n, i as u8))).await.unwrap();
    }
    for (i, n) in sizes.iter().enumerate() {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => assert_eq!(b, datagram(*n, i as u8), "datagram {i}"),
            other => panic!("{other:?}"),
        }
    }
    drop(ws);

    // A UDP client, to a udp:// listening bridge, over WebSocket, to the echo.
    let udp_side = Bridge::start(&["--listen", "udp://127.0.0.1:0", "--to", &ws_side.url]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.connect(udp_side.addr()).unwrap();
    let mut buf = [0u8; 65536];
    for (i, n) in sizes.iter().enumerate() {
        client.send(&datagram(*n, 100 + i as u8)).unwrap();
        let got = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], &datagram(*n, 100 + i as u8)[..], "datagram {i} back");
    }
}

#[tokio::test]
async fn refusals_have_a_code_a_reason_and_a_log_line() {
    let redis = Redis::start();
    let closed_port = free_port();
    let bridge = Bridge::start(&[
        "--listen",
        "ws://127.0.0.1:0/",
        "--route",
        &format!("db=tcp://127.0.0.1:{}", redis.port),
        "--route",
        &format!("gone=tcp://127.0.0.1:{closed_port}"),
        "--idle-timeout",
        "0.5",
    ]);

    // No default target, and an unknown one: refused at the handshake.
    let e = tether::connect_with(&bridge.url, &direct()).await.unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");
    let e = tether::connect_with(&format!("{}nope", bridge.url), &direct()).await.unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");
    bridge.wait_log("unknown target");

    // A browser page from another origin cannot use it.
    let evil = direct().with_origin("http://evil.example");
    let e = tether::connect_with(&format!("{}db", bridge.url), &evil).await.unwrap_err().to_string();
    assert!(e.contains("403"), "{e}");

    // A text message in binary mode.
    let mut ws = open(&format!("{}db", bridge.url)).await;
    ws.send(Message::text("PING\r\n")).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1003, "{reason}");
    assert!(reason.starts_with("text message"), "{reason}");

    // A target that refuses.
    let mut ws = open(&format!("{}?token=gone", bridge.url)).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4014, "{reason}");
    assert!(reason.starts_with("target unreachable"), "{reason}");
    bridge.wait_log("target unreachable");

    // Quiet for the idle timeout.
    let mut ws = open(&format!("{}db", bridge.url)).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));

    // A message over the size limit (1 MiB by default): 1009.
    let mut ws = open(&format!("{}db", bridge.url)).await;
    ws.send(Message::binary(vec![b'x'; (1 << 20) + 1])).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, 1009);

    // The target closes: 1000.
    let mut ws = open(&format!("{}db", bridge.url)).await;
    ws.send(Message::binary(resp(&[b"QUIT"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+OK\r\n");
    assert_eq!(closed(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn a_target_that_does_not_answer_times_out() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    // waits (all on loopback).
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let mut hangs = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => {
                hangs = true;
                break;
            }
        }
    }
    assert!(hangs, "the full accept queue still took connections: cannot make a target that does not answer");
    let bridge = Bridge::start(&[
        "--listen",
        "ws://127.0.0.1:0/",
        "--to",
        &format!("tcp://{addr}"),
        "--connect-timeout",
        "0.5",
    ]);
    let mut ws = open(&bridge.url).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!((code, reason.as_str()), (4014, "target unreachable: connect timed out"));
    bridge.wait_log("connect timed out");
    drop(listener);
}

#[tokio::test]
async fn tokens_guard_the_bridge() {
    let redis = Redis::start();
    let to = format!("tcp://127.0.0.1:{}", redis.port);
    let bridge = Bridge::start(&[
        "--listen",
        "ws://127.0.0.1:0/",
        "--to",
        &to,
        "--access-token",
        "bridge-token-0123456789",
    ]);
    let e = tether::connect_with(&bridge.url, &direct()).await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    let bad = format!("{}?access_token=wrong", bridge.url);
    assert!(tether::connect_with(&bad, &direct()).await.unwrap_err().to_string().contains("401"));
    let mut ws = open(&format!("{}?access_token=bridge-token-0123456789", bridge.url)).await;
    ws.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
    let header = direct().with_header("Authorization", "Bearer bridge-token-0123456789");
    let (mut ws, _) = tether::connect_with(&bridge.url, &header).await.unwrap();
    ws.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
}

#[tokio::test]
async fn base64_subprotocol_for_old_clients() {
    let redis = Redis::start();
    let bridge =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("tcp://127.0.0.1:{}", redis.port)]);
    let config = direct().with_protocol("base64");
    let (mut ws, _) = tether::connect_with(&bridge.url, &config).await.unwrap();
    assert_eq!(ws.protocol(), Some("base64"));
    // PING as base64 text.
    ws.send(Message::text("KjENCiQ0DQpQSU5HDQo=")).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "K1BPTkcNCg=="),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).arg("bridge").args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--listen", "ws://127.0.0.1:0/"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no target"), "{err}");
    let (code, err) = run(&["--listen", "ws://127.0.0.1:0/", "--to", "ws://127.0.0.1:1/"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("forwards to tcp:// or udp://"), "{err}");
    let (code, err) = run(&["--listen", "tcp://127.0.0.1:0", "--to", "tcp://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("forwards to ws:// or wss://"), "{err}");
    let (code, err) = run(&["--listen", "http://127.0.0.1:0", "--to", "tcp://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("expected ws, wss, tcp or udp"), "{err}");
}

/// An HS256 JWT for `claims`, signed with `secret` (as an issuer would make one).
fn jwt(claims: &str, secret: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let head = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(claims.as_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", B64.encode(tag.as_ref()))
}

#[tokio::test]
async fn jwt_access_as_the_hub_checks_it() {
    let redis = Redis::start();
    let secret = "bridge-jwt-secret-0123456789abcdef";
    let bridge = Bridge::start(&[
        "--listen",
        "ws://127.0.0.1:0/",
        "--route",
        &format!("db=tcp://127.0.0.1:{}", redis.port),
        "--route",
        &format!("other=tcp://127.0.0.1:{}", redis.port),
        "--token-hmac-secret",
        secret,
    ]);
    let only_db = jwt(r#"{"sub":"ann","channels":["db"]}"#, secret.as_bytes());
    let mut ws = open(&format!("{}db?access_token={only_db}", bridge.url)).await;
    ws.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
    // The token's channels are the routes it may use.
    let e = tether::connect_with(&format!("{}other?access_token={only_db}", bridge.url), &direct()).await;
    assert!(e.unwrap_err().to_string().contains("403"));
    let forged = jwt(r#"{"sub":"ann"}"#, b"another-secret-0123456789abcdefgh");
    let e = tether::connect_with(&format!("{}db?access_token={forged}", bridge.url), &direct()).await;
    assert!(e.unwrap_err().to_string().contains("401"));
    let expired = jwt(r#"{"sub":"ann","exp":1000}"#, secret.as_bytes());
    let e = tether::connect_with(&format!("{}db?access_token={expired}", bridge.url), &direct()).await;
    assert!(e.unwrap_err().to_string().contains("401"));
}

#[tokio::test]
async fn wss_listening_side() {
    let redis = Redis::start();
    let to = format!("tcp://127.0.0.1:{}", redis.port);
    let bridge = Bridge::start(&["--listen", "wss://127.0.0.1:0/", "--to", &to, "--tls-self-signed"]);
    assert!(bridge.url.starts_with("wss://"), "{}", bridge.url);
    let config = direct().with_trust(tether::tls::ClientTrust::Insecure);
    let (mut ws, _) = tether::connect_with(&bridge.url, &config).await.unwrap();
    ws.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
}

/// A WebSocket client that stops reading stops the target: the bridge holds a bounded
/// amount, and the target's writes wait (TCP flow control), until the client reads again.
#[tokio::test]
async fn a_slow_reader_pushes_back_on_the_target() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    let source = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = source.local_addr().unwrap().port();
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        let (mut s, _) = source.accept().unwrap();
        let chunk = vec![7u8; 64 * 1024];
        // Bounded: stops at 256 MiB or when the bridge goes away.
        while count.load(Ordering::Relaxed) < 256 << 20 {
            if s.write_all(&chunk).is_err() {
                return;
            }
            count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let bridge =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("tcp://127.0.0.1:{port}")]);
    let mut ws = open(&bridge.url).await;
    // The client reads nothing for a while: the target soon cannot write more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stalled = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        written.load(Ordering::Relaxed),
        stalled,
        "the target kept writing to a client that does not read"
    );
    eprintln!("the target wrote {stalled} bytes before it had to wait");
    assert!(stalled < 64 << 20, "{stalled} bytes taken from the target for a client that reads nothing");
    // Reading again lets it go on.
    let got = read_until(&mut ws, |b| b.len() as u64 >= stalled + (8 << 20)).await;
    assert!(got.iter().all(|b| *b == 7));
    assert!(written.load(Ordering::Relaxed) > stalled);
}

#[test]
fn a_udp_peer_s_queue_is_bounded() {
    let echo = udp_echo();
    let ws_side =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("udp://127.0.0.1:{echo}")]);
    // One datagram may wait while the WebSocket opens: a burst loses the rest.
    let udp_side =
        Bridge::start(&["--listen", "udp://127.0.0.1:0", "--to", &ws_side.url, "--udp-queue", "1"]);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(udp_side.addr()).unwrap();
    for i in 0..50u8 {
        client.send(&[i; 100]).unwrap();
    }
    udp_side.wait_log("datagrams dropped");
}

#[tokio::test]
async fn text_mode_takes_text_as_bytes() {
    let redis = Redis::start();
    let to = format!("tcp://127.0.0.1:{}", redis.port);
    let bridge = Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &to, "--text"]);
    let mut ws = open(&bridge.url).await;
    ws.send(Message::text("PING\r\n")).await.unwrap();
    assert_eq!(read_until(&mut ws, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
}

/// A WebSocket close reaches the target as a FIN (after the bytes sent before it).
#[tokio::test]
async fn a_websocket_close_is_a_fin_at_the_target() {
    use std::io::Read as _;
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = target.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        // Ends at the FIN (Ok), or fails the test through the channel at the timeout.
        let r = s.read_to_end(&mut got).map(|_| got);
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    let bridge =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("tcp://127.0.0.1:{port}")]);
    let mut ws = open(&bridge.url).await;
    ws.send(Message::binary(&b"last words"[..])).await.unwrap();
    ws.close().await.unwrap();
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT)).await.unwrap().unwrap();
    assert_eq!(got.unwrap(), b"last words");
}

#[tokio::test]
async fn connections_are_limited() {
    let redis = Redis::start();
    let to = format!("tcp://127.0.0.1:{}", redis.port);
    let bridge = Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &to, "--max-connections", "1"]);
    let mut held = open(&bridge.url).await;
    let e = tether::connect_with(&bridge.url, &direct()).await.unwrap_err().to_string();
    assert!(e.contains("503"), "{e}");
    held.send(Message::binary(resp(&[b"PING"]))).await.unwrap();
    assert_eq!(read_until(&mut held, |b| b.ends_with(b"\r\n")).await, b"+PONG\r\n");
}

/// Ctrl-C (SIGINT) closes every bridged WebSocket with 1001, then the bridge exits 0.
#[tokio::test]
async fn ctrl_c_closes_with_1001() {
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = target.local_addr().unwrap().port();
    // Reads the first bytes, says so, and holds the target side open until the test ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut conn, _) = target.accept().unwrap();
        let mut hello = [0u8; 5];
        let _ = tx.send(conn.read_exact(&mut hello).map(|()| hello).map_err(|e| e.to_string()));
        std::thread::sleep(WAIT);
    });
    let mut bridge =
        Bridge::start(&["--listen", "ws://127.0.0.1:0/", "--to", &format!("tcp://127.0.0.1:{port}")]);
    let mut ws = open(&bridge.url).await;
    ws.send(Message::binary(&b"hello"[..])).await.unwrap();
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT)).await.unwrap().unwrap();
    assert_eq!(&got.unwrap(), b"hello");
    let status = Command::new("kill").args(["-INT", &bridge.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert_eq!(closed(&mut ws).await, (1001, "bridge shutting down".to_owned()));
    // Our answer goes out; the bridge then ends the connection.
    tokio::time::timeout(WAIT, async { while ws.next().await.is_some() {} }).await.unwrap();
    bridge.wait_log("stopped");
    let exit = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            if let Some(status) = bridge.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "the bridge did not exit after Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(exit.code(), Some(0));
}
