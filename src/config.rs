//! What every role's settings share: the configuration error, secrets (and
//! `*_FILE` secrets), credentials put into URLs, the Redis and PostgreSQL
//! logins, and the vote-change policy.
//!
//! Each role keeps its own settings in one module ([`crate::capture::settings`],
//! [`crate::worker::settings`], [`crate::results::settings`]): the binary
//! parses its `*Args` (clap: each flag also reads the environment variable
//! named in `env = ...`, which is the contract the deploy files use), then
//! turns them into plain `*Settings` through `into_settings`, which resolves
//! `*_FILE` secrets and validates. Errors are one line naming the variable
//! at fault. Tests build `*Settings` directly.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// A configuration error: one line, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Every secret in the settings is a [`SecretString`] (secrecy's): a `{:?}`
/// of settings in a log line cannot leak it, it is wiped from memory when
/// dropped, and reading it takes an explicit `expose_secret()`.
pub use secrecy::{ExposeSecret, SecretString};

/// Reads a secret from `VAR` or from the file named by `VAR_FILE` (as
/// Docker secrets are mounted). Exactly one may be given. A trailing newline
/// in the file is not part of the secret.
pub fn secret_from(
    var: &str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!(
            "{var} and {var}_FILE are both set; set only one"
        ))),
        (Some(v), None) => Ok(Some(SecretString::from(v))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(format!("{var}_FILE: cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// Everything but RFC 3986's unreserved characters is percent-encoded, so
/// a password with `@`, `:` or `/` in it cannot change what a URL means.
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, USERINFO).to_string()
}

/// Puts a user and a password (read from a `*_PASSWORD_FILE` secret) into a
/// PostgreSQL or Redis URL, so the URL itself can sit in plain
/// configuration. A Unix-socket Redis URL (`redis+unix://` or `unix://`)
/// takes them as its `user` and `pass` query parameters; every other URL in
/// its authority. `user` is used when the URL names none. A URL that
/// already holds a password is refused: two sources for one secret would
/// leave the reader guessing which one counts.
pub fn with_credentials(
    var: &str,
    url: &str,
    user: Option<&str>,
    password: &str,
) -> Result<String, ConfigError> {
    let Some(sep) = url.find("://") else {
        return Err(ConfigError(format!("{var} is not a URL")));
    };
    let (scheme, rest) = (&url[..sep], &url[sep + 3..]);
    if scheme == "redis+unix" || scheme == "unix" {
        if rest.contains("pass=") {
            return Err(ConfigError(format!(
                "{var} already holds a password; with a password file, leave it out of the URL"
            )));
        }
        let mut out = format!("{url}{}", if rest.contains('?') { '&' } else { '?' });
        if let Some(u) = user {
            out.push_str(&format!("user={}&", percent_encode(u)));
        }
        out.push_str(&format!("pass={}", percent_encode(password)));
        return Ok(out);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (url_user, host) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    if url_user.is_some_and(|u| u.contains(':')) {
        return Err(ConfigError(format!(
            "{var} already holds a password; with a password file, leave it out of the URL"
        )));
    }
    let user = match url_user.filter(|u| !u.is_empty()) {
        Some(u) => u.to_owned(),
        None => user.map(percent_encode).unwrap_or_default(),
    };
    Ok(format!(
        "{scheme}://{user}:{}@{host}{tail}",
        percent_encode(password)
    ))
}

/// The Redis ACL user and password of a role (`docs/SECURITY.md`: each
/// tier has its own user with only the commands it sends).
#[derive(Args, Debug, Clone, Default)]
pub struct RedisAuthArgs {
    /// Redis ACL user of this role (capture, worker or results); with a
    /// password but no user, Redis's `default` user.
    #[arg(long, env = "REDIS_USER")]
    pub redis_user: Option<String>,
    /// That user's Redis password.
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// File holding that password (a Docker secret).
    #[arg(long, env = "REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,
}

/// A role's Redis login, resolved from [`RedisAuthArgs`].
#[derive(Clone, Debug)]
pub struct RedisAuth {
    pub user: Option<String>,
    pub password: SecretString,
}

impl RedisAuthArgs {
    /// Resolves the password once; `None` when none is configured (a URL
    /// may still carry its own).
    pub fn resolve(self) -> Result<Option<RedisAuth>, ConfigError> {
        let pw = secret_from(
            "REDIS_PASSWORD",
            self.redis_password,
            self.redis_password_file,
        )?;
        match (self.redis_user, pw) {
            (user, Some(password)) => Ok(Some(RedisAuth { user, password })),
            (Some(_), None) => Err(ConfigError(
                "REDIS_USER is set but neither REDIS_PASSWORD nor REDIS_PASSWORD_FILE".into(),
            )),
            (None, None) => Ok(None),
        }
    }
}

/// `DATABASE_URL` (or `_FILE`) with the password of `DATABASE_PASSWORD`
/// (or `_FILE`) put in, under the names `prefix` + those.
pub fn database_url_from(
    prefix: &str,
    url: Option<String>,
    url_file: Option<PathBuf>,
    password: Option<String>,
    password_file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    let var = format!("{prefix}DATABASE_URL");
    let Some(url) = secret_from(&var, url, url_file)? else {
        return Ok(None);
    };
    let url_str = url.expose_secret();
    if !url_str.starts_with("postgres://") && !url_str.starts_with("postgresql://") {
        return Err(ConfigError(format!("{var} must be a postgres:// URL")));
    }
    match secret_from(
        &format!("{prefix}DATABASE_PASSWORD"),
        password,
        password_file,
    )? {
        None => Ok(Some(url)),
        Some(pw) => Ok(Some(SecretString::from(with_credentials(
            &var,
            url_str,
            None,
            pw.expose_secret(),
        )?))),
    }
}

/// A role's PostgreSQL login (worker and results): `DATABASE_URL` (or
/// `_FILE`) with the password of `DATABASE_PASSWORD` (or `_FILE`) put in.
#[derive(Args, Debug, Clone, Default)]
pub struct DatabaseArgs {
    /// PostgreSQL URL of this role (postgres://user@host:port/db; the
    /// password may be in it or in DATABASE_PASSWORD_FILE).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// File holding the PostgreSQL URL (a Docker secret).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// This role's PostgreSQL password, put into DATABASE_URL.
    #[arg(long, env = "DATABASE_PASSWORD", hide_env_values = true)]
    pub database_password: Option<String>,
    /// File holding that password (a Docker secret).
    #[arg(long, env = "DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The URL to connect with, password included; it is required.
    pub fn resolve(self) -> Result<SecretString, ConfigError> {
        database_url_from(
            "",
            self.database_url,
            self.database_url_file,
            self.database_password,
            self.database_password_file,
        )?
        .ok_or_else(|| ConfigError("DATABASE_URL (or DATABASE_URL_FILE) is required".into()))
    }
}

/// What happens when a voter votes again for the other option.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum VoteChanges {
    /// The latest vote counts (capture rate-limits changes).
    #[default]
    Allow,
    /// The first vote counts; capture answers a change with 409.
    Deny,
}

/// The host name, for `NODE_ID` / `WORKER_ID` defaults.
pub fn host_name() -> String {
    gethostname::gethostname()
        .into_string()
        .unwrap_or_else(|_| "unknown-host".to_owned())
}

/// Refuses an empty (or all-blank) value of `var`.
pub(crate) fn nonempty(var: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError(format!("{var} must not be empty")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_a_variable_or_a_file_but_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, "s3cret\n").unwrap();
        let from_file = secret_from("K", None, Some(f.clone())).unwrap().unwrap();
        assert_eq!(from_file.expose_secret(), "s3cret");
        let shown = format!("{from_file:?}");
        assert!(
            shown.contains("REDACTED") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(secret_from("K", Some("x".into()), Some(f)).is_err());
        let missing = secret_from("K", None, Some(dir.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("K_FILE: cannot read"), "{missing}");
        assert!(secret_from("K", None, None).unwrap().is_none());
    }

    #[test]
    fn a_password_file_goes_into_the_database_url_and_two_passwords_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "p@ss/w:rd\n").unwrap();
        let url = database_url_from(
            "",
            Some("postgres://voteswarm_worker@db:5432/voteswarm".into()),
            None,
            None,
            Some(f.clone()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            url.expose_secret(),
            "postgres://voteswarm_worker:p%40ss%2Fw%3Ard@db:5432/voteswarm"
        );
        let e = database_url_from(
            "",
            Some("postgres://u:inline@db/voteswarm".into()),
            None,
            None,
            Some(f),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("DATABASE_URL already holds a password"), "{e}");
        let e = database_url_from("MIGRATE_", Some("mysql://x".into()), None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("MIGRATE_DATABASE_URL must be"), "{e}");
    }
}
