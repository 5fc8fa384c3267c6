//! Connection floods against the built binary: `tether echo` and `tether serve` hold their
//! `--max-connections`, answer every connection beyond it with 503 while the open ones keep
//! working, and their memory stays bounded. Counts stay well below the 20,000 open files a
//! process may have on these machines.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tether::{ClientConfig, Message, Transport, WebSocketStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// A server process on a free port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tether ARGS` and waits (at most 20 s) for the address it logs.
fn start(args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(args)
        .env("TETHER_LOG", "info")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("://127.0.0.1:") {
                let addr = line[at + 3..].split(['/', ' ', ',']).next().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the server did not log its address");
    Server { child, addr }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn client() -> ClientConfig {
    ClientConfig::default().with_proxy(tether::Proxy::None).with_protocol("tether.json")
}

/// Opens `n` WebSocket connections to `url`, `concurrency` at a time.
async fn open_many(url: &str, n: usize, concurrency: usize) -> Vec<WebSocketStream<Transport>> {
    let mut open = Vec::with_capacity(n);
    while open.len() < n {
        let batch = concurrency.min(n - open.len());
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let url = url.to_owned();
                tokio::spawn(async move { tether::connect_direct(&url, &client()).await })
            })
            .collect();
        for t in tasks {
            open.push(t.await.unwrap().expect("a connection under the limit was refused").0);
        }
    }
    open
}

/// `n` handshake attempts, `concurrency` at a time, each on a fresh TCP connection; how many
/// got each status line ("reset" when the connection ended without an answer).
async fn attempts(
    addr: &str,
    path: &str,
    n: usize,
    concurrency: usize,
) -> std::collections::BTreeMap<String, usize> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: tether.json\r\n\r\n"
    );
    let mut seen = std::collections::BTreeMap::new();
    let mut done = 0;
    while done < n {
        let batch = concurrency.min(n - done);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (addr, request) = (addr.to_owned(), request.clone());
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(&addr).await.ok()?;
                    s.write_all(request.as_bytes()).await.ok()?;
                    let mut answer = Vec::new();
                    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
                    let _ = read.await;
                    let line = String::from_utf8_lossy(&answer).lines().next().map(str::to_owned);
                    line.filter(|l| !l.is_empty())
                })
            })
            .collect();
        for t in tasks {
            let status = t.await.unwrap().unwrap_or_else(|| "reset".into());
            *seen.entry(status).or_insert(0) += 1;
        }
        done += batch;
    }
    seen
}

/// Every one of `open` still echoes (echo) or answers a ping command (hub).
async fn still_working(open: &mut [WebSocketStream<Transport>], hub: bool) {
    for (i, ws) in open.iter_mut().enumerate() {
        let text = if hub { format!("{{\"id\":{},\"ping\":{{}}}}", i + 1) } else { format!("still {i}") };
        ws.send(Message::text(text.clone())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Text(reply) = reply else { panic!("{reply:?}") };
        if hub {
            assert!(reply.contains(&format!("\"id\":{}", i + 1)), "{reply}");
        } else {
            assert_eq!(reply.as_str(), text);
        }
    }
}

/// Limit proved: `--max-connections 2000` on `tether echo` (default: the open-files limit
/// less 1088). 2,000 WebSockets are held; 8,000 more handshakes, 128 at a time (under
/// `--max-handshakes 256`), each get `503`; all 2,000 still echo; the server stays under 64
/// MiB of RSS (measured: 12 MiB at start, 17 MiB holding 2,000, 19 MiB after the 8,000
/// refusals, debug build); a freed place is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_holds_its_connection_limit_under_a_flood() {
    let server =
        start(&["echo", "--listen", "127.0.0.1:0", "--max-connections", "2000", "--max-handshakes", "256"]);
    let url = format!("ws://{}/", server.addr);
    let before = rss(server.child.id());
    let mut open = open_many(&url, 2000, 100).await;
    let held = rss(server.child.id());
    let seen = attempts(&server.addr, "/", 8000, 128).await;
    assert_eq!(seen.get("HTTP/1.1 503 Service Unavailable"), Some(&8000), "{seen:?}");
    still_working(&mut open, false).await;
    let after = rss(server.child.id());
    eprintln!(
        "echo RSS: {} KiB at start, {} KiB with 2000 connections, {} KiB after 8000 refusals ({} B per connection)",
        before / 1024,
        held / 1024,
        after / 1024,
        (held - before) / 2000
    );
    assert!(after < 64 << 20, "RSS {after} bytes");
    // A freed place is taken again once the server has seen the close.
    for mut ws in open.drain(..10) {
        ws.close().await.unwrap();
    }
    let start = Instant::now();
    loop {
        match tether::connect_direct(&url, &client()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(10), "no place freed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The same limit on `tether serve` (`--max-connections 500`): 2,000 more handshakes get
/// 503, the open tether.json sessions still answer, `/metrics` counts the refusals, and the
/// hub stays under 128 MiB of RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_holds_its_connection_limit_under_a_flood() {
    let server =
        start(&["serve", "--listen", "127.0.0.1:0", "--max-connections", "500", "--max-handshakes", "256"]);
    let url = format!("ws://{}/ws", server.addr);
    let mut open = open_many(&url, 500, 100).await;
    let seen = attempts(&server.addr, "/ws", 2000, 128).await;
    assert_eq!(seen.get("HTTP/1.1 503 Service Unavailable"), Some(&2000), "{seen:?}");
    still_working(&mut open, true).await;
    let after = rss(server.child.id());
    eprintln!("hub RSS with 500 connections after 2000 refusals: {} KiB", after / 1024);
    assert!(after < 128 << 20, "RSS {after} bytes");
    for mut ws in open.drain(..5) {
        ws.close().await.unwrap();
    }
    let (start, mut refused_here) = (Instant::now(), 0);
    let metrics = loop {
        let mut s = TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        if answer.starts_with("HTTP/1.1 200 ") {
            break answer;
        }
        // Until the hub has seen the closes, this request is refused (and counted) too.
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        refused_here += 1;
        assert!(start.elapsed() < Duration::from_secs(10), "{answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expected = format!("tether_connections_refused_total {}\n", 2000 + refused_here);
    assert!(metrics.contains(&expected), "{expected} in {metrics}");
}
