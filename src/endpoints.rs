//! Where the Redis queues are: a fixed list (`REDIS_URLS`) and/or a DNS
//! name re-resolved to all its addresses (`REDIS_DNS`, as Swarm's
//! `tasks.<service>` names work). Used by the workers (one drainer per
//! endpoint) and by `results` (the backlog).

use std::net::ToSocketAddrs;

use crate::config::ConfigError;

/// What to resolve, parsed once from the settings.
#[derive(Clone, Debug, Default)]
pub struct EndpointSource {
    pub urls: Vec<String>,
    /// `(scheme_and_auth, host, port)`: `redis://:pw@` + resolved address.
    pub dns: Option<(String, String, u16)>,
}

impl EndpointSource {
    /// `urls`: comma-separated Redis URLs; `dns`: `host:port` or
    /// `redis://[:password@]host:port`. At least one must be given.
    pub fn parse(urls: Option<&str>, dns: Option<&str>) -> Result<Self, ConfigError> {
        let urls: Vec<String> = urls
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        for u in &urls {
            redis::Client::open(u.as_str())
                .map_err(|e| ConfigError(format!("REDIS_URLS: {u:?} is not a Redis URL: {e}")))?;
        }
        let dns = match dns.map(str::trim).filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => {
                let (prefix, hostport) = match d.find("://") {
                    Some(i) => {
                        let rest = &d[i + 3..];
                        match rest.rfind('@') {
                            Some(at) => (d[..i + 3 + at + 1].to_owned(), &rest[at + 1..]),
                            None => (d[..i + 3].to_owned(), rest),
                        }
                    }
                    None => ("redis://".to_owned(), d),
                };
                let hostport = hostport.trim_end_matches('/');
                let (host, port) = hostport.rsplit_once(':').ok_or_else(|| {
                    ConfigError(format!("REDIS_DNS must be host:port, got {d:?}"))
                })?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| ConfigError(format!("REDIS_DNS: bad port in {d:?}")))?;
                if host.is_empty() {
                    return Err(ConfigError(format!("REDIS_DNS: no host in {d:?}")));
                }
                Some((prefix, host.to_owned(), port))
            }
        };
        if urls.is_empty() && dns.is_none() {
            return Err(ConfigError(
                "REDIS_URLS or REDIS_DNS is required: where the capture nodes' Redis queues are"
                    .into(),
            ));
        }
        Ok(EndpointSource { urls, dns })
    }

    /// Puts the role's Redis user and password into every URL and into the
    /// DNS name's prefix (`REDIS_USER`, `REDIS_PASSWORD_FILE`).
    pub fn with_auth(
        mut self,
        auth: Option<crate::config::RedisAuth>,
    ) -> Result<Self, ConfigError> {
        let Some(auth) = auth else {
            return Ok(self);
        };
        let (user, pw) = (auth.user.as_deref(), &auth.password);
        for u in &mut self.urls {
            *u = crate::config::with_credentials("REDIS_URLS", u, user, pw.expose())?;
        }
        if let Some((prefix, _, _)) = &mut self.dns {
            // The prefix ends where the resolved address goes: give the
            // helper a stand-in host and take it off again.
            let full = crate::config::with_credentials(
                "REDIS_DNS",
                &format!("{prefix}h"),
                user,
                pw.expose(),
            )?;
            *prefix = full[..full.len() - 1].to_owned();
        }
        Ok(self)
    }

    /// The current endpoint URLs, sorted and without duplicates. Blocking
    /// (DNS): call from a blocking thread. A name that does not resolve
    /// right now contributes nothing, which is not an error: Swarm tasks
    /// come and go.
    pub fn resolve(&self) -> Vec<String> {
        let mut all = self.urls.clone();
        if let Some((prefix, host, port)) = &self.dns {
            if let Ok(addrs) = (host.as_str(), *port).to_socket_addrs() {
                for a in addrs {
                    let host = match a {
                        std::net::SocketAddr::V4(v4) => v4.ip().to_string(),
                        std::net::SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
                    };
                    all.push(format!("{prefix}{host}:{}", a.port()));
                }
            }
        }
        all.sort();
        all.dedup();
        all
    }
}

/// A URL with any password replaced, for logs and metric labels: the
/// authority's user and password, and a Unix-socket URL's `pass=`.
pub fn redact(url: &str) -> String {
    let url = match url.find("pass=") {
        Some(p) => {
            let end = url[p..].find('&').map_or(url.len(), |e| p + e);
            format!("{}***{}", &url[..p + 5], &url[end..])
        }
        None => url.to_owned(),
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_a_dns_name_resolve_to_one_sorted_list() {
        let src = EndpointSource::parse(Some("redis://b:1, redis://a:2,"), Some("localhost:6390"))
            .unwrap();
        let got = src.resolve();
        assert!(got.contains(&"redis://a:2".to_owned()));
        assert!(
            got.contains(&"redis://127.0.0.1:6390".to_owned()),
            "{got:?}"
        );
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted);
    }

    #[test]
    fn a_dns_url_keeps_its_password_and_logs_hide_it() {
        let src = EndpointSource::parse(None, Some("redis://:s3cret@localhost:7000")).unwrap();
        let got = src.resolve();
        assert!(
            got.iter().any(|u| u == "redis://:s3cret@127.0.0.1:7000"),
            "{got:?}"
        );
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:7000"),
            "redis://***@127.0.0.1:7000"
        );
    }

    #[test]
    fn a_password_file_goes_into_every_url_and_logs_hide_it() {
        let auth = Some(crate::config::RedisAuth {
            user: Some("worker".to_owned()),
            password: crate::config::Secret::new("p@ss:/w".to_owned()),
        });
        let src = EndpointSource::parse(Some("redis://a:1"), Some("localhost:7001"))
            .unwrap()
            .with_auth(auth)
            .unwrap();
        let got = src.resolve();
        for u in &got {
            let info = redis::IntoConnectionInfo::into_connection_info(u.as_str()).unwrap();
            assert_eq!(info.redis_settings().username(), Some("worker"), "{u}");
            assert_eq!(info.redis_settings().password(), Some("p@ss:/w"), "{u}");
            assert!(!redact(u).contains("ss"), "{}", redact(u));
        }
        let unix = crate::config::with_credentials(
            "REDIS_URL",
            "redis+unix:///run/redis/redis.sock",
            Some("capture"),
            "s3cret&x",
        )
        .unwrap();
        let info = redis::IntoConnectionInfo::into_connection_info(unix.as_str()).unwrap();
        assert_eq!(info.redis_settings().username(), Some("capture"));
        assert_eq!(info.redis_settings().password(), Some("s3cret&x"));
        assert!(!redact(&unix).contains("s3cret"), "{}", redact(&unix));
        assert!(
            crate::config::with_credentials("REDIS_URL", "redis://:pw@h:1", None, "x").is_err(),
            "two passwords for one URL are refused"
        );
    }

    #[test]
    fn nothing_or_nonsense_is_a_clear_error() {
        let e = EndpointSource::parse(None, None).unwrap_err().to_string();
        assert!(e.contains("REDIS_URLS or REDIS_DNS"), "{e}");
        assert!(EndpointSource::parse(None, Some("nohostport")).is_err());
        assert!(EndpointSource::parse(Some("http://x"), None).is_err());
    }
}
