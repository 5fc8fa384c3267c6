//! Real proxies for tests: tinyproxy (HTTP CONNECT) and microsocks (SOCKS5), from Debian's
//! packages, each started on a free loopback port and stopped on drop. Both connect onward
//! from 127.0.0.2, so a server can tell a proxied connection (peer 127.0.0.2) from a direct
//! one (peer 127.0.0.1).
//!
//! `scripts/test.sh` installs both and sets `TETHER_TEST_PROXIES=required`, which turns a
//! missing binary into a failure; elsewhere a test without them says so and passes.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address proxied connections come from.
pub const PROXY_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret";

/// A running proxy; killed on drop.
pub struct RunningProxy {
    child: Child,
    pub port: u16,
    _dir: Option<TempDir>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn available(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("TETHER_TEST_PROXIES").as_deref() != Ok("required"),
            "{program} is not installed (scripts/test.sh installs it)"
        );
        eprintln!("skipped: {program} is not installed (scripts/test.sh installs it)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(mut child: Child, port: u16, dir: Option<TempDir>) -> RunningProxy {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("proxy exited at start: {status}");
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("proxy not listening on port {port} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    RunningProxy { child, port, _dir: dir }
}

/// tinyproxy, with basic auth (`USER`/`PASSWORD`) when `auth`. `None` when not installed.
pub fn tinyproxy(auth: bool) -> Option<RunningProxy> {
    if !available("tinyproxy") {
        return None;
    }
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("tether-tinyproxy-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nBind {PROXY_SOURCE}\nTimeout 30\nMaxClients 100\nAllow 127.0.0.1\n\
         LogLevel Info\nLogFile \"{}\"\nDisableViaHeader Yes\n",
        dir.join("log").display()
    );
    if auth {
        conf.push_str(&format!("BasicAuth {USER} {PASSWORD}\n"));
    }
    let path = dir.join("tinyproxy.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(wait_listening(child, port, Some(TempDir(dir))))
}

/// microsocks, with username/password (`USER`/`PASSWORD`) when `auth`. `None` when not
/// installed.
pub fn microsocks(auth: bool) -> Option<RunningProxy> {
    if !available("microsocks") {
        return None;
    }
    let port = free_port();
    let mut cmd = Command::new("microsocks");
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-b", &PROXY_SOURCE.to_string()]);
    if auth {
        cmd.args(["-u", USER, "-P", PASSWORD]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    Some(wait_listening(child, port, None))
}
