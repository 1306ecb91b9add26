//! Helpers for mast's integration tests: find the test tools, and run real servers on 127.0.0.1.
//!
//! mast's end-to-end tests use real parts (DESIGN.md, "Tests use real parts"): nginx as the CDN origin,
//! Debian's `docker-registry` as the OCI mirror, python's `http.server` as a second plain HTTP origin and
//! python-tuf as an independent TUF verifier. This crate finds those tools and runs each server as a child
//! process with all of its files (configuration, logs, storage) in its own temporary directory, listening
//! on a free ephemeral port of 127.0.0.1 only. Dropping a server kills its process by PID and removes the
//! directory.
//!
//! `scripts/test.sh` installs the tools, exports their paths in `MAST_TEST_*` variables and sets
//! `MAST_TEST_REQUIRE_TOOLS=1`. Under it a test whose tool is missing fails; under a bare `cargo test`
//! it prints why and returns early instead:
//!
//! ```no_run
//! use mast_test_support::Nginx;
//!
//! if !Nginx::available() {
//!     return; // the reason was printed; with MAST_TEST_REQUIRE_TOOLS=1 this panicked instead
//! }
//! let root = tempfile::tempdir().unwrap();
//! std::fs::write(root.path().join("timestamp.json"), b"{}").unwrap();
//! let nginx = Nginx::serve(root.path());
//! let response = mast_test_support::http::get(&nginx.url("timestamp.json")).unwrap();
//! assert_eq!(response.status, 200);
//! ```
//!
//! Everything here but the fault proxy is plain `std` (processes, sockets, a minimal HTTP/1.1 client) so
//! that any test, async or not, can use it without a runtime. [`FaultProxy`], which puts link faults
//! (cuts, resets, stalls, throttling, corruption, refusals) between a client and one of these servers, runs
//! on tokio: on its own runtime thread for sync tests, or on the caller's runtime.

pub mod fault_proxy;
pub mod http;
pub mod kube_api;
mod net;
mod nginx;
mod process;
mod python;
mod registry;
mod tools;

pub use fault_proxy::{FaultControl, FaultProxy};
pub use kube_api::KubeApi;
pub use net::{free_port, wait_for_port};
pub use nginx::{LoggedRequest, Nginx, NginxConfig};
pub use python::HttpServer;
pub use registry::Registry;
pub use tools::{
    DOCKER_REGISTRY, NGINX, PYTHON, PYTHON_TUF, REQUIRE_TOOLS_ENV, SKOPEO, Tool, require_tool,
    tool, tools_required, workspace_root,
};
