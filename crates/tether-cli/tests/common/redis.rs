#![allow(dead_code)] // each test crate that includes this uses part of it
//! A private `redis-server` for the tests that need one (scripts/test.sh installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A free loopback port (bound, then let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private `redis-server` on a loopback port, without persistence unless made
/// [`persistent`](Self::persistent); killed on drop.
pub(crate) struct Redis {
    pub(crate) port: u16,
    pub(crate) child: Child,
    /// What it was started with beyond the port, for a restart.
    extra: Vec<String>,
}

impl Redis {
    pub(crate) fn start() -> Self {
        Self::on(free_port())
    }

    pub(crate) fn on(port: u16) -> Self {
        Self::with(port, &[])
    }

    /// A server that keeps its data in an append-only file in `dir`, written and synced
    /// before each answer (`appendfsync always`): what it acknowledged survives a kill.
    pub(crate) fn persistent(dir: &std::path::Path) -> Self {
        let dir = dir.to_str().expect("a UTF-8 temporary directory");
        Self::with(free_port(), &["--appendonly", "yes", "--appendfsync", "always", "--dir", dir])
    }

    /// A replica of the server on `master`.
    pub(crate) fn replica_of(master: u16) -> Self {
        Self::with(free_port(), &["--replicaof", "127.0.0.1", &master.to_string()])
    }

    pub(crate) fn with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server; scripts/test.sh does)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child, extra: extra.iter().map(|a| (*a).to_owned()).collect() }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and starts it again on the same port with the same
    /// settings after `down`: without persistence its data is gone; a
    /// [`persistent`](Self::persistent) one reloads what it acknowledged.
    pub(crate) fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let extra = std::mem::take(&mut self.extra);
        *self = Self::with(self.port, &extra.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
