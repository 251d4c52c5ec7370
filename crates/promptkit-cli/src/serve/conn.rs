//! Connections: our own accept loop in front of hyper's HTTP/1 connection, so that every
//! connection has hyper's timer (the header-read timeout, which also ends keep-alive waits),
//! an idle timeout, a write-stall timeout, and a place under the connection cap; TLS when
//! configured.
//!
//! `axum::serve` sets no timer, and without one hyper silently disables its header-read
//! timeout: a client could then trickle header bytes forever.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::ConfigError;

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnLimits {
    /// Connections open at once; one more is answered `503` and closed.
    pub(crate) max_connections: usize,
    /// Time to send a request's headers, from the connection's start or the end of the
    /// previous response (hyper runs this timer on idle keep-alive connections too), and to
    /// complete a TLS handshake.
    pub(crate) header_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub(crate) idle_timeout: Duration,
    /// A write that makes no progress for this long fails the connection, so a client that
    /// stops reading cannot hold its turn's slot.
    pub(crate) write_timeout: Duration,
}

/// The client's address, put in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// What a connection over the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\nretry-after: 1\r\ncontent-length: 131\r\n\r\n\
{\"error\":{\"message\":\"too many connections are open; retry later\",\"type\":\"server_error\",\
\"param\":null,\"code\":\"too_many_connections\"}}";

/// Serves `router` on `listener` until `stop` turns true, then lets open connections finish
/// their requests for up to `grace`.
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most often: wait for some to close instead of
                // spinning on accept.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if tls.is_none() {
                // The socket's send buffer is empty: this write does not block.
                let _ = tcp.try_write(REFUSAL);
            }
            tracing::debug!(%peer, "connection refused: the connection cap is reached");
            continue;
        };
        // SSE is many small writes: send each at once rather than wait for ACKs (Nagle).
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            peer,
            router: router.clone(),
            http: http.clone(),
            limits,
            stop: stop.clone(),
            _slot: slot,
        };
        tokio::spawn(connection.run(tcp, tls.clone()));
    }
    drop(listener);
    let everyone = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(everyone))
        .await
        .is_err()
    {
        eprintln!("promptkit serve: grace period over, cancelling in-flight requests");
    }
}

/// One accepted connection.
struct Connection {
    peer: SocketAddr,
    router: Router,
    http: http1::Builder,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let io = StallGuard::new(tcp, self.limits.write_timeout);
        match tls {
            None => self.serve(io).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => self.serve(stream).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let service = ConnService {
            router: self.router.clone(),
            peer: self.peer,
            activity: Arc::clone(&activity),
        };
        let mut conn = pin!(self.http.serve_connection(TokioIo::new(io), service));
        let idle_timeout = self.limits.idle_timeout;
        let mut idle = pin!(tokio::time::sleep(idle_timeout));
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.wait_for(|stopped| *stopped), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = idle.as_mut(), if !closing => {
                    let now = tokio::time::Instant::now();
                    match activity.idle_for() {
                        Some(idle_for) if idle_for >= idle_timeout => {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        Some(idle_for) => idle.as_mut().reset(now + (idle_timeout - idle_for)),
                        None => idle.as_mut().reset(now + idle_timeout),
                    }
                }
            }
        }
    }
}

/// When a connection last finished a request, and how many it is answering.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last response.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// How long the connection has had no request; `None` while it answers one.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

/// Held by a response body until hyper drops it (the response is written or abandoned).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.store(ms, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router as a hyper service for one connection: tags requests with the peer and
/// tracks the responses in flight.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ConnFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(Peer(self.peer));
        let in_flight = InFlight::start(&self.activity);
        // A `Router` is always ready, so it is called without `poll_ready`.
        let future = tower_service::Service::call(&mut self.router.clone(), request);
        ConnFuture {
            inner: Box::pin(future),
            in_flight: Some(in_flight),
        }
    }
}

type RouterFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// A response on its way, with its [`InFlight`] mark.
struct ConnFuture {
    inner: RouterFuture,
    in_flight: Option<InFlight>,
}

impl Future for ConnFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = ready!(self.inner.as_mut().poll(cx))?;
        let in_flight = self.in_flight.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that marks its connection busy until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: Option<InFlight>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes fail once they have made no progress for `timeout`.
///
/// hyper has no write timeout: a client that keeps its receive window at zero would keep its
/// response, and the turn's concurrency slot with it, for as long as it likes.
struct StallGuard<T> {
    inner: T,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> StallGuard<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            stalled: false,
        }
    }

    /// Called when a write is pending: starts the stall clock, or fails once it has run out.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.stalled {
            self.stalled = true;
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = false;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(result, cx)
    }
}

/// The TLS acceptor for a PEM certificate chain and private key, on the aws-lc-rs provider
/// (the one the HTTP client already links).
///
/// # Errors
/// A [`ConfigError`] naming the file that cannot be read or used.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| ConfigError(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ConfigError(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("--tls-cert and --tls-key do not fit together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_after_the_timeout() {
        // A duplex pipe of 8 bytes that nobody reads: the second write blocks for good.
        let (writer, _reader) = tokio::io::duplex(8);
        let mut guarded = StallGuard::new(writer, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let error = tokio::io::AsyncWriteExt::write_all(&mut guarded, &[0; 64])
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
