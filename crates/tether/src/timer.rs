//! One timer for the deadlines of every [`WebSocketStream`](crate::WebSocketStream), and of
//! anything else that waits for a time in many tasks at once (a hub's heart-beats and token
//! expiries): a thread that sleeps until the earliest and wakes the tasks whose deadlines
//! have passed. [`Deadline`] is a task's registration with it.
//!
//! A connection's deadlines (the next ping, the idle timeout, the close timeout) are
//! seconds away and move rarely, and a server holds many connections that wait on them.
//! A tokio `Sleep` per connection, boxed so that it can be reset in place, took 112 bytes
//! of heap in every connection; here a connection holds what it registered (24 bytes) and
//! the timer an entry of 24 bytes in one heap of them. This is the shape of uWebSockets'
//! timeout wheel, one timer for all sockets, on a thread so that it serves every runtime
//! (current-thread or multi-threaded, and several in one process) alike. It keeps real
//! time: tokio's paused clock (`tokio::time::pause`) does not move it.
//!
//! A process whose only runtime is a current-thread one can run the timer in a task of that
//! runtime instead, with [`drive`], and so have one thread: Linux counts a reference on a
//! socket's file at every system call on it (`fdget`, `fput`) only when the process has more
//! than one thread sharing its file table, which a timer thread makes it have.
//!
//! A deadline that moves later keeps its registration, which wakes the task early; the
//! poll that follows finds nothing due and registers the later one. So most polls touch
//! nothing shared, and a busy connection whose idle deadline moves at every message
//! registers once per deadline, not once per message.
//!
//! A registration that is given up (its connection dropped, or its deadline moved earlier)
//! is not searched for in the heap: its key is counted as cancelled, and the entry is
//! skipped when it comes due, or dropped when the heap is rebuilt, which happens once the
//! cancelled entries are half of it. So a closed connection's waker (which keeps its task's
//! memory) is let go soon, not when its deadline would have come, which may be hours away.
//! Entries with the same key (the same task, the same millisecond) are interchangeable:
//! cancelling one leaves the others, which wake the same task at the same time.
//!
//! ```
//! use std::time::{Duration, Instant};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut timer = tether::timer::Deadline::new();
//! let at = Instant::now() + Duration::from_millis(20);
//! // In a poll function: Pending (the task is woken at `at`, or earlier) until `at` passes.
//! std::future::poll_fn(|cx| timer.poll(at, cx)).await;
//! assert!(Instant::now() >= at);
//! # }
//! ```

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The least the heap grows by, in entries.
const GROWTH_MIN: usize = 64;

/// The timer's state, shared with its thread.
struct Timer {
    /// Times are whole milliseconds since `base`.
    base: Instant,
    state: Mutex<State>,
    /// Signalled when an entry earlier than all others arrives (the thread).
    changed: Condvar,
    /// Notified when an entry earlier than all others arrives (the task of [`drive`]).
    notify: tokio::sync::Notify,
}

/// What runs the timer.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    /// Nothing yet: the first registration starts the thread.
    #[default]
    None,
    Thread,
    /// A task in [`drive`].
    Task,
}

#[derive(Default)]
struct State {
    entries: BinaryHeap<Entry>,
    /// Keys of entries given up, with how many of each.
    cancelled: HashMap<Key, u32>,
    /// The sum of `cancelled`.
    cancels: usize,
    /// What runs the timer.
    driver: Driver,
}

/// A registration: its time, and the data and vtable of its waker.
type Key = (u64, usize, usize);

fn waker_id(waker: &Waker) -> (usize, usize) {
    (waker.data() as usize, std::ptr::from_ref(waker.vtable()) as usize)
}

/// A task to wake at a time (a min-heap by time: the order is reversed).
struct Entry {
    at: u64,
    waker: Waker,
}

impl Entry {
    fn key(&self) -> Key {
        let (data, vtable) = waker_id(&self.waker);
        (self.at, data, vtable)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

impl State {
    /// Whether `entry` was given up (and takes its cancel if so).
    fn take_cancel(&mut self, entry: &Entry) -> bool {
        if self.cancels == 0 {
            return false;
        }
        let key = entry.key();
        let Some(n) = self.cancelled.get_mut(&key) else { return false };
        *n -= 1;
        if *n == 0 {
            self.cancelled.remove(&key);
        }
        self.cancels -= 1;
        true
    }

    fn cancel(&mut self, key: Key) {
        *self.cancelled.entry(key).or_default() += 1;
        self.cancels += 1;
        // Rebuilt once half of it is given up: linear, once per that many cancels.
        if self.cancels > 64 && self.cancels * 2 > self.entries.len() {
            let mut entries = std::mem::take(&mut self.entries).into_vec();
            entries.retain(|e| !self.take_cancel(e));
            // What connections that closed held is given back, a quarter kept to grow into.
            let keep = entries.len() + GROWTH_MIN.max(entries.len() / 4);
            if entries.capacity() > 2 * keep {
                entries.shrink_to(keep);
            }
            self.entries = BinaryHeap::from(entries);
            // Each cancel is of an entry in the heap (see `Deadline::clear`); none is left.
            self.cancelled = HashMap::new();
            self.cancels = 0;
        }
    }
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer {
        base: Instant::now(),
        state: Mutex::default(),
        changed: Condvar::new(),
        notify: tokio::sync::Notify::new(),
    })
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing that runs under the lock can leave the state half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whole milliseconds since `base`, rounded down.
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `deadline` in milliseconds since `base`, rounded up (an entry is due once the
    /// clock has reached it, so never before its deadline).
    fn tick(&self, deadline: Instant) -> u64 {
        let d = deadline.saturating_duration_since(self.base);
        let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    fn add(&'static self, state: &mut State, at: u64, waker: Waker) {
        let earliest = state.entries.peek().is_none_or(|e| at < e.at);
        let len = state.entries.len();
        if len == state.entries.capacity() {
            // By a quarter, not double: a server's heap holds an entry for most of its
            // connections, and doubling would leave up to half of it unused.
            state.entries.reserve_exact(GROWTH_MIN.max(len / 4));
        }
        state.entries.push(Entry { at, waker });
        match state.driver {
            Driver::None => self.start_thread(state),
            Driver::Thread if earliest => self.changed.notify_one(),
            Driver::Task if earliest => self.notify.notify_one(),
            Driver::Thread | Driver::Task => {}
        }
    }

    fn start_thread(&'static self, state: &mut State) {
        let spawned = std::thread::Builder::new().name("tether-timer".into()).spawn(move || self.run());
        match spawned {
            Ok(_) => state.driver = Driver::Thread,
            // Tried again at the next registration; until then, deadlines are late.
            Err(e) => {
                static SAID: AtomicBool = AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot start the timer thread: timeouts and pings wait");
                }
            }
        }
    }

    /// Takes what is due out of the heap into `due`; the time of the next entry, if any.
    fn take_due(&self, state: &mut State, now: u64, due: &mut Vec<Waker>) -> Option<u64> {
        while let Some(e) = state.entries.peek() {
            if e.at > now {
                return Some(e.at);
            }
            if let Some(e) = state.entries.pop() {
                if !state.take_cancel(&e) {
                    due.push(e.waker);
                }
            }
        }
        // A heap of entries that all fired long ago gives its memory back.
        if state.entries.capacity() > 1024 {
            state.entries.shrink_to_fit();
        }
        None
    }

    /// The thread: wakes what is due, then sleeps until the next entry or a new earlier one.
    fn run(&self) {
        let mut due = Vec::new();
        let mut state = self.lock();
        loop {
            let now = self.now();
            let next = self.take_due(&mut state, now, &mut due);
            if !due.is_empty() {
                // Woken outside the lock: a wake may run the task here, which may register.
                drop(state);
                due.drain(..).for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            state = match next {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now));
                    self.changed.wait_timeout(state, wait).map_or_else(|e| e.into_inner().0, |(s, _)| s)
                }
                None => self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// Runs the timer in the calling task, for as long as the task runs, instead of in a thread
/// of its own: for a process whose only runtime is a current-thread one (`tether serve` on
/// one core), which then has one thread, so that the kernel does not count a reference on a
/// socket's file at each `send`, and the timer's wakes are a push on the runtime's own queue
/// rather than a write to its eventfd. Spawn it before the first deadline is registered:
/// once the thread runs (at the first registration), it keeps the timer and this returns at
/// once, as it does when another task drives it.
///
/// The task sleeps with tokio's timer (the runtime needs it enabled), so it is not for a
/// runtime whose clock is paused. Deadlines registered from other runtimes are served too,
/// while this task runs; when it is dropped (its runtime shut down), the thread takes over
/// what is left.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// tokio::spawn(tether::timer::drive());
/// # }
/// ```
pub async fn drive() {
    /// Hands the timer back when the task ends or is dropped.
    struct Driving(&'static Timer);
    impl Drop for Driving {
        fn drop(&mut self) {
            let mut state = self.0.lock();
            state.driver = Driver::None;
            if !state.entries.is_empty() {
                self.0.start_thread(&mut state);
            }
        }
    }

    let timer = timer();
    {
        let mut state = timer.lock();
        if state.driver != Driver::None {
            return;
        }
        state.driver = Driver::Task;
    }
    let _driving = Driving(timer);
    let mut due = Vec::new();
    loop {
        let now = timer.now();
        let next = timer.take_due(&mut timer.lock(), now, &mut due);
        if !due.is_empty() {
            due.drain(..).for_each(Waker::wake);
            continue;
        }
        // A registration earlier than `next` after the lock was let go leaves a permit.
        let changed = timer.notify.notified();
        match next {
            Some(at) => {
                let at = timer.base + Duration::from_millis(at);
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

/// A task's registration with the timer: the time it is registered for and the waker it
/// gave (24 bytes), to register again only when the deadline moves earlier, the
/// registration has fired, or another task polls. Dropping it gives the registration up.
///
/// The deadline is given at each poll, not kept here: a caller with several deadlines polls
/// one registration with the earliest of them.
#[derive(Debug, Default)]
pub struct Deadline {
    /// 0: none.
    at: u64,
    /// The registered waker's data and vtable, to compare with the next poll's.
    data: usize,
    vtable: usize,
}

impl Deadline {
    /// No registration.
    pub const fn new() -> Self {
        Self { at: 0, data: 0, vtable: 0 }
    }

    /// `Ready` once `deadline` has passed (the registration is then given up); until then,
    /// `Pending`, and the task of `cx` is woken at `deadline` or earlier, to a resolution
    /// of a millisecond and never before it.
    pub fn poll(&mut self, deadline: Instant, cx: &Context<'_>) -> Poll<()> {
        let timer = timer();
        let (at, now) = (timer.tick(deadline), timer.now());
        if at <= now {
            self.clear();
            return Poll::Ready(());
        }
        let waker = cx.waker();
        let (data, vtable) = waker_id(waker);
        let registered = self.at != 0 && self.data == data && self.vtable == vtable;
        // A registration at or before `at` that has not fired wakes this task first (one
        // that fires between the clock's reading and now wakes it too).
        if registered && self.at <= at && self.at > now {
            return Poll::Pending;
        }
        let mut state = timer.lock();
        self.cancel(timer, &mut state);
        timer.add(&mut state, at, waker.clone());
        *self = Self { at, data, vtable };
        Poll::Pending
    }

    /// Gives the registration up, if there is one.
    pub fn clear(&mut self) {
        if self.at != 0 {
            let timer = timer();
            let mut state = timer.lock();
            self.cancel(timer, &mut state);
        }
    }

    /// Under the timer's lock, so that the thread cannot take the entry between the look at
    /// the clock and the cancel: an entry not yet due is in the heap, and is cancelled; one
    /// due is (or is about to be) fired, and is left alone.
    fn cancel(&mut self, timer: &Timer, state: &mut State) {
        if self.at != 0 && self.at > timer.now() {
            state.cancel((self.at, self.data, self.vtable));
        }
        self.at = 0;
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Deadline;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    /// Wakes counted, and when the first came.
    #[derive(Default)]
    struct Count(AtomicUsize, OnceLock<Instant>);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            let _ = self.1.set(Instant::now());
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Count {
        fn first(&self) -> Instant {
            *self.1.get().expect("woken")
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    /// Waits (up to 5 s) until `count` reaches `n`.
    fn wait_for(count: &Count, n: usize) -> bool {
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) < n {
            if start.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_deadline_wakes_its_task_once_it_has_passed_and_not_before() {
        let (count, waker) = counter();
        let mut d = Deadline::default();
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(d.poll(deadline, &Context::from_waker(&waker)), Poll::Pending);
        // Polled again for the same deadline: no second registration.
        assert_eq!(d.poll(deadline, &Context::from_waker(&waker)), Poll::Pending);
        assert!(wait_for(&count, 1), "the task was not woken");
        assert!(count.first() >= deadline, "woken before the deadline");
        assert_eq!(d.poll(deadline, &Context::from_waker(&waker)), Poll::Ready(()));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken twice for one registration");
    }

    #[test]
    fn a_deadline_that_has_passed_is_ready_at_once() {
        let (count, waker) = counter();
        let mut d = Deadline::default();
        // A millisecond ago at least: the timer counts whole milliseconds, and a deadline of
        // now (rounded up) is `Pending` until the clock reaches the next one.
        let past = Instant::now() - Duration::from_millis(2);
        assert_eq!(d.poll(past, &Context::from_waker(&waker)), Poll::Ready(()));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_earlier_deadline_or_another_task_registers_again() {
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let mut d = Deadline::default();
        let now = Instant::now();
        assert!(d.poll(now + Duration::from_secs(3600), &Context::from_waker(&first_waker)).is_pending());
        // Moved earlier: woken at the new time, not in an hour.
        assert!(d.poll(now + Duration::from_millis(20), &Context::from_waker(&first_waker)).is_pending());
        assert!(wait_for(&first, 1), "the earlier deadline did not fire");
        // Another task polls: it is the one woken.
        let later = Instant::now() + Duration::from_millis(20);
        assert!(d.poll(later, &Context::from_waker(&first_waker)).is_pending());
        assert!(d.poll(later, &Context::from_waker(&second_waker)).is_pending());
        assert!(wait_for(&second, 1), "the second task was not woken");
    }

    #[test]
    fn a_later_deadline_is_registered_when_the_early_wake_comes() {
        let (count, waker) = counter();
        let mut d = Deadline::default();
        let start = Instant::now();
        let cx = Context::from_waker(&waker);
        assert!(d.poll(start + Duration::from_millis(20), &cx).is_pending());
        // Moved later: the earlier registration stands and wakes the task early.
        let later = start + Duration::from_millis(60);
        assert!(d.poll(later, &cx).is_pending());
        assert!(wait_for(&count, 1));
        assert!(count.first() < later);
        assert!(d.poll(later, &cx).is_pending(), "ready before its deadline");
        assert!(wait_for(&count, 2), "the later deadline did not fire");
        assert!(Instant::now() >= later);
        assert_eq!(d.poll(later, &cx), Poll::Ready(()));
    }

    #[test]
    fn a_registration_given_up_does_not_wake() {
        let (count, waker) = counter();
        let mut d = Deadline::default();
        assert!(d
            .poll(Instant::now() + Duration::from_millis(20), &Context::from_waker(&waker))
            .is_pending());
        drop(d);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_wakers_of_dropped_registrations_are_let_go_long_before_their_time() {
        let far = Instant::now() + Duration::from_secs(3600);
        let counts: Vec<_> = (0..10_000)
            .map(|_| {
                let (count, waker) = counter();
                let mut d = Deadline::default();
                assert!(d.poll(far, &Context::from_waker(&waker)).is_pending());
                drop(d);
                count
            })
            .collect();
        // Each waker was held by the timer's heap; the heap is rebuilt without the given-up
        // entries once they are half of it, so at most as many are still held as there are
        // live entries (the other tests', a few hundred), or 64.
        let held = counts.iter().filter(|c| Arc::strong_count(c) > 1).count();
        assert!(held < 1_000, "{held} wakers of 10,000 dropped registrations still held");
    }

    #[test]
    fn many_deadlines_each_fire_after_their_time() {
        let start = Instant::now();
        let tasks: Vec<_> = (0..500u64)
            .map(|i| {
                let (count, waker) = counter();
                let deadline = start + Duration::from_millis((i * 7919) % 200 + 1);
                let mut d = Deadline::default();
                assert!(d.poll(deadline, &Context::from_waker(&waker)).is_pending());
                // Kept: dropping it would give the registration up.
                (count, deadline, d)
            })
            .collect();
        for (count, deadline, _) in &tasks {
            assert!(wait_for(count, 1), "a deadline did not fire");
            assert!(count.first() >= *deadline, "woken before the deadline");
        }
    }

    #[test]
    fn the_heap_grows_by_a_quarter_and_shrinks_when_registrations_are_given_up() {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut held: Vec<_> = (0..10_000)
            .map(|_| {
                let (_, waker) = counter();
                let mut d = Deadline::default();
                assert!(d.poll(far, &Context::from_waker(&waker)).is_pending());
                d
            })
            .collect();
        {
            let state = super::timer().lock();
            let (len, cap) = (state.entries.len(), state.entries.capacity());
            // The other tests' entries (at most the 500 of the test above) may have fired
            // since the last growth; doubling would leave 10,000 entries in 16,384.
            assert!(
                len >= 10_000 && cap <= len + len / 4 + 600 + super::GROWTH_MIN,
                "{len} entries in {cap}"
            );
        }
        held.truncate(1_000);
        let state = super::timer().lock();
        let (len, cap) = (state.entries.len(), state.entries.capacity());
        assert!(cap < 5_000, "{len} entries left in a heap of {cap} after 9,000 were given up");
    }
}
