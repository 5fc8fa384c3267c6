//! Shutting servers down on Ctrl-C or SIGTERM ([`shutdown_signal`], [`drain`]), and
//! [`Stop`] for `tether echo`, whose idle connections must stay small: one flag for the
//! whole server and the waker of each connection's task, woken all at once when it is set.
//! A connection costs a slot here (a waker, 16 bytes) and 16 bytes in its future.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// How long a server waits, after Ctrl-C or SIGTERM, for its connections to finish their
/// close handshakes before it exits.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Waits until `open()` is 0 or [`SHUTDOWN_WAIT`] has passed, then logs "stopped".
pub(crate) async fn drain(open: impl Fn() -> usize) {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    while open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!("stopped");
}

/// The server's stop flag and the tasks to wake when it is set.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    tasks: Mutex<Tasks>,
}

#[derive(Default)]
struct Tasks {
    wakers: Vec<Option<Waker>>,
    free: Vec<u32>,
    live: usize,
}

impl Stop {
    /// Sets the flag and wakes every registered task.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for waker in tasks.wakers.iter().flatten() {
            waker.wake_by_ref();
        }
    }

    /// Connections still registered.
    pub(crate) fn live(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).live
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// One connection's place in [`Stop`]; leaves it on drop.
pub(crate) struct Registration {
    stop: Arc<Stop>,
    /// The waker's slot; `NONE` until the first poll. (A `u32`, not an `Option<usize>`:
    /// eight bytes less in every connection's future.)
    slot: u32,
}

const NONE: u32 = u32::MAX;

impl Registration {
    pub(crate) fn new(stop: Arc<Stop>) -> Self {
        Self { stop, slot: NONE }
    }

    /// Polls `inner`, unless the server is stopping: then `None` (and the task is woken
    /// when it starts to).
    pub(crate) fn poll_unless_stopped<F: Future + Unpin>(
        &mut self,
        inner: &mut F,
        cx: &mut Context<'_>,
    ) -> Poll<Option<F::Output>> {
        if self.slot == NONE {
            self.register(cx.waker());
        }
        // After the first poll's registration, too: the flag may have been set before the
        // waker was in place.
        if self.stop.is_stopped() {
            return Poll::Ready(None);
        }
        Pin::new(inner).poll(cx).map(Some)
    }

    /// Keeps the waker of the first poll: a registration belongs to a future that is a
    /// task of its own (a connection's), whose waker does not change. So the hot path is one
    /// atomic load per poll, never the lock.
    fn register(&mut self, waker: &Waker) {
        let mut tasks = self.stop.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let i = match tasks.free.pop() {
            Some(i) => i,
            None => {
                tasks.wakers.push(None);
                tasks.wakers.len() as u32 - 1
            }
        };
        tasks.wakers[i as usize] = Some(waker.clone());
        tasks.live += 1;
        self.slot = i;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.slot != NONE {
            let mut tasks = self.stop.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.wakers[self.slot as usize] = None;
            tasks.free.push(self.slot);
            tasks.live -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_wakes_every_waiting_task_and_slots_are_reused() {
        let stop = Arc::new(Stop::default());
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut reg = Registration::new(stop);
                let mut never = std::future::pending::<()>();
                std::future::poll_fn(|cx| reg.poll_unless_stopped(&mut never, cx)).await
            }));
        }
        while stop.live() < 3 {
            tokio::task::yield_now().await;
        }
        stop.stop();
        for t in tasks {
            assert_eq!(t.await.unwrap(), None);
        }
        assert_eq!(stop.live(), 0);
        let t = stop.tasks.lock().unwrap();
        assert_eq!((t.wakers.len(), t.free.len()), (3, 3));
    }

    #[tokio::test]
    async fn a_ready_future_passes_through() {
        let mut reg = Registration::new(Arc::new(Stop::default()));
        let mut ready = std::future::ready(7);
        assert_eq!(std::future::poll_fn(|cx| reg.poll_unless_stopped(&mut ready, cx)).await, Some(7));
    }
}
