//! The sending side every front-end's outlet shares: a connection's [`Sender`] under the
//! hub's slow-consumer policy. Past `max_queued_bytes` unsent, the connection gets close
//! 4008 "slow consumer" and nothing more is queued; bytes sent count in the hub's metrics.

use super::link::{Outbox, TextEncoding, Tx};
use crate::codes::close;
use crate::hub::{push_each, Event};
use crate::metrics::Metrics;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tether::{CloseCode, Message};

/// A connection's sender with the slow-consumer policy.
pub(crate) struct SendGate {
    sender: Tx,
    max_queued: usize,
    closing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SendGate {
    /// A gate over `sender` that tolerates `max_queued` unsent bytes.
    pub(crate) fn new(sender: Tx, max_queued: usize, metrics: Arc<Metrics>) -> Self {
        Self { sender, max_queued, closing: AtomicBool::new(false), metrics }
    }

    /// Whether the connection may take more; the first time it may not, starts its close.
    fn admit(&self) -> bool {
        if self.closing.load(Ordering::Relaxed) {
            return false;
        }
        if self.sender.buffered_amount() > self.max_queued {
            self.too_slow();
            return false;
        }
        true
    }

    /// The slow-consumer close, the first time the connection is over its limit.
    fn too_slow(&self) {
        if !self.closing.swap(true, Ordering::Relaxed) {
            tracing::info!(queued = self.sender.buffered_amount(), "slow consumer disconnected");
            let _ = self.sender.send_close(CloseCode(close::SLOW_CONSUMER), "slow consumer");
        }
    }

    fn sent(&self, ok: bool, bytes: usize) -> bool {
        if ok {
            self.metrics.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        ok
    }

    /// Queues `event` as the text `encode` makes, encoded once per framing for every
    /// connection using `encoding`. `false` when the connection is closing, too slow, or gone.
    pub(crate) fn send_event(
        &self,
        event: &Event,
        encoding: &TextEncoding,
        encode: impl FnOnce(&Event) -> String,
    ) -> bool {
        self.admit() && self.counted(self.sender.send_event(event, encoding, encode))
    }

    /// Runs `f` with a [`GateBatch`] that queues frames on this connection under one lock
    /// ([`tether::SharedSender::feed_batch`]), each as [`send_frame`](Self::send_frame)
    /// would: the limit checked before each, the first over it starting the close. Bytes
    /// are counted once at the end. `None` (and `f` not run) for a connection that is not
    /// a WebSocket written from the publishing path: the caller queues one at a time.
    pub(crate) fn batch<R>(&self, f: impl FnOnce(&mut GateBatch<'_, '_, '_>) -> R) -> Option<R> {
        let Tx::Shared(sender) = &self.sender else { return None };
        let (r, bytes, over) = sender.feed_batch(|feed| {
            let mut batch = GateBatch { feed, gate: self, bytes: 0, over: false };
            let r = f(&mut batch);
            (r, batch.bytes, batch.over)
        });
        if bytes > 0 {
            self.sent(true, bytes);
        }
        // After the connection's lock is let go: the close queues a frame too.
        if over {
            self.too_slow();
        }
        Some(r)
    }

    /// Queues, in order, each of `events` that `wants` lets through, as
    /// [`send_event`](Self::send_event) would one after the other (in one [`batch`](Self::batch)
    /// where it can). Returns how many it queued and whether it queued every one `wants` let
    /// through.
    pub(crate) fn send_events(
        &self,
        events: &[Arc<Event>],
        wants: &dyn Fn(&Event) -> bool,
        encoding: &TextEncoding,
        encode: fn(&Event) -> String,
    ) -> (u64, bool) {
        let batched = self.batch(|batch| {
            let mut queued = 0;
            for event in events.iter().filter(|e| wants(e)) {
                let encode = |e: &Event| tether::PreparedFrame::text(&encode(e));
                if !event.with_frame(encoding.frame(), encode, |f| batch.send_frame(f)) {
                    return (queued, false);
                }
                queued += 1;
            }
            (queued, true)
        });
        batched.unwrap_or_else(|| push_each(events, wants, |e| self.send_event(e, encoding, encode)))
    }

    /// Queues the message `head` + `part`, `part` shared by many connections (`encoded`:
    /// its form in an outbox, made once). `false` as for [`send_event`](Self::send_event).
    pub(crate) fn send_joined(
        &self,
        head: bytes::BytesMut,
        part: &Bytes,
        encoded: impl FnOnce(&dyn Outbox) -> Bytes,
    ) -> bool {
        self.admit() && self.counted(self.sender.send_joined(head, part, encoded))
    }

    /// Whether the connection takes WebSocket frames ([`send_frame`](Self::send_frame)).
    pub(crate) fn takes_frames(&self) -> bool {
        self.sender.takes_frames()
    }

    /// Queues a frame that other connections may share. `false` as for
    /// [`send_event`](Self::send_event).
    pub(crate) fn send_frame(&self, frame: &tether::PreparedFrame) -> bool {
        self.admit() && self.counted(self.sender.send_frame(frame))
    }

    fn counted(&self, r: Result<usize, tether::Error>) -> bool {
        match r {
            Ok(n) => self.sent(true, n),
            Err(_) => false,
        }
    }

    /// Queues a message without waiting. `false` as for [`send_prepared`](Self::send_prepared).
    pub(crate) fn send(&self, msg: Message) -> bool {
        let len = msg.len();
        self.admit() && self.sent(self.sender.start_send(msg).is_ok(), len)
    }

    /// Asks the CPU to bring in the connection's state (see [`tether::SharedSender::prefetch`]).
    pub(crate) fn prefetch(&self) {
        self.sender.prefetch();
    }

    /// Closes the connection with `code` and `reason`; nothing more is queued.
    pub(crate) fn disconnect(&self, code: u16, reason: &str) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.sender.send_close(CloseCode(code), reason.to_owned());
    }
}

/// Frames being queued on one connection under one lock ([`SendGate::batch`]).
pub(crate) struct GateBatch<'b, 'f, 'w> {
    feed: &'b mut tether::FeedBatch<'w, tether::Transport>,
    gate: &'f SendGate,
    bytes: usize,
    /// The limit was passed: the close starts once the lock is let go.
    over: bool,
}

impl GateBatch<'_, '_, '_> {
    /// Queues a frame shared by many connections. `false`, and nothing queued, when the
    /// connection is closing, gone, or over its limit (then nothing more should be).
    pub(crate) fn send_frame(&mut self, frame: &tether::PreparedFrame) -> bool {
        // `admit`'s checks, with the amount queued read under the lock.
        if self.over || self.gate.closing.load(Ordering::Relaxed) {
            return false;
        }
        if self.feed.buffered_amount() > self.gate.max_queued {
            self.over = true;
            return false;
        }
        match self.feed.prepared(frame) {
            Ok(()) => {
                self.bytes += frame.wire().len();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Publication, Push};
    use crate::session::link::Link;
    use futures_util::StreamExt;
    use std::time::Duration;
    use tether::{Accepted, ClientConfig, Cork, Listener, ServerConfig, Transport, WebSocketStream};

    static TEXT: TextEncoding = TextEncoding::new("gate-test");

    fn encode(e: &Event) -> String {
        let p = e.publication().expect("a publication");
        format!("{}:{}", p.offset, String::from_utf8_lossy(&p.data))
    }

    /// Publications 1, 2, ... with data of these sizes.
    fn events(sizes: &[usize]) -> Vec<Arc<Event>> {
        let channel: Arc<str> = "c".into();
        (1..)
            .zip(sizes)
            .map(|(offset, &n)| {
                let data = Bytes::from("x".repeat(n));
                Event::new(
                    channel.clone(),
                    Push::Publication(Publication { offset, epoch: "e".into(), data, info: None }),
                )
            })
            .collect()
    }

    /// A gate over a hub-side connection written through `cork` (read by a task of its
    /// own, as the front-ends do), and the client at the other end.
    async fn connection(
        cork: &Cork,
        max_queued: usize,
    ) -> (SendGate, Arc<Metrics>, WebSocketStream<Transport>) {
        let listener = Listener::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let client =
            tokio::spawn(async move { tether::connect_direct(&url, &ClientConfig::default()).await });
        let Ok(Accepted::WebSocket(opened, _)) =
            listener.accept().await.unwrap().upgrade_or_http(|_| Ok(())).await
        else {
            panic!("no WebSocket");
        };
        let link = Link::from(opened.direct().into_corked(cork));
        let mut rx = link.rx;
        tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
        let metrics = Arc::new(Metrics::default());
        let (ws, _) = client.await.unwrap().unwrap();
        (SendGate::new(link.tx, max_queued, metrics.clone()), metrics, ws)
    }

    /// The texts a client reads until a close (and its code), or until 300 ms pass with
    /// nothing.
    async fn read_all(ws: &mut WebSocketStream<Transport>) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => texts.push(t.as_str().to_owned()),
                Ok(Some(Ok(Message::Close(frame)))) => return (texts, frame.map(|f| f.code.0)),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("{e}"),
                Ok(None) | Err(_) => return (texts, None),
            }
        }
    }

    /// `send_events` (one lock for the batch) against `send_event` one at a time, on two
    /// connections with the same limit: the same answer, the same bytes counted, the same
    /// messages read by the client, the same close.
    #[tokio::test]
    async fn a_batch_queues_what_one_event_at_a_time_would_and_stops_at_the_limit() {
        let all = |_: &Event| true;
        let odd = |e: &Event| e.publication().is_some_and(|p| p.offset % 2 == 1);
        /// Sizes, which are wanted, the limit, closing first, and the expected answer:
        /// how many are queued and whether all went.
        type Case = (&'static [usize], fn(&Event) -> bool, usize, bool, (u64, bool));
        let cases: [Case; 5] = [
            (&[100; 10], all, 1 << 20, false, (10, true)),
            // Each frame is about 1,006 bytes: over 2,500 after the third, so the fourth is
            // refused.
            (&[1000; 10], all, 2500, false, (3, false)),
            (&[10, 2000, 30, 40, 5000, 60, 70], odd, 1 << 20, false, (4, true)),
            (&[3000, 10, 3000, 10], odd, 2500, false, (1, false)),
            (&[100; 4], all, 1 << 20, true, (0, false)),
        ];
        for (i, (sizes, wants, limit, closing, expected)) in cases.into_iter().enumerate() {
            let cork = Cork::new();
            let (batched, batched_metrics, mut batched_ws) = connection(&cork, limit).await;
            let (single, single_metrics, mut single_ws) = connection(&cork, limit).await;
            if closing {
                batched.disconnect(4000, "bye");
                single.disconnect(4000, "bye");
            }
            let events = events(sizes);
            let got = batched.send_events(&events, &wants, &TEXT, encode);
            let mut one_by_one = (0, true);
            for e in events.iter().filter(|e| wants(e)) {
                if !single.send_event(e, &TEXT, encode) {
                    one_by_one.1 = false;
                    break;
                }
                one_by_one.0 += 1;
            }
            assert_eq!(got, expected, "case {i}");
            assert_eq!(one_by_one, expected, "case {i}, one at a time");
            let counted = |m: &Metrics| m.bytes_out.load(Ordering::Relaxed);
            assert_eq!(counted(&batched_metrics), counted(&single_metrics), "case {i}");
            let (texts, code) = read_all(&mut batched_ws).await;
            assert_eq!((texts.clone(), code), read_all(&mut single_ws).await, "case {i}");
            assert_eq!(texts.len() as u64, expected.0, "case {i}");
            let close = match (expected.1, closing) {
                (true, _) => None,
                (false, true) => Some(4000),
                (false, false) => Some(close::SLOW_CONSUMER),
            };
            assert_eq!(code, close, "case {i}");
        }
    }
}
