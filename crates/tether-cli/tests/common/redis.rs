#![allow(dead_code)] // each test crate that includes this uses part of it
//! A private `redis-server` for the tests that need one (scripts/test.sh installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A free loopback port (bound, then let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private `redis-server` on a loopback port, without persistence; killed on drop.
pub(crate) struct Redis {
    pub(crate) port: u16,
    pub(crate) child: Child,
}

impl Redis {
    pub(crate) fn start() -> Self {
        Self::on(free_port())
    }

    pub(crate) fn on(port: u16) -> Self {
        Self::with(port, &[])
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
        Self { port, child }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: no persistence) and starts a new one on the
    /// same port after `down`.
    pub(crate) fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        *self = Self::on(self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
