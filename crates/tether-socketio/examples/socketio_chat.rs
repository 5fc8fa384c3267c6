//! A Socket.IO server to copy: events with acknowledgements, rooms, binary arguments,
//! namespaces, an auth middleware and connection state recovery. `cargo run -p tether-socketio --example socketio_chat
//! -- 127.0.0.1:3000`, then connect with socket.io-client:
//!
//! ```js
//! const socket = io("http://127.0.0.1:3000", { auth: { token: "secret" } });
//! socket.emit("join", "lobby");
//! socket.emit("say", "lobby", "hello", (ok) => console.log("delivered to", ok, "others"));
//! socket.on("said", (from, text) => console.log(from, text));
//! ```

use std::time::Duration;
use tether_socketio::{Args, Config, Recovery, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let mut config = Config::default();
    config.engine.ping_interval = Duration::from_secs(5);
    config.engine.ping_timeout = Duration::from_secs(5);
    // A client that comes back within two minutes gets its id, rooms and missed broadcasts.
    config.recovery = Some(Recovery::default());
    let io = SocketIo::new(config);

    let chat = io.ns("/", |socket| {
        // Acknowledge "echo" with its own arguments, binary ones included.
        socket.on("echo", |_socket, mut event| async move {
            if let Some(ack) = event.take_ack() {
                ack.send(event.args());
            }
        });
        socket.on("join", |socket, event| async move {
            if let Ok(room) = event.get::<String>(0) {
                socket.join(room);
            }
        });
        // say(room, text): to everyone else in the room; the ack says how many got it.
        socket.on("say", |socket, mut event| async move {
            let (Ok(room), Ok(text)) = (event.get::<String>(0), event.get::<String>(1)) else { return };
            let Ok(args) = Args::one(socket.id()).and_then(|a| a.arg(&text)) else { return };
            let delivered = socket.to(room).emit("said", &args);
            if let (Some(ack), Ok(n)) = (event.take_ack(), Args::one(&delivered)) {
                ack.send(&n);
            }
        });
        // announce(room, text): to the whole room, this socket included; replayed to a
        // member that was away (recovery).
        socket.on("announce", |socket, event| async move {
            let (Ok(room), Ok(text)) = (event.get::<String>(0), event.get::<String>(1)) else { return };
            socket.namespace().to(room).emit("news", &Args::one(&text).unwrap_or_default());
        });
        socket.on("recovered", |socket, mut event| async move {
            if let (Some(ack), Ok(args)) = (event.take_ack(), Args::one(&socket.recovered())) {
                ack.send(&args);
            }
        });
        // The server asks the client, and reports what it answered (or that it did not).
        socket.on("quiz", |socket, _event| async move {
            let question = Args::one("6*7").unwrap_or_default();
            let answer = match socket.emit_with_ack("question", &question, Duration::from_secs(2)).await {
                Ok(args) => args.get::<serde_json::Value>(0).map(|v| v.to_string()).unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            socket.emit("verdict", &Args::one(&answer).unwrap_or_default());
        });
        socket.on("kick", |socket, _event| async move { socket.disconnect(false) });
        socket.on("drop", |socket, _event| async move { socket.engine().close() });
        socket.on_disconnect(|socket, reason| tracing::info!(id = socket.id(), reason, "gone"));
    });
    // Only clients with the token get in; the others get CONNECT_ERROR "unauthorized".
    chat.middleware(|handshake| async move {
        let token: Option<String> = serde_json::from_str::<serde_json::Value>(handshake.auth.get())
            .ok()
            .and_then(|a| a.get("token").and_then(|t| t.as_str().map(str::to_owned)));
        if token.as_deref() == Some("secret") {
            Ok(())
        } else {
            Err("unauthorized".to_owned())
        }
    });
    // A second namespace, open to all: a counter of its sockets.
    let admin = io.clone();
    io.ns("/admin", move |socket| {
        let count = admin.of("/").map_or(0, |ns| ns.socket_count());
        socket.emit("stats", &Args::one(&count).unwrap_or_default());
    });

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("socket.io server on http://{}/socket.io/", listener.local_addr()?);
    tether_socketio::serve(listener, "/socket.io/", io, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
