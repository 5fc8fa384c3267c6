//! The fan-out loader of bench/fanout_compare.py: one thread on epoll (mio), raw WebSocket
//! frames, no task or allocation per delivery, so that it stays well below one core while
//! the server under test saturates its own. N subscribers over C channels (connection `i`
//! takes channel `i % C`), one publisher over a keep-alive HTTP connection at a fixed rate,
//! for a fixed time; then it waits (at most 10 s) for what is still on its way and prints
//! one JSON line: deliveries, what was expected, gaps and reorders (each publication
//! carries its per-channel sequence), publish-to-delivery latency, its own CPU and the
//! server's (from /proc/PID/stat; the server's also in user space alone), all over the same
//! window. Publishing keeps to its schedule whatever the answers (pipelined on its
//! connection), with at most `--in-flight` (64) requests unanswered; `--in-flight 1` waits
//! for each answer.
//!
//! Protocols (`--proto`): `json` (tether.json at the hub's /ws), `stomp` (STOMP 1.2 over
//! the same path), `socketio` (Engine.IO v4 over WebSocket, event `subscribe` with an ack),
//! `raw` (a text message with the channel's name subscribes, answered "ok": the uWebSockets
//! and Node `ws` servers). Publishing (`--publish`): `api` (POST /api/publish with
//! `{"channel","data"}` and the API key: tether serve, the Node socket.io server) or `raw`
//! (POST /publish/CHANNEL with the data as body).
//!
//! The data of publication `s` of a channel is `{"t":MICROS,"s":S,"p":"xx.."}`, padded to
//! `--size` bytes; a delivery is any text message after the subscription that holds `"t":`.
//!
//! `--deflate` offers permessage-deflate on every subscriber, inflates what comes compressed
//! (a decompressor per connection, reset after each message when the server answered
//! `server_no_context_takeover`), and pads with words rather than one repeated letter, so
//! that the data compresses about as JSON does. Every run reports the wire bytes of what
//! the subscribers received after subscribing.
//!
//! `--token T` authenticates every subscriber with the hub's token `T` (tether.json's
//! `connect`, STOMP's `passcode`), as a signed-in client does: a token with an expiry makes
//! the hub keep a deadline per connection. `--heart-beat CX,CY` (STOMP) asks for heart-beats
//! as stomp.js does by default (`10000,10000`); the loader then sends its own at half of CX.
//!
//! `--server-core N` (the core the server is pinned to) adds, over the same window, the
//! core's busy time (/proc/stat) and the CPU of its `ksoftirqd/N`: the kernel thread that
//! does the network's deferred work (here the loopback's receive side of the server's
//! sends) when there is more of it than the sending context finishes. That time is not in
//! the server's /proc CPU though the server caused it: a server that batches its system
//! calls (io_uring) leaves more of it there, and looks cheaper than it is without it.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PUBLISHER: Token = Token(usize::MAX - 1);
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Handshakes in flight at once, so that the server's accept queue never overflows.
const OPENING: usize = 200;

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Json,
    Stomp,
    SocketIo,
    Raw,
}

struct Opts {
    addr: SocketAddr,
    path: String,
    proto: Proto,
    publish_raw: bool,
    connections: usize,
    channels: usize,
    rate: f64,
    duration: f64,
    size: usize,
    api_key: String,
    prefix: String,
    server_pid: Option<u32>,
    server_core: Option<u32>,
    /// Only the server's memory: RSS before the first connection and 1 s after the last
    /// subscription, no publishing.
    memory: bool,
    /// Publish requests sent ahead of their answers (1: wait for each answer).
    in_flight: usize,
    /// Offer permessage-deflate.
    deflate: bool,
    /// The token each subscriber connects with (none: anonymous).
    token: Option<String>,
    /// STOMP's heart-beat header (what the client sends, what it wants), in ms.
    heart_beat: (u64, u64),
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        addr: "127.0.0.1:8080".parse().unwrap(),
        path: "/ws".into(),
        proto: Proto::Json,
        publish_raw: false,
        connections: 1000,
        channels: 1,
        rate: 100.0,
        duration: 5.0,
        size: 40,
        api_key: String::new(),
        prefix: "ticker:bench".into(),
        server_pid: None,
        server_core: None,
        memory: false,
        in_flight: 64,
        deflate: false,
        token: None,
        heart_beat: (0, 0),
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory") {
        args.remove(i);
        o.memory = true;
    }
    if let Some(i) = args.iter().position(|a| a == "--deflate") {
        args.remove(i);
        o.deflate = true;
    }
    let mut it = args.chunks(2);
    for pair in &mut it {
        let [k, v] = pair else { return Err(format!("{} needs a value", pair[0])) };
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--addr" => o.addr = v.parse().map_err(|e| bad(&e))?,
            "--path" => o.path = v.clone(),
            "--proto" => {
                o.proto = match v.as_str() {
                    "json" => Proto::Json,
                    "stomp" => Proto::Stomp,
                    "socketio" => Proto::SocketIo,
                    "raw" => Proto::Raw,
                    _ => return Err(format!("unknown --proto {v}")),
                }
            }
            "--publish" => o.publish_raw = v == "raw",
            "--connections" => o.connections = v.parse().map_err(|e| bad(&e))?,
            "--channels" => o.channels = v.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = v.parse().map_err(|e| bad(&e))?,
            "--duration" => o.duration = v.parse().map_err(|e| bad(&e))?,
            "--size" => o.size = v.parse().map_err(|e| bad(&e))?,
            "--api-key" => o.api_key = v.clone(),
            "--prefix" => o.prefix = v.clone(),
            "--in-flight" => o.in_flight = v.parse::<usize>().map_err(|e| bad(&e))?.max(1),
            "--server-pid" => o.server_pid = Some(v.parse().map_err(|e| bad(&e))?),
            "--server-core" => o.server_core = Some(v.parse().map_err(|e| bad(&e))?),
            "--token" => o.token = Some(v.clone()),
            "--heart-beat" => {
                let (cx, cy) = v.split_once(',').ok_or_else(|| bad(&"expected CX,CY"))?;
                o.heart_beat = (cx.parse().map_err(|e| bad(&e))?, cy.parse().map_err(|e| bad(&e))?);
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if o.channels == 0 || o.connections == 0 || o.rate.is_nan() || o.rate <= 0.0 {
        return Err("--connections and --channels must be at least 1, --rate positive".into());
    }
    if o.heart_beat != (0, 0) && o.proto != Proto::Stomp {
        return Err("--heart-beat is STOMP's (--proto stomp)".into());
    }
    if o.token.is_some() && !matches!(o.proto, Proto::Json | Proto::Stomp) {
        return Err("--token is for --proto json or stomp".into());
    }
    if o.proto == Proto::SocketIo {
        o.path = "/socket.io/?EIO=4&transport=websocket".into();
    }
    Ok(o)
}

#[derive(PartialEq)]
enum Phase {
    Handshake,
    /// Setup messages sent; waiting for the answer that confirms the subscription.
    Setup,
    Subscribed,
}

struct Conn {
    sock: TcpStream,
    phase: Phase,
    channel: usize,
    input: Vec<u8>,
    output: Vec<u8>,
    /// The sequence of the last publication received.
    last: u64,
    /// permessage-deflate, when the server agreed: the decompressor, and whether to reset
    /// it after each message (the server answered `server_no_context_takeover`).
    inflate: Option<(flate2::Decompress, bool)>,
}

#[derive(Default)]
struct Tally {
    /// Frame bytes (headers included) of the data frames received after subscribing.
    wire_bytes: u64,
    /// Messages among them that came compressed.
    compressed: u64,
    /// Compressed messages inflated (the others were the same bytes as the one before).
    inflations: u64,
    /// Where a compressed message is inflated.
    inflated: Vec<u8>,
    /// Compressed payloads that stood alone (no context takeover) and what they inflated
    /// to: the same bytes for another subscriber inflate to the same text, so they are
    /// looked up rather than inflated again (a server that compresses once sends every
    /// subscriber the same bytes; so does one that compresses for each without context).
    /// Emptied at 1,024 entries.
    inflated_from: std::collections::HashMap<Box<[u8]>, Box<[u8]>>,
    delivered: u64,
    gaps: u64,
    reordered: u64,
    subscribed: usize,
    errors: Vec<String>,
    latency_us: Vec<u32>,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The number after `key` in `text`.
fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// Appends `payload` as a masked client text frame.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

fn control(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

/// The loader's STOMP heart-beats (`--heart-beat CX,CY` with CX > 0): an EOL to every
/// connection past its handshake, at half the interval promised, so none is ever late.
struct Beats {
    every: Option<Duration>,
    next: Instant,
}

impl Beats {
    fn new(o: &Opts) -> Self {
        let every = (o.heart_beat.0 > 0).then(|| Duration::from_millis((o.heart_beat.0 / 2).max(1)));
        Self { every, next: Instant::now() + every.unwrap_or_default() }
    }

    /// Sends the beats that are due; returns the connections whose write failed.
    fn due(&mut self, conns: &mut [Option<Conn>]) -> Vec<usize> {
        let Some(every) = self.every else { return Vec::new() };
        if Instant::now() < self.next {
            return Vec::new();
        }
        self.next += every;
        let mut failed = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if let Some(c) = c.as_mut().filter(|c| c.phase != Phase::Handshake) {
                frame(&mut c.output, b"\n");
                if !c.flush() {
                    failed.push(i);
                }
            }
        }
        failed
    }
}

fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Conn {
    /// One readiness event: reads what arrived, writes what is queued; `Err` with why the
    /// connection ended.
    fn event(
        &mut self,
        ev: &mio::event::Event,
        o: &Opts,
        buf: &mut [u8],
        tally: &mut Tally,
    ) -> Result<(), String> {
        if ev.is_readable() {
            self.readable(o, buf, tally)?;
        }
        if self.flush() {
            Ok(())
        } else {
            Err("write failed".into())
        }
    }

    /// Writes what is queued; `false` when the connection failed.
    fn flush(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.sock.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn setup(&mut self, o: &Opts, name: &str) {
        let msgs: Vec<String> = match o.proto {
            Proto::Json => vec![
                match &o.token {
                    Some(t) => format!("{{\"id\":1,\"connect\":{{\"token\":{}}}}}", json_string(t)),
                    None => "{\"id\":1,\"connect\":{}}".into(),
                },
                format!("{{\"id\":2,\"subscribe\":{{\"channel\":{}}}}}", json_string(name)),
            ],
            Proto::Stomp => vec![
                format!(
                    "CONNECT\naccept-version:1.2\nheart-beat:{},{}\n{}\n\0",
                    o.heart_beat.0,
                    o.heart_beat.1,
                    o.token.as_ref().map_or(String::new(), |t| format!("passcode:{t}\n"))
                ),
                format!("SUBSCRIBE\nid:0\ndestination:/topic/{name}\nreceipt:subscribed\n\n\0"),
            ],
            // Engine.IO's open packet comes first.
            Proto::SocketIo => vec![],
            Proto::Raw => vec![name.into()],
        };
        for m in msgs {
            frame(&mut self.output, m.as_bytes());
        }
        self.phase = Phase::Setup;
    }

    /// One text message from the server.
    fn text(&mut self, t: &[u8], o: &Opts, tally: &mut Tally) {
        if self.phase == Phase::Subscribed {
            if let Some(sent) = number_after(t, b"\"t\":") {
                tally.delivered += 1;
                tally.latency_us.push(now_us().saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                if let Some(s) = number_after(t, b"\"s\":") {
                    if s <= self.last {
                        tally.reordered += 1;
                    } else {
                        tally.gaps += s - self.last - 1;
                        self.last = s;
                    }
                }
                return;
            }
        }
        match o.proto {
            Proto::SocketIo if t == b"2" => frame(&mut self.output, b"3"),
            Proto::SocketIo if t.starts_with(b"0{") => frame(&mut self.output, b"40"),
            Proto::SocketIo if t.starts_with(b"40") => {
                let name = format!("{}{}", o.prefix, self.channel);
                frame(&mut self.output, format!("420[\"subscribe\",{}]", json_string(&name)).as_bytes());
            }
            _ => {
                let confirmed = match o.proto {
                    Proto::Json => t.starts_with(b"{\"id\":2,\"result\""),
                    Proto::Stomp => t.starts_with(b"RECEIPT\n"),
                    Proto::SocketIo => t.starts_with(b"430"),
                    Proto::Raw => t == b"ok",
                };
                if confirmed && self.phase == Phase::Setup {
                    self.phase = Phase::Subscribed;
                    tally.subscribed += 1;
                } else if t.starts_with(b"ERROR")
                    || (o.proto == Proto::Json && t.windows(7).any(|w| w == b"\"error\""))
                {
                    tally.errors.push(String::from_utf8_lossy(&t[..t.len().min(200)]).into_owned());
                }
            }
        }
    }

    /// Reads all there is; `Err` with why the connection ended.
    fn readable(&mut self, o: &Opts, buf: &mut [u8], tally: &mut Tally) -> Result<(), String> {
        loop {
            match self.sock.read(buf) {
                Ok(0) => return Err("connection lost".into()),
                Ok(n) if self.input.is_empty() && self.phase != Phase::Handshake => {
                    // Whole frames are read where they landed; only a partial one is kept.
                    let used = self.frames(&buf[..n], o, tally)?;
                    self.input.extend_from_slice(&buf[used..n]);
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    let mut input = std::mem::take(&mut self.input);
                    let r = self.buffered(&input, o, tally);
                    if let Ok(used) = r {
                        input.drain(..used);
                        self.input = input;
                    }
                    r?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {}", e.kind())),
            }
        }
        if self.flush() {
            Ok(())
        } else {
            Err("write failed".into())
        }
    }

    /// What was kept, and more: the handshake's answer, then frames. Returns the bytes used.
    fn buffered(&mut self, input: &[u8], o: &Opts, tally: &mut Tally) -> Result<usize, String> {
        let mut at = 0;
        if self.phase == Phase::Handshake {
            let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(0) };
            if !input.starts_with(b"HTTP/1.1 101") {
                let line = input.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(format!("handshake: {}", String::from_utf8_lossy(line)));
            }
            at = end + 4;
            let head = String::from_utf8_lossy(&input[..end]).to_ascii_lowercase();
            if let Some(ext) = head.lines().find_map(|l| l.strip_prefix("sec-websocket-extensions:")) {
                if ext.contains("permessage-deflate") {
                    let fresh = ext.contains("server_no_context_takeover");
                    self.inflate = Some((flate2::Decompress::new(false), fresh));
                }
            }
            let name = format!("{}{}", o.prefix, self.channel);
            self.setup(o, &name);
        }
        Ok(at + self.frames(&input[at..], o, tally)?)
    }

    /// Handles the whole frames at the start of `input`; returns the bytes they took.
    fn frames(&mut self, input: &[u8], o: &Opts, tally: &mut Tally) -> Result<usize, String> {
        let mut at = 0;
        while input.len() - at >= 2 {
            let (b0, b1) = (input[at], input[at + 1]);
            let (len, head) = match b1 & 0x7f {
                126 if input.len() - at >= 4 => {
                    (usize::from(u16::from_be_bytes([input[at + 2], input[at + 3]])), 4)
                }
                127 if input.len() - at >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&input[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if input.len() - at < head + len {
                break;
            }
            let payload = &input[at + head..at + head + len];
            at += head + len;
            if self.phase == Phase::Subscribed && matches!(b0 & 0x0f, 0x1 | 0x2) {
                tally.wire_bytes += (head + len) as u64;
            }
            match b0 & 0x0f {
                0x1 if b0 & 0x40 != 0 => {
                    tally.compressed += 1;
                    let fresh = self.inflate.as_ref().is_some_and(|(_, fresh)| *fresh);
                    if let Some((key, text)) = tally.inflated_from.remove_entry(payload).filter(|_| fresh) {
                        self.text(&text, o, tally);
                        tally.inflated_from.insert(key, text);
                        continue;
                    }
                    let mut out = std::mem::take(&mut tally.inflated);
                    self.inflate_message(payload, &mut out)?;
                    tally.inflations += 1;
                    if fresh {
                        if tally.inflated_from.len() >= 1024 {
                            tally.inflated_from.clear();
                        }
                        tally.inflated_from.insert(payload.into(), out.as_slice().into());
                    }
                    self.text(&out, o, tally);
                    tally.inflated = out;
                }
                0x1 => self.text(payload, o, tally),
                0x9 => control(&mut self.output, 0xA, payload),
                0x8 => {
                    let code = if len >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                    return Err(format!("closed by server: {code}"));
                }
                _ => {}
            }
        }
        Ok(at)
    }
}

impl Conn {
    /// Inflates one whole compressed message (RFC 7692 7.2.2: the payload, then
    /// `00 00 ff ff`) into `out`.
    fn inflate_message(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let Some((d, fresh)) = self.inflate.as_mut() else {
            return Err("RSV1 without permessage-deflate".into());
        };
        out.clear();
        for input in [payload, &[0, 0, 0xff, 0xff][..]] {
            let mut pos = 0;
            loop {
                if out.capacity() - out.len() < 1024 {
                    out.reserve(out.capacity().max(4096));
                }
                let before = d.total_in();
                d.decompress_vec(&input[pos..], out, flate2::FlushDecompress::Sync)
                    .map_err(|e| format!("inflate: {e}"))?;
                pos += (d.total_in() - before) as usize;
                if pos == input.len() && out.capacity() > out.len() {
                    break;
                }
            }
        }
        if *fresh {
            d.reset(false);
        }
        Ok(())
    }
}

/// CPU time of a process in seconds: user space (utime), and in all (utime + stime).
fn proc_cpu(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let (user, system) = (field(11), field(12));
    (user / 100.0, (user + system) / 100.0)
}

/// Busy time of CPU `core` in seconds (/proc/stat: all but idle and iowait).
fn core_busy(core: u32) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{core} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&prefix)) else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().sum();
    (total - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)) / 100.0
}

/// The process id of `ksoftirqd/core`.
fn ksoftirqd(core: u32) -> Option<u32> {
    let name = format!("ksoftirqd/{core}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

/// Resident memory of a process, in bytes.
fn proc_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn self_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// The publisher: one keep-alive connection, requests pipelined on it.
struct Publisher {
    sock: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Requests sent and not yet answered.
    in_flight: usize,
    published: u64,
    per_channel: Vec<u64>,
}

impl Publisher {
    fn request(&mut self, o: &Opts) {
        let ch = (self.published % o.channels as u64) as usize;
        self.per_channel[ch] += 1;
        let seq = self.per_channel[ch];
        let name = format!("{}{}", o.prefix, ch);
        let head = format!("{{\"t\":{},\"s\":{seq},\"p\":\"", now_us());
        let pad = padding(o.size.saturating_sub(head.len() + 2), o.deflate, seq);
        let data = format!("{head}{pad}\"}}");
        let (path, body, auth) = if o.publish_raw {
            (format!("/publish/{name}"), data, String::new())
        } else {
            (
                "/api/publish".to_owned(),
                format!("{{\"channel\":{},\"data\":{data}}}", json_string(&name)),
                format!("Authorization: apikey {}\r\n", o.api_key),
            )
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            o.addr,
            body.len()
        );
        self.output.extend_from_slice(req.as_bytes());
        self.in_flight += 1;
        self.published += 1;
    }

    /// Reads answers; `Err` when the server refused or went away.
    fn readable(&mut self, buf: &mut [u8]) -> Result<(), String> {
        loop {
            match self.sock.read(buf) {
                Ok(0) => return Err("the server closed the publisher's connection".into()),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("publisher read: {e}")),
            }
        }
        // Every whole answer that arrived (requests are pipelined).
        let mut at = 0;
        while let Some(end) = self.input[at..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&self.input[at..at + end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0);
            if self.input.len() < at + end + 4 + len {
                break;
            }
            if !head.starts_with("http/1.1 200") {
                let answer = String::from_utf8_lossy(&self.input[at..at + end + 4 + len]).into_owned();
                return Err(format!("publish answered: {answer}"));
            }
            at += end + 4 + len;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        self.input.drain(..at);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        while !self.output.is_empty() {
            match self.sock.write(&self.output) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(format!("publisher write: {e}")),
            }
        }
        Ok(())
    }
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fanout_load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("fanout_load: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut tally = Tally::default();
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(o.connections);
    let mut proto_header =
        if o.proto == Proto::Stomp { "Sec-WebSocket-Protocol: v12.stomp\r\n" } else { "" }.to_owned();
    if o.deflate {
        proto_header.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto_header}\r\n",
        o.path, o.addr
    );
    let rss_before = o.server_pid.map_or(0, proc_rss);
    let mut closed = 0usize;
    let fail = |reg: &mio::Registry,
                closed: &mut usize,
                tally: &mut Tally,
                conns: &mut [Option<Conn>],
                i: usize,
                why: String| {
        if let Some(mut c) = conns[i].take() {
            let _ = reg.deregister(&mut c.sock);
        }
        *closed += 1;
        if tally.errors.len() < 1000 {
            tally.errors.push(why);
        }
    };
    let mut beats = Beats::new(o);
    // Open and subscribe every connection, at most OPENING handshakes at a time.
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    let mut opened = 0;
    while tally.subscribed + closed < o.connections {
        while opened < o.connections && opened.saturating_sub(tally.subscribed + closed) < OPENING {
            let mut sock = connect(o.addr).map_err(|e| format!("connect {}: {e}", o.addr))?;
            poll.registry()
                .register(&mut sock, Token(opened), Interest::READABLE | Interest::WRITABLE)
                .map_err(|e| e.to_string())?;
            let mut c = Conn {
                sock,
                phase: Phase::Handshake,
                channel: opened % o.channels,
                input: Vec::new(),
                output: request.clone().into_bytes(),
                last: 0,
                inflate: None,
            };
            if !c.flush() {
                return Err("handshake write failed".into());
            }
            conns.push(Some(c));
            opened += 1;
        }
        if Instant::now() > setup_deadline {
            return Err(format!("only {} of {} subscribed after 120 s", tally.subscribed, o.connections));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        for i in beats.due(&mut conns) {
            fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, "heart-beat write failed".into());
        }
        for ev in &events {
            let i = ev.token().0;
            if let Some(Err(why)) =
                conns.get_mut(i).and_then(Option::as_mut).map(|c| c.event(ev, o, &mut buf, &mut tally))
            {
                fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, why);
            }
        }
    }
    if tally.subscribed < o.connections {
        return Err(format!(
            "{} of {} subscribed; first errors: {:?}",
            tally.subscribed,
            o.connections,
            &tally.errors[..tally.errors.len().min(3)]
        ));
    }
    if o.memory {
        // Let the server settle (replies written, buffers let go), answering what comes.
        let settle = Instant::now() + Duration::from_secs(1);
        while Instant::now() < settle {
            poll.poll(&mut events, Some(Duration::from_millis(50))).map_err(|e| e.to_string())?;
            for i in beats.due(&mut conns) {
                fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, "heart-beat write failed".into());
            }
            for ev in &events {
                let i = ev.token().0;
                if let Some(Err(why)) =
                    conns.get_mut(i).and_then(Option::as_mut).map(|c| c.event(ev, o, &mut buf, &mut tally))
                {
                    fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, why);
                }
            }
        }
        let rss_after = o.server_pid.map_or(0, proc_rss);
        println!(
            "{{\"subscribers\":{},\"open\":{},\"rss_before\":{rss_before},\"rss_after\":{rss_after},\"rss_per_conn\":{:.1}}}",
            o.connections,
            o.connections - closed,
            rss_after.saturating_sub(rss_before) as f64 / o.connections as f64
        );
        return Ok(());
    }
    let mut subscribers = vec![0u64; o.channels];
    for i in 0..o.connections {
        subscribers[i % o.channels] += 1;
    }

    let mut publisher = Publisher {
        sock: connect(o.addr).map_err(|e| format!("publisher connect: {e}"))?,
        input: Vec::new(),
        output: Vec::new(),
        in_flight: 0,
        published: 0,
        per_channel: vec![0; o.channels],
    };
    poll.registry()
        .register(&mut publisher.sock, PUBLISHER, Interest::READABLE | Interest::WRITABLE)
        .map_err(|e| e.to_string())?;
    tally.latency_us.reserve((o.rate * o.duration) as usize * o.connections / o.channels);

    let softirqd = o.server_core.and_then(ksoftirqd);
    let core0 = (o.server_core.map_or(0.0, core_busy), softirqd.map_or(0.0, |p| proc_cpu(p).1));
    let (server0, self0) = (o.server_pid.map_or((0.0, 0.0), proc_cpu), self_cpu());
    let start = Instant::now();
    let publish_for = Duration::from_secs_f64(o.duration);
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let mut next = start;
    let mut late = 0u64;
    let mut expected = 0u64;
    let mut publish_time = Duration::ZERO;
    let mut drain_deadline = None;
    loop {
        let now = Instant::now();
        if drain_deadline.is_none() {
            if now >= start + publish_for {
                if publisher.in_flight == 0 {
                    publish_time = now - start;
                    drain_deadline = Some(now + Duration::from_secs(10));
                }
            } else {
                // On schedule, whatever the answers: at most `in_flight` requests unanswered.
                while now >= next && publisher.in_flight < o.in_flight {
                    if now > next + interval {
                        late += 1;
                    }
                    let ch = (publisher.published % o.channels as u64) as usize;
                    expected += subscribers[ch];
                    publisher.request(o);
                    next += interval;
                }
                publisher.flush()?;
            }
        }
        if let Some(d) = drain_deadline {
            if tally.delivered + tally.reordered >= expected || now >= d || closed == o.connections {
                break;
            }
        }
        let timeout = if drain_deadline.is_some() || publisher.in_flight >= o.in_flight {
            Duration::from_millis(5)
        } else {
            next.saturating_duration_since(now).min(Duration::from_millis(5))
        };
        poll.poll(&mut events, Some(timeout)).map_err(|e| e.to_string())?;
        for i in beats.due(&mut conns) {
            fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, "heart-beat write failed".into());
        }
        for ev in &events {
            if ev.token() == PUBLISHER {
                if ev.is_readable() {
                    publisher.readable(&mut buf)?;
                }
                publisher.flush()?;
                continue;
            }
            let i = ev.token().0;
            if let Some(Err(why)) =
                conns.get_mut(i).and_then(Option::as_mut).map(|c| c.event(ev, o, &mut buf, &mut tally))
            {
                fail(poll.registry(), &mut closed, &mut tally, &mut conns, i, why);
            }
        }
    }
    let elapsed = start.elapsed();
    let server1 = o.server_pid.map_or((0.0, 0.0), proc_cpu);
    let (server_user, server_cpu) = (server1.0 - server0.0, server1.1 - server0.1);
    let core = match (o.server_core, softirqd) {
        (Some(c), Some(p)) => format!(
            ",\"core_busy_s\":{:.3},\"ksoftirqd_s\":{:.3}",
            core_busy(c) - core0.0,
            proc_cpu(p).1 - core0.1
        ),
        _ => String::new(),
    };
    let loader_cpu = self_cpu() - self0;
    let mut lat = std::mem::take(&mut tally.latency_us);
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    for e in &tally.errors {
        *errors.entry(e.clone()).or_default() += 1;
    }
    let errors: Vec<String> = errors.iter().map(|(k, v)| format!("{}:{v}", json_string(k))).collect();
    println!(
        "{{\"subscribers\":{},\"channels\":{},\"rate\":{},\"published\":{},\"late\":{late},\"publish_s\":{:.3},\
         \"elapsed_s\":{secs:.3},\"delivered\":{},\"expected\":{expected},\"gaps\":{},\"reordered\":{},\
         \"deliveries_per_s\":{:.1},\"server_cpu_s\":{server_cpu:.3},\"server_user_s\":{server_user:.3},\"loader_cpu_s\":{loader_cpu:.3},\
         \"server_cpu_pct\":{:.1},\"loader_cpu_pct\":{:.1},\"latency_ms\":{{\"p50\":{:.3},\"p99\":{:.3},\"max\":{:.3}}},\
         \"wire_bytes\":{},\"compressed\":{},\"inflations\":{},\"errors\":{{{}}}{core}}}",
        o.connections,
        o.channels,
        o.rate,
        publisher.published,
        publish_time.as_secs_f64(),
        tally.delivered,
        tally.gaps,
        tally.reordered,
        tally.delivered as f64 / secs,
        100.0 * server_cpu / secs,
        100.0 * loader_cpu / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        tally.wire_bytes,
        tally.compressed,
        tally.inflations,
        errors.join(","),
    );
    Ok(())
}

/// `n` bytes of padding: one letter repeated, or with `words` text that compresses about as
/// JSON does (words from a small vocabulary, in an order that varies with `seed`).
fn padding(n: usize, words: bool, seed: u64) -> String {
    if !words {
        return "x".repeat(n);
    }
    const WORDS: [&str; 16] = [
        "price", "bid", "ask", "volume", "ACME", "GLOBEX", "INITECH", "101.25", "99.5", "open", "close",
        "high", "low", "trade", "quote", "7340",
    ];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = String::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(WORDS[(x % 16) as usize]);
        out.push(' ');
    }
    out.truncate(n);
    out
}
