//! Where the Redis queues are: a fixed list (`REDIS_URLS`) and/or a DNS
//! name re-resolved to all its addresses (`REDIS_DNS`, as Swarm's
//! `tasks.<service>` names work). Used by the workers (one drainer per
//! endpoint) and by `results` (the backlog).

use std::net::ToSocketAddrs;

use url::Url;

use crate::config::ExposeSecret;
use crate::config::{with_credentials, ConfigError, RedisAuth, RedisAuthArgs};

/// Where the queues are and the role's Redis login, as flags and
/// environment variables (worker and results).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct QueueArgs {
    #[command(flatten)]
    pub redis_auth: RedisAuthArgs,
    /// The capture nodes' Redis queues, comma-separated (results: for the
    /// backlog).
    #[arg(long, env = "REDIS_URLS", hide_env_values = true)]
    pub redis_urls: Option<String>,
    /// A DNS name resolving to every Redis queue (`host:port`, or
    /// `redis://:password@host:port`), re-resolved every few seconds.
    #[arg(long, env = "REDIS_DNS", hide_env_values = true)]
    pub redis_dns: Option<String>,
}

impl QueueArgs {
    /// Whether neither REDIS_URLS nor REDIS_DNS is given.
    pub fn is_empty(&self) -> bool {
        self.redis_urls.is_none() && self.redis_dns.is_none()
    }

    /// The queues, with the role's login in every URL.
    pub fn resolve(self) -> Result<EndpointSource, ConfigError> {
        EndpointSource::parse(self.redis_urls.as_deref(), self.redis_dns.as_deref())?
            .with_auth(self.redis_auth.resolve()?)
    }
}

/// What to resolve, parsed once from the settings.
#[derive(Clone, Debug, Default)]
pub struct EndpointSource {
    pub urls: Vec<String>,
    pub dns: Option<DnsName>,
}

/// `REDIS_DNS`: a name to resolve to every queue's address, and the URL
/// (scheme, user, password) each resolved address goes into.
#[derive(Clone, Debug)]
pub struct DnsName {
    /// The URL as given, without a path; its host and port are replaced by
    /// each resolved address.
    url: Url,
    pub host: String,
    pub port: u16,
}

impl DnsName {
    /// `host:port` or `redis://[user][:password@]host:port`.
    fn parse(given: &str) -> Result<DnsName, ConfigError> {
        let must_be = || ConfigError(format!("REDIS_DNS must be host:port, got {given:?}"));
        let text = if given.contains("://") {
            given.to_owned()
        } else {
            format!("redis://{given}")
        };
        let mut url = Url::parse(&text).map_err(|e| match e {
            url::ParseError::InvalidPort => {
                ConfigError(format!("REDIS_DNS: bad port in {given:?}"))
            }
            url::ParseError::EmptyHost => ConfigError(format!("REDIS_DNS: no host in {given:?}")),
            _ => must_be(),
        })?;
        // A path (a database number, say) was never part of the contract.
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(must_be());
        }
        let host = match url.host_str() {
            Some("") | None => return Err(ConfigError(format!("REDIS_DNS: no host in {given:?}"))),
            Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        };
        let port = url.port().ok_or_else(must_be)?;
        url.set_path("");
        Ok(DnsName { url, host, port })
    }

    /// The URL of one resolved address.
    fn url_of(&self, addr: std::net::SocketAddr) -> String {
        let mut url = self.url.clone();
        // Infallible: the URL has a host (checked in `parse`).
        let _ = url.set_ip_host(addr.ip());
        let _ = url.set_port(Some(addr.port()));
        url.into()
    }
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
        let dns = dns
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(DnsName::parse)
            .transpose()?;
        if urls.is_empty() && dns.is_none() {
            return Err(ConfigError(
                "REDIS_URLS or REDIS_DNS is required: where the capture nodes' Redis queues are"
                    .into(),
            ));
        }
        Ok(EndpointSource { urls, dns })
    }

    /// Puts the role's Redis user and password into every URL and into the
    /// DNS name's URL (`REDIS_USER`, `REDIS_PASSWORD_FILE`).
    pub fn with_auth(mut self, auth: Option<RedisAuth>) -> Result<Self, ConfigError> {
        let Some(auth) = auth else {
            return Ok(self);
        };
        let (user, pw) = (auth.user.as_deref(), &auth.password);
        for u in &mut self.urls {
            *u = with_credentials("REDIS_URLS", u, user, pw.expose_secret())?;
        }
        if let Some(dns) = &mut self.dns {
            let with = with_credentials("REDIS_DNS", dns.url.as_str(), user, pw.expose_secret())?;
            dns.url = Url::parse(&with)
                .map_err(|e| ConfigError(format!("REDIS_DNS with its password: {e}")))?;
        }
        Ok(self)
    }

    /// The current endpoint URLs, sorted and without duplicates. Blocking
    /// (DNS): call from a blocking thread. A name that does not resolve
    /// right now contributes nothing, which is not an error: Swarm tasks
    /// come and go.
    pub fn resolve(&self) -> Vec<String> {
        let mut all = self.urls.clone();
        if let Some(dns) = &self.dns {
            if let Ok(addrs) = (dns.host.as_str(), dns.port).to_socket_addrs() {
                all.extend(addrs.map(|a| dns.url_of(a)));
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
            password: crate::config::SecretString::from("p@ss:/w".to_owned()),
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
        for (dns, says) in [
            ("h:port", "REDIS_DNS: bad port in \"h:port\""),
            ("redis://:pw@:7000", "REDIS_DNS: no host in"),
            ("h:1/0", "REDIS_DNS must be host:port"),
        ] {
            let e = EndpointSource::parse(None, Some(dns))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(says), "{dns}: {e}");
        }
    }

    #[test]
    fn a_dns_name_s_v6_addresses_go_in_brackets() {
        let src = EndpointSource::parse(None, Some("redis://:pw@[::1]:7002/")).unwrap();
        assert_eq!(src.resolve(), ["redis://:pw@[::1]:7002"]);
    }
}
