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

/// A loopback port free now and not handed out before in this process. The listener that
/// found it is closed before the proxy binds it, so another test's `bind` to port 0 may
/// get the same one meanwhile: a proxy started there would fail to listen while the
/// other's answered in its place (seen once: the test without auth met the basic-auth
/// proxy's 407).
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
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
    // Something listens; make sure it is this proxy, not another that holds the port (ours
    // would exit at once, unable to bind it).
    std::thread::sleep(Duration::from_millis(50));
    if let Ok(Some(status)) = child.try_wait() {
        panic!("proxy exited at start ({status}): port {port} is another program's");
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
