//! Debian's `docker-registry` (the CNCF distribution registry, v2) as an OCI mirror.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http;
use crate::process::{self, Launch, ServerProcess};
use crate::tools::DOCKER_REGISTRY;

/// A `docker-registry` on `127.0.0.1:<free port>` with filesystem storage in a temporary directory and
/// deletes enabled; plain HTTP, no authentication. Dropping it kills the registry.
#[derive(Debug)]
pub struct Registry {
    process: ServerProcess,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers 200.
    ///
    /// # Panics
    /// When `docker-registry` is not found (call [`Registry::available`] first to skip instead) or does
    /// not start: the message carries its log.
    pub fn start() -> Registry {
        let binary = DOCKER_REGISTRY.find().unwrap_or_else(|| {
            panic!(
                "docker-registry not found: set {} or run scripts/test.sh",
                DOCKER_REGISTRY.env
            )
        });
        let dir = process::temp_dir("registry");
        let storage = process::create_dir("registry", dir.path(), "storage");
        let config = dir.path().join("config.yml");
        let log = dir.path().join("registry.log");
        let launch = Launch {
            name: "docker-registry",
            log: &log,
            output: &log,
        };
        let process = ServerProcess::start(
            &launch,
            |port| {
                process::write_file("docker-registry", &config, &render(&storage, port));
                let mut command = Command::new(&binary);
                command.arg("serve").arg(&config);
                // REGISTRY_* variables override the file: none from the caller's environment may leak in.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("REGISTRY_") {
                        command.env_remove(name);
                    }
                }
                command
            },
            |port| {
                http::get(&format!("http://127.0.0.1:{port}/v2/"))
                    .is_ok_and(|response| response.status == 200)
            },
        );
        Registry { process, dir }
    }

    /// Whether `docker-registry` can be found; when not, prints why the test is skipped, or panics under
    /// `MAST_TEST_REQUIRE_TOOLS=1` (see [`crate::require_tool`]).
    pub fn available() -> bool {
        DOCKER_REGISTRY.require().is_some()
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference (`docker://127.0.0.1:<port>/repo:tag`).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The port the registry listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The registry's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The registry's storage root (the filesystem driver's `rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log: one line per request, and any errors.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
}

fn render(storage: &Path, port: u16) -> String {
    format!(
        r#"# Written by mast-test-support for one test; see test-support/src/registry.rs.
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: "{storage}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: mast-test-support-not-a-secret
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
"#,
        storage = storage.display()
    )
}
