//! `tether bench --mode ramp`: open N connections at a steady rate, hold them idle, close
//! them. With `--server-pid`, the server's resident memory before the ramp and with every
//! connection held, and the growth per connection: what an idle connection costs the server.

use super::args::Args;
use super::load::{
    describe_errors, errors_json, json_string, kind, latency_json, latency_table, progress, stop_progress,
    Configs, Shared,
};
use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connection attempts under way at most (beyond the rate, a slow server is not flooded).
const MAX_CONNECTING: usize = 512;
/// Time allowed for the server to settle after the last handshake, before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// Resident memory of a process in KiB (`VmRSS` in /proc/PID/status).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("cannot read the memory of process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS line for process {pid}"))
}

pub(super) async fn run(args: &Args, configs: Configs, shared: Arc<Shared>) -> anyhow::Result<ExitCode> {
    if !(args.open_rate.is_finite() && args.open_rate > 0.0) {
        bail!("--open-rate must be a positive number of connections per second");
    }
    let rss_before = args.server_pid.map(rss_kib).transpose()?;
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTING));
    let start = Instant::now();
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start, "connections")));
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let at = start + Duration::from_secs_f64(i as f64 / args.open_rate);
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let (url, config, shared, latency) =
            (args.url.clone(), configs.get(i), shared.clone(), latency.clone());
        let (mut release, opened) = (release_rx.clone(), opened_tx.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = tether::connect_direct(&url, &config).await;
            drop(permit);
            let mut ws = match result {
                Ok((ws, _)) => ws,
                Err(e) => {
                    shared.error(kind(&e));
                    return;
                }
            };
            let _ = latency.lock().unwrap_or_else(|e| e.into_inner()).record(t.elapsed().as_micros() as u64);
            shared.messages.fetch_add(1, Ordering::Relaxed);
            shared.open.fetch_add(1, Ordering::Relaxed);
            drop(opened);
            // Held idle (but read, so pings are answered and a close is seen) until released.
            let lost = tokio::select! {
                _ = release.wait_for(|r| *r) => false,
                next = ws.next() => !matches!(next, Some(Ok(m)) if m.is_data()),
            };
            shared.open.fetch_sub(1, Ordering::Relaxed);
            if lost {
                shared.error("closed while held".to_owned());
                return;
            }
            if tokio::time::timeout(Duration::from_secs(5), ws.close()).await.is_err() {
                shared.error("close handshake timed out".to_owned());
            }
        }));
        if args.count.is_some_and(|n| i as u64 + 1 >= n) {
            break;
        }
    }
    drop(opened_tx);
    // Every attempt has ended (open or failed) once the last sender is dropped.
    while opened_rx.recv().await.is_some() {}
    let ramp_time = start.elapsed();
    let held = shared.open.load(Ordering::Relaxed);
    tokio::time::sleep(SETTLE).await;
    let rss_held = args.server_pid.map(rss_kib).transpose()?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let still_open = shared.open.load(Ordering::Relaxed);
    let _ = release_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    stop_progress(progress);

    let hist = latency.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let errors = shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let per_conn = match (rss_before, rss_held) {
        (Some(b), Some(h)) if held > 0 => Some(h.saturating_sub(b) as f64 * 1024.0 / held as f64),
        _ => None,
    };
    let rate = held as f64 / ramp_time.as_secs_f64();
    if args.json {
        let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
        println!(
            "{{\"mode\":\"ramp\",\"url\":{},\"connections\":{},\"open\":{held},\"still_open\":{still_open},\
             \"ramp_s\":{:.3},\"open_per_s\":{rate:.1},\"held_s\":{:.3},\"server_pid\":{},\"server_rss_before_kib\":{},\
             \"server_rss_held_kib\":{},\"server_bytes_per_connection\":{},\"latency_ms\":{{{}}},\"errors\":{{{}}}}}",
            json_string(&args.url),
            args.connections,
            ramp_time.as_secs_f64(),
            args.duration,
            args.server_pid.map_or("null".to_owned(), |p| p.to_string()),
            opt(rss_before),
            opt(rss_held),
            per_conn.map_or("null".to_owned(), |b| format!("{b:.0}")),
            latency_json(&hist),
            errors_json(&errors),
        );
    } else {
        let memory = match (args.server_pid, rss_before, rss_held, per_conn) {
            (Some(pid), Some(b), Some(h), Some(per)) => {
                format!("server pid {pid}: {b} KiB before, {h} KiB held ({per:.0} B per connection)")
            }
            _ => "not measured (give --server-pid)".to_owned(),
        };
        print!(
            "target       {}\nconnections  {} requested, {held} open in {:.2} s ({rate:.1}/s), {still_open} still open after {:.2} s held\n\
             memory       {memory}\nlatency      {}\nerrors       {}\n",
            args.url,
            args.connections,
            ramp_time.as_secs_f64(),
            args.duration,
            latency_table(&hist),
            describe_errors(&errors),
        );
    }
    Ok(if held > 0 && errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
