//! What every listener shares below HTTP: a bound on the connections it holds open.
//!
//! Main types: `Limited` (a listener that holds at most N connections: axum's `Listener`, and a
//! stream of connections for tonic), `Counted` (a connection holding its place).
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

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<Counted>> + Send {
        futures::stream::unfold(self, |mut this| async move {
            let (conn, _) = this.next().await;
            Some((Ok(conn), this))
        })
    }
}

impl axum::serve::Listener for Limited {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
