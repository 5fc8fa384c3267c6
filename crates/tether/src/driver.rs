//! The per-connection task: owns the socket and the protocol core, and moves bytes,
//! commands, events and time between them.

use crate::socket::{Shared, WebSocket};
use crate::{Error, Message};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tether_proto::{CloseCode, Connection, Event, Stats, UsageError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What handles ask the driver to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// A message, and whether it may be compressed.
    Send(Message, bool),
    Close(CloseCode, String),
    /// A frame encoded once for many connections.
    Prepared(tether_proto::frame::PreparedFrame),
    /// The application has read the peer's close: everything it sent in reaction to the
    /// earlier messages is ahead of this in the channel, so the close reply may follow.
    CloseRead,
}

/// Messages delivered ahead of the application; beyond this the driver stops reading.
const INBOX: usize = 16;
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;

/// Starts the driver for an upgraded stream; `leftover` holds bytes read past the handshake.
pub(crate) fn spawn<S>(
    io: S,
    conn: Connection,
    leftover: &[u8],
    protocol: Option<String>,
    permit: Option<crate::limit::Permit>,
) -> WebSocket
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (msg_tx, msg_rx) = mpsc::channel(INBOX);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(conn.config().send_buffer_limit, protocol, conn.deflate_negotiated()));
    let mut driver = Driver {
        conn,
        shared: shared.clone(),
        cmd_rx,
        msg_tx,
        inbox_gone: false,
        awaiting_close_read: false,
        published_stats: Stats::default(),
    };
    driver.conn.handle_bytes(leftover);
    tokio::spawn(async move {
        driver.run(io).await;
        drop(permit);
        driver.shared.pending.store(0, Ordering::Release);
        driver.shared.queued.store(0, Ordering::Release);
        driver.shared.finished.store(true, Ordering::Release);
        driver.shared.wake_all();
    });
    WebSocket::new(msg_rx, cmd_tx, shared)
}

/// Why the driver woke up.
enum Wake {
    Wrote(std::io::Result<usize>),
    Read(std::io::Result<usize>),
    Command(Option<Command>),
    Delivered,
    InboxGone,
    Timer,
}

struct Driver {
    conn: Connection,
    shared: Arc<Shared>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    msg_tx: mpsc::Sender<Result<Message, Error>>,
    inbox_gone: bool,
    /// The peer's close was handed to the application, which has not read it yet.
    awaiting_close_read: bool,
    /// The counters last copied to `shared.stats`.
    published_stats: Stats,
}

impl Driver {
    async fn run<S: AsyncRead + AsyncWrite>(&mut self, io: S) {
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut read_buf = vec![0u8; MIN_READ];
        let mut write_buf: Vec<u8> = Vec::new();
        let mut written = 0;
        let mut pending: Option<Result<Message, Error>> = None;
        let mut eof = false;
        let mut commands_open = true;
        // A write that failed because the peer is gone (it closed or reset the connection,
        // typically after sending a close frame for what it refused): what it sent before
        // is still to be read, its close frame first, so the connection reads on to the end
        // and drops what it would write.
        let mut write_gone: Option<std::io::Error> = None;
        // One timer for the connection's life, moved only when the core's deadline moves: a
        // timer made afresh on every wake-up would be registered and dropped again for
        // every message (every delivery of a fan-out, with pings or an idle timeout on).
        let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            self.conn.handle_timeout(Instant::now());
            // Events, until the inbox is full.
            while !self.awaiting_close_read || self.inbox_gone {
                if let Some(item) = pending.take() {
                    if let Err(item) = self.deliver_now(item) {
                        pending = Some(item);
                        break;
                    }
                }
                match self.conn.poll_event() {
                    Ok(Some(event)) => {
                        pending = self.convert(event);
                        if self.conn.is_close_pending() {
                            self.awaiting_close_read = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        pending = Some(Err(e.into()));
                        self.awaiting_close_read = true;
                        break;
                    }
                }
            }
            if !commands_open && (self.inbox_gone || self.msg_tx.is_closed()) {
                self.abandoned();
            }
            // Commands already waiting, without blocking.
            let awaited_close_read = self.awaiting_close_read;
            while commands_open {
                match self.cmd_rx.try_recv() {
                    Ok(cmd) => self.apply(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        commands_open = false;
                        self.abandoned();
                    }
                }
            }
            if awaited_close_read && !self.awaiting_close_read {
                // The application has read the peer's close (it can do so on another thread
                // before this loop gets here): go round once more, so that the core queues the
                // close reply (at its next `poll_event`) before anything waits. Otherwise
                // nothing would wake this task to send it until the close timeout.
                continue;
            }
            if written == write_buf.len() {
                written = 0;
                write_buf.clear();
                if write_buf.capacity() > 4 * MAX_READ {
                    write_buf = Vec::new();
                }
                self.conn.poll_transmit(&mut write_buf);
                if write_gone.is_some() {
                    written = write_buf.len();
                }
            }
            self.shared
                .pending
                .store(self.conn.buffered_amount() + write_buf.len() - written, Ordering::Release);
            let stats = self.conn.stats();
            if stats != self.published_stats {
                self.published_stats = stats;
                *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
            }
            self.shared.wake_all();
            if written == write_buf.len() {
                if self.conn.should_close_transport() {
                    // RFC 6455 7.1.1: the server closes TCP first; the client does after
                    // the server did (EOF), after a timeout, or on failure.
                    let _ = wr.shutdown().await;
                    // Release the socket before waiting for the application to read.
                    drop((rd, wr));
                    return self.finish(pending).await;
                }
                if self.conn.is_closed() && eof {
                    drop((rd, wr));
                    return self.finish(pending).await;
                }
            }
            let deadline = self.conn.poll_timeout().map(tokio::time::Instant::from_std);
            if deadline != armed {
                if let Some(d) = deadline {
                    match &mut timer {
                        Some(t) => t.as_mut().reset(d),
                        None => timer = Some(Box::pin(tokio::time::sleep_until(d))),
                    }
                }
                armed = deadline;
            }
            let can_read = !eof && pending.is_none();
            let wake = tokio::select! {
                biased;
                res = wr.write(&write_buf[written..]), if written < write_buf.len() => Wake::Wrote(res),
                permit = self.msg_tx.reserve(), if pending.is_some() && !self.inbox_gone => match permit {
                    Ok(permit) => {
                        if let Some(item) = pending.take() {
                            permit.send(item);
                        }
                        Wake::Delivered
                    }
                    Err(_) => Wake::InboxGone,
                },
                cmd = self.cmd_rx.recv(), if commands_open => Wake::Command(cmd),
                res = rd.read(&mut read_buf), if can_read => Wake::Read(res),
                () = poll_timer(&mut timer), if armed.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Wrote(Ok(0)) => {
                    drop((rd, wr));
                    return self.io_failed(std::io::ErrorKind::WriteZero.into(), pending).await;
                }
                Wake::Wrote(Ok(n)) => written += n,
                // A TLS peer that closes TCP without close_notify (browsers do) is an end of
                // stream like any other: the WebSocket close handshake, not TLS, tells a clean
                // end from a lost connection.
                Wake::Read(Ok(0)) => {
                    eof = true;
                    self.conn.handle_eof();
                }
                Wake::Read(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    eof = true;
                    self.conn.handle_eof();
                }
                Wake::Read(Ok(n)) => {
                    self.conn.handle_bytes(&read_buf[..n]);
                    if n == read_buf.len() && read_buf.len() < MAX_READ {
                        read_buf.resize(read_buf.len() * 2, 0);
                    }
                }
                Wake::Wrote(Err(e)) if crate::stream::peer_gone(&e) && !eof => {
                    tracing::debug!(error = %e, "websocket write failed: reading what the peer sent");
                    written = write_buf.len();
                    write_gone = Some(e);
                }
                // At the end of what was read after a write failed: the write's error.
                Wake::Read(Err(e)) if write_gone.is_some() && crate::stream::peer_gone(&e) => {
                    drop((rd, wr));
                    return self.io_failed(write_gone.unwrap_or(e), pending).await;
                }
                Wake::Wrote(Err(e)) | Wake::Read(Err(e)) => {
                    drop((rd, wr));
                    return self.io_failed(e, pending).await;
                }
                Wake::InboxGone => {
                    self.inbox_gone = true;
                    pending = None;
                }
                Wake::Command(Some(cmd)) => self.apply(cmd),
                Wake::Command(None) => {
                    commands_open = false;
                    self.abandoned();
                }
                // Armed again at the next deadline, even if it is the same instant.
                Wake::Timer => armed = None,
                Wake::Delivered => {}
            }
        }
    }

    /// Hands an item to the application if the inbox has room; gives it back otherwise.
    fn deliver_now(&mut self, item: Result<Message, Error>) -> Result<(), Result<Message, Error>> {
        if self.inbox_gone {
            return Ok(());
        }
        match self.msg_tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => Err(item),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.inbox_gone = true;
                Ok(())
            }
        }
    }

    fn convert(&mut self, event: Event) -> Option<Result<Message, Error>> {
        if let Event::Closed(closed) = &event {
            *self.shared.closed.lock().unwrap_or_else(|e| e.into_inner()) = Some(closed.clone());
        }
        crate::message::from_event(event).map(Ok)
    }

    fn apply(&mut self, cmd: Command) {
        let result = match cmd {
            Command::Send(msg, compress) => {
                self.shared.queued.fetch_sub(msg.len(), Ordering::AcqRel);
                match msg {
                    Message::Text(t) if compress => self.conn.send_text(t),
                    Message::Text(t) => self.conn.send_text_uncompressed(t),
                    Message::Binary(b) if compress => self.conn.send_binary(b),
                    Message::Binary(b) => self.conn.send_binary_uncompressed(b),
                    Message::Ping(p) => self.conn.send_ping(p),
                    Message::Pong(p) => self.conn.send_pong(p),
                    Message::Close(_) => Ok(()),
                }
            }
            Command::Prepared(frame) => {
                self.shared.queued.fetch_sub(frame.wire().len(), Ordering::AcqRel);
                self.conn.send_prepared(&frame)
            }
            Command::CloseRead => {
                self.awaiting_close_read = false;
                Ok(())
            }
            Command::Close(code, reason) => match self.conn.close(code, &reason) {
                // Closing twice is not worth an error on the stream.
                Err(UsageError::Closed) => Ok(()),
                other => other,
            },
        };
        if let Err(e) = result {
            // Nowhere else to report it: the stream is the connection's only error channel.
            let _ = self.deliver_now(Err(e.into()));
        }
    }

    /// Every handle is gone: nobody can send or read any more, so close politely.
    fn abandoned(&mut self) {
        if (self.inbox_gone || self.msg_tx.is_closed()) && self.conn.is_open() {
            let _ = self.conn.close(CloseCode::GOING_AWAY, "");
        }
    }

    /// The socket is done with; hand the application what it has not read yet.
    async fn finish(&mut self, pending: Option<Result<Message, Error>>) {
        self.record_close();
        if let Some(item) = pending {
            if !self.inbox_gone {
                let _ = self.msg_tx.send(item).await;
            }
        }
        while let Ok(Some(event)) = self.conn.poll_event() {
            if let Some(item) = self.convert(event) {
                let _ = self.msg_tx.send(item).await;
            }
        }
    }

    /// Keeps how the connection ended for `close_status`, including a failure (which the
    /// core reports as an error rather than a `Closed` event).
    fn record_close(&self) {
        let mut closed = self.shared.closed.lock().unwrap_or_else(|e| e.into_inner());
        if closed.is_none() {
            *closed = self.conn.closed().cloned();
        }
    }

    async fn io_failed(&mut self, e: std::io::Error, pending: Option<Result<Message, Error>>) {
        self.record_close();
        tracing::debug!(error = %e, "websocket i/o failed");
        if let Some(item) = pending {
            let _ = self.msg_tx.send(item).await;
        }
        if !self.conn.is_closed() {
            let _ = self.msg_tx.send(Err(e.into())).await;
        }
    }
}

async fn poll_timer(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
