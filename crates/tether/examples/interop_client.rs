//! The tether client against another implementation's echo server (see interop/): text,
//! binary, a 1 MiB message, ping, a close we start with a code and reason, and a close the
//! server starts (it closes with 4001 "bye" when sent "close-me"). permessage-deflate is
//! offered, and must be negotiated and used in both directions.
//!
//! usage: interop_client ws://127.0.0.1:PORT [ca.pem]   (the CA for a wss:// server)

use futures_util::{SinkExt, StreamExt};
use tether::tls::ClientTrust;
use tether::{ClientConfig, CloseCode, CloseFrame, Config, DeflateConfig, Initiator, Message, WebSocket};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn next_non_ping(ws: &mut WebSocket) -> Result<Message> {
    loop {
        match ws.next().await.ok_or("stream ended")?? {
            Message::Ping(_) => continue,
            msg => return Ok(msg),
        }
    }
}

async fn expect_echo(ws: &mut WebSocket, msg: Message, what: &str) -> Result<()> {
    ws.send(msg.clone()).await?;
    let got = next_non_ping(ws).await?;
    if got != msg {
        return Err(format!("{what}: sent {} bytes, got {:?}", msg.len(), got.len()).into());
    }
    println!("tether client: {what} ok");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let url = std::env::args().nth(1).ok_or("usage: interop_client URL [CA]")?;
    let trust = match std::env::args().nth(2) {
        Some(ca) => ClientTrust::Ca(tether::tls::load_certs(std::path::Path::new(&ca))?),
        None => ClientTrust::default(),
    };
    let run = async {
        let config = ClientConfig::default()
            .with_config(Config::default().with_deflate(Some(DeflateConfig::default())))
            .with_trust(trust.clone());
        let (mut ws, _) = tether::connect_with(&url, &config).await?;
        if !ws.deflate() {
            return Err("permessage-deflate was not negotiated".into());
        }
        expect_echo(&mut ws, Message::text("héllo from tether"), "text").await?;
        expect_echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255]), "binary").await?;
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        expect_echo(&mut ws, Message::binary(big), "1 MiB").await?;
        let s = ws.stats();
        // The 1 MiB message is highly repetitive: compressed both ways, it is a few KiB.
        if s.compressed_received == 0 || s.compressed_sent == 0 || s.bytes_sent * 20 > s.payload_sent {
            return Err(format!("compression not used: {s:?}").into());
        }
        println!(
            "tether client: permessage-deflate used ({} payload bytes sent as {} on the wire, {} received as {})",
            s.payload_sent, s.bytes_sent, s.payload_received, s.bytes_received
        );
        ws.send(Message::Ping("ping-payload".into())).await?;
        match next_non_ping(&mut ws).await? {
            Message::Pong(p) if &p[..] == b"ping-payload" => println!("tether client: ping ok"),
            other => return Err(format!("expected pong, got {other:?}").into()),
        }
        ws.send_close(CloseCode(4000), "done")?;
        while ws.next().await.is_some() {}
        let status = ws.close_status().ok_or("no close status")?;
        if !(status.clean && status.code == CloseCode(4000) && status.initiator == Initiator::Local) {
            return Err(format!("client close: {status:?}").into());
        }
        println!("tether client: close we started ok ({})", status.code);

        let (mut ws, _) = tether::connect_with(&url, &config).await?;
        ws.send(Message::text("close-me")).await?;
        let expected = Message::Close(Some(CloseFrame { code: CloseCode(4001), reason: "bye".into() }));
        let got = next_non_ping(&mut ws).await?;
        if got != expected {
            return Err(format!("server close: got {got:?}").into());
        }
        while ws.next().await.is_some() {}
        let status = ws.close_status().ok_or("no close status")?;
        if !(status.clean && status.initiator == Initiator::Remote) {
            return Err(format!("server close: {status:?}").into());
        }
        println!("tether client: close the server started ok (4001 bye)");
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), run).await.map_err(|_| "timed out")?
}
