//! `tether serve`: the hub. [`config`] resolves flags, `TETHER_*` variables and the
//! `--config` file into checked settings; this module reads the files those name and runs.

mod config;

use anyhow::Context as _;
pub(crate) use config::Args;
pub(crate) use config::FileConfig;
use config::{resolve, Settings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tether::Config;
use tether_hub::{Hub, ServeOptions, Server};

/// The `--config` file, parsed (empty without one).
fn read_file(args: &Args) -> anyhow::Result<FileConfig> {
    match &args.config {
        Some(path) => read_config(path),
        None => Ok(FileConfig::default()),
    }
}

/// A config file, parsed.
pub(crate) fn read_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The config file to check (TETHER_* variables apply, as for `tether serve`).
    file: PathBuf,
}

/// `tether check-config FILE`: reads the file as `tether serve --config FILE` would, checks
/// every setting (and the token keys it names), and prints the settings it resolves to.
pub(crate) fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    #[derive(clap::Parser)]
    struct Env {
        #[command(flatten)]
        args: Args,
    }
    // No flags: the defaults and whatever TETHER_* variables are set.
    let env = <Env as clap::Parser>::try_parse_from(["check-config"]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = resolve(env.args, read_config(&args.file)?)?;
    authenticator(&s)?;
    print!("{}", s.describe());
    eprintln!("{}: ok", args.file.display());
    Ok(ExitCode::SUCCESS)
}

/// The token checks the settings ask for (reading the RSA key file).
fn authenticator(s: &Settings) -> anyhow::Result<Arc<dyn tether_hub::Authenticator>> {
    let rsa = match &s.token_rsa_public_key {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read token RSA public key {}", path.display()))?,
        ),
        None => None,
    };
    if s.token_hmac_secret.is_none() && rsa.is_none() {
        return Ok(Arc::new(tether_hub::NoTokens));
    }
    let jwt = tether_hub::Jwt::new(s.token_hmac_secret.as_deref().map(str::as_bytes), rsa.as_deref())
        .map_err(|e| anyhow::anyhow!("connection tokens: {e}"))?;
    Ok(Arc::new(jwt))
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.print_config {
        print!("{}", config::TEMPLATE);
        return Ok(ExitCode::SUCCESS);
    }
    let file = read_file(&args)?;
    let s = resolve(args, file)?;
    let limits = Config::default()
        .with_max_message_size(s.max_message_size)
        .with_max_frame_size(s.max_message_size)
        .with_ping_interval(s.ping_interval)
        .with_idle_timeout(s.idle_timeout)
        .with_deflate(s.deflate.then(tether_hub::http::deflate));
    let server = tether::ServerConfig::default()
        .with_config(limits)
        .with_protocols(tether_hub::http::protocols())
        .with_origin(s.origin.clone())
        .with_max_body_size(s.max_body_size)
        .with_max_connections(s.max_connections)
        .with_max_handshakes(s.max_handshakes);
    let (server, tls) = s.tls.apply(server)?;
    let scheme = if tls { "https" } else { "http" };
    let options = ServeOptions {
        listen: s.listen.clone(),
        server,
        api_key: s.api_key.clone(),
        max_connections_per_ip: s.max_connections_per_ip,
        auth: authenticator(&s)?,
        stomp: s.stomp,
        demo_page: s.demo,
        admin_listen: s.admin_listen.clone(),
        cors_origins: s.cors_origins.clone(),
        http2: s.http2,
        http2_max_streams: s.http2_max_streams,
        sockjs_prefix: s.sockjs_prefix.clone(),
        sockjs_stomp_prefix: s.sockjs_stomp_prefix.clone(),
        sockjs: s.sockjs.clone(),
        socketio_prefix: s.socketio_prefix.clone(),
        socketio: s.socketio.clone(),
        fanout_linger: s.fanout_linger,
        ..ServeOptions::default()
    };
    let hub = match s.redis {
        None => Arc::new(Hub::new(s.hub)),
        Some(redis) => {
            let broker =
                tether_hub::broker::redis::broker(redis).map_err(|e| anyhow::anyhow!("broker: {e}"))?;
            Arc::new(Hub::with_broker(s.hub, broker))
        }
    };
    let api_on = options.api_key.is_some();
    let listen = s.listen;
    let srv =
        Server::bind(hub.clone(), options).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = srv.local_addr()?;
    if let Some(admin) = srv.admin_addr()? {
        tracing::info!("server API, /metrics and /healthz on http://{admin}/");
    }
    let ws = if scheme == "https" { "wss" } else { "ws" };
    tracing::info!(
        "tether hub listening on {scheme}://{addr}/ ({}WebSocket at {ws}://{addr}/ws, STOMP at {ws}://{addr}/stomp, server API {})",
        if s.demo { "demo page at /, " } else { "" },
        if api_on { "on at /api/" } else { "off (no --api-key)" }
    );
    if s.demo {
        tokio::spawn(demo_prices(hub.clone()));
    }
    srv.run(crate::stop::shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// A random walk of a few prices, published to `ticker:prices`.
async fn demo_prices(hub: Arc<Hub>) {
    let mut prices = [("ACME", 100.0f64), ("GLOBEX", 42.0), ("INITECH", 7.5), ("UMBRELLA", 250.0)];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        // xorshift: enough randomness for a demo.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Each symbol in turn: the last four publications (the page reads them from
        // history) always hold every symbol.
        let i = (n % prices.len() as u64) as usize;
        n += 1;
        let step = ((seed >> 8) % 200) as f64 / 100.0 - 1.0;
        let (symbol, price) = &mut prices[i];
        *price = (*price * (1.0 + step / 100.0)).max(0.01);
        let data = format!("{{\"symbol\":\"{symbol}\",\"price\":{:.2}}}", price);
        let _ = hub.publish("ticker:prices", data.into(), None).await;
    }
}
