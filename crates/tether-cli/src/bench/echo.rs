//! Echo mode: N connections, each keeping K messages in flight against an echo server,
//! for a duration or a count; messages/s, MB/s, latency percentiles, errors by kind.

use super::args::Args;
use super::load::{
    describe_errors, errors_json, json_string, kind, latency_json, latency_table, open_all, progress,
    stop_progress, Configs, Shared, Socket,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether::{Error, Message};

pub(super) async fn run(args: &Args, configs: Configs, shared: Arc<Shared>) -> anyhow::Result<ExitCode> {
    let payload = Bytes::from(vec![b'x'; args.size]);
    let message = if args.binary {
        Message::Binary(payload)
    } else {
        Message::text(String::from_utf8(payload.to_vec()).unwrap_or_default())
    };
    let (sockets, open_time) =
        open_all(std::slice::from_ref(&args.url), &configs, args.connections, &shared).await?;

    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + duration);
    let mut tasks = Vec::with_capacity(sockets.len());
    for ws in sockets {
        let (shared, message) = (shared.clone(), message.clone());
        let (in_flight, count) = (args.in_flight, args.count);
        tasks.push(tokio::spawn(echo_connection(ws, message, in_flight, count, deadline, shared)));
    }
    let progress = (!args.quiet).then(|| tokio::spawn(progress(shared.clone(), start, "messages")));
    let mut latency = Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?;
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = latency.add(&h);
        }
    }
    // Echoes are counted up to the deadline only; closing afterwards is not part of the run.
    let elapsed = start.elapsed().min(duration);
    stop_progress(progress);

    let report = Report {
        url: &args.url,
        connections: args.connections,
        opened: shared.open.load(Ordering::Relaxed),
        open_time,
        size: args.size,
        binary: args.binary,
        in_flight: args.in_flight,
        elapsed,
        messages: shared.messages.load(Ordering::Relaxed),
        bytes: shared.bytes.load(Ordering::Relaxed),
        latency,
        errors: shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(if report.messages > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One connection's loop: keep `in_flight` messages outstanding, time each echo.
async fn echo_connection(
    mut ws: Socket,
    message: Message,
    in_flight: usize,
    count: Option<u64>,
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let len = message.len() as u64;
    let mut received = 0u64;
    let result: Result<(), Error> = async {
        for _ in 0..in_flight {
            sent.push_back(Instant::now());
            ws.feed(message.clone()).await?;
        }
        ws.flush().await?;
        loop {
            let next = tokio::select! {
                next = ws.next() => next,
                () = tokio::time::sleep_until(deadline) => return Ok(()),
            };
            match next {
                Some(Ok(m)) if m.is_data() => {
                    // An echo is complete when its bytes are back, in however many messages
                    // they come (a bridge to a TCP echo may split or join them).
                    received += m.len() as u64;
                    let echoes = received.checked_div(len).unwrap_or(1);
                    received -= echoes * len;
                    for _ in 0..echoes {
                        if let Some(t) = sent.pop_front() {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        }
                        let done = shared.messages.fetch_add(1, Ordering::Relaxed) + 1;
                        shared.bytes.fetch_add(len, Ordering::Relaxed);
                        if shared.stop.load(Ordering::Relaxed) || count.is_some_and(|c| done >= c) {
                            shared.stop.store(true, Ordering::Relaxed);
                            return Ok(());
                        }
                        sent.push_back(Instant::now());
                        // Written by the next `next()`, with any other echo that came in the
                        // same read.
                        ws.feed(message.clone()).await?;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| f.code.0);
                    shared.error(format!("closed by server: {code}"));
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => {
                    shared.error("connection lost".to_owned());
                    return Ok(());
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close()).await;
        }
        Err(e) => shared.error(kind(&e)),
    }
    hist
}

struct Report<'a> {
    url: &'a str,
    connections: usize,
    opened: u64,
    open_time: Duration,
    size: usize,
    binary: bool,
    in_flight: usize,
    elapsed: Duration,
    messages: u64,
    bytes: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Report<'_> {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    fn table(&self) -> String {
        let kind = if self.binary { "binary" } else { "text" };
        let latency = latency_table(&self.latency);
        format!(
            "target       {}\nconnections  {} requested, {} open (in {:.2} s)\nmessage      {} B {kind}, {} in flight per connection\n\
             duration     {:.2} s\nmessages     {} ({:.1} msg/s)\nthroughput   {:.3} MB/s each way\nlatency      {latency}\n\
             errors       {}\n",
            self.url,
            self.connections,
            self.opened,
            self.open_time.as_secs_f64(),
            self.size,
            self.in_flight,
            self.elapsed.as_secs_f64(),
            self.messages,
            self.rate(),
            self.mb_per_s(),
            describe_errors(&self.errors),
        )
    }

    fn json(&self) -> String {
        let latency = latency_json(&self.latency);
        let errors = errors_json(&self.errors);
        format!(
            "{{\"mode\":\"echo\",\"url\":{},\"connections\":{},\"open\":{},\"size\":{},\"binary\":{},\"in_flight\":{},\
             \"duration_s\":{:.3},\"messages\":{},\"messages_per_s\":{:.1},\"mb_per_s\":{:.3},\"latency_ms\":{{{latency}}},\
             \"errors\":{{{errors}}}}}",
            json_string(self.url),
            self.connections,
            self.opened,
            self.size,
            self.binary,
            self.in_flight,
            self.elapsed.as_secs_f64(),
            self.messages,
            self.rate(),
            self.mb_per_s(),
        )
    }
}
