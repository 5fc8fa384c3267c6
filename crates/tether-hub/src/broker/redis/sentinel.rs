//! `redis+sentinel://` URLs: the master that Redis Sentinel names.

/// Where the broker finds Redis.
pub(super) enum Target {
    /// One server.
    Direct(redis::Client),
    /// The master of `service`, as the first Sentinel that answers says.
    Sentinel { sentinels: Vec<String>, service: String, redis: redis::RedisConnectionInfo },
}

/// Reads a `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]` URL;
/// `None` for any other scheme.
pub(super) fn sentinel_target(url: &str) -> Option<Result<Target, String>> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    let usage = "expected redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]";
    Some((|| {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or(usage)?;
        let mut path = path.split('/');
        let service = path.next().filter(|s| !s.is_empty()).ok_or(usage)?;
        let db = match path.next().filter(|d| !d.is_empty()) {
            Some(d) => Some(d.parse::<i64>().map_err(|_| format!("bad database number {d:?}: {usage}"))?),
            None => None,
        };
        let sentinels: Vec<String> =
            hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("redis://{h}")).collect();
        if sentinels.is_empty() {
            return Err(usage.to_owned());
        }
        for s in &sentinels {
            redis::IntoConnectionInfo::into_connection_info(s.as_str())
                .map_err(|e| format!("bad Sentinel address {s:?}: {e}"))?;
        }
        let mut redis = redis::RedisConnectionInfo::default().set_protocol(redis::ProtocolVersion::RESP3);
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').unwrap_or(("", auth));
            if !user.is_empty() {
                redis = redis.set_username(user);
            }
            redis = redis.set_password(password);
        }
        if let Some(db) = db {
            redis = redis.set_db(db);
        }
        Ok(Target::Sentinel { sentinels, service: service.to_owned(), redis })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        assert!(sentinel_target("redis://127.0.0.1:6379").is_none());
        match sentinel_target("redis+sentinel://u:p@127.0.0.1:26379,127.0.0.2:26380/main/2") {
            Some(Ok(Target::Sentinel { sentinels, service, redis })) => {
                assert_eq!(sentinels, ["redis://127.0.0.1:26379", "redis://127.0.0.2:26380"]);
                assert_eq!(service, "main");
                assert_eq!((redis.username(), redis.password(), redis.db()), (Some("u"), Some("p"), 2));
            }
            _ => panic!("not read"),
        }
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel:///main",
            "redis+sentinel://h:1/main/x",
        ] {
            assert!(matches!(sentinel_target(bad), Some(Err(_))), "{bad}");
        }
    }
}
