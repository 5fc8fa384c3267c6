//! Runs the built `tether` binary: `connect` against `echo`, and every failure message.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[path = "../../tether/tests/common/proxies.rs"]
mod proxies;

const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// No child process of these tests may run longer than this.
const DEADLINE: Duration = Duration::from_secs(20);

/// Waits for `child` to exit, killing it (and failing the test) past the deadline.
fn wait_bounded(mut child: Child) -> Output {
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("child process still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Runs `tether ARGS` with no input, bounded by the deadline.
fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let child =
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_bounded(child)
}

/// A `tether echo` on a free port, stopped on drop.
struct Echo {
    child: Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Echo {
    fn start(args: &[&str]) -> Self {
        Self::spawn(&[&["echo", "--listen", "127.0.0.1:0"], args].concat(), &[])
    }

    /// Starts `tether ARGS` with `env`; the URL is the first ws:// or wss:// in its log.
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .envs(env.iter().copied())
            .args(args)
            .env("TETHER_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read its log on a thread, so that waiting for the URL has a deadline and the log is
        // drained for as long as the server runs.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                if let Some(at) = line.find("wss://").or_else(|| line.find("ws://")) {
                    let url = line[at..].split([' ', ',']).next().unwrap_or_default();
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(url) => Self { child, url, log },
            Err(_) => {
                let _ = child.kill();
                panic!("echo did not print its URL within {DEADLINE:?}");
            }
        }
    }
}

impl Echo {
    /// Waits (bounded) for a log line containing every one of `needles`.
    fn wait_log(&self, needles: &[&str]) -> String {
        let start = std::time::Instant::now();
        loop {
            let found =
                self.log.lock().unwrap().iter().find(|l| needles.iter().all(|n| l.contains(n))).cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no log line with {needles:?} in {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy variables a client reads; removed from every child so that tests do not
/// depend on the environment they run in.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn connect(args: &[&str], stdin: &[u8]) -> Output {
    connect_env(args, stdin, &[])
}

/// `tether connect ARGS` with `env` set (and no other proxy variables), fed `stdin`.
fn connect_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = spawn_connect_env(args, env);
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    wait_bounded(child)
}

/// `tether connect ARGS` running, its standard streams piped (no proxy variables).
fn spawn_connect(args: &[&str]) -> Child {
    spawn_connect_env(args, &[])
}

fn spawn_connect_env(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    assert_eq!(
        text(&out.stderr).trim(),
        "error: server rejected the handshake: HTTP 403 Forbidden: origin not allowed"
    );
}

#[test]
fn bad_url() {
    // A URL that cannot work is a usage error (exit 2), with the likely fix.
    let out = connect(&["http://example.com/"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: invalid url \"http://example.com/\": scheme must be ws or wss (did you mean ws://example.com/?)"
    );
    let out = connect(&["https://example.com/x"], b"");
    assert!(
        text(&out.stderr).trim().ends_with("(did you mean wss://example.com/x?)"),
        "{}",
        text(&out.stderr)
    );
    let out = connect(&["ws://127.0.0.1:99999/"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).trim(), "error: invalid url \"ws://127.0.0.1:99999/\": bad port");
}

#[test]
fn tls_and_plain_mixed_up() {
    // wss:// to a plain server, and ws:// to a TLS one: each says what to try instead.
    let plain = Echo::start(&[]);
    let out = connect(&[&plain.url.replace("ws://", "wss://")], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: the server at 127.0.0.1 did not answer TLS (a plain ws:// server? try ws:// instead of wss://)"
    );
    let tls = Echo::start(&["--tls-self-signed"]);
    let url = tls.url.replace("wss://", "ws://");
    let out = connect(&[&url], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: the server at {url} did not answer with HTTP/1.1 (a TLS server? try wss:// instead of ws://)")
    );
}

/// Sends SIGINT (what Ctrl-C sends) to `child`.
fn interrupt(child: &Child) {
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn ctrl_c_and_no_exit() {
    let echo = Echo::start(&[]);
    // --no-exit: input ends, the connection stays, and what arrives is still printed; Ctrl-C
    // then closes with 1000 and waits for the answer: a clean exit.
    let mut child = spawn_connect(&["--no-exit", &echo.url]);
    child.stdin.take().unwrap().write_all(b"still here\n").unwrap(); // and EOF
    std::thread::sleep(Duration::from_millis(600));
    assert!(child.try_wait().unwrap().is_none(), "connect --no-exit left at the end of its input");
    interrupt(&child);
    let out = wait_bounded(child);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // In a pipe, the output is the message alone, without markers.
    assert_eq!(text(&out.stdout), "still here\n");
    assert!(text(&out.stderr).contains("closed: 1000"), "{}", text(&out.stderr));
    let line = echo.wait_log(&["closed", "code=1000", "initiator=Remote", "clean=true"]);
    assert!(line.contains("messages_in=1"), "{line}");
    // Ctrl-C to the server: its connections are closed with 1001, and it exits 0.
    let mut echo = Echo::start(&[]);
    let child = spawn_connect(&[&echo.url]);
    echo.wait_log(&["connected"]);
    interrupt(&echo.child);
    let out = wait_bounded(child);
    assert_eq!(text(&out.stderr).lines().last(), Some("closed: 1001 server shutting down"));
    echo.wait_log(&["stopped"]);
    let status = echo.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// On a terminal (a pseudo-terminal from `script`), sent lines are marked "> " and
/// received ones "< ".
#[test]
fn markers_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("`script` (util-linux) is needed for the terminal test");
    }
    let echo = Echo::start(&[]);
    let cmd = format!("printf 'hi\\n' | {BIN} connect {}", echo.url);
    let child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child);
    let screen = text(&out.stdout).replace('\r', "");
    assert!(screen.contains("> hi\n") && screen.contains("< hi\n"), "{screen:?}");
}

#[test]
fn refused_connection() {
    // Nothing listens on port 1 of loopback.
    let out = connect(&["ws://127.0.0.1:1/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: connection refused by 127.0.0.1:1 (is the server running, and on that port?)"
    );
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
    assert_eq!(text(&out.stderr).trim(), "error: server rejected the handshake: HTTP 200 OK: hi");
}

#[test]
fn bad_header_flag() {
    let out = connect(&["-H", "no-colon", "ws://127.0.0.1:1/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("must look like \"Name: value\""));
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["connect"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["echo", "--ping-interval", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn echo_reports_an_unusable_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["echo", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("error: cannot listen on {addr}")), "{}", text(&out.stderr));
}

#[test]
fn ping_interval_and_show_ping() {
    let echo = Echo::start(&[]);
    let mut child = spawn_connect(&["--ping-interval", "0.05", "--show-ping", &echo.url]);
    let stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    drop(stdin); // EOF: the client closes with 1000
    let out = wait_bounded(child);
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
        "error: server rejected the handshake: HTTP 431 Request Header Fields Too Large: more than 8 headers"
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

#[test]
fn wss_with_a_self_signed_certificate() {
    let echo = Echo::start(&["--tls-self-signed"]);
    assert!(echo.url.starts_with("wss://127.0.0.1:"), "{}", echo.url);
    let url = echo.url.replace("127.0.0.1", "localhost");
    let out = connect(&[&url], b"x\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: certificate of localhost rejected: it is not signed by a trusted CA (self-signed, or a private CA: pass it with --ca)"
    );
    let out = connect(&["--insecure", &url], b"secret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "secret\n");
    assert!(text(&out.stderr).starts_with("warning: --insecure"), "{}", text(&out.stderr));
}

/// Writes a fresh test CA as `dir/ca_name` and a localhost certificate it signed as
/// `dir/cert.pem` and `dir/key.pem`.
fn issue_cert(dir: &std::path::Path, ca_name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert =
        CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join(ca_name), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

#[test]
fn wss_with_pem_files_and_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("tether-cli-tls-{}", std::process::id()));
    issue_cert(&dir, "ca.pem");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();

    let echo = Echo::start(&["--tls-cert", &path("cert.pem"), "--tls-key", &path("key.pem")]);
    let url = echo.url.replace("127.0.0.1", "localhost");
    let out = connect(&["--ca", &path("ca.pem"), &url], b"private ca\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "private ca\n");

    let out = run(&["echo", "--tls-cert", &path("nope.pem"), "--tls-key", &path("key.pem")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope.pem"), "{}", text(&out.stderr));
    let out = run(&["echo", "--tls-cert", &path("cert.pem")]);
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plain TCP server that answers every request with a redirect to `location`.
fn redirector(location: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(20) {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let answer = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(answer.as_bytes());
        }
    });
    format!("ws://{addr}")
}

#[test]
fn redirects_are_followed_up_to_a_limit() {
    let echo = Echo::start(&[]);
    let hop = redirector(format!("{}/after-redirect", echo.url));
    let out = connect(&[&format!("{hop}/start")], b"moved\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "moved\n");
    let out = connect(&["--max-redirects", "0", &hop], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: server rejected the handshake: HTTP 302 Found");
    let looping = redirector("/again".to_owned());
    let out = connect(&["--max-redirects", "3", &looping], b"");
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "error: cannot connect to {looping}: handshake failed: redirect refused: more than 3 redirects (last to /again)"
    );
    assert_eq!(text(&out.stderr).trim(), expected);
}

#[test]
fn sighup_reloads_certificates() {
    let dir = std::env::temp_dir().join(format!("tether-cli-hup-{}", std::process::id()));
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let issue = |ca_name: &str| issue_cert(&dir, ca_name);
    // `tether echo` and the hub (`tether serve`, wss:// at /ws) take the same TLS flags.
    for server in ["echo", "serve"] {
        issue("old-ca.pem");
        let tls = ["--tls-cert", &path("cert.pem"), "--tls-key", &path("key.pem")];
        let echo = Echo::spawn(&[&[server, "--listen", "127.0.0.1:0"][..], &tls].concat(), &[]);
        let url = echo.url.replace("127.0.0.1", "localhost");
        assert!(url.starts_with("wss://localhost:"), "{url}");
        assert!(connect(&["--ca", &path("old-ca.pem"), &url], b"a\n").status.success(), "{server}");

        issue("new-ca.pem");
        let hup = Command::new("kill").args(["-HUP", &echo.child.id().to_string()]).status().unwrap();
        assert!(hup.success());
        // The reload happens on the server's own schedule: poll, at most 50 times.
        let reloaded = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            connect(&["--ca", &path("new-ca.pem"), &url], b"b\n").status.success()
        });
        assert!(reloaded, "{server}: the new certificate was never served");
        if server == "serve" {
            // The reloaded certificate serves HTTP/2 (ALPN h2) as the first one did.
            let out = connect(&["--http2", "--ca", &path("new-ca.pem"), &url], b"d\n");
            assert!(text(&out.stderr).contains("over HTTP/2"), "{}", text(&out.stderr));
        }
        assert_eq!(connect(&["--ca", &path("old-ca.pem"), &url], b"c\n").status.code(), Some(1), "{server}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dns_failure_and_connect_timeout_flag() {
    let out = connect(&["ws://no-such-host.invalid/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: cannot resolve host no-such-host.invalid: "),
        "{}",
        text(&out.stderr)
    );
    let out = connect(&["--connect-timeout", "0", "ws://127.0.0.1:1/"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: --connect-timeout must be a positive number of seconds");
}

#[test]
fn proxy_variables_choose_the_proxy_and_no_proxy_bypasses_it() {
    let echo = Echo::start(&[]);
    let dead = "http://127.0.0.1:1";
    let refused =
        "error: connection refused by proxy http://127.0.0.1:1 (is the proxy running, and on that port?)";
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        let out = connect_env(&[&echo.url], b"", &[(var, dead)]);
        assert_eq!((out.status.code(), text(&out.stderr).trim()), (Some(1), refused), "{var}");
    }
    // Lower case wins over upper case, as in curl.
    let out = connect_env(&[&echo.url], b"hi\n", &[("http_proxy", ""), ("HTTP_PROXY", dead)]);
    assert_eq!(text(&out.stderr).trim(), refused);
    // HTTPS_PROXY is for wss:// only.
    let out = connect_env(&[&echo.url], b"hi\n", &[("HTTPS_PROXY", dead)]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "hi\n"));
    // NO_PROXY and --no-proxy reach the server directly.
    for (var, list) in
        [("NO_PROXY", "127.0.0.1"), ("no_proxy", "example.com, 127.0.0.0/8"), ("NO_PROXY", "*")]
    {
        let out = connect_env(&[&echo.url], b"hi\n", &[("HTTP_PROXY", dead), (var, list)]);
        assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "hi\n"), "{var}={list}");
    }
    let out = connect_env(&["--no-proxy", &echo.url], b"hi\n", &[("ALL_PROXY", dead)]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "hi\n"));
    // A proxy variable that is not a proxy URL is an error, not a silent direct connection.
    let out = connect_env(&[&echo.url], b"", &[("HTTP_PROXY", "ftp://user:pw@x")]);
    assert_eq!(
        (out.status.code(), text(&out.stderr).trim()),
        (
            Some(1),
            "error: proxy: invalid proxy url \"ftp://user:***@x\": scheme must be http, socks5 or socks5h"
        )
    );
    let out = connect(&["--proxy", "gopher://x", &echo.url], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: --proxy: invalid proxy url"), "{}", text(&out.stderr));
}

#[test]
fn through_real_proxies_from_flags_and_variables() {
    let (Some(http), Some(socks)) = (proxies::tinyproxy(true), proxies::microsocks(true)) else { return };
    let (user, pass) = (proxies::USER, proxies::PASSWORD);
    let plain = Echo::start(&[]);
    let secure = Echo::start(&["--tls-self-signed"]);
    let http_url = format!("http://{user}:{pass}@127.0.0.1:{}", http.port);
    let socks_url = format!("socks5h://{user}:{pass}@127.0.0.1:{}", socks.port);
    type Case<'a> = (&'a Echo, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        (&plain, vec!["--proxy", &http_url], vec![]),
        (&plain, vec![], vec![("http_proxy", &http_url)]),
        (&secure, vec!["--insecure"], vec![("HTTPS_PROXY", &http_url)]),
        (&plain, vec!["--proxy", &socks_url], vec![]),
        (&secure, vec!["--insecure"], vec![("all_proxy", &socks_url)]),
    ];
    for (i, (echo, flags, env)) in cases.into_iter().enumerate() {
        let path = format!("/case{i}");
        let url = format!("{}{path}", echo.url.replace("127.0.0.1", "localhost"));
        let mut args = flags.clone();
        args.push(&url);
        let out = connect_env(&args, b"via proxy\n", &env);
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "via proxy\n"),
            "case {i}: {}",
            text(&out.stderr)
        );
        // The server saw the proxy's outgoing address, not ours.
        let line = echo.wait_log(&["connected", &format!("path={path}")]);
        assert!(line.contains(&format!("peer={}:", proxies::PROXY_SOURCE)), "case {i}: {line}");
    }
    // Wrong credentials from a variable: the proxy's refusal, named.
    let bad = format!("http://{user}:nope@127.0.0.1:{}", http.port);
    let out = connect_env(&[&plain.url], b"", &[("HTTP_PROXY", &bad)]);
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: proxy http://127.0.0.1:{}: proxy refused the tunnel: HTTP 401 Unauthorized",
            http.port
        )
    );
}

/// One plain HTTP/1.0 request to `addr` (host:port); returns the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn echo_serves_its_page_beside_websocket() {
    let echo = Echo::start(&[]);
    let addr = echo.url.trim_start_matches("ws://").to_owned();
    let page = http_get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8"));
    assert!(page.contains("new WebSocket(url)") && page.contains("location.host + '/echo'"));
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404 Not Found\r\n"));
    // WebSocket still works on any path.
    let out = connect(&[&format!("{}/anything", echo.url)], b"still echoes\n");
    assert_eq!(text(&out.stdout), "still echoes\n");
}

#[test]
fn bench_echo_reports_its_fields() {
    let echo = Echo::start(&[]);
    let out = run(&["bench", &echo.url, "-c", "3", "-s", "32", "-d", "0.5", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for field in [
        format!("target       {}", echo.url),
        "connections  3 requested, 3 open".to_owned(),
        "message      32 B text, 1 in flight per connection".to_owned(),
        "throughput   ".to_owned(),
        "errors       none".to_owned(),
    ] {
        assert!(table.contains(&field), "{field:?} missing in\n{table}");
    }
    let latency = table.lines().find(|l| l.starts_with("latency")).unwrap();
    for q in ["p50 ", "p90 ", "p99 ", "p99.9 ", "max "] {
        assert!(latency.contains(q), "{latency}");
    }
    let messages: u64 = table
        .lines()
        .find_map(|l| l.strip_prefix("messages     "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(messages > 0);

    // --count stops early; --json is one object with the same fields; binary and in-flight.
    let out = run(&[
        "bench", &echo.url, "-c", "2", "-s", "100", "--binary", "-k", "4", "--count", "50", "--json", "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    for key in [
        "\"mode\":\"echo\"",
        "\"connections\":2",
        "\"open\":2",
        "\"size\":100",
        "\"binary\":true",
        "\"in_flight\":4",
        "\"messages_per_s\":",
        "\"latency_ms\":{\"p50\":",
        "\"p99.9\":",
        "\"errors\":{}",
    ] {
        assert!(json.contains(key), "{key} missing in {json}");
    }
    let n: u64 = json.split("\"messages\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!((50..50 + 2 * 4).contains(&n), "count 50 stopped at {n}");
}

#[test]
fn bench_reports_failures_by_kind() {
    let out = run(&["bench", "ws://127.0.0.1:1/", "-c", "2", "-d", "0.2", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: no connection could be opened to ws://127.0.0.1:1/ (connect: refused: 2)"
    );
    let out = run(&["bench", "ws://127.0.0.1:1/", "-c", "0"]);
    assert_eq!(text(&out.stderr).trim(), "error: --connections and --in-flight must be at least 1");
}

#[test]
fn bench_handshake_mode() {
    let echo = Echo::spawn(&["echo", "--listen", "127.0.0.1:0"], &[]);
    let json = bench_json(
        &[&echo.url, "--mode", "handshake", "-c", "3", "-d", "0.3"],
        &["\"mode\":\"handshake\"", "\"workers\":3", "\"handshakes_per_s\":", "\"p99.9\":", "\"errors\":{}"],
    );
    assert!(json_number(&json, "handshakes") > 0, "{json}");
    // --count stops it: at most one handshake per worker past the count.
    let out = run(&["bench", &echo.url, "--mode", "handshake", "-c", "2", "--count", "10", "--json", "-q"]);
    let n = json_number(&text(&out.stdout), "handshakes");
    assert!((10..=11).contains(&n), "count 10 stopped at {n}");
    // The table, and failures by kind with a failing exit.
    let out = run(&["bench", &echo.url, "--mode", "handshake", "-c", "1", "--count", "3", "-q"]);
    let table = text(&out.stdout);
    assert!(table.contains("handshakes   3 in") && table.contains("latency      p50"), "{table}");
    let out =
        run(&["bench", "ws://127.0.0.1:1/", "--mode", "handshake", "-c", "1", "-d", "0.2", "--json", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("\"connect: refused\":"), "{}", text(&out.stdout));
}

#[test]
fn bench_ramp_mode_reports_server_memory() {
    let echo = Echo::spawn(&["echo", "--listen", "127.0.0.1:0"], &[]);
    let pid = echo.child.id().to_string();
    let json = bench_json(
        &[
            &echo.url,
            "--mode",
            "ramp",
            "-c",
            "50",
            "--open-rate",
            "500",
            "-d",
            "0.2",
            "--server-pid",
            &pid,
            "--local-addr",
            "127.0.0.2",
            "--local-addr",
            "127.0.0.3",
        ],
        &[
            "\"mode\":\"ramp\"",
            "\"connections\":50",
            "\"open\":50",
            "\"still_open\":50",
            "\"p99.9\":",
            "\"errors\":{}",
        ],
    );
    assert!(json.contains(&format!("\"server_pid\":{pid}")), "{json}");
    let (before, held) =
        (json_number(&json, "server_rss_before_kib"), json_number(&json, "server_rss_held_kib"));
    assert!(before > 0 && held > 0, "{json}");
    // Bytes per connection: the growth divided by 50 (rounded), whatever it is on this machine.
    let per = json_number(&json, "server_bytes_per_connection");
    assert_eq!(per, (held.saturating_sub(before) as f64 * 1024.0 / 50.0).round() as u64, "{json}");
    // The server saw the connections come from both local addresses.
    echo.wait_log(&["127.0.0.2:", "connected"]);
    echo.wait_log(&["127.0.0.3:", "connected"]);
    // The table; without --server-pid memory is not measured; a bad pid is a clear error.
    let out = run(&["bench", &echo.url, "--mode", "ramp", "-c", "3", "-d", "0.1", "-q"]);
    let table = text(&out.stdout);
    assert!(
        table.contains("3 requested, 3 open") && table.contains("not measured (give --server-pid)"),
        "{table}"
    );
    let out = run(&["bench", &echo.url, "--mode", "ramp", "-c", "1", "--server-pid", "999999999", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read the memory of process 999999999"),
        "{}",
        text(&out.stderr)
    );
    // Refused connections are counted by kind, with a failing exit.
    let out = run(&["bench", "ws://127.0.0.1:1/", "--mode", "ramp", "-c", "2", "-d", "0.1", "--json", "-q"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("\"connect: refused\":2"), "{}", text(&out.stdout));
}

#[test]
fn serve_starts_the_hub_and_stops_on_sigterm() {
    let hub = Echo::spawn(&["serve", "--listen", "127.0.0.1:0", "--demo"], &[]);
    assert!(hub.url.ends_with("/ws"), "{}", hub.url);
    let addr = hub.url.trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
    let line = hub.wait_log(&["tether hub listening on http://"]);
    assert!(line.contains("demo page at /") && line.contains("server API off (no --api-key)"), "{line}");
    assert!(http_get(&addr, "/healthz").ends_with("\r\n\r\nok\n"));
    assert!(http_get(&addr, "/").contains("<title>tether hub demo</title>"));
    // The JSON protocol through `tether connect`.
    let out = connect(
        &["--subprotocol", "tether.json", &hub.url],
        b"{\"id\":1,\"connect\":{\"name\":\"cli\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"chat:cli\"}}\n",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("{\"id\":1,\"result\":{\"client\":"), "{stdout}");
    assert!(stdout.contains("{\"id\":2,\"result\":{\"epoch\":"), "{stdout}");
    // SIGTERM: a clean exit.
    let status = Command::new("kill").args(["-TERM", &hub.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    hub.wait_log(&["stopped"]);
}

#[test]
fn serve_settings_precedence_and_validation() {
    let dir = std::env::temp_dir().join(format!("tether-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("hub.toml");
    std::fs::write(&conf, "listen = \"127.0.0.1:1\"\napi_key = \"file-key-file-key-file\"\n[namespaces.room]\nallow_anonymous = true\n").unwrap();
    let conf_s = conf.to_str().unwrap();
    // The environment overrides the file's listen address; the file's API key applies.
    let hub = Echo::spawn(&["serve", "--config", conf_s], &[("TETHER_LISTEN", "127.0.0.1:0")]);
    let line = hub.wait_log(&["tether hub listening on"]);
    assert!(line.contains("server API on at /api/"), "{line}");
    // The file's namespaces replace the built-in ones.
    let out = connect(
        &["--subprotocol", "tether.json", &hub.url],
        b"{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"room:a\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"chat:a\"}}\n",
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("{\"id\":2,\"result\":"), "{stdout}");
    assert!(stdout.contains("{\"id\":3,\"error\":{\"code\":102"), "{stdout}");
    drop(hub);
    // A flag overrides the environment.
    let hub = Echo::spawn(
        &["serve", "--config", conf_s, "--listen", "127.0.0.1:0"],
        &[("TETHER_LISTEN", "127.0.0.1:1")],
    );
    hub.wait_log(&["tether hub listening on"]);
    drop(hub);
    // Bad settings stop the start with a message.
    std::fs::write(&conf, "listen = \"127.0.0.1:0\"\nmax_conections = 5\n").unwrap();
    let out = run(&["serve", "--config", conf_s]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("invalid config")
            && err.contains("unknown field `max_conections`")
            && err.contains("line 2"),
        "{err}"
    );
    std::fs::write(&conf, "listen = \"127.0.0.1:0\"\n[stomp]\nmax_frame_size = 0\n").unwrap();
    let out = run(&["serve", "--config", conf_s]);
    assert_eq!(text(&out.stderr).trim(), "error: stomp max_frame_size must be at least 1");
    std::fs::write(&conf, "listen = \"127.0.0.1:0\"\n[queues]\nmax_queues = 0\n").unwrap();
    let out = run(&["serve", "--config", conf_s]);
    assert_eq!(text(&out.stderr).trim(), "error: queues max_queues must be at least 1");
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--api-key", "short"]);
    assert_eq!(text(&out.stderr).trim(), "error: api key must be at least 16 characters");
    let out = run(&["serve", "--listen", "127.0.0.1:0", "--max-queued-bytes", "0"]);
    assert_eq!(text(&out.stderr).trim(), "error: max queued bytes must be at least 1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The number after `"name":` in a JSON line.
/// Runs `tether bench ARGS --json -q`, checks that it succeeded and that its JSON has every
/// one of `fields`; the JSON.
fn bench_json(args: &[&str], fields: &[&str]) -> String {
    let out = run(&[&["bench"], args, &["--json", "-q"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    for field in fields {
        assert!(json.contains(field), "{field} missing in {json}");
    }
    json
}

fn json_number(json: &str, name: &str) -> u64 {
    json.split(&format!("\"{name}\":")).nth(1).unwrap().split([',', '}']).next().unwrap().parse().unwrap()
}

#[test]
fn bench_fanout_against_the_hub() {
    let key = "cli-fanout-key-0123456789";
    let hub = Echo::spawn(&["serve", "--listen", "127.0.0.1:0", "--api-key", key, "--demo"], &[]);
    let json = bench_json(
        &[
            &hub.url,
            "--mode",
            "fanout",
            "-c",
            "6",
            "--channels",
            "2",
            "--rate",
            "40",
            "-d",
            "0.5",
            "--api-key",
            key,
        ],
        &[
            "\"mode\":\"fanout\"",
            "\"subscribers\":6",
            "\"channels\":2",
            "\"deliveries_per_s\":",
            "\"p99\":",
            "\"errors\":{}",
        ],
    );
    let number = |name: &str| json_number(&json, name);
    // Each publication reaches the 3 subscribers of its channel, every one of them.
    assert!(number("published") > 0);
    assert_eq!(number("delivered"), number("published") * 3);
    assert_eq!(number("delivered"), number("expected"));
    assert!(json.contains("\"protocol\":\"tether.json\""), "{json}");
    // The same with STOMP subscribers on /topic/ticker:bench0 and 1.
    let out = run(&[
        "bench",
        &hub.url,
        "--mode",
        "fanout",
        "--stomp",
        "-c",
        "4",
        "--channels",
        "2",
        "--rate",
        "40",
        "-d",
        "0.3",
        "--api-key",
        key,
        "--json",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = text(&out.stdout);
    assert!(json.contains("\"protocol\":\"stomp\"") && json.contains("\"errors\":{}"), "{json}");
    let number = |name: &str| json_number(&json, name);
    assert!(number("published") > 0);
    assert_eq!(number("delivered"), number("published") * 2);
    let out = run(&["bench", &hub.url, "--mode", "fanout", "-c", "1", "-d", "0.2"]);
    assert!(text(&out.stderr).contains("needs the hub's --api-key"), "{}", text(&out.stderr));
}

/// Runs `tether connect` against the hub with `commands` (tether.json lines), returning
/// its stdout.
fn json_session(url: &str, commands: &str) -> String {
    text(&connect(&["--subprotocol", "tether.json", url], commands.as_bytes()).stdout)
}

#[test]
fn serve_without_demo_has_no_page_and_no_anonymous_publish() {
    let hub = Echo::spawn(&["serve", "--listen", "127.0.0.1:0"], &[]);
    let line = hub.wait_log(&["tether hub listening on http://"]);
    assert!(!line.contains("demo page"), "{line}");
    let addr = hub.url.trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
    let page = http_get(&addr, "/");
    assert!(page.starts_with("HTTP/1.0 404") && page.contains("served with --demo"), "{page}");
    assert!(http_get(&addr, "/app.js").starts_with("HTTP/1.0 404"));
    // No demo namespaces; the default namespace wants a token: an anonymous client can
    // neither publish nor subscribe anywhere.
    let out = json_session(
        &hub.url,
        "{\"id\":1,\"connect\":{\"name\":\"ann\"}}\n{\"id\":2,\"publish\":{\"channel\":\"chat:lobby\",\"data\":1}}\n{\"id\":3,\"publish\":{\"channel\":\"lobby\",\"data\":1}}\n{\"id\":4,\"subscribe\":{\"channel\":\"lobby\"}}\n",
    );
    assert!(out.contains("\"anonymous\":true"), "{out}");
    assert!(out.contains("{\"id\":2,\"error\":{\"code\":102"), "{out}");
    assert!(out.contains("{\"id\":3,\"error\":{\"code\":103"), "{out}");
    assert!(out.contains("{\"id\":4,\"error\":{\"code\":103"), "{out}");
    // With --demo the page is there, and anonymous clients chat.
    let demo = Echo::spawn(&["serve", "--listen", "127.0.0.1:0", "--demo"], &[]);
    let addr = demo.url.trim_start_matches("ws://").trim_end_matches("/ws").to_owned();
    assert!(http_get(&addr, "/").contains("<title>tether"));
    let out = json_session(
        &demo.url,
        "{\"id\":1,\"connect\":{\"name\":\"ann\"}}\n{\"id\":2,\"publish\":{\"channel\":\"chat:lobby\",\"data\":1}}\n",
    );
    assert!(out.contains("{\"id\":2,\"result\":{\"offset\":1"), "{out}");
}

const SECRET: &str = "cli-token-secret-of-at-least-32-bytes";

#[test]
fn token_makes_what_the_hub_accepts() {
    let out = run(&["token", "--user", "ann", "--token-hmac-secret", SECRET, "--channel", "room:a,room:b"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert_eq!(text(&out.stderr).trim(), "token for user \"ann\": room:a, room:b; expires in 3600 s");
    let dir = std::env::temp_dir().join(format!("tether-token-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("hub.toml");
    std::fs::write(
        &conf,
        format!(
            "token_hmac_secret = \"{SECRET}\"\n[namespaces.room]\nallow_anonymous = true\npresence = true\n"
        ),
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap();
    let hub = Echo::spawn(&["serve", "--listen", "127.0.0.1:0", "--config", conf_s], &[]);
    // The hub takes it: the user is ann, limited to the token's channels.
    let out = json_session(
        &hub.url,
        &format!("{{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"room:a\"}}}}\n{{\"id\":3,\"subscribe\":{{\"channel\":\"room:c\"}}}}\n"),
    );
    assert!(out.contains("\"user\":\"ann\"") && !out.contains("anonymous"), "{out}");
    assert!(out.contains("{\"id\":2,\"result\":"), "{out}");
    assert!(out.contains("{\"id\":3,\"error\":{\"code\":103"), "{out}");
    // A guest who calls herself "ann" (kept connected by --no-exit) and the token's ann are
    // two people in presence.
    let mut guest = spawn_connect(&["--no-exit", "--subprotocol", "tether.json", &hub.url]);
    guest
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"id\":1,\"connect\":{\"name\":\"ann\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"room:a\"}}\n",
        )
        .unwrap();
    let mut lines = BufReader::new(guest.stdout.take().unwrap()).lines();
    let subscribed = lines.nth(1).unwrap().unwrap();
    assert!(subscribed.starts_with("{\"id\":2,\"result\":"), "{subscribed}");
    let out = json_session(
        &hub.url,
        &format!("{{\"id\":1,\"connect\":{{\"token\":\"{token}\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"room:a\"}}}}\n{{\"id\":3,\"presence\":{{\"channel\":\"room:a\"}}}}\n"),
    );
    let presence = out.lines().find(|l| l.starts_with("{\"id\":3,")).unwrap_or_default().to_owned();
    assert_eq!(presence.matches("\"user\":\"ann\"").count(), 2, "{presence}");
    assert_eq!(presence.matches("\"anonymous\":true").count(), 1, "{presence}");
    interrupt(&guest);
    assert_eq!(wait_bounded(guest).status.code(), Some(0));
    // The secret from the config file; a token that never expires; an expired one is
    // refused (109) by the hub.
    let out = run(&["token", "-u", "bob", "--config", conf_s, "--expires-in", "0"]);
    assert_eq!(text(&out.stderr).trim(), "token for user \"bob\": any channel; never expires");
    let forever = text(&out.stdout).trim().to_owned();
    let out = json_session(&hub.url, &format!("{{\"id\":1,\"connect\":{{\"token\":\"{forever}\"}}}}\n"));
    assert!(out.contains("\"user\":\"bob\"") && !out.contains("expires"), "{out}");
    // Without a secret, or with a short one: a message and exit 1.
    let out = run(&["token", "-u", "ann"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: no secret to sign with"), "{}", text(&out.stderr));
    let out = run(&["token", "-u", "ann", "--token-hmac-secret", "short"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("at least 32 bytes"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_and_print_config() {
    let dir = std::env::temp_dir().join(format!("tether-check-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The printed starting file is valid as it is, and resolves to the defaults.
    let out = run(&["serve", "--print-config"]);
    assert_eq!(out.status.code(), Some(0));
    let template = text(&out.stdout);
    assert!(
        template.contains("# max_queued_bytes = 4194304") && template.contains("# [redis]"),
        "{template}"
    );
    let conf = dir.join("start.toml");
    std::fs::write(&conf, &template).unwrap();
    let out = run(&["check-config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let settings = text(&out.stdout);
    assert!(
        settings.contains("listen = \"127.0.0.1:8080\"\n") && settings.contains("broker = \"memory\"\n"),
        "{settings}"
    );
    assert!(settings.contains("# no namespaces"), "{settings}");
    assert_eq!(text(&out.stderr).trim(), format!("{}: ok", conf.display()));
    // A file with namespaces and a secret: listed, the secret never printed.
    let secret = "check-config-secret-of-at-least-32-bytes";
    std::fs::write(&conf, format!("token_hmac_secret = \"{secret}\"\n[namespaces.news]\nhistory_size = 9\n"))
        .unwrap();
    let out = run(&["check-config", conf.to_str().unwrap()]);
    let settings = text(&out.stdout);
    assert!(settings.contains("[namespaces.news]\nhistory_size = 9\n"), "{settings}");
    assert!(settings.contains("token_hmac_secret = \"(set)\"") && !settings.contains(secret), "{settings}");
    // Errors: an unknown key (with its line), a bad value, a short secret, a missing file.
    for (file, error) in [
        ("listen = \"x\"\nmax_conections = 5\n", "unknown field `max_conections`"),
        ("[stomp]\nmax_frame_size = 0\n", "error: stomp max_frame_size must be at least 1"),
        ("token_hmac_secret = \"short\"\n", "the token HMAC secret must be at least 32 bytes"),
    ] {
        std::fs::write(&conf, file).unwrap();
        let out = run(&["check-config", conf.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert!(text(&out.stderr).contains(error), "{file}: {}", text(&out.stderr));
        assert!(text(&out.stdout).is_empty());
    }
    let out = run(&["check-config", dir.join("absent.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tether connect --http2`: over TLS with ALPN h2 and over h2c to the hub, a WebSocket on an
/// HTTP/2 stream; to `tether echo` (HTTP/1.1 only) it falls back to an upgrade.
#[test]
fn connect_over_http2_and_back_to_http1() {
    let dir = std::env::temp_dir().join(format!("tether-cli-h2-{}", std::process::id()));
    issue_cert(&dir, "ca.pem");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let hello = b"{\"id\":1,\"connect\":{\"name\":\"h2\"}}\n";
    let tls = Echo::spawn(
        &["serve", "--listen", "127.0.0.1:0", "--tls-cert", &path("cert.pem"), "--tls-key", &path("key.pem")],
        &[],
    );
    let plain = Echo::spawn(&["serve", "--listen", "127.0.0.1:0"], &[]);
    let wss = tls.url.replace("127.0.0.1", "localhost");
    for (url, ca) in [(wss.as_str(), Some(path("ca.pem"))), (plain.url.as_str(), None)] {
        let mut args = vec!["--http2", "--subprotocol", "tether.json"];
        if let Some(ca) = &ca {
            args.extend(["--ca", ca.as_str()]);
        }
        args.push(url);
        let out = connect(&args, hello);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains("over HTTP/2 (subprotocol tether.json)"), "{url}: {stderr}");
        assert!(stdout.contains("\"user\":\"h2\""), "{url}: {stdout}");
    }
    let echo = Echo::start(&[]);
    let out = connect(&["--http2", &echo.url], b"fell back\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("HTTP/2"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fell back\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tether echo --sockjs`: the SockJS test services on the address it prints; `tether
/// connect` echoes through the raw `/echo/websocket`; Ctrl-C stops it with exit 0.
#[test]
fn echo_sockjs_serves_the_test_services() {
    use std::io::Read as _;
    let mut child = Command::new(BIN)
        .args(["echo", "--sockjs", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .env("TETHER_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed if an assertion fails before the end.
    struct Kill(Option<Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(c) = &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut guard = Kill(Some(child));
    let line = lines.next().unwrap().unwrap();
    let at = line.find("http://").expect(&line);
    let addr = line[at + 7..].split('/').next().unwrap().to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    let http = |request: String| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let info =
        http("GET /disabled_websocket_echo/info HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".into());
    assert!(info.starts_with("HTTP/1.1 200") && info.contains("\"websocket\":false"), "{info}");
    let post = |path: &str, body: &str| {
        // HTTP/1.0: the body is what precedes the end of the connection (no chunks).
        http(format!("POST {path} HTTP/1.0\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len()))
    };
    assert!(post("/echo/0/cli/xhr", "").ends_with("\r\n\r\no\n"));
    assert!(post("/echo/0/cli/xhr_send", "[\"hi\"]").contains(" 204 "));
    assert!(post("/echo/0/cli/xhr", "").ends_with("\r\n\r\na[\"hi\"]\n"));
    let out =
        connect(&[&format!("ws://{}/echo/websocket", line[at + 7..].split('/').next().unwrap())], b"raw\n");
    assert_eq!(text(&out.stdout), "raw\n", "{}", text(&out.stderr));
    let child = guard.0.take().unwrap();
    interrupt(&child);
    assert_eq!(wait_bounded(child).status.code(), Some(0));
}
