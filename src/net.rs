//! What every listener shares below HTTP: a bound on the connections it holds open, and TLS.
//!
//! Main types: `Limited` (a listener that holds at most N connections), `Counted` (a connection
//! holding its place), `Tls` (`--tls-cert`/`--tls-key`), `Incoming` (a listener's connections,
//! plain or TLS: axum's `Listener`, and a stream of connections for tonic).
//!
//! Key design decision: a listener with all its places taken stops accepting, it does not
//! accept and close: further clients wait in the kernel's backlog (and their own connect
//! timeout) until a connection ends, by its client or by `--request-timeout`. A flood of idle or
//! half-sent connections therefore costs a bounded number of sockets and buffers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections of one listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionGauge {
    pub open: AtomicU64,
    pub limit: AtomicU64,
}

/// A listener that holds at most `max` connections open.
pub struct Limited {
    listener: TcpListener,
    places: Arc<Semaphore>,
    gauge: Arc<ConnectionGauge>,
    nodelay: bool,
}

impl Limited {
    pub fn new(listener: TcpListener, max: usize, gauge: Arc<ConnectionGauge>) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        gauge.limit.store(max as u64, Ordering::Relaxed);
        Self {
            listener,
            places: Arc::new(Semaphore::new(max)),
            gauge,
            nodelay: false,
        }
    }

    /// Sets TCP_NODELAY on accepted connections.
    pub fn with_nodelay(mut self) -> Self {
        self.nodelay = true;
        self
    }

    /// Waits for a free place, then for a connection.
    async fn next(&mut self) -> (Counted, SocketAddr) {
        // The semaphore is never closed, so acquiring cannot fail.
        let place = self
            .places
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    if self.nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    self.gauge.open.fetch_add(1, Ordering::Relaxed);
                    return (
                        Counted {
                            stream,
                            _place: place,
                            gauge: self.gauge.clone(),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: wait a little rather than spin, as
                // axum's own listener does.
                Err(e) => {
                    tracing::debug!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// An accepted connection, holding its listener's place until it is dropped.
pub struct Counted {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    gauge: Arc<ConnectionGauge>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.gauge.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// TLS for every listener (`--tls-cert`, `--tls-key`): the certificate chain and key, loaded
/// once; each listener gets an acceptor with its own ALPN protocols.
#[derive(Clone)]
pub struct Tls {
    certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: Arc<rustls_pki_types::PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({} certificates)", self.certs.len())
    }
}

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Tls {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1), and checks
    /// that rustls accepts them together.
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use rustls_pki_types::pem::PemObject as _;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read the certificate chain {}", cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", cert.display());
        }
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read the private key {}", key.display()))?;
        let tls = Self {
            certs,
            key: Arc::new(key),
        };
        tls.server_config(&[])?;
        Ok(tls)
    }

    fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<tokio_rustls::rustls::ServerConfig> {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| anyhow::anyhow!("the TLS certificate and key do not fit: {e}"))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// A connection as the servers see it: plain, or TLS over a counted connection.
pub enum Conn {
    Plain(Counted),
    Tls(Box<tokio_rustls::server::TlsStream<Counted>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Conn::Plain(c) => c.connect_info(),
            Conn::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// A listener's connections, plain or TLS, within its bound.
///
/// With TLS, handshakes run in their own tasks (with a timeout), so one slow client never holds
/// up the others; finished ones are handed over through a small channel.
pub struct Incoming {
    inner: IncomingInner,
}

enum IncomingInner {
    Plain(Limited),
    Tls {
        ready: tokio::sync::mpsc::Receiver<(Conn, SocketAddr)>,
        local: io::Result<SocketAddr>,
        acceptor: tokio::task::AbortHandle,
    },
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let IncomingInner::Tls { acceptor, .. } = &self.inner {
            acceptor.abort();
        }
    }
}

impl Incoming {
    /// `listener`'s connections, over TLS when `tls` is given, offering `alpn` protocols.
    pub fn new(mut listener: Limited, tls: Option<&Tls>, alpn: &[&[u8]]) -> anyhow::Result<Self> {
        let Some(tls) = tls else {
            return Ok(Self {
                inner: IncomingInner::Plain(listener),
            });
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls.server_config(alpn)?));
        let local = listener.listener.local_addr();
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (conn, addr) = tokio::select! {
                    c = listener.next() => c,
                    () = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((Conn::Tls(Box::new(stream)), addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            inner: IncomingInner::Tls {
                ready,
                local,
                acceptor: task.abort_handle(),
            },
        })
    }

    async fn next(&mut self) -> (Conn, SocketAddr) {
        match &mut self.inner {
            IncomingInner::Plain(l) => {
                let (c, a) = l.next().await;
                (Conn::Plain(c), a)
            }
            IncomingInner::Tls { ready, .. } => match ready.recv().await {
                Some(c) => c,
                // The acceptor ended (it never does while this end is alive): accept nothing.
                None => std::future::pending().await,
            },
        }
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Conn>> + Send {
        futures::stream::unfold(self, |mut this| async move {
            let (conn, _) = this.next().await;
            Some((Ok(conn), this))
        })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            IncomingInner::Plain(l) => l.listener.local_addr(),
            IncomingInner::Tls { local, .. } => match local {
                Ok(a) => Ok(*a),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            },
        }
    }
}
