//! `tether::timer::drive`: the timer in a task of a current-thread runtime, with no thread of
//! its own, serving that runtime and others; and the thread taking over when the task ends.
//! One test in this binary: the timer is the process's, and another test would share it.

use std::future::poll_fn;
use std::time::{Duration, Instant};
use tether::timer::Deadline;

/// Whether a thread of this process is named `tether-timer`.
#[cfg(target_os = "linux")]
fn timer_thread() -> bool {
    std::fs::read_dir("/proc/self/task").expect("/proc/self/task").any(|t| {
        let comm = t.map(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default());
        comm.is_ok_and(|c| c.trim_end() == "tether-timer")
    })
}

async fn sleep_on_timer(wait: Duration) -> Duration {
    let start = Instant::now();
    let at = start + wait;
    let mut deadline = Deadline::new();
    poll_fn(|cx| deadline.poll(at, cx)).await;
    start.elapsed()
}

#[test]
fn a_task_drives_the_timer_with_no_thread_and_the_thread_takes_over_when_it_ends() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let driver = tokio::spawn(tether::timer::drive());
        // The spawned task runs (and takes the timer) before this one resumes.
        tokio::task::yield_now().await;

        // Deadlines of this runtime's tasks, in any order, each after its time.
        let waits = [30u64, 10, 50, 20];
        let tasks: Vec<_> =
            waits.iter().map(|&ms| tokio::spawn(sleep_on_timer(Duration::from_millis(ms)))).collect();
        for (task, ms) in tasks.into_iter().zip(waits) {
            let took = task.await.unwrap();
            assert!(took >= Duration::from_millis(ms), "a {ms} ms deadline fired after {took:?}");
            assert!(took < Duration::from_secs(5), "a {ms} ms deadline fired after {took:?}");
        }

        // A deadline of another runtime, on another thread, earlier than one pending here:
        // the task is told of it and wakes that runtime's task.
        let pending = tokio::spawn(sleep_on_timer(Duration::from_millis(300)));
        tokio::task::yield_now().await;
        let other = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(sleep_on_timer(Duration::from_millis(20)))
        });
        let took = tokio::task::spawn_blocking(move || other.join().unwrap()).await.unwrap();
        assert!(took >= Duration::from_millis(20) && took < Duration::from_millis(250), "{took:?}");
        assert!(pending.await.unwrap() >= Duration::from_millis(300));

        #[cfg(target_os = "linux")]
        assert!(!timer_thread(), "a timer thread runs beside the task");

        // A second driver leaves the first one in charge and ends at once.
        tokio::time::timeout(Duration::from_secs(5), tether::timer::drive())
            .await
            .expect("a second drive() returns at once");

        // The task ends with a registration pending: the thread takes it over.
        let pending = tokio::spawn(sleep_on_timer(Duration::from_millis(100)));
        tokio::task::yield_now().await;
        driver.abort();
        assert!(driver.await.unwrap_err().is_cancelled());
        let took = pending.await.unwrap();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(5), "{took:?}");
        #[cfg(target_os = "linux")]
        assert!(timer_thread(), "no thread took the timer over");
    });
}
