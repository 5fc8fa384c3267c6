//! Runs the built `tether` binary: `connect` against `echo`, and every failure message.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// A `tether echo` on a free port, stopped on drop.
struct Echo {
    child: Child,
    url: String,
}

impl Echo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["echo", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("TETHER_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("echo exited before listening").unwrap();
            if let Some(at) = line.find("ws://") {
                break line[at..].trim_end_matches('/').to_owned();
            }
        };
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn connect_round_trip_through_echo() {
    let echo = Echo::start(&[]);
    let out = connect(&[&format!("{}/chat?room=1", echo.url)], b"hello\nworld\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nworld\n");
    let err = text(&out.stderr);
    assert!(err.contains("connected to ws://") && err.contains("closed: 1000"), "{err}");
}

#[test]
fn binary_mode_round_trip() {
    let echo = Echo::start(&[]);
    let out = connect(&["--binary", &echo.url], b"bytes\n");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "bytes\n");
}

#[test]
fn subprotocol_header_and_origin() {
    let echo = Echo::start(&[
        "--subprotocol",
        "superchat",
        "--subprotocol",
        "chat",
        "--allow-origin",
        "http://ok.example",
    ]);
    let out = connect(
        &[
            "--subprotocol",
            "chat",
            "--subprotocol",
            "superchat",
            "--origin",
            "http://ok.example",
            "-H",
            "X-Token: abc",
            &echo.url,
        ],
        b"x\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("(subprotocol superchat)"), "{}", text(&out.stderr));
}

#[test]
fn rejected_handshake_prints_the_status() {
    let echo = Echo::start(&["--allow-origin", "http://ok.example"]);
    let out = connect(&["--origin", "http://evil.example", &echo.url], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: server rejected the handshake: HTTP 403 Forbidden");
}

#[test]
fn bad_url() {
    let out = connect(&["http://example.com/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: invalid url \"http://example.com/\": scheme must be ws or wss"
    );
    let out = connect(&["ws://127.0.0.1:99999/"], b"");
    assert_eq!(text(&out.stderr).trim(), "error: invalid url \"ws://127.0.0.1:99999/\": bad port");
}

#[test]
fn refused_connection() {
    // Nothing listens on port 1 of loopback.
    let out = connect(&["ws://127.0.0.1:1/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: connection refused by ws://127.0.0.1:1/");
}

#[test]
fn not_a_websocket_server() {
    // A plain TCP server that answers HTTP 200.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
        }
    });
    let out = connect(&[&format!("ws://{addr}/")], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: server rejected the handshake: HTTP 200 OK");
}

#[test]
fn bad_header_flag() {
    let out = connect(&["-H", "no-colon", "ws://127.0.0.1:1/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("must look like \"Name: value\""));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).args(["connect"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["echo", "--ping-interval", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn echo_reports_an_unusable_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN).args(["echo", "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("error: cannot listen on {addr}")), "{}", text(&out.stderr));
}

#[test]
fn ping_interval_and_show_ping() {
    let echo = Echo::start(&[]);
    let mut child = Command::new(BIN)
        .args(["connect", "--ping-interval", "0.05", "--show-ping", &echo.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(stdin); // EOF: the client closes with 1000
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Our pings come back as pongs from the echo server.
    assert!(text(&out.stderr).contains("pong (8 bytes)"), "{}", text(&out.stderr));
}

#[test]
fn handshake_limits_are_knobs() {
    let echo = Echo::start(&["--max-headers", "8"]);
    let many: Vec<String> = (0..10).flat_map(|i| ["-H".to_owned(), format!("X-{i}: v")]).collect();
    let mut args: Vec<&str> = many.iter().map(String::as_str).collect();
    args.push(&echo.url);
    let out = connect(&args, b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: server rejected the handshake: HTTP 431 Request Header Fields Too Large"
    );
}

#[test]
fn deflate_is_on_by_default_and_can_be_turned_off() {
    let echo = Echo::start(&[]);
    let out = connect(&[&echo.url], b"compress me\n");
    assert!(text(&out.stderr).contains("with permessage-deflate"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "compress me\n");
    let out = connect(&["--no-deflate", &echo.url], b"x\n");
    assert!(!text(&out.stderr).contains("permessage-deflate"), "{}", text(&out.stderr));
    let plain = Echo::start(&["--no-deflate"]);
    let out = connect(&[&plain.url], b"x\n");
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("permessage-deflate"), "{}", text(&out.stderr));
}
