//! What one `send` costs the sending thread on this machine, in CPU time: the floor under
//! any server that writes a publication to each subscriber as it arrives.
//!
//! Measures, on the thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`):
//! - a system call that does nothing (`getppid`): the cost of entering and leaving the
//!   kernel, all that batching system calls (io_uring) could save per `send`;
//! - 40-byte `send`s back to back on a loopback TCP connection whose peer a thread on the
//!   other core drains (its reader mostly busy, as a loaded subscriber's);
//! - the same `send`s paced, 20 µs apart, so that the reader is waiting in `recv` at each
//!   (as a subscriber at light load): the sender's core then also pays for waking it.
//!
//! Usage: `send_cost [N]` (N sends back to back, N/10 paced; default 200,000): the sender
//! on core 0, the reader on core 1, as the fan-out bench pins a server and its loader.
//! Prints one JSON line, nanoseconds per call. Other work on those cores
//! makes them larger: compare runs made side by side.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant libc knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Keeps the calling thread on `core`.
fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity get a
    // pointer to it and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    pin(0);
    let n: usize = std::env::args().nth(1).map_or(200_000, |a| a.parse().expect("N: a count"));
    let start = thread_cpu();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    let noop = (thread_cpu() - start) / n as f64;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind on loopback");
    let mut tx = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    tx.set_nodelay(true).expect("nodelay");
    let (mut rx, _) = listener.accept().expect("accept");
    let reader = std::thread::spawn(move || {
        pin(1);
        let mut buf = vec![0u8; 65536];
        while matches!(rx.read(&mut buf), Ok(k) if k > 0) {}
    });
    let msg = [b'x'; 40];
    let start = thread_cpu();
    for _ in 0..n {
        tx.write_all(&msg).expect("send");
    }
    let back_to_back = (thread_cpu() - start) / n as f64;

    let paced_n = (n / 10).max(1);
    let mut paced = 0.0;
    for _ in 0..paced_n {
        std::thread::sleep(Duration::from_micros(20));
        let t = thread_cpu();
        tx.write_all(&msg).expect("send");
        paced += thread_cpu() - t;
    }
    let paced = paced / paced_n as f64;
    tx.shutdown(std::net::Shutdown::Both).expect("shutdown");
    reader.join().expect("reader");
    println!(
        "{{\"noop_syscall_ns\":{:.0},\"send_back_to_back_ns\":{:.0},\"send_paced_ns\":{:.0},\"sends\":{n}}}",
        noop * 1e9,
        back_to_back * 1e9,
        paced * 1e9
    );
}
