//! What every bench mode shares: opening connections, counting errors, progress lines,
//! latency and JSON formatting.

use anyhow::bail;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::tether_proto::HandshakeError;
use tether::{ClientConfig, Error};

/// Counters shared by every connection task.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) messages: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) stop: AtomicBool,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub(crate) fn error(&self, kind: String) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(kind).or_default() += 1;
    }
}

/// The kind of an error, for counting: short and without addresses.
pub(crate) fn kind(e: &Error) -> String {
    match e {
        Error::Connect(c) => format!("connect: {:?}", c.kind()).to_lowercase(),
        Error::Handshake(HandshakeError::UnexpectedStatus { status, .. }) => {
            format!("handshake: http {status}")
        }
        Error::Handshake(h) => format!("handshake: {h}"),
        Error::Protocol(p) => format!("protocol: {p}"),
        Error::Tls(_) => "tls".to_owned(),
        Error::Timeout => "timeout".to_owned(),
        Error::Io(io) => format!("io: {:?}", io.kind()).to_lowercase(),
        other => other.to_string(),
    }
}

/// The client configuration for each local address (one without `--local-addr`);
/// connection `i` uses `get(i)`.
#[derive(Clone)]
pub(crate) struct Configs(Arc<[Arc<ClientConfig>]>);

impl Configs {
    pub(crate) fn new(config: ClientConfig, local_addrs: &[std::net::IpAddr]) -> Self {
        if local_addrs.is_empty() {
            return Self(Arc::new([Arc::new(config)]));
        }
        Self(local_addrs.iter().map(|ip| Arc::new(config.clone().with_local_addr(*ip))).collect())
    }

    /// The same change to every configuration.
    pub(crate) fn map(&self, f: impl Fn(ClientConfig) -> ClientConfig) -> Self {
        Self(self.0.iter().map(|c| Arc::new(f((**c).clone()))).collect())
    }

    pub(crate) fn get(&self, i: usize) -> Arc<ClientConfig> {
        self.0[i % self.0.len()].clone()
    }
}

/// A connection of the load generator: driven by its own task, no driver task.
pub(crate) type Socket = tether::WebSocketStream<tether::Transport>;

/// Opens `n` connections (at most 64 handshakes at a time), counting failures by kind.
pub(crate) async fn open_all(
    urls: &[String],
    configs: &Configs,
    n: usize,
    shared: &Arc<Shared>,
) -> anyhow::Result<(Vec<Socket>, Duration)> {
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let opening = Instant::now();
    let mut connecting = Vec::with_capacity(n);
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let (config, gate, shared) = (configs.get(i), gate.clone(), shared.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.ok()?;
            match tether::connect_direct(&url, &config).await {
                Ok((ws, _)) => {
                    shared.open.fetch_add(1, Ordering::Relaxed);
                    Some(ws)
                }
                Err(e) => {
                    shared.error(kind(&e));
                    None
                }
            }
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for c in connecting {
        if let Ok(Some(ws)) = c.await {
            sockets.push(ws);
        }
    }
    if sockets.is_empty() {
        let errors = shared.errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
        bail!("no connection could be opened to {} ({})", urls.join(", "), describe_errors(&errors));
    }
    Ok((sockets, opening.elapsed()))
}

/// A line per second on stderr (rewritten in place on a terminal).
/// Stops the progress lines (ending the rolling line on a terminal).
pub(crate) fn stop_progress(progress: Option<tokio::task::JoinHandle<()>>) {
    if let Some(p) = progress {
        p.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

/// Prints a line a second: `unit` (messages, handshakes, …) per second and in total.
pub(crate) async fn progress(shared: Arc<Shared>, start: Instant, unit: &str) {
    let tty = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = shared.messages.load(Ordering::Relaxed);
        let errors: u64 = shared.errors.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
        let line = format!(
            "[{:>5.1}s] {:>10} {unit}/s  {:>12} {unit}  {} open  {errors} errors",
            start.elapsed().as_secs_f64(),
            now - last,
            now,
            shared.open.load(Ordering::Relaxed)
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        last = now;
    }
}

pub(crate) fn describe_errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_owned();
    }
    errors.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
}

/// Latency quantiles reported, with their labels.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// The quantiles and the maximum of a histogram of microseconds, in milliseconds.
fn latency_ms(hist: &Histogram<u64>) -> impl Iterator<Item = (&'static str, f64)> + '_ {
    QUANTILES
        .iter()
        .map(|(label, q)| (*label, hist.value_at_quantile(*q)))
        .chain([("max", hist.max())])
        .map(|(label, us)| (label, us as f64 / 1000.0))
}

/// `p50 0.123 ms  p90 …  max … ms`, for the table.
pub(crate) fn latency_table(hist: &Histogram<u64>) -> String {
    latency_ms(hist).map(|(label, v)| format!("{label} {v:.3} ms")).collect::<Vec<_>>().join("  ")
}

/// `"p50":0.123,…,"max":…`, inside the JSON object `latency_ms`.
pub(crate) fn latency_json(hist: &Histogram<u64>) -> String {
    latency_ms(hist).map(|(label, v)| format!("\"{label}\":{v:.3}")).collect::<Vec<_>>().join(",")
}

/// `"kind":count,…`, inside the JSON object `errors`.
pub(crate) fn errors_json(errors: &BTreeMap<String, u64>) -> String {
    errors.iter().map(|(k, n)| format!("{}:{n}", json_string(k))).collect::<Vec<_>>().join(",")
}

pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
