//! `tether token`: makes a connection token (an HS256 JWT) with the hub's secret, for tests
//! and scripts (what Centrifugo's `gentoken` does). Production tokens come from the
//! application's own sign-in, with the same claims: `sub`, `exp`, `channels`.

use anyhow::bail;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The user the token names (claim `sub`).
    #[arg(short, long)]
    user: String,
    /// Limit the token to these channels (claim `channels`; repeatable or comma-separated)
    /// [default: any channel the namespaces allow].
    #[arg(long = "channel", value_delimiter = ',')]
    channels: Vec<String>,
    /// Seconds until the token expires (claim `exp`); 0 makes a token that never expires.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    expires_in: u64,
    /// The hub's HS256 secret (32 bytes or more) [default: token_hmac_secret in --config].
    #[arg(long, env = "TETHER_TOKEN_HMAC_SECRET", hide_env_values = true, value_name = "SECRET")]
    token_hmac_secret: Option<String>,
    /// The hub's config file, to read token_hmac_secret from.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => Some(crate::serve::read_config(path)?),
        None => None,
    };
    let secret = match (args.token_hmac_secret.as_deref(), file.as_ref().and_then(|f| f.token_hmac_secret())) {
        (Some(s), _) | (None, Some(s)) => s.to_owned(),
        (None, None) => bail!(
            "no secret to sign with: give --token-hmac-secret (or TETHER_TOKEN_HMAC_SECRET), or --config with token_hmac_secret, the same secret the hub checks tokens with"
        ),
    };
    if secret.len() < 32 {
        bail!("the token HMAC secret must be at least 32 bytes (the hub refuses shorter ones)");
    }
    if args.user.is_empty() {
        bail!("--user must not be empty");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let exp = (args.expires_in > 0).then(|| now.saturating_add(args.expires_in));
    let claims = Claims {
        sub: &args.user,
        exp,
        channels: (!args.channels.is_empty()).then_some(args.channels.as_slice()),
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key)
            .map_err(|e| anyhow::anyhow!("cannot sign the token: {e}"))?;
    println!("{token}");
    let channels = if args.channels.is_empty() { "any channel".to_owned() } else { args.channels.join(", ") };
    let expiry = match exp {
        Some(_) => format!("expires in {} s", args.expires_in),
        None => "never expires".to_owned(),
    };
    eprintln!("token for user {:?}: {channels}; {expiry}", args.user);
    Ok(ExitCode::SUCCESS)
}
