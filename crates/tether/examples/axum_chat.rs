//! A chat room in axum: every text message a client sends goes to every client, over
//! HTTP/1.1 or HTTP/2 (`axum::serve` takes both and advertises WebSocket over HTTP/2), with
//! the `chat` subprotocol, permessage-deflate, and browsers only from this server's pages.
//! `/` answers with a line of text.
//!
//! usage: cargo run -p tether --features axum --example axum_chat [ADDR]
//! (ADDR defaults to 127.0.0.1:3000; it prints `listening on ws://ADDR/ws`)

use axum::extract::State;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use futures_util::StreamExt;
use tether::axum::WebSocketUpgrade;
use tether::{Config, DeflateConfig, Message, OriginPolicy};
use tokio::sync::broadcast;

async fn chat(upgrade: WebSocketUpgrade, State(room): State<broadcast::Sender<Message>>) -> Response {
    upgrade
        .protocols(["chat"])
        .config(Config::default().with_deflate(Some(DeflateConfig::default())))
        .origin(OriginPolicy::SameHost)
        .on_upgrade(move |ws| async move {
            let mut heard = room.subscribe();
            let (write, mut read) = ws.split();
            let sender = write.sender();
            loop {
                tokio::select! {
                    said = read.next() => match said {
                        Some(Ok(msg @ Message::Text(_))) => {
                            let _ = room.send(msg);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    heard = heard.recv() => match heard {
                        Ok(msg) => {
                            if sender.send(msg).await.is_err() {
                                break;
                            }
                        }
                        // Fell more than the room's capacity behind: skip what was missed.
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            }
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".into());
    let (room, _) = broadcast::channel::<Message>(256);
    // `any`, not `get`: over HTTP/2 a WebSocket handshake is a CONNECT request.
    let app = Router::new()
        .route("/", get(|| async { "a chat room lives at /ws (subprotocol chat)\n" }))
        .route("/ws", any(chat))
        .with_state(room);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
