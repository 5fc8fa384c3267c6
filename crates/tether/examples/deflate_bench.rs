//! Benchmark: echo throughput and bytes on the wire with permessage-deflate on and off, for
//! JSON-like text messages of 1 KiB and 16 KiB, over loopback, in one process and one run.
//! Each configuration runs `REPEATS` times, interleaved; the table shows medians and the
//! on/off ratio. Run through `bench/deflate.sh`.

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tether::{ClientConfig, Config, DeflateConfig, Listener, Message, ServerConfig};

const REPEATS: usize = 5;
const IN_FLIGHT: usize = 32;

/// Deterministic JSON-like text: an array of quote objects with varying numbers.
fn json_message(size: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 33
    };
    let symbols = ["ACME", "GLOBX", "INITECH", "UMBRL", "HOOLI", "STARK", "WAYNE", "CYBRD"];
    let mut s = String::from("[");
    while s.len() < size - 120 {
        let sym = symbols[(next() % 8) as usize];
        s.push_str(&format!(
            "{{\"id\":{},\"symbol\":\"{sym}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"volume\":{},\"ts\":{}}},",
            next() % 1_000_000,
            100 + next() % 900,
            next() % 100,
            100 + next() % 900,
            next() % 100,
            next() % 50_000,
            1_763_800_000_000u64 + next() % 10_000_000
        ));
    }
    s.pop();
    s.push(']');
    while s.len() < size {
        s.push(' ');
    }
    s
}

async fn server(deflate: Option<DeflateConfig>) -> String {
    let config = Config::default().with_deflate(deflate);
    let listener = Listener::bind("127.0.0.1:0", ServerConfig::default().with_config(config)).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok(incoming) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((mut ws, _)) = incoming.upgrade().await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_data() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    url
}

struct Run {
    msgs_per_sec: f64,
    wire_per_msg: f64,
}

async fn run(url: &str, deflate: Option<DeflateConfig>, messages: &[Message], count: usize) -> Run {
    let expect = deflate.is_some();
    let config = ClientConfig::default().with_config(Config::default().with_deflate(deflate));
    let (ws, _) = tether::connect_with(url, &config).await.unwrap();
    assert_eq!(ws.deflate(), expect);
    let sender = ws.sender();
    let (_write, mut read) = ws.split();
    let start = Instant::now();
    let mut sent = 0;
    for m in messages.iter().cycle().take(IN_FLIGHT.min(count)) {
        sender.send(m.clone()).await.unwrap();
        sent += 1;
    }
    let mut received = 0;
    while received < count {
        match read.next().await {
            Some(Ok(Message::Text(_))) => received += 1,
            other => panic!("unexpected {other:?}"),
        }
        if sent < count {
            sender.send(messages[sent % messages.len()].clone()).await.unwrap();
            sent += 1;
        }
    }
    let elapsed = start.elapsed();
    let stats = sender.stats();
    Run {
        msgs_per_sec: count as f64 / elapsed.as_secs_f64(),
        wire_per_msg: (stats.bytes_sent + stats.bytes_received) as f64 / (2 * count) as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let configs: [(&str, Option<DeflateConfig>); 3] = [
        ("off", None),
        ("on, level 6 (default)", Some(DeflateConfig::default())),
        ("on, level 1", Some(DeflateConfig::default().with_level(1))),
    ];
    let mut urls = Vec::new();
    for (_, deflate) in &configs {
        urls.push(server(deflate.clone()).await);
    }
    println!("| message | deflate | echoes/s (median of {REPEATS}) | wire bytes per message | throughput vs off | wire vs off |");
    println!("|---|---|---|---|---|---|");
    for (size, count) in [(1024usize, 20_000usize), (16 * 1024, 4_000)] {
        let messages: Vec<Message> = (0..64).map(|i| Message::text(json_message(size, i))).collect();
        let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); configs.len()];
        for _ in 0..REPEATS {
            // Interleaved, so that machine noise spreads over every configuration.
            for (i, (_, deflate)) in configs.iter().enumerate() {
                let r = run(&urls[i], deflate.clone(), &messages, count).await;
                results[i].0.push(r.msgs_per_sec);
                results[i].1.push(r.wire_per_msg);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let medians: Vec<(f64, f64)> = results.into_iter().map(|(t, w)| (median(t), median(w))).collect();
        let (t_off, w_off) = medians[0];
        for ((name, _), (t, w)) in configs.iter().zip(&medians) {
            println!(
                "| {} KiB JSON | {name} | {t:.0} | {w:.0} | {:.2} | {:.3} |",
                size / 1024,
                t / t_off,
                w / w_off
            );
        }
    }
}
