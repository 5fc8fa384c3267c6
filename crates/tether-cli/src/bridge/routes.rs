//! The targets a bridge may forward to, by name, and how a request names one.

use anyhow::{bail, Context as _};
use std::collections::HashMap;
use std::path::Path;

/// Where bridged bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A TCP connection to `host:port`.
    Tcp(String),
    /// A UDP socket connected to `host:port`.
    Udp(String),
    /// A WebSocket to this URL.
    WebSocket(String),
}

impl Target {
    /// Reads `tcp://HOST:PORT`, `udp://HOST:PORT`, `ws://…` or `wss://…`.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("target {url:?} must be tcp://HOST:PORT, udp://HOST:PORT, ws://… or wss://…");
        };
        let host_port = || -> anyhow::Result<String> {
            let hp = rest.trim_end_matches('/');
            let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok || hp.contains('/') {
                bail!("target {url:?}: expected {scheme}://HOST:PORT");
            }
            Ok(hp.to_owned())
        };
        match scheme {
            "tcp" => Ok(Self::Tcp(host_port()?)),
            "udp" => Ok(Self::Udp(host_port()?)),
            "ws" | "wss" => {
                tether::Url::parse(url).map_err(|e| anyhow::anyhow!("target {url:?}: {e}"))?;
                Ok(Self::WebSocket(url.to_owned()))
            }
            other => bail!("target scheme {other:?} in {url:?}: expected tcp, udp, ws or wss"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "tcp://{a}"),
            Self::Udp(a) => write!(f, "udp://{a}"),
            Self::WebSocket(u) => f.write_str(u),
        }
    }
}

/// The configured targets: a default one and named ones.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) default: Option<Target>,
    pub(crate) named: HashMap<String, Target>,
}

/// Why a request gets no target.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// It named a target that is not configured.
    Unknown(String),
    /// It named none and there is no default.
    Unnamed,
}

impl Routes {
    /// From `--to`, `--route NAME=URL` flags and a routes file's text.
    pub(crate) fn new(
        to: Option<&str>,
        flags: &[String],
        file: Option<(&Path, &str)>,
    ) -> anyhow::Result<Self> {
        let mut routes = Self { default: to.map(Target::parse).transpose()?, named: HashMap::new() };
        for f in flags {
            let (name, url) =
                f.split_once('=').with_context(|| format!("--route {f:?}: expected NAME=URL"))?;
            routes.add(name.trim(), Target::parse(url.trim())?)?;
        }
        if let Some((path, text)) = file {
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let at = || format!("{}:{}", path.display(), i + 1);
                // `NAME=URL`, or websockify's `NAME: HOST:PORT` (TCP).
                let target = match line.split_once('=') {
                    Some((name, url)) => (name.trim(), Target::parse(url.trim()).with_context(at)?),
                    None => {
                        let (name, hp) = line
                            .split_once(':')
                            .with_context(|| format!("{}: expected NAME: HOST:PORT", at()))?;
                        (name.trim(), Target::parse(&format!("tcp://{}", hp.trim())).with_context(at)?)
                    }
                };
                routes.add(target.0, target.1).with_context(at)?;
            }
        }
        if routes.default.is_none() && routes.named.is_empty() {
            bail!("no target: give --to URL, --route NAME=URL or --routes-file FILE");
        }
        Ok(routes)
    }

    fn add(&mut self, name: &str, target: Target) -> anyhow::Result<()> {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            bail!("route name {name:?}: use letters, digits, '-', '_' and '.'");
        }
        if self.named.insert(name.to_owned(), target).is_some() {
            bail!("route {name:?} is given twice");
        }
        Ok(())
    }

    /// The name a request asks for: `?token=NAME` (websockify's token plugins), else the
    /// first path segment.
    pub(crate) fn requested(path: &str, query: Option<&str>) -> Option<String> {
        let from_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        let name = from_query.or_else(|| path.trim_start_matches('/').split('/').next()).unwrap_or("");
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// The target for a request naming `name` (or none).
    pub(crate) fn pick(&self, name: Option<&str>) -> Result<&Target, NoRoute> {
        match name {
            Some(n) => self.named.get(n).ok_or_else(|| NoRoute::Unknown(n.to_owned())),
            None => self.default.as_ref().ok_or(NoRoute::Unnamed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_names() {
        assert_eq!(Target::parse("tcp://127.0.0.1:6379").unwrap(), Target::Tcp("127.0.0.1:6379".into()));
        assert_eq!(Target::parse("udp://[::1]:53").unwrap(), Target::Udp("[::1]:53".into()));
        assert!(Target::parse("tcp://host").is_err());
        assert!(Target::parse("tcp://host:99999").is_err());
        assert!(Target::parse("http://host:80").is_err());
        assert!(Target::parse("127.0.0.1:80").is_err());
        let text = "# vnc targets\nvnc1: 127.0.0.1:5901\nlog=udp://127.0.0.1:514  # syslog\n\n";
        let routes =
            Routes::new(None, &["db=tcp://127.0.0.1:6379".into()], Some((Path::new("r.txt"), text))).unwrap();
        assert_eq!(routes.pick(Some("vnc1")), Ok(&Target::Tcp("127.0.0.1:5901".into())));
        assert_eq!(routes.pick(Some("log")), Ok(&Target::Udp("127.0.0.1:514".into())));
        assert_eq!(routes.pick(Some("db")), Ok(&Target::Tcp("127.0.0.1:6379".into())));
        assert_eq!(routes.pick(Some("x")), Err(NoRoute::Unknown("x".into())));
        assert_eq!(routes.pick(None), Err(NoRoute::Unnamed));
        assert!(Routes::new(None, &[], None).is_err());
        assert!(Routes::new(None, &["a=tcp://h:1".into(), "a=tcp://h:2".into()], None).is_err());
        assert!(Routes::new(None, &["a b=tcp://h:1".into()], None).is_err());
        assert_eq!(Routes::requested("/", Some("token=vnc1&x=1")), Some("vnc1".into()));
        assert_eq!(Routes::requested("/db/extra", None), Some("db".into()));
        assert_eq!(Routes::requested("/", None), None);
    }
}
