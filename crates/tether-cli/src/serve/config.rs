//! `tether serve`'s settings: the raw flags (with their `TETHER_*` environment variables,
//! which clap reads) and the `--config` TOML file, resolved into one checked [`Settings`]
//! by [`resolve`], a pure function (no files, no sockets), tested below. The first source
//! that sets a value wins: flag or variable, then the file, then the default.

use anyhow::bail;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tether::OriginPolicy;
use tether_hub::broker::redis::RedisOptions;
use tether_hub::{HubOptions, NamespaceOptions, QueueLimits, StompOptions};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// TOML configuration file (see docs/OPERATIONS.md); flags and TETHER_* variables
    /// override what it sets.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TETHER_LISTEN")]
    listen: Option<String>,
    /// Key for the server API (header "Authorization: apikey KEY"); without one the API is off.
    #[arg(long, env = "TETHER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Origins browsers may connect from (repeatable or comma-separated); "*" for any
    /// [default: the page's own host].
    #[arg(long = "allow-origin", env = "TETHER_ALLOW_ORIGIN", value_delimiter = ',')]
    allow_origins: Vec<String>,
    /// Open TCP connections at most (WebSocket or HTTP); more are answered 503 and
    /// closed [default: the open-files limit less 1088].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections not yet upgraded (reading a request, plain HTTP) at most; more are
    /// closed at once [default: 1024].
    #[arg(long, env = "TETHER_MAX_HANDSHAKES")]
    max_handshakes: Option<usize>,
    /// WebSocket connections per client IP at most [default: 1000].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Seconds between WebSocket pings to each client (0: off) [default: 25].
    #[arg(long, env = "TETHER_PING_INTERVAL", value_name = "SECS")]
    ping_interval: Option<f64>,
    /// Seconds without anything from a client (not even a pong) before it is closed with
    /// 1001 (0: off) [default: 60].
    #[arg(long, env = "TETHER_IDLE_TIMEOUT", value_name = "SECS")]
    idle_timeout: Option<f64>,
    /// Channels one connection may subscribe to [default: 128].
    #[arg(long, env = "TETHER_MAX_CHANNELS_PER_CONNECTION")]
    max_channels_per_connection: Option<usize>,
    /// Largest client message in bytes; larger ones close the connection with 1009
    /// [default: 65536].
    #[arg(long, env = "TETHER_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Unsent bytes per connection before it is disconnected as a slow consumer (close
    /// code 4008) [default: 4194304].
    #[arg(long, env = "TETHER_MAX_QUEUED_BYTES")]
    max_queued_bytes: Option<usize>,
    /// Secret (32 bytes or more) that checks HS256 connection tokens.
    #[arg(long, env = "TETHER_TOKEN_HMAC_SECRET", hide_env_values = true, value_name = "SECRET")]
    token_hmac_secret: Option<String>,
    /// PEM file with the RSA public key that checks RS256 connection tokens.
    #[arg(long, env = "TETHER_TOKEN_RSA_PUBLIC_KEY", value_name = "FILE")]
    token_rsa_public_key: Option<PathBuf>,
    /// Share channels, history and presence with other nodes through Redis:
    /// redis://[user:password@]host:port[/db], rediss:// (TLS), or
    /// redis+sentinel://host:port[,host:port…]/service[/db] [default: memory, one node].
    #[arg(long, env = "TETHER_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// Publish demo prices to ticker:prices twice a second.
    #[arg(long, env = "TETHER_DEMO")]
    demo: bool,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    listen: Option<String>,
    api_key: Option<String>,
    allow_origins: Option<Vec<String>>,
    max_connections: Option<usize>,
    max_handshakes: Option<usize>,
    max_connections_per_ip: Option<usize>,
    ping_interval: Option<f64>,
    idle_timeout: Option<f64>,
    max_channels_per_connection: Option<usize>,
    max_message_size: Option<usize>,
    max_queued_bytes: Option<usize>,
    demo: Option<bool>,
    token_hmac_secret: Option<String>,
    token_rsa_public_key: Option<PathBuf>,
    /// Options of channels without a namespace.
    default_namespace: Option<FileNamespace>,
    /// Namespaces by name; replaces the built-in `chat` and `ticker` when present.
    namespaces: Option<HashMap<String, FileNamespace>>,
    /// The STOMP front-end.
    stomp: Option<FileStomp>,
    /// Work queues (STOMP `/queue/...`).
    queues: Option<FileQueues>,
    /// `memory` or a Redis URL.
    broker: Option<String>,
    /// Settings of the Redis broker.
    redis: Option<FileRedis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    prefix: Option<String>,
    presence_ttl_ms: Option<u64>,
    meta_ttl_seconds: Option<u64>,
    command_timeout_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
}

impl FileRedis {
    fn apply(&self, mut o: RedisOptions) -> anyhow::Result<RedisOptions> {
        let ms = |name: &str, v: Option<u64>, d: Duration| -> anyhow::Result<Duration> {
            match v {
                Some(0) => bail!("redis {name} must be at least 1"),
                Some(v) => Ok(Duration::from_millis(v)),
                None => Ok(d),
            }
        };
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.contains(['{', '}', ' ']) {
                bail!("redis prefix {p:?} must be non-empty, without braces or spaces");
            }
            o.prefix = p.clone();
        }
        o.presence_ttl = ms("presence_ttl_ms", self.presence_ttl_ms, o.presence_ttl)?;
        o.meta_ttl =
            ms("meta_ttl_seconds", self.meta_ttl_seconds.map(|s| s.saturating_mul(1000)), o.meta_ttl)?;
        o.command_timeout = ms("command_timeout_ms", self.command_timeout_ms, o.command_timeout)?;
        o.max_backoff = ms("max_backoff_ms", self.max_backoff_ms, o.max_backoff)?;
        Ok(o)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStomp {
    max_frame_size: Option<usize>,
    max_headers: Option<usize>,
    max_header_length: Option<usize>,
    heart_beat_send_ms: Option<u64>,
    heart_beat_receive_ms: Option<u64>,
    max_transaction_frames: Option<usize>,
}

impl FileStomp {
    fn apply(&self, mut o: StompOptions) -> anyhow::Result<StompOptions> {
        let l = &mut o.limits;
        l.max_frame_size = positive("stomp max_frame_size", self.max_frame_size.unwrap_or(l.max_frame_size))?;
        l.max_headers = positive("stomp max_headers", self.max_headers.unwrap_or(l.max_headers))?;
        l.max_header_length =
            positive("stomp max_header_length", self.max_header_length.unwrap_or(l.max_header_length))?;
        o.heart_beat = (
            self.heart_beat_send_ms.unwrap_or(o.heart_beat.0),
            self.heart_beat_receive_ms.unwrap_or(o.heart_beat.1),
        );
        o.max_transaction_frames = positive(
            "stomp max_transaction_frames",
            self.max_transaction_frames.unwrap_or(o.max_transaction_frames),
        )?;
        Ok(o)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQueues {
    max_messages: Option<usize>,
    max_queues: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    history_size: Option<usize>,
    history_ttl_seconds: Option<u64>,
    presence: Option<bool>,
    join_leave: Option<bool>,
    allow_publish: Option<bool>,
    allow_anonymous: Option<bool>,
}

impl FileNamespace {
    fn apply(&self, mut ns: NamespaceOptions) -> NamespaceOptions {
        ns.history_size = self.history_size.unwrap_or(ns.history_size);
        ns.history_ttl = self.history_ttl_seconds.map_or(ns.history_ttl, Duration::from_secs);
        ns.presence = self.presence.unwrap_or(ns.presence);
        ns.join_leave = self.join_leave.unwrap_or(ns.join_leave);
        ns.allow_publish = self.allow_publish.unwrap_or(ns.allow_publish);
        ns.allow_anonymous = self.allow_anonymous.unwrap_or(ns.allow_anonymous);
        ns
    }
}

/// The built-in namespaces: `chat` (the demo's rooms) and `ticker` (server-published).
fn default_namespaces() -> HashMap<String, NamespaceOptions> {
    let ticker = NamespaceOptions {
        history_size: 20,
        history_ttl: Duration::from_secs(60),
        allow_anonymous: true,
        ..NamespaceOptions::default()
    };
    HashMap::from([("chat".to_owned(), NamespaceOptions::chat()), ("ticker".to_owned(), ticker)])
}

/// A number of seconds from a flag or the file, `default` without one; 0 turns it off.
fn seconds(name: &str, v: Option<f64>, default: Duration) -> anyhow::Result<Option<Duration>> {
    let Some(v) = v else { return Ok(Some(default)) };
    let d = Duration::try_from_secs_f64(v)
        .map_err(|_| anyhow::anyhow!("{name} must be a non-negative number of seconds"))?;
    Ok(Some(d).filter(|d| !d.is_zero()))
}

fn positive(name: &str, v: usize) -> anyhow::Result<usize> {
    if v == 0 {
        bail!("{name} must be at least 1");
    }
    Ok(v)
}

/// Everything `tether serve` needs to start, checked.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) listen: String,
    pub(crate) api_key: Option<String>,
    pub(crate) origin: OriginPolicy,
    pub(crate) max_connections: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_message_size: usize,
    /// `None`: off.
    pub(crate) ping_interval: Option<Duration>,
    /// `None`: off.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) hub: HubOptions,
    pub(crate) stomp: StompOptions,
    pub(crate) demo: bool,
    pub(crate) token_hmac_secret: Option<String>,
    pub(crate) token_rsa_public_key: Option<PathBuf>,
    /// The Redis broker's settings; `None` for the memory broker.
    pub(crate) redis: Option<RedisOptions>,
    pub(crate) tls: crate::tls::TlsArgs,
}

/// Resolves the flags and the file into checked settings.
pub(crate) fn resolve(args: Args, file: FileConfig) -> anyhow::Result<Settings> {
    let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
    let api_key = args.api_key.or(file.api_key).filter(|k| !k.is_empty());
    if api_key.as_ref().is_some_and(|k| k.len() < 16) {
        bail!("api key must be at least 16 characters");
    }
    let origins = if args.allow_origins.is_empty() {
        file.allow_origins.unwrap_or_default()
    } else {
        args.allow_origins
    };
    let origin = match origins.as_slice() {
        [] => OriginPolicy::SameHost,
        [any] if any == "*" => OriginPolicy::Any,
        list => OriginPolicy::AllowList(list.to_vec()),
    };
    let defaults = tether::ServerConfig::default();
    let max_connections = positive(
        "max connections",
        args.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections),
    )?;
    let max_handshakes = positive(
        "max handshakes",
        args.max_handshakes.or(file.max_handshakes).unwrap_or(defaults.max_handshakes),
    )?;
    let max_per_ip = positive(
        "max connections per ip",
        args.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(1_000),
    )?;
    let max_channels = positive(
        "max channels per connection",
        args.max_channels_per_connection.or(file.max_channels_per_connection).unwrap_or(128),
    )?;
    let max_message =
        positive("max message size", args.max_message_size.or(file.max_message_size).unwrap_or(64 * 1024))?;
    let max_queued =
        positive("max queued bytes", args.max_queued_bytes.or(file.max_queued_bytes).unwrap_or(4 << 20))?;
    let demo = args.demo || file.demo.unwrap_or(false);
    let mut namespaces = default_namespaces();
    if let Some(list) = &file.namespaces {
        namespaces =
            list.iter().map(|(name, ns)| (name.clone(), ns.apply(NamespaceOptions::default()))).collect();
    }
    for name in namespaces.keys() {
        if name.is_empty() || name.contains(':') {
            bail!("namespace name {name:?} must be non-empty and without ':'");
        }
    }
    let default_namespace = file
        .default_namespace
        .as_ref()
        .map_or_else(NamespaceOptions::default, |ns| ns.apply(NamespaceOptions::default()));
    let stomp =
        file.stomp.as_ref().map_or(Ok(StompOptions::default()), |s| s.apply(StompOptions::default()))?;
    let mut queue_limits = QueueLimits::default();
    if let Some(q) = &file.queues {
        queue_limits.max_messages =
            positive("queues max_messages", q.max_messages.unwrap_or(queue_limits.max_messages))?;
        queue_limits.max_queues =
            positive("queues max_queues", q.max_queues.unwrap_or(queue_limits.max_queues))?;
    }
    let hub_options = HubOptions {
        default_namespace,
        namespaces,
        max_channels_per_connection: max_channels,
        max_queued_bytes: max_queued,
        queue_limits,
        ..HubOptions::default()
    };

    let ping =
        seconds("ping interval", args.ping_interval.or(file.ping_interval), tether_hub::http::PING_INTERVAL)?;
    let idle =
        seconds("idle timeout", args.idle_timeout.or(file.idle_timeout), tether_hub::http::IDLE_TIMEOUT)?;
    let broker = args.broker.or(file.broker).filter(|b| b != "memory");
    let redis = match broker {
        None => None,
        Some(url) => {
            if !["redis://", "rediss://", "redis+sentinel://"].iter().any(|s| url.starts_with(s)) {
                bail!("broker {url:?} must be \"memory\" or a redis://, rediss:// or redis+sentinel:// URL");
            }
            let options = RedisOptions::new(url);
            Some(match &file.redis {
                Some(r) => r.apply(options)?,
                None => options,
            })
        }
    };
    Ok(Settings {
        listen,
        api_key,
        origin,
        max_connections,
        max_handshakes,
        max_connections_per_ip: max_per_ip,
        max_message_size: max_message,
        ping_interval: ping,
        idle_timeout: idle,
        hub: hub_options,
        stomp,
        demo,
        token_hmac_secret: args.token_hmac_secret.or(file.token_hmac_secret),
        token_rsa_public_key: args.token_rsa_public_key.or(file.token_rsa_public_key),
        redis,
        tls: args.tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).unwrap().args
    }

    fn file(toml_text: &str) -> FileConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn error(flags: &[&str], toml_text: &str) -> String {
        resolve(args(flags), file(toml_text)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_flags_or_file() {
        let s = resolve(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.api_key, None);
        assert_eq!(s.origin, OriginPolicy::SameHost);
        assert_eq!((s.max_connections_per_ip, s.max_message_size), (1_000, 64 * 1024));
        assert_eq!(s.ping_interval, Some(tether_hub::http::PING_INTERVAL));
        assert_eq!(s.idle_timeout, Some(tether_hub::http::IDLE_TIMEOUT));
        assert_eq!(s.hub.max_channels_per_connection, 128);
        assert_eq!(s.hub.max_queued_bytes, 4 << 20);
        let mut names: Vec<&str> = s.hub.namespaces.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["chat", "ticker"]);
        assert!(s.redis.is_none());
        assert!(!s.demo);
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let f = "listen = \"127.0.0.1:9001\"\nmax_channels_per_connection = 7\nping_interval = 5\n";
        let s = resolve(args(&["--listen", "127.0.0.1:9002"]), file(f)).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9002");
        assert_eq!(s.hub.max_channels_per_connection, 7);
        assert_eq!(s.ping_interval, Some(Duration::from_secs(5)));
        let s = resolve(args(&["--allow-origin", "https://a.example,https://b.example"]), file(f)).unwrap();
        assert_eq!(s.listen, "127.0.0.1:9001");
        assert_eq!(
            s.origin,
            OriginPolicy::AllowList(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert_eq!(
            resolve(args(&["--allow-origin", "*"]), FileConfig::default()).unwrap().origin,
            OriginPolicy::Any
        );
    }

    #[test]
    fn zero_turns_timers_off_and_bad_values_are_refused() {
        let s =
            resolve(args(&["--ping-interval", "0", "--idle-timeout", "0"]), FileConfig::default()).unwrap();
        assert_eq!((s.ping_interval, s.idle_timeout), (None, None));
        assert!(error(&["--ping-interval=-1"], "").contains("non-negative number of seconds"));
        assert!(error(&["--max-message-size", "0"], "").contains("at least 1"));
        assert!(error(&["--api-key", "short"], "").contains("at least 16 characters"));
        assert!(error(&[], "[namespaces.\"a:b\"]\n").contains("without ':'"));
        assert!(error(&[], "[stomp]\nmax_frame_size = 0\n").contains("stomp max_frame_size"));
    }

    #[test]
    fn namespaces_in_the_file_replace_the_built_in_ones() {
        let s =
            resolve(args(&[]), file("[namespaces.news]\nhistory_size = 5\nallow_publish = true\n")).unwrap();
        let names: Vec<&str> = s.hub.namespaces.keys().map(String::as_str).collect();
        assert_eq!(names, ["news"]);
        let news = &s.hub.namespaces["news"];
        assert_eq!((news.history_size, news.allow_publish, news.presence), (5, true, false));
    }

    #[test]
    fn brokers() {
        assert!(resolve(args(&["--broker", "memory"]), FileConfig::default()).unwrap().redis.is_none());
        let f = "[redis]\nprefix = \"app\"\npresence_ttl_ms = 900\n";
        let redis = resolve(args(&["--broker", "redis://127.0.0.1:6390"]), file(f)).unwrap().redis.unwrap();
        assert_eq!((redis.url.as_str(), redis.prefix.as_str()), ("redis://127.0.0.1:6390", "app"));
        assert_eq!(redis.presence_ttl, Duration::from_millis(900));
        assert!(error(&["--broker", "http://127.0.0.1"], "").contains("must be \"memory\""));
        assert!(error(&["--broker", "redis://h"], "[redis]\nprefix = \"a b\"\n").contains("prefix"));
    }
}
