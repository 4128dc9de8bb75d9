//! The local cluster's secrets: passwords generated once into files of the
//! data directory (`<data dir>/secrets/<name>`, mode 0600) and read again on
//! the next `cluster up`, as a deployment's Docker secrets would be. The
//! tiers get them as `*_PASSWORD_FILE`, as in every deployment. Also the
//! Redis ACL file made from them, with the very rules the containers use
//! (`docker/redis-entrypoint.sh`).

use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::Digest;

use super::ClusterError;

/// Random bytes per generated password: 256 bits, far past guessing.
const PASSWORD_BYTES: usize = 32;

/// The container entrypoint holds the ACL rules between these lines.
const REDIS_ENTRYPOINT: &str = include_str!("../../docker/redis-entrypoint.sh");

/// The password in `dir/name`, made (random, URL-safe) if the file does
/// not exist yet.
pub fn ensure(dir: &Path, name: &str) -> Result<String, ClusterError> {
    ensure_encoded(dir, name, &base64::engine::general_purpose::URL_SAFE_NO_PAD)
}

/// The edge's `EDGE_ID_KEY` (`dir/edge_id_key`), made once like a
/// password, in the standard base64 that HAProxy's `hmac` converter reads
/// (and capture, from the same file).
pub fn ensure_edge_id_key(dir: &Path) -> Result<(String, PathBuf), ClusterError> {
    let key = ensure_encoded(
        dir,
        EDGE_ID_KEY_FILE,
        &base64::engine::general_purpose::STANDARD,
    )?;
    Ok((key, dir.join(EDGE_ID_KEY_FILE)))
}

const EDGE_ID_KEY_FILE: &str = "edge_id_key";

fn ensure_encoded(dir: &Path, name: &str, encoding: &impl Engine) -> Result<String, ClusterError> {
    let path = dir.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let pw = text.trim_end_matches(['\r', '\n']);
        if !pw.is_empty() {
            return Ok(pw.to_owned());
        }
    }
    std::fs::create_dir_all(dir).map_err(ClusterError::io("create", dir))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let bytes: [u8; PASSWORD_BYTES] = rand::random();
    let pw = encoding.encode(bytes);
    write_private(&path, &pw, false)?;
    Ok(pw)
}

/// Writes `text` to `path`, readable by its owner alone (0600);
/// `create_new`: never replace a file that is there.
pub(crate) fn write_private(path: &Path, text: &str, create_new: bool) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(ClusterError::io("write", path))
}

/// A Redis ACL user of voteswarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisRole {
    Capture,
    Worker,
    Results,
    /// Operators (and the tests' look inside); no tier uses it.
    Admin,
}

impl RedisRole {
    pub const ALL: [RedisRole; 4] = [
        RedisRole::Capture,
        RedisRole::Worker,
        RedisRole::Results,
        RedisRole::Admin,
    ];

    pub fn user(self) -> &'static str {
        match self {
            RedisRole::Capture => "capture",
            RedisRole::Worker => "worker",
            RedisRole::Results => "results",
            RedisRole::Admin => "admin",
        }
    }

    /// The secret's file name, as in the deployments.
    pub fn secret_name(self) -> String {
        format!("redis_{}_password", self.user())
    }
}

/// Every Redis user's password, from (or made in) `dir`.
#[derive(Clone)]
pub struct RedisPasswords {
    pub dir: PathBuf,
    passwords: Vec<(RedisRole, String)>,
}

impl RedisPasswords {
    pub fn ensure(dir: &Path) -> Result<RedisPasswords, ClusterError> {
        let passwords = RedisRole::ALL
            .iter()
            .map(|&r| Ok((r, ensure(dir, &r.secret_name())?)))
            .collect::<Result<_, ClusterError>>()?;
        Ok(RedisPasswords {
            dir: dir.to_path_buf(),
            passwords,
        })
    }

    pub fn password(&self, role: RedisRole) -> &str {
        &self
            .passwords
            .iter()
            .find(|(r, _)| *r == role)
            .expect("every role has a password")
            .1
    }

    /// Where a tier's `REDIS_PASSWORD_FILE` points.
    pub fn file(&self, role: RedisRole) -> PathBuf {
        self.dir.join(role.secret_name())
    }

    /// The ACL file's text: the entrypoint's rules with the SHA-256
    /// verifiers of these passwords and `stream` as the vote stream.
    pub fn acl(&self, stream: &str) -> String {
        let rules = REDIS_ENTRYPOINT
            .split_once("# BEGIN ACL\n")
            .and_then(|(_, rest)| rest.split_once("# END ACL"))
            .map(|(rules, _)| rules)
            .expect("docker/redis-entrypoint.sh holds the ACL between its markers");
        let mut acl = rules.replace("@stream@", stream);
        for (role, pw) in &self.passwords {
            let hex: String = sha2::Sha256::digest(pw.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            acl = acl.replace(&format!("@{}@", role.user()), &hex);
        }
        acl
    }

    /// Writes the ACL file (0600) for `redis-server --aclfile`.
    pub fn write_acl(&self, path: &Path, stream: &str) -> Result<(), ClusterError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(self.acl(stream).as_bytes()))
            .map_err(ClusterError::io("write", path))
    }

    /// `redis://user:password@127.0.0.1:port` for `role`.
    pub fn url(&self, role: RedisRole, port: u16) -> String {
        crate::config::with_credentials(
            "REDIS_URL",
            &format!("redis://127.0.0.1:{port}"),
            Some(role.user()),
            self.password(role),
        )
        .expect("a plain URL takes credentials")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_made_once_and_the_acl_holds_only_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let a = RedisPasswords::ensure(dir.path()).unwrap();
        let b = RedisPasswords::ensure(dir.path()).unwrap();
        for r in RedisRole::ALL {
            assert_eq!(a.password(r), b.password(r), "kept across starts");
            assert!(a.password(r).len() >= 43);
        }
        let acl = a.acl("votes");
        for placeholder in ["@stream@", "@capture@", "@worker@", "@results@", "@admin@"] {
            assert!(!acl.contains(placeholder), "{placeholder} filled:\n{acl}");
        }
        assert!(!acl.contains(a.password(RedisRole::Worker)));
        assert!(acl.contains("user default off"));
        assert_eq!(acl.lines().count(), 5, "{acl}");
    }
}
