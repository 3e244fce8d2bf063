//! The listener: plain HTTP/1.1 or HTTPS (rustls), with bounds on open
//! connections (in all and per client address), on the request head's size,
//! on the time to send it and on how long a connection may sit idle.

use crate::app::HttpConfig;
use axum::Router;
use bursar_server::admission::{Admission, next_connection};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// PEM files for HTTPS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the HTTPS files are unusable; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}: not a PEM certificate chain: {error}", path.display())]
    NotCertificates { path: PathBuf, error: std::io::Error },
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not a PEM private key: {error}", path.display())]
    NotPrivateKey { path: PathBuf, error: std::io::Error },
    #[error("{} holds no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("{0}")]
    Protocols(rustls::Error),
    #[error("the certificate and key do not fit together: {0}")]
    Mismatch(rustls::Error),
}

/// Loads the certificate chain and key; errors name the file.
pub fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|error| TlsError::Read { path: p.clone(), error });
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|error| TlsError::NotCertificates { path: files.cert.clone(), error })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert.clone() });
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|error| TlsError::NotPrivateKey { path: files.key.clone(), error })?
        .ok_or_else(|| TlsError::NoPrivateKey { path: files.key.clone() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocols)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Mismatch)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `stop` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: HttpConfig,
    mut stop: watch::Receiver<bool>,
) {
    let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
    while let Some((stream, peer)) = next_connection(&listener, &mut stop).await {
        let Ok(admitted) = admission.admit(peer.ip()).inspect_err(|refusal| {
            metrics::counter!("bursar_http_connections_refused_total", "reason" => refusal.reason()).increment(1);
        }) else {
            continue; // dropping the stream closes it
        };
        let _ = stream.set_nodelay(true);
        let (router, tls, config) = (router.clone(), tls.clone(), config.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer, router, &config).await,
                Some(acceptor) => match tokio::time::timeout(config.header_read_timeout, acceptor.accept(stream)).await
                {
                    Ok(Ok(s)) => serve_connection(s, peer, router, &config).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop(admitted);
        });
    }
}

async fn serve_connection<S>(stream: S, peer: SocketAddr, router: Router, config: &HttpConfig)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The client's address for the access trail (`ConnectInfo`, as axum's own serve sets it).
    let router = tower::ServiceExt::map_request(router, move |mut req: axum::extract::Request<_>| {
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        req
    });
    let service = TowerToHyperService::new(router);
    let (io, activity) = ActivityIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // hyper starts this clock whenever it waits for a request head, so
        // it also ends a keep-alive connection that sends nothing.
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(100)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = config.idle_timeout;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last() + idle > tokio::time::Instant::now() {
                    continue; // bytes moved while we slept
                }
                // Nothing moved for `idle`: a request in progress (a long
                // poll, say) still gets its response, but a client that
                // never reads it is cut off.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(idle.max(config.request_timeout), conn.as_mut()).await;
                return;
            }
        }
    }
}

/// When a connection last read or wrote a byte.
#[derive(Clone)]
struct Activity {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn last(&self) -> tokio::time::Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

/// A stream that records when bytes last moved.
struct ActivityIo<S> {
    inner: S,
    activity: Activity,
}

impl<S> ActivityIo<S> {
    fn new(inner: S) -> (ActivityIo<S>, Activity) {
        let activity = Activity { start: tokio::time::Instant::now(), last: Arc::new(AtomicU64::new(0)) };
        (ActivityIo { inner, activity: activity.clone() }, activity)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
