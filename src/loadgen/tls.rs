//! loadgen's HTTPS, with every handshake timed.
//!
//! awc's own TLS connector hides the handshake inside the connection it
//! hands back. loadgen instead gives awc a connector that opens the TCP
//! connection and completes the TLS handshake itself (tokio-rustls), timing
//! it and noting whether it was full or resumed, and awc speaks HTTP/1.1
//! over the result (the URL awc sees is `http://`; the Host header is the
//! same). HTTP/1.1 is what loadgen measures: one request at a time per
//! connection, as the edge's capture backends see it.

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_rt::net::{ActixStream, Ready, TcpStream};
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::dev::Service;
use awc::http::Uri;
use futures_util::future::LocalBoxFuture;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::ConfigError;

/// The client side of TLS: the system's roots (as a phone has), plus
/// `ca_file` if given; session resumption on unless `resume` is false.
pub fn client_config(
    ca_file: Option<&Path>,
    resume: bool,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect())
            .map_err(|e| ConfigError(format!("--ca-file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ConfigError(format!(
                "--ca-file {}: no certificate in it",
                path.display()
            )));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ConfigError(format!("--ca-file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(ConfigError(
            "no trusted roots: the system has none and no --ca-file was given".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// Handshakes one load thread made.
#[derive(Debug, Default, Clone)]
pub struct Handshakes {
    pub full: u64,
    pub resumed: u64,
    pub failed: u64,
    /// Microseconds from the ClientHello to a finished handshake.
    pub latencies_us: Vec<u32>,
}

impl Handshakes {
    pub fn merge(&mut self, other: Handshakes) {
        self.full += other.full;
        self.resumed += other.resumed;
        self.failed += other.failed;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// awc's connector: TCP, then a timed TLS handshake.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    pub handshakes: Rc<RefCell<Handshakes>>,
}

impl Connector {
    /// Handshakes are counted in `handshakes`, which connectors of one
    /// load thread share.
    pub fn new(config: Arc<ClientConfig>, handshakes: Rc<RefCell<Handshakes>>) -> Connector {
        Connector { config, handshakes }
    }
}

impl Service<ConnectInfo<Uri>> for Connector {
    type Response = Connection<Uri, Tls>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::always_ready!();

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let (config, handshakes) = (self.config.clone(), self.handshakes.clone());
        Box::pin(async move {
            let host = req.hostname().trim_matches(['[', ']']).to_owned();
            let tcp = TcpStream::connect((host.as_str(), req.port()))
                .await
                .map_err(ConnectError::Io)?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host).map_err(|_| ConnectError::InvalidInput)?;
            let started = Instant::now();
            let tls = match tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
            {
                Ok(t) => t,
                Err(e) => {
                    handshakes.borrow_mut().failed += 1;
                    return Err(ConnectError::Io(e));
                }
            };
            let took = started.elapsed();
            let mut h = handshakes.borrow_mut();
            match tls.get_ref().1.handshake_kind() {
                Some(HandshakeKind::Resumed) => h.resumed += 1,
                _ => h.full += 1,
            }
            h.latencies_us.push(us(took));
            drop(h);
            Ok(Connection::new(req.request().clone(), Tls(tls)))
        })
    }
}

fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// A client TLS stream that awc can drive (readiness from the socket).
#[derive(Debug)]
pub struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for Tls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl ActixStream for Tls {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        <TcpStream as ActixStream>::poll_read_ready(self.0.get_ref().0, cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<Ready>> {
        <TcpStream as ActixStream>::poll_write_ready(self.0.get_ref().0, cx)
    }
}

/// The URL awc is given for `url`: `https://` becomes `http://`, since
/// [`Connector`] has already made the connection TLS.
pub fn wire_url(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_owned(),
    }
}
