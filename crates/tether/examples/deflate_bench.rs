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

async fn server(deflate: bool) -> String {
    let config = Config::default().with_deflate(deflate.then(DeflateConfig::default));
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

async fn run(url: &str, deflate: bool, messages: &[Message], count: usize) -> Run {
    let config = ClientConfig::default()
        .with_config(Config::default().with_deflate(deflate.then(DeflateConfig::default)));
    let (ws, _) = tether::connect_with(url, &config).await.unwrap();
    assert_eq!(ws.deflate(), deflate);
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
    let off = server(false).await;
    let on = server(true).await;
    println!("| message | deflate | echoes/s (median of {REPEATS}) | wire bytes per message | throughput on/off | wire on/off |");
    println!("|---|---|---|---|---|---|");
    for (size, count) in [(1024usize, 20_000usize), (16 * 1024, 4_000)] {
        let messages: Vec<Message> = (0..64).map(|i| Message::text(json_message(size, i))).collect();
        let (mut t_on, mut t_off, mut w_on, mut w_off) = (vec![], vec![], vec![], vec![]);
        for _ in 0..REPEATS {
            let r = run(&off, false, &messages, count).await;
            t_off.push(r.msgs_per_sec);
            w_off.push(r.wire_per_msg);
            let r = run(&on, true, &messages, count).await;
            t_on.push(r.msgs_per_sec);
            w_on.push(r.wire_per_msg);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (t_on, t_off, w_on, w_off) = (median(t_on), median(t_off), median(w_on), median(w_off));
        let label = format!("{} KiB JSON", size / 1024);
        println!("| {label} | off | {t_off:.0} | {w_off:.0} | | |");
        println!("| {label} | on | {t_on:.0} | {w_on:.0} | {:.2} | {:.3} |", t_on / t_off, w_on / w_off);
    }
}
