//! `tether bench`: a load generator for WebSocket servers, in the spirit of wrk and
//! uWebSockets' load_test. One module per mode (echo, fanout, handshake, ramp); what they
//! share is in `load`, the flags in `args`. Modes import `args` and `load`, never this
//! module or each other.

mod args;
mod echo;
mod fanout;
mod handshake;
mod load;
mod ramp;

use anyhow::bail;
pub(crate) use args::Args;
use args::Mode;
use load::{Configs, Shared};
use std::process::ExitCode;
use std::sync::Arc;
use tether::tls::ClientTrust;
use tether::ClientConfig;

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.connections == 0 || args.in_flight == 0 {
        bail!("--connections and --in-flight must be at least 1");
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        bail!("--duration must be a positive number of seconds");
    }
    tether::Url::parse(&args.url).map_err(|e| anyhow::anyhow!("invalid url {:?}: {e}", args.url))?;
    let mut limits = tether::Config::default();
    if args.deflate {
        limits = limits.with_deflate(Some(tether::DeflateConfig::default()));
    }
    let mut config = ClientConfig::default().with_config(limits);
    if let Some(ca) = &args.ca {
        config = config
            .with_trust(ClientTrust::Ca(tether::tls::load_certs(ca).map_err(|e| anyhow::anyhow!("{e}"))?));
    }
    if args.insecure {
        config = config.with_trust(ClientTrust::Insecure);
    }

    let shared = Arc::new(Shared::default());
    let configs = Configs::new(config, &args.local_addrs);
    if !args.subscribe_urls.is_empty() && !matches!(args.mode, Mode::Fanout) {
        bail!("--subscribe-url is for --mode fanout");
    }
    match args.mode {
        Mode::Fanout => fanout::run(&args, configs, shared).await,
        Mode::Handshake => handshake::run(&args, configs, shared).await,
        Mode::Ramp => ramp::run(&args, configs, shared).await,
        Mode::Echo => echo::run(&args, configs, shared).await,
    }
}
