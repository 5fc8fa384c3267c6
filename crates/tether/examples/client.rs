//! A client to copy: connects, sends each line of standard input as a text message and
//! prints what comes back, until stdin ends; then closes with 1000 and waits for the answer.
//! With `--http2` it tries WebSocket over HTTP/2 first (RFC 8441), falling back to HTTP/1.1.
//!
//! usage: cargo run -p tether --features http2 --example client -- [--http2] ws://127.0.0.1:9001/

use futures_util::{SinkExt, StreamExt};
use tether::{ClientConfig, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let http2 = args.iter().any(|a| a == "--http2");
    let url = args.iter().find(|a| !a.starts_with("--")).ok_or("usage: client [--http2] URL")?;
    let config = ClientConfig::default().with_http2(http2);
    let (ws, response) = tether::connect_with(url, &config).await?;
    eprintln!(
        "connected over {}{}",
        if response.http2 { "HTTP/2" } else { "HTTP/1.1" },
        response.protocol.map(|p| format!(", subprotocol {p}")).unwrap_or_default()
    );
    let (mut write, mut read) = ws.split();
    // Print what arrives while sending what is typed.
    let printer = tokio::spawn(async move {
        while let Some(msg) = read.next().await {
            match msg {
                Ok(Message::Text(t)) => println!("{t}"),
                Ok(Message::Binary(b)) => println!("({} bytes)", b.len()),
                Ok(Message::Close(frame)) => {
                    eprintln!("closed: {frame:?}");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("error: {e}");
                    break;
                }
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        write.send(Message::text(line)).await?;
    }
    write.close().await?;
    let _ = printer.await;
    Ok(())
}
