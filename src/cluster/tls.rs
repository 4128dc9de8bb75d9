//! The local cluster's certificates: a CA of its own, made at first start in
//! `DIR/tls/`, and a server certificate it issues for `localhost` and
//! `127.0.0.1`, which HAProxy serves on the TLS ports. `ca.pem` is what
//! `curl --cacert`, `loadgen --ca-file` and a browser trust; the CA's key
//! never leaves the data directory. Reused on the next start, so a browser
//! that trusted the CA once keeps trusting the cluster.

use std::path::{Path, PathBuf};

use super::ClusterError;

/// The files HAProxy and clients need.
#[derive(Debug, Clone)]
pub struct Files {
    /// The CA certificate to trust.
    pub ca: PathBuf,
    /// The server certificate, the CA certificate and the server key in one
    /// file, as HAProxy's `crt` reads it (mode 0600).
    pub edge_pem: PathBuf,
}

/// Days a newly issued server certificate is valid: within the 398 days
/// browsers accept for a server certificate.
const SERVER_DAYS: i64 = 365;
/// The CA outlives many server certificates.
const CA_DAYS: i64 = 3650;

/// The names the server certificate is for (an IP literal becomes an IP SAN).
const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `DIR/tls/` as it is, or made now. Refuses to start when a key file is
/// readable by anyone but its owner.
pub fn ensure(data_dir: &Path) -> Result<Files, ClusterError> {
    let dir = data_dir.join("tls");
    let files = Files {
        ca: dir.join("ca.pem"),
        edge_pem: dir.join("edge.pem"),
    };
    let ca_key = dir.join("ca.key");
    if !(files.ca.exists() && files.edge_pem.exists() && ca_key.exists()) {
        std::fs::create_dir_all(&dir).map_err(ClusterError::io("create", &dir))?;
        issue(&files, &ca_key).map_err(|e| ClusterError::new(format!("local CA: {e}")))?;
    }
    for key in [&ca_key, &files.edge_pem] {
        check_private(key)?;
    }
    Ok(files)
}

/// A key file must be its owner's alone: checked at every start, since an
/// operator may have copied or restored the data directory.
pub fn check_private(path: &Path) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| ClusterError::new(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(ClusterError::new(format!(
            "{} holds a private key but its mode is {:04o}: `chmod 600` it",
            path.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// (year, month, day) so many days from today (UTC).
fn ymd(days_from_now: i64) -> (i32, u8, u8) {
    use chrono::Datelike;
    let d = chrono::Utc::now().date_naive() + chrono::Duration::days(days_from_now);
    (d.year(), d.month() as u8, d.day() as u8)
}

fn issue(files: &Files, ca_key_path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    // ECDSA P-256: what the shipped edge prefers, and the cheapest
    // handshake signature.
    let at = |days| {
        let (y, m, d) = ymd(days);
        rcgen::date_time_ymd(y, m, d)
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "voteswarm local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = at(-1);
    ca.not_after = at(CA_DAYS);
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.not_before = at(-1);
    server.not_after = at(SERVER_DAYS);
    let cert = server.signed_by(&key, &issuer)?;

    write_private(ca_key_path, &ca_key_pem)?;
    write_private(
        &files.edge_pem,
        &format!("{}{}{}", cert.pem(), ca_cert.pem(), key.serialize_pem()),
    )?;
    std::fs::write(&files.ca, ca_cert.pem())?;
    Ok(())
}

/// Written with mode 0600 from the start: never readable by others, not
/// even for a moment.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_reused_and_a_readable_key_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        let pem = std::fs::read_to_string(&first.edge_pem).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
        assert!(pem.contains("BEGIN PRIVATE KEY"));
        let again = ensure(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(&again.edge_pem).unwrap(), pem);

        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&first.edge_pem, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ensure(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
