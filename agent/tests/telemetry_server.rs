//! The telemetry endpoints over a real socket: what a Prometheus scrape, a kubelet probe and an operator's
//! curl see.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use mast_agent::telemetry::{
    ApplyOutcome, DriftKind, Endpoints, FileKind, Metrics, MirrorKind, PollOutcome, Readiness,
    ServerLimits, StatusClass, TelemetryServer, TufRole, VerificationFailure,
};
use mast_protocol::release::{Channel, ReleaseNumber};
use mast_protocol::tuf::ErrorKind;
use mast_test_support::http::{self, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn start(endpoints: Endpoints, limits: ServerLimits) -> Self {
        let server = TelemetryServer::bind("127.0.0.1:0".parse().unwrap(), endpoints)
            .await
            .unwrap()
            .with_limits(limits);
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn get(&self, path: &str, headers: &[(&'static str, &'static str)]) -> Response {
        self.request("GET", path, headers).await
    }

    async fn request(
        &self,
        method: &'static str,
        path: &str,
        headers: &[(&'static str, &'static str)],
    ) -> Response {
        let url = format!("http://{}{path}", self.addr);
        let headers = headers.to_vec();
        tokio::task::spawn_blocking(move || http::request(method, &url, &headers, &[]))
            .await
            .unwrap()
            .unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
    }
}

fn endpoints(metrics: Arc<Metrics>, readiness: Readiness) -> Endpoints {
    Endpoints::new(
        metrics,
        readiness,
        Arc::new(|| serde_json::json!({"release": 7, "channel": "stable"})),
    )
}

fn body(response: &Response) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_every_family_with_the_values_recorded() {
    let metrics = Arc::new(Metrics::new());
    let channel: Channel = "stable".parse().unwrap();
    metrics.record_poll(PollOutcome::Updated);
    metrics.record_poll(PollOutcome::Updated);
    metrics.record_poll(PollOutcome::Unreachable);
    metrics.record_request(
        MirrorKind::Http,
        FileKind::Metadata,
        StatusClass::from_code(304),
    );
    metrics.record_request(
        MirrorKind::Oci,
        FileKind::Chunk,
        StatusClass::from_code(206),
    );
    metrics.record_received_bytes(MirrorKind::Oci, FileKind::Chunk, 4096);
    metrics.record_not_modified(MirrorKind::Http);
    metrics.record_verification_failure(ErrorKind::Rollback);
    metrics.record_verification_failure(VerificationFailure::ChunkHash);
    metrics.record_mirror_skip("https://cdn.example/mast");
    let refreshed = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    metrics.set_last_successful_refresh(refreshed);
    metrics.set_trusted_version(TufRole::Timestamp, 42);
    metrics.set_current_release(&channel, ReleaseNumber::new(6).unwrap());
    metrics.set_desired_release(&channel, ReleaseNumber::new(7).unwrap());
    metrics.record_apply(ApplyOutcome::RolledBack);
    metrics.set_drift_findings(DriftKind::Modified, 3);
    metrics.record_download_resume(MirrorKind::Http);
    metrics.record_chunk_reuse(1 << 20);
    let server = Running::start(
        endpoints(Arc::clone(&metrics), Readiness::new()),
        ServerLimits::default(),
    )
    .await;

    let scrape = server
        .get(
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = body(&scrape);
    let expected = [
        "# TYPE mast_agent_polls counter",
        "mast_agent_polls_total{outcome=\"updated\"} 2",
        "mast_agent_polls_total{outcome=\"unreachable\"} 1",
        "mast_agent_polls_total{outcome=\"failed\"} 0",
        "mast_agent_requests_total{mirror_kind=\"http\",file_kind=\"metadata\",status=\"3xx\"} 1",
        "mast_agent_requests_total{mirror_kind=\"oci\",file_kind=\"chunk\",status=\"2xx\"} 1",
        "# UNIT mast_agent_received_bytes bytes",
        "mast_agent_received_bytes_total{mirror_kind=\"oci\",file_kind=\"chunk\"} 4096",
        "mast_agent_not_modified_total{mirror_kind=\"http\"} 1",
        "mast_agent_verification_failures_total{reason=\"rollback\"} 1",
        "mast_agent_verification_failures_total{reason=\"chunk_hash\"} 1",
        "mast_agent_verification_failures_total{reason=\"expired\"} 0",
        "mast_agent_mirror_skips_total{mirror=\"https://cdn.example/mast\"} 1",
        "# TYPE mast_agent_last_successful_refresh_timestamp_seconds gauge",
        "mast_agent_last_successful_refresh_timestamp_seconds 1790000000",
        "mast_agent_trusted_metadata_version{role=\"timestamp\"} 42",
        "mast_agent_release_current{channel=\"stable\"} 6",
        "mast_agent_release_desired{channel=\"stable\"} 7",
        "mast_agent_applies_total{outcome=\"rolled_back\"} 1",
        "mast_agent_applies_total{outcome=\"healthy\"} 0",
        "mast_agent_drift_findings{kind=\"modified\"} 3",
        "mast_agent_download_resumes_total{mirror_kind=\"http\"} 1",
        "mast_agent_chunk_reuse_saved_bytes_total 1048576",
        &format!(
            "mast_agent_build_info{{version=\"{}\"}} 1",
            mast_agent::AGENT_VERSION
        ),
        "# EOF",
    ];
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }

    // A scraper that does not ask for OpenMetrics gets the classic text format, same values.
    let classic = server.get("/metrics", &[]).await;
    assert_eq!(
        classic.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let classic = body(&classic);
    assert!(classic.contains("mast_agent_polls_total{outcome=\"updated\"} 2\n"));
    assert!(!classic.contains("# EOF"));

    // Updates between scrapes show up in the next one.
    metrics.record_poll(PollOutcome::Updated);
    let again = body(&server.get("/metrics", &[]).await);
    assert!(again.contains("mast_agent_polls_total{outcome=\"updated\"} 3\n"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_agents_state_with_reasons() {
    let readiness = Readiness::new();
    let server = Running::start(
        endpoints(Arc::new(Metrics::new()), readiness.clone()),
        ServerLimits::default(),
    )
    .await;

    let starting = server.get("/readyz", &[]).await;
    assert_eq!(starting.status, 503);
    assert_eq!(
        body(&starting),
        "no trusted root\nstate database is not open\n"
    );

    readiness.set_trusted_root(1);
    readiness.state_db_opened();
    let ready = server.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(body(&ready), "ready\n");

    readiness.pass_failed_hard("cannot commit trusted metadata: database is locked");
    let failed = server.get("/readyz", &[]).await;
    assert_eq!(failed.status, 503);
    assert_eq!(
        body(&failed),
        "last pass failed: cannot commit trusted metadata: database is locked\n"
    );
    assert_eq!(failed.header("Cache-Control"), Some("no-store"));

    readiness.pass_completed();
    assert_eq!(server.get("/readyz", &[]).await.status, 200);
    // Liveness is not readiness: /healthz answers throughout.
    readiness.state_db_closed();
    assert_eq!(server.get("/readyz", &[]).await.status, 503);
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_serves_the_sources_json_and_other_paths_are_refused() {
    let server = Running::start(
        endpoints(Arc::new(Metrics::new()), Readiness::new()),
        ServerLimits::default(),
    )
    .await;

    let status = server.get("/status", &[]).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("Content-Type"), Some("application/json"));
    let document: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(
        document,
        serde_json::json!({"release": 7, "channel": "stable"})
    );

    assert_eq!(server.get("/", &[]).await.status, 404);
    assert_eq!(server.get("/metrics/extra", &[]).await.status, 404);
    let post = server.request("POST", "/status", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    // The query string does not change the route.
    assert_eq!(server.get("/healthz?verbose=1", &[]).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_its_request_is_disconnected() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(200),
        ..ServerLimits::default()
    };
    let server = Running::start(
        endpoints(Arc::new(Metrics::new()), Readiness::new()),
        limits,
    )
    .await;
    let addr = server.addr;
    let outcome = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"GET /metr").unwrap();
        // Generous: the assertion is that the server ends the connection, not how fast.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).map(|_| rest)
    })
    .await
    .unwrap();
    // hyper answers a timed-out head with 408 or just closes; either way the connection ends.
    match outcome {
        Ok(rest) => {
            assert!(
                rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
                "{rest:?}"
            )
        }
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
    // And the server still serves others.
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let server = Running::start(
        endpoints(Arc::new(Metrics::new()), Readiness::new()),
        ServerLimits::default(),
    )
    .await;
    let addr = server.addr;
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
    server.stop().await;
    let refused = tokio::task::spawn_blocking(move || TcpStream::connect(addr))
        .await
        .unwrap();
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

#[test]
fn the_default_address_is_loopback_9464() {
    assert_eq!(
        mast_agent::telemetry::DEFAULT_ADDR,
        "127.0.0.1:9464".parse::<SocketAddr>().unwrap()
    );
}
