//! Python's `http.server` as a second, plain HTTP origin.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, Launch, ServerProcess};
use crate::tools::PYTHON;

/// `python -m http.server` serving a directory on `127.0.0.1:<free port>`; dropping it kills python.
///
/// A deliberately different origin from nginx: no ETags (it sends `Last-Modified` only), no `Range`, no
/// writes. Tests that must not depend on nginx's behaviour, and python-tuf's own client, can use it.
#[derive(Debug)]
pub struct HttpServer {
    process: ServerProcess,
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl HttpServer {
    /// Serves `root` with the Python of [`crate::PYTHON`] (the test venv's, else `python3`).
    ///
    /// # Panics
    /// When no Python is found (call [`HttpServer::available`] first to skip instead) or it does not
    /// start: the message carries its output.
    pub fn python(root: &Path) -> HttpServer {
        let python = PYTHON.find().unwrap_or_else(|| {
            panic!(
                "python not found: set {} or run scripts/test.sh",
                PYTHON.env
            )
        });
        let root = fs::canonicalize(root).unwrap_or_else(|error| {
            panic!("http.server: cannot serve {}: {error}", root.display())
        });
        let dir = process::temp_dir("http-server");
        let log = dir.path().join("http-server.log");
        let launch = Launch {
            name: "python http.server",
            log: &log,
            output: &log,
        };
        let process = ServerProcess::start(
            &launch,
            |port| {
                let mut command = Command::new(&python);
                command
                    .args([
                        "-u",
                        "-m",
                        "http.server",
                        "--bind",
                        "127.0.0.1",
                        "--directory",
                    ])
                    .arg(&root)
                    .arg(port.to_string())
                    .current_dir(&root);
                command
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        HttpServer { process, dir, root }
    }

    /// Whether a Python can be found; when not, prints why the test is skipped, or panics under
    /// `MAST_TEST_REQUIRE_TOOLS=1` (see [`crate::require_tool`]).
    pub fn available() -> bool {
        PYTHON.require().is_some()
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The URL of `path` (relative to the served root, with or without a leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's output: one line per request (`"GET /x HTTP/1.1" 200 -`) and any errors.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("http-server.log")
    }
}
