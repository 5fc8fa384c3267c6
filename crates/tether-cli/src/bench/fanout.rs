//! `tether bench --mode fanout`: subscribers on `tether serve` (tether.json, STOMP with
//! `--stomp`, Socket.IO with `--socketio`), one publisher through the server API, deliveries
//! per second and publish-to-delivery latency.

use super::args::Args;
use super::load::{
    describe_errors, errors_json, json_string, kind, latency_json, latency_table, open_all, progress,
    stop_progress, Configs, Shared,
};
use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tether::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The publication's send time, from `"t":MICROS` in its data.
fn sent_at(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

pub(super) async fn run(args: &Args, configs: Configs, shared: Arc<Shared>) -> anyhow::Result<ExitCode> {
    let url =
        tether::Url::parse(&args.url).map_err(|e| anyhow::anyhow!("invalid url {:?}: {e}", args.url))?;
    if url.secure {
        bail!("fan-out mode publishes through the server API over plain http; use a ws:// URL");
    }
    let Some(key) = args.api_key.clone() else {
        bail!("fan-out mode needs the hub's --api-key (or TETHER_API_KEY) to publish");
    };
    if args.channels == 0 || !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--channels must be at least 1 and --rate positive");
    }
    let (stomp, socketio) = (args.stomp, args.socketio);
    let configs = if socketio {
        configs
    } else {
        configs.map(|c| c.with_protocol(if stomp { "v12.stomp" } else { "tether.json" }))
    };
    let mut urls =
        if args.subscribe_urls.is_empty() { vec![args.url.clone()] } else { args.subscribe_urls.clone() };
    if socketio {
        // Engine.IO over WebSocket at the server's /socket.io/.
        for u in &mut urls {
            let parsed = tether::Url::parse(u).map_err(|e| anyhow::anyhow!("invalid url {u:?}: {e}"))?;
            *u = format!("ws://{}:{}/socket.io/?EIO=4&transport=websocket", parsed.host, parsed.port);
        }
    }
    let (sockets, open_time) = open_all(&urls, &configs, args.connections, &shared).await?;

    // Every subscriber: connect, subscribe to its channel, wait for both replies.
    let latency =
        Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?));
    let subscribed = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(args.duration);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(sockets.len());
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let channel = format!("{}{}", args.channel_prefix, i % args.channels);
        let (shared, latency, subscribed, mut stop) =
            (shared.clone(), latency.clone(), subscribed.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let setup = if socketio {
                // As socket.io-client: CONNECT once the Engine.IO session is open, the
                // subscription once CONNECT is answered.
                let steps = [
                    ("0{", "40".to_owned()),
                    ("40", format!("420[\"subscribe\",{}]", json_string(&channel))),
                ];
                for (want, then) in steps {
                    let answered = loop {
                        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                            Ok(Some(Ok(Message::Text(t)))) if t.starts_with(want) => break true,
                            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {
                                let _ = ws.send(Message::text("3")).await;
                            }
                            Ok(Some(Ok(Message::Text(t)))) => {
                                shared.error(format!("socket.io: unexpected {t}"));
                                break false;
                            }
                            Ok(Some(Ok(_))) => {}
                            _ => break false,
                        }
                    };
                    if !answered || ws.send(Message::text(then)).await.is_err() {
                        shared.error("socket.io setup failed".into());
                        return;
                    }
                }
                Vec::new()
            } else if stomp {
                vec![
                    "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0".to_owned(),
                    format!("SUBSCRIBE\nid:0\ndestination:/topic/{channel}\nreceipt:subscribed\n\n\0"),
                ]
            } else {
                vec![
                    "{\"id\":1,\"connect\":{}}".to_owned(),
                    format!("{{\"id\":2,\"subscribe\":{{\"channel\":{}}}}}", json_string(&channel)),
                ]
            };
            for line in setup {
                if ws.send(Message::text(line)).await.is_err() {
                    shared.error("send failed".into());
                    return;
                }
            }
            let mut local = Histogram::<u64>::new(3).expect("3 significant figures is valid");
            loop {
                let next = tokio::select! {
                    next = ws.next() => next,
                    _ = stop.changed() => break,
                };
                match next {
                    Some(Ok(Message::Text(t))) if socketio && t.as_str() == "2" => {
                        // An Engine.IO ping: the pong keeps the session.
                        let _ = ws.send(Message::text("3")).await;
                    }
                    Some(Ok(Message::Text(t))) => {
                        if t.starts_with("{\"push\"")
                            || t.starts_with("MESSAGE\n")
                            || t.starts_with("42[\"publication\"")
                        {
                            if let Some(sent) = sent_at(&t) {
                                let _ = local.record(now_micros().saturating_sub(sent));
                            }
                            shared.messages.fetch_add(1, Ordering::Relaxed);
                            shared.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                        } else if t.starts_with("{\"id\":2,\"result\"")
                            || t.starts_with("RECEIPT\n")
                            || t.starts_with("430[{\"result\"")
                        {
                            subscribed.fetch_add(1, Ordering::Relaxed);
                        } else if t.contains("\"error\"") || t.starts_with("ERROR\n") || t.starts_with("44") {
                            shared.error(format!("hub error: {t}"));
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        shared.error(format!("closed by server: {}", f.map_or(1005, |f| f.code.0)));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        shared.error(kind(&e));
                        return;
                    }
                    None => {
                        shared.error("connection lost".into());
                        return;
                    }
                }
            }
            let _ = latency.lock().unwrap_or_else(|e| e.into_inner()).add(&local);
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close()).await;
        }));
    }
    let want = tasks.len() as u64;
    let wait = Instant::now();
    while subscribed.load(Ordering::Relaxed) < want {
        if wait.elapsed() > Duration::from_secs(60) {
            bail!("only {} of {want} subscriptions confirmed after 60 s", subscribed.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The publisher: one keep-alive HTTP connection to the server API.
    let host = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let mut api = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
    api.set_nodelay(true)?;
    let pad = "x".repeat(args.size.saturating_sub(24));
    let start = Instant::now();
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start, "deliveries")));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0u64;
    let mut buf = vec![0u8; 4096];
    while start.elapsed() < duration {
        tick.tick().await;
        let channel = format!("{}{}", args.channel_prefix, published as usize % args.channels);
        let body = format!(
            "{{\"channel\":{},\"data\":{{\"t\":{},\"p\":\"{pad}\"}}}}",
            json_string(&channel),
            now_micros()
        );
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {host}:{}\r\nAuthorization: apikey {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            url.port,
            body.len()
        );
        api.write_all(req.as_bytes()).await?;
        // Read the whole answer (head and Content-Length body).
        let mut got = Vec::new();
        let status = loop {
            let n = api.read(&mut buf).await?;
            if n == 0 {
                bail!("the hub closed the API connection");
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().ok())
                    })
                    .flatten()
                    .unwrap_or(0);
                if got.len() >= head_end + 4 + len {
                    break head.get(9..12).unwrap_or("").to_owned();
                }
            }
        };
        if status != "200" {
            bail!("the server API answered {status}: {}", String::from_utf8_lossy(&got));
        }
        published += 1;
    }
    let publish_time = start.elapsed();
    // Let the last publications arrive, then stop the subscribers.
    let expected = |p: u64| {
        let per_channel = want / args.channels as u64;
        let extra = want % args.channels as u64;
        (0..p).map(|i| per_channel + u64::from((i % args.channels as u64) < extra)).sum::<u64>()
    };
    let total = expected(published);
    let drain = Instant::now();
    while shared.messages.load(Ordering::Relaxed) < total && drain.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    stop_progress(progress);
    let delivered = shared.messages.load(Ordering::Relaxed);
    let rate = delivered as f64 / elapsed.as_secs_f64();
    let hist = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let errors = shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if args.json {
        let (latency, errors) = (latency_json(&hist), errors_json(&errors));
        println!(
            "{{\"mode\":\"fanout\",\"url\":{},\"subscribers\":{want},\"channels\":{},\"published\":{published},\
             \"protocol\":\"{}\",\"publish_s\":{:.3},\"delivered\":{delivered},\"expected\":{total},\"deliveries_per_s\":{rate:.1},\
             \"latency_ms\":{{{latency}}},\"errors\":{{{errors}}}}}",
            json_string(&args.url),
            args.channels,
            if socketio {
                "socket.io"
            } else if stomp {
                "stomp"
            } else {
                "tether.json"
            },
            publish_time.as_secs_f64(),
        );
    } else {
        let latency = latency_table(&hist);
        print!(
            "target       {}\nsubscribers  {want} open (in {:.2} s) over {} channel(s)\npublished    {published} in {:.2} s ({:.1}/s)\n\
             delivered    {delivered} of {total} expected ({rate:.1} deliveries/s)\nlatency      {latency}\nerrors       {}\n",
            args.url,
            open_time.as_secs_f64(),
            args.channels,
            publish_time.as_secs_f64(),
            published as f64 / publish_time.as_secs_f64(),
            describe_errors(&errors),
        );
    }
    Ok(if delivered == total && errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
