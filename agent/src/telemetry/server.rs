//! The telemetry HTTP server: `/metrics`, `/healthz`, `/readyz` and `/status`, on a bare hyper 1 server.
//!
//! It is an admin port, not a public service, and it runs beside the agent's real work on a small machine,
//! so every connection is bounded: a connection cap, a deadline to send the request head, a deadline for
//! the whole exchange, one request per connection, and request bodies never read.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::TelemetryError;
use super::metrics::{ExpositionFormat, Metrics};
use super::readiness::Readiness;

/// The default listen address: loopback only, on the port the OpenTelemetry/Prometheus exporter
/// convention uses. Exposing it further is a deliberate configuration choice.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The source of `/status`: the agent's view of what the site runs.
///
/// Called on the server's task for every request, so it must return quickly from memory (a snapshot the
/// sync loop keeps up to date), never block on the database or the network.
pub trait StatusSource: Send + Sync + 'static {
    /// The status document.
    fn status(&self) -> serde_json::Value;
}

impl<F> StatusSource for F
where
    F: Fn() -> serde_json::Value + Send + Sync + 'static,
{
    fn status(&self) -> serde_json::Value {
        self()
    }
}

/// What the endpoints read: shared handles that the agent updates.
#[derive(Clone)]
pub struct Endpoints {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    status: Arc<dyn StatusSource>,
}

/// Bounds on the server's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// How long a client has to send its request head.
    pub header_read_timeout: Duration,
    /// How long one connection may last, response included.
    pub connection_timeout: Duration,
    /// How long shutdown waits for responses in flight.
    pub shutdown_grace: Duration,
}

/// The bound, not yet serving, telemetry server.
#[derive(Debug)]
pub struct TelemetryServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    endpoints: Endpoints,
    limits: ServerLimits,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// Endpoints over the agent's metrics, readiness and status.
    pub fn new(metrics: Arc<Metrics>, readiness: Readiness, status: Arc<dyn StatusSource>) -> Self {
        Self {
            metrics,
            readiness,
            status,
        }
    }

    /// The response to `method path` with the given `Accept` header. Separate from hyper's types so that
    /// routing is tested without a socket.
    fn respond(&self, method: &Method, path: &str, accept: Option<&str>) -> Response<Full<Bytes>> {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/status") {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/metrics" => {
                let format = ExpositionFormat::negotiate(accept);
                match self.metrics.encode(format) {
                    Ok(body) => with_type(StatusCode::OK, format.content_type(), body),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
                }
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => match self.readiness.check() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(not_ready) => text(StatusCode::SERVICE_UNAVAILABLE, not_ready.to_string()),
            },
            _ => {
                let body = self.status.status().to_string();
                with_type(StatusCode::OK, "application/json", body)
            }
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl TelemetryServer {
    /// Binds `addr` (use [`DEFAULT_ADDR`], or port 0 in tests) with the default limits.
    pub async fn bind(addr: SocketAddr, endpoints: Endpoints) -> Result<Self, TelemetryError> {
        let bind_error = |source| TelemetryError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            endpoints,
            limits: ServerLimits::default(),
        })
    }

    /// Replaces the limits.
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound (the port the kernel chose, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting and gives the connections in flight
    /// [`ServerLimits::shutdown_grace`] to finish.
    pub async fn serve<F>(self, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        let Self {
            listener,
            local_addr,
            endpoints,
            limits,
        } = self;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        tracing::info!(%local_addr, "telemetry server listening");
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, mostly: back off rather than spin on the error.
                        tracing::warn!(%error, "telemetry server cannot accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "telemetry server at its connection cap; closing");
                continue;
            };
            let endpoints = endpoints.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                let accept = request
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|value| value.to_str().ok());
                let response = endpoints.respond(request.method(), request.uri().path(), accept);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(limits.connection_timeout, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "telemetry connection failed"),
                    Err(_) => tracing::debug!(%peer, "telemetry connection timed out"),
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::debug!("telemetry connections still open after the shutdown grace");
        }
        tracing::info!(%local_addr, "telemetry server stopped");
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Scrapes and probes must see the state now, never a proxy's copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints::new(
            Arc::new(Metrics::new()),
            Readiness::new(),
            Arc::new(|| serde_json::json!({"site": "a"})),
        )
    }

    #[test]
    fn known_paths_refuse_other_methods_and_unknown_paths_are_404() {
        let endpoints = endpoints();
        let response = endpoints.respond(&Method::POST, "/metrics", None);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let response = endpoints.respond(&Method::DELETE, "/nope", None);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = endpoints.respond(&Method::HEAD, "/healthz", None);
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn metrics_content_type_follows_the_accept_header() {
        let endpoints = endpoints();
        let om = endpoints.respond(
            &Method::GET,
            "/metrics",
            Some("application/openmetrics-text"),
        );
        assert_eq!(
            om.headers()[header::CONTENT_TYPE],
            ExpositionFormat::OpenMetrics.content_type()
        );
        let plain = endpoints.respond(&Method::GET, "/metrics", None);
        assert_eq!(
            plain.headers()[header::CONTENT_TYPE],
            ExpositionFormat::PrometheusText.content_type()
        );
    }
}
