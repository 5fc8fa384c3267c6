//! The client under test for Autobahn|Testsuite's `fuzzingserver` mode: runs every case,
//! echoing each message, then asks the suite to write its report.
//!
//! usage: autobahn_client [ws://127.0.0.1:9003] [agent] [ca.pem]
//! (for a wss:// suite, the CA that signed its certificate)

use futures_util::{SinkExt, StreamExt};
use tether::tls::ClientTrust;
use tether::{ClientConfig, Config, DeflateConfig, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9003".to_owned());
    let agent = args.next().unwrap_or_else(|| "tether".to_owned());
    let trust = match args.next() {
        Some(ca) => ClientTrust::Ca(tether::tls::load_certs(std::path::Path::new(&ca))?),
        None => ClientTrust::default(),
    };
    let plain = ClientConfig::default().with_trust(trust.clone());
    let count = case_count(&base, &plain).await?;
    eprintln!("running {count} cases against {base}");
    // The suite sends messages up to 16 MiB (9.x); the defaults already allow that.
    // 13.x accepts only offers that say the client can limit its window and drop its
    // context, so offer both (client_max_window_bits is always in our offer).
    let deflate = DeflateConfig::default().with_client_no_context_takeover(true);
    let config =
        ClientConfig::default().with_config(Config::default().with_deflate(Some(deflate))).with_trust(trust);
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        let (mut ws, _) = match tether::connect_with(&url, &config).await {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("case {case}: connect failed: {e}");
                continue;
            }
        };
        while let Some(item) = ws.next().await {
            match item {
                Ok(msg) if msg.is_data() => {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // Wait until the connection has fully ended before the next case.
        let _ = ws.close().await;
    }
    let (mut ws, _) = tether::connect_with(&format!("{base}/updateReports?agent={agent}"), &plain).await?;
    while ws.next().await.is_some() {}
    Ok(())
}

async fn case_count(base: &str, config: &ClientConfig) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = tether::connect_with(&format!("{base}/getCaseCount"), config).await?;
    let mut count = None;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            count = Some(t.parse()?);
        }
    }
    count.ok_or_else(|| "no case count received".into())
}
