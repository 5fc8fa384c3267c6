//! `tether bench`: a load generator for WebSocket servers, in the spirit of wrk and
//! uWebSockets' load_test. Echo mode: N connections, each keeping K messages in flight
//! against an echo server, for a duration or a count; messages/s, MB/s, latency
//! percentiles (HDR histogram), errors by kind. Fan-out mode is in `fanout.rs`, handshake
//! mode in `handshake.rs`.

use anyhow::bail;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether::tether_proto::HandshakeError;
use tether::tls::ClientTrust;
use tether::{ClientConfig, Error, Message};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Echo throughput and latency: every connection sends, waits for the echo, sends again.
    Echo,
    /// Hub fan-out: every connection subscribes (tether.json) to one of --channels channels;
    /// one publisher posts --rate publications/s through the server API; delivery rate and
    /// publish-to-delivery latency.
    Fanout,
    /// Handshake rate: each of --connections workers opens a connection, closes it (close
    /// handshake) and starts again; handshakes/s and opening-handshake latency.
    Handshake,
    /// Connection ramp: open --connections connections at --open-rate per second, hold them
    /// idle for --duration, then close them; with --server-pid, the server's memory per
    /// connection (RSS growth divided by connections held).
    Ramp,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// ws:// or wss:// URL of the server.
    pub(crate) url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    pub(crate) mode: Mode,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 100)]
    pub(crate) connections: usize,
    /// Message payload size in bytes.
    #[arg(short = 's', long, default_value_t = 20)]
    pub(crate) size: usize,
    /// Send binary messages (default: text).
    #[arg(long)]
    binary: bool,
    /// Messages in flight per connection.
    #[arg(short = 'k', long, default_value_t = 1)]
    in_flight: usize,
    /// Seconds to run (after every connection is open).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Stop after this many echoes (or handshakes) in total, if sooner than --duration.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Offer permessage-deflate (off by default: measure the framing, not zlib).
    #[arg(long)]
    deflate: bool,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress lines on stderr.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Fan-out: channels the subscribers are spread over.
    #[arg(long, default_value_t = 1)]
    pub(crate) channels: usize,
    /// Fan-out: channel name prefix (a namespace that allows anonymous subscribers and no
    /// join/leave events); channels are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "ticker:bench")]
    pub(crate) channel_prefix: String,
    /// Fan-out: publications per second, over all channels.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) rate: f64,
    /// Fan-out: subscribers speak STOMP 1.2 (`v12.stomp`, `/topic/CHANNEL`) instead of
    /// tether.json.
    #[arg(long)]
    pub(crate) stomp: bool,
    /// Fan-out: spread the subscribers over these hub nodes' URLs (repeatable; the
    /// publisher stays on URL) [default: URL].
    #[arg(long = "subscribe-url", value_name = "URL")]
    pub(crate) subscribe_urls: Vec<String>,
    /// Fan-out: the hub's server API key.
    #[arg(long, env = "TETHER_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Ramp: connections opened per second.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) open_rate: f64,
    /// Ramp: the server's process id, to report its memory (RSS from /proc) per connection.
    #[arg(long, value_name = "PID")]
    pub(crate) server_pid: Option<u32>,
    /// Local address to connect from (repeatable; connections take them in turn): several
    /// 127.0.0.x addresses get past the ephemeral-port limit of one.
    #[arg(long = "local-addr", value_name = "IP")]
    pub(crate) local_addrs: Vec<std::net::IpAddr>,
    /// Trust only the CA certificates in this PEM file for wss://.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<std::path::PathBuf>,
    /// Do not check the server's certificate (development only).
    #[arg(long)]
    insecure: bool,
}

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

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    tether::Url::parse(&args.url).map_err(|e| anyhow::anyhow!("invalid url {:?}: {e}", args.url))?;
    let mut limits = tether::Config::default();
    if args.deflate {
        limits = limits.with_deflate(Some(tether::DeflateConfig::default()));
    }
    let mut config = ClientConfig::default().with_config(limits);
    if let Some(ca) = &args.ca {
        config = config
            .with_trust(ClientTrust::Ca(tether::tls::load_certs(ca).map_err(|e| anyhow::anyhow!("{e}"))?));
    }
    if args.insecure {
        config = config.with_trust(ClientTrust::Insecure);
    }
    let payload = Bytes::from(vec![b'x'; args.size]);
    let message = if args.binary {
        Message::Binary(payload)
    } else {
        Message::text(String::from_utf8(payload.to_vec()).unwrap_or_default())
    };

    let shared = Arc::new(Shared::default());
    let configs = Configs::new(config, &args.local_addrs);
    if !args.subscribe_urls.is_empty() && !matches!(args.mode, Mode::Fanout) {
        bail!("--subscribe-url is for --mode fanout");
    }
    match args.mode {
        Mode::Fanout => return crate::fanout::run(&args, configs, shared).await,
        Mode::Handshake => return crate::handshake::run(&args, configs, shared).await,
        Mode::Ramp => return crate::ramp::run(&args, configs, shared).await,
        Mode::Echo => {}
    }
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

/// The client configuration for each local address (one without `--local-addr`);
/// connection `i` uses `get(i)`.
#[derive(Clone)]
pub(crate) struct Configs(Arc<[Arc<ClientConfig>]>);

impl Configs {
    fn new(config: ClientConfig, local_addrs: &[std::net::IpAddr]) -> Self {
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
