//! `tether bench --mode handshake`: how many WebSocket connections per second a server takes.
//! Each of N workers opens a connection (TCP, TLS for wss://, the opening handshake), closes
//! it with the close handshake, and starts again; handshakes/s and the opening handshake's
//! latency (connect to 101), errors by kind.

use super::args::Args;
use super::load::{
    describe_errors, errors_json, json_string, kind, latency_json, latency_table, progress, stop_progress,
    Configs, Shared,
};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) async fn run(args: &Args, configs: Configs, shared: Arc<Shared>) -> anyhow::Result<ExitCode> {
    let duration = Duration::from_secs_f64(args.duration);
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?));
    let start = Instant::now();
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start, "handshakes")));
    let mut workers = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (url, config, shared, latency, count) =
            (args.url.clone(), configs.get(i), shared.clone(), latency.clone(), args.count);
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3).expect("3 significant figures is valid");
            while start.elapsed() < duration
                && count.is_none_or(|n| shared.messages.load(Ordering::Relaxed) < n)
            {
                let t = Instant::now();
                match tether::connect_direct(&url, &config).await {
                    Ok((mut ws, _)) => {
                        let _ = local.record(t.elapsed().as_micros() as u64);
                        shared.messages.fetch_add(1, Ordering::Relaxed);
                        // The close handshake: our close, then the server's, then EOF.
                        let closed = async { ws.close().await.ok() };
                        if tokio::time::timeout(Duration::from_secs(5), closed).await.ok().flatten().is_none()
                        {
                            shared.error("close handshake failed".into());
                        }
                    }
                    Err(e) => {
                        shared.error(kind(&e));
                        // A refusing server is not hammered in a tight loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let _ = latency.lock().unwrap_or_else(|e| e.into_inner()).add(&local);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed();
    stop_progress(progress);
    let handshakes = shared.messages.load(Ordering::Relaxed);
    let rate = handshakes as f64 / elapsed.as_secs_f64();
    let hist = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let errors = shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if args.json {
        println!(
            "{{\"mode\":\"handshake\",\"url\":{},\"workers\":{},\"handshakes\":{handshakes},\"seconds\":{:.3},\
             \"handshakes_per_s\":{rate:.1},\"latency_ms\":{{{}}},\"errors\":{{{}}}}}",
            json_string(&args.url),
            args.connections,
            elapsed.as_secs_f64(),
            latency_json(&hist),
            errors_json(&errors),
        );
    } else {
        print!(
            "target       {}\nworkers      {}\nhandshakes   {handshakes} in {:.2} s ({rate:.1}/s, each followed by a close handshake)\n\
             latency      {}\nerrors       {}\n",
            args.url,
            args.connections,
            elapsed.as_secs_f64(),
            latency_table(&hist),
            describe_errors(&errors),
        );
    }
    Ok(if handshakes > 0 && errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
