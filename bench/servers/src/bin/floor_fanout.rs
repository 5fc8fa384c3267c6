//! The floor of bench/fanout_compare.py: the least a WebSocket pub/sub server can do per
//! delivery when it makes one `send` per subscriber per publication, to tell how much of a
//! server's CPU is its own and how much is the kernel's. One thread on epoll (mio), the
//! uWebSockets server's protocol (a text message subscribes to the channel of that name and
//! is answered "ok"; POST /publish/CHANNEL publishes its body as one text message, answered
//! "ok"), each publication framed once and written to every subscriber straight from the
//! publishing request, the answers to the requests of one read in one write. No history, no
//! authentication, no JSON, no batching of publications: what is left is the system calls.
//! A subscriber that cannot take a frame at once gets it queued; past 1 MiB queued it is
//! closed (the hub's slow-consumer limit). Not a server for anything else: it trusts its
//! peer (the loader) in everything but framing.
//!
//! With `uring` after the port, the sends of one publication to its subscribers go to the
//! kernel as one io_uring submission (one system call for all of them) instead of one `send`
//! each: what batching the system calls saves, measured beside the plain floor.
//!
//! usage: floor_fanout PORT [uring]

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

const LISTENER: Token = Token(usize::MAX);
const MAX_QUEUED: usize = 1 << 20;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum Phase {
    Http,
    Ws,
}

struct Conn {
    sock: TcpStream,
    phase: Phase,
    input: Vec<u8>,
    /// Bytes the socket did not take yet, written when it says it is writable.
    queued: Vec<u8>,
    /// The channels it subscribed to, to leave them when it goes.
    subscribed: Vec<Vec<u8>>,
    closed: bool,
}

impl Conn {
    /// Writes `bytes` now, or after what waits already; `false` once over the limit.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let mut at = 0;
        if self.queued.is_empty() {
            while at < bytes.len() {
                match self.sock.write(&bytes[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.closed = true;
                        return false;
                    }
                }
            }
        }
        self.queued.extend_from_slice(&bytes[at..]);
        if self.queued.len() > MAX_QUEUED {
            self.closed = true;
        }
        !self.closed
    }

    fn flush(&mut self) {
        while !self.queued.is_empty() && !self.closed {
            match self.sock.write(&self.queued) {
                Ok(n) => {
                    self.queued.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }
}

/// A server-to-client text frame of `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

struct Server {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    channels: HashMap<Vec<u8>, Vec<usize>>,
    /// Subscribers found closed while publishing, reaped after the event.
    dead: Vec<usize>,
    /// With `uring`: the ring a publication's sends are submitted through.
    ring: Option<io_uring::IoUring>,
    /// The subscribers of the sends in the ring, by the index in each one's user data.
    in_ring: Vec<usize>,
}

/// What one connection's input asks the server to do.
enum Step {
    /// Nothing more until more input.
    Wait,
    Publish(Vec<u8>, Vec<u8>),
    Subscribe(Vec<u8>),
    Close,
}

impl Server {
    /// The next step of connection `t`'s input; answers what needs no other connection.
    fn step(&mut self, t: usize, answers: &mut Vec<u8>) -> Step {
        let c = self.conns[t].as_mut().expect("a live connection");
        match c.phase {
            Phase::Http => {
                let Some(end) = c.input.windows(4).position(|w| w == b"\r\n\r\n") else { return Step::Wait };
                let head = String::from_utf8_lossy(&c.input[..end]).into_owned();
                if let Some(key) = header(&head, "sec-websocket-key") {
                    let mut sha = sha1_smol::Sha1::new();
                    sha.update(key.as_bytes());
                    sha.update(GUID.as_bytes());
                    let accept = base64(&sha.digest().bytes());
                    c.input.drain(..end + 4);
                    c.phase = Phase::Ws;
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    );
                    c.send(answer.as_bytes());
                    return self.step(t, answers);
                }
                let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                if c.input.len() < end + 4 + len {
                    return Step::Wait;
                }
                let body = c.input[end + 4..end + 4 + len].to_vec();
                c.input.drain(..end + 4 + len);
                let path = head.split(' ').nth(1).unwrap_or("");
                match path.strip_prefix("/publish/") {
                    Some(channel) => {
                        answers.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        Step::Publish(channel.as_bytes().to_vec(), body)
                    }
                    None => {
                        answers.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        Step::Close
                    }
                }
            }
            Phase::Ws => {
                let b = &c.input;
                if b.len() < 2 {
                    return Step::Wait;
                }
                let opcode = b[0] & 0x0f;
                let masked = b[1] & 0x80 != 0;
                let (len, mut at) = match b[1] & 0x7f {
                    126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                    127 if b.len() >= 10 => {
                        (u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")) as usize, 10)
                    }
                    126 | 127 => return Step::Wait,
                    n => (usize::from(n), 2),
                };
                if !masked || b[0] & 0x80 == 0 || len > 64 * 1024 {
                    return Step::Close;
                }
                if b.len() < at + 4 + len {
                    return Step::Wait;
                }
                let key = [b[at], b[at + 1], b[at + 2], b[at + 3]];
                at += 4;
                let payload: Vec<u8> =
                    b[at..at + len].iter().enumerate().map(|(i, x)| x ^ key[i % 4]).collect();
                c.input.drain(..at + len);
                match opcode {
                    0x1 | 0x2 => Step::Subscribe(payload),
                    0x9 => {
                        let mut pong = frame(&payload);
                        pong[0] = 0x8a;
                        c.send(&pong);
                        self.step(t, answers)
                    }
                    0xa => self.step(t, answers),
                    _ => {
                        c.send(&[0x88, 0x00]);
                        Step::Close
                    }
                }
            }
        }
    }

    fn readable(&mut self, t: usize, buf: &mut [u8]) {
        let Some(c) = self.conns[t].as_mut() else { return };
        loop {
            match c.sock.read(buf) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => c.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.closed = true;
                    break;
                }
            }
        }
        let mut answers = Vec::new();
        loop {
            match self.step(t, &mut answers) {
                Step::Wait => break,
                Step::Close => {
                    if let Some(c) = self.conns[t].as_mut() {
                        c.closed = true;
                    }
                    break;
                }
                Step::Subscribe(channel) => {
                    self.channels.entry(channel.clone()).or_default().push(t);
                    if let Some(c) = self.conns[t].as_mut() {
                        c.subscribed.push(channel);
                        c.send(&[0x81, 0x02, b'o', b'k']);
                    }
                }
                Step::Publish(channel, body) => {
                    let f = frame(&body);
                    if self.ring.is_some() {
                        self.publish_uring(&channel, &f);
                        continue;
                    }
                    if let Some(subs) = self.channels.get(&channel) {
                        for &s in subs {
                            if let Some(c) = self.conns[s].as_mut() {
                                if !c.send(&f) {
                                    self.dead.push(s);
                                }
                            }
                        }
                    }
                }
            }
        }
        if let Some(c) = self.conns[t].as_mut() {
            if !answers.is_empty() {
                c.send(&answers);
            }
        }
    }

    /// Sends `f` to every subscriber of `channel` through the ring: one submission for the
    /// subscribers with nothing queued (as many as the ring holds at a time), then what the
    /// sockets did not take is queued as `Conn::send` queues it.
    fn publish_uring(&mut self, channel: &[u8], f: &[u8]) {
        let Some(subs) = self.channels.get(channel) else { return };
        let ring = self.ring.as_mut().expect("uring mode");
        let capacity = ring.params().sq_entries() as usize;
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let mut at = 0;
        while at < subs.len() {
            self.in_ring.clear();
            {
                let mut sq = ring.submission();
                while at < subs.len() && self.in_ring.len() < capacity {
                    let s = subs[at];
                    at += 1;
                    let Some(c) = self.conns[s].as_mut() else { continue };
                    if c.closed {
                        continue;
                    }
                    if !c.queued.is_empty() {
                        if !c.send(f) {
                            self.dead.push(s);
                        }
                        continue;
                    }
                    let send = io_uring::opcode::Send::new(
                        io_uring::types::Fd(c.sock.as_raw_fd()),
                        f.as_ptr(),
                        f.len() as u32,
                    )
                    .flags(flags)
                    .build()
                    .user_data(self.in_ring.len() as u64);
                    // SAFETY: `f` and the socket outlive the send: this function waits
                    // below for every completion of this submission before returning, and
                    // no connection is closed or dropped before then.
                    unsafe { sq.push(&send).expect("room was counted") };
                    self.in_ring.push(s);
                }
            }
            let want = self.in_ring.len();
            let mut done = 0;
            while done < want {
                match ring.submit_and_wait(want - done) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => {
                        // Entries may still be in the kernel, reading `f`: end here.
                        eprintln!("floor fanout: io_uring: {e}");
                        std::process::exit(1);
                    }
                }
                for cqe in ring.completion() {
                    done += 1;
                    let s = self.in_ring[cqe.user_data() as usize];
                    let c = self.conns[s].as_mut().expect("kept while in the ring");
                    let res = cqe.result();
                    let sent = if res >= 0 {
                        res as usize
                    } else if -res == libc::EAGAIN || -res == libc::EINTR {
                        0
                    } else {
                        c.closed = true;
                        self.dead.push(s);
                        continue;
                    };
                    if sent < f.len() && !c.send(&f[sent..]) {
                        self.dead.push(s);
                    }
                }
            }
        }
    }

    fn reap(&mut self, t: usize, poll: &Poll) {
        if self.conns[t].as_ref().is_some_and(|c| c.closed) {
            let mut c = self.conns[t].take().expect("checked");
            let _ = poll.registry().deregister(&mut c.sock);
            for ch in &c.subscribed {
                if let Some(subs) = self.channels.get_mut(ch) {
                    subs.retain(|&s| s != t);
                }
            }
            self.free.push(t);
        }
    }
}

fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(9001);
    let uring = std::env::args().nth(2).is_some_and(|a| a == "uring");
    let addr = format!("127.0.0.1:{port}").parse().expect("an address");
    let mut listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor fanout: cannot listen on {port}: {e}");
            std::process::exit(1);
        }
    };
    let mut poll = Poll::new().expect("epoll");
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE).expect("register");
    println!("floor fanout on ws://127.0.0.1:{port}/");
    let ring = uring.then(|| match io_uring::IoUring::new(4096) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floor fanout: io_uring: {e}");
            std::process::exit(1);
        }
    });
    let mut server = Server {
        conns: Vec::new(),
        free: Vec::new(),
        channels: HashMap::new(),
        dead: Vec::new(),
        ring,
        in_ring: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("floor fanout: poll: {e}");
            std::process::exit(1);
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            let _ = sock.set_nodelay(true);
                            let t = server.free.pop().unwrap_or_else(|| {
                                server.conns.push(None);
                                server.conns.len() - 1
                            });
                            if poll
                                .registry()
                                .register(&mut sock, Token(t), Interest::READABLE | Interest::WRITABLE)
                                .is_err()
                            {
                                server.free.push(t);
                                continue;
                            }
                            server.conns[t] = Some(Conn {
                                sock,
                                phase: Phase::Http,
                                input: Vec::new(),
                                queued: Vec::new(),
                                subscribed: Vec::new(),
                                closed: false,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            eprintln!("floor fanout: accept: {e}");
                            break;
                        }
                    }
                }
                continue;
            }
            let t = ev.token().0;
            if ev.is_writable() {
                if let Some(c) = server.conns[t].as_mut() {
                    c.flush();
                }
            }
            if ev.is_readable() || ev.is_read_closed() {
                server.readable(t, &mut buf);
            }
            server.reap(t, &poll);
        }
        // Subscribers closed by a publication (over the limit, or gone).
        while let Some(t) = server.dead.pop() {
            server.reap(t, &poll);
        }
    }
}
