//! nginx as a CDN origin: static files with ETags, sane caching headers and a WebDAV location for PUT.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{self, Launch, ServerProcess};
use crate::tools::NGINX;

/// How to run an nginx origin; [`NginxConfig::start`] runs it.
#[derive(Debug, Clone)]
pub struct NginxConfig {
    root: PathBuf,
    dav_location: Option<String>,
    binary: Option<PathBuf>,
    mutable_cache_control: String,
}

/// An nginx serving a directory on `127.0.0.1:<free port>`; dropping it kills nginx.
///
/// Static files are served with `ETag`s, so a conditional `GET` with `If-None-Match` gets a 304, and
/// with `Range` support. `Cache-Control` is what mast's CDN origin sends: `no-cache` (revalidate every
/// time, cheap with the ETag) for everything, except names that can never change, which may be cached
/// forever (`public, max-age=31536000, immutable`): versioned metadata (`7.snapshot.json`) and files
/// named by their SHA-256 (`<64 hex>.<name>`). Under the WebDAV location (`/` unless configured) `PUT`,
/// `DELETE` and `MKCOL` write into the served directory, creating parent directories, so a publisher
/// can upload.
///
/// nginx runs in the foreground without a master process (`master_process off`): one process, which
/// keeps the identity it was started with (root or not), so it can read and write the test's temporary
/// directories, never drops privileges to a user who cannot, and dies entirely with one kill.
#[derive(Debug)]
pub struct Nginx {
    process: ServerProcess,
    dir: tempfile::TempDir,
    root: PathBuf,
}

/// One line of the access log: what was asked and what nginx answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request target as sent, e.g. `/metadata/timestamp.json`.
    pub uri: String,
    /// The status code sent.
    pub status: u16,
    /// Body bytes sent.
    pub body_bytes: u64,
    /// The request's `If-None-Match` header, if any.
    pub if_none_match: Option<String>,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
}

impl NginxConfig {
    /// Serves `root` with WebDAV writes allowed under `/`.
    pub fn new(root: &Path) -> NginxConfig {
        NginxConfig {
            root: root.to_path_buf(),
            dav_location: Some("/".to_owned()),
            binary: None,
            mutable_cache_control: "no-cache".to_owned(),
        }
    }

    /// Allows `PUT`, `DELETE` and `MKCOL` only under `location` (a URL prefix such as `/upload/`; it
    /// must start and end with `/`). The written files land under the same path of the served root.
    pub fn dav_location(mut self, location: &str) -> NginxConfig {
        self.dav_location = Some(location.to_owned());
        self
    }

    /// Refuses every write (`PUT` gets 405), like a plain CDN.
    pub fn read_only(mut self) -> NginxConfig {
        self.dav_location = None;
        self
    }

    /// Sends `Cache-Control: VALUE` with the files whose names can change (`timestamp.json`, and
    /// anything not named by a version or digest) instead of `no-cache`, e.g. `"max-age=3600"` for an
    /// origin that asks clients to poll it at most hourly. `VALUE` may not hold `"` or `;`.
    pub fn mutable_cache_control(mut self, value: &str) -> NginxConfig {
        assert!(
            !value.contains(['"', ';']),
            "nginx: Cache-Control {value:?}"
        );
        value.clone_into(&mut self.mutable_cache_control);
        self
    }

    /// Runs this nginx binary instead of the one [`crate::NGINX`] finds.
    pub fn binary(mut self, path: &Path) -> NginxConfig {
        self.binary = Some(path.to_path_buf());
        self
    }

    /// Starts nginx and waits until it accepts connections.
    ///
    /// # Panics
    /// When nginx is not found (call [`Nginx::available`] first to skip instead), the configuration is
    /// invalid, or nginx does not start: the message carries nginx's error log.
    pub fn start(self) -> Nginx {
        if let Some(location) = &self.dav_location {
            assert!(
                location.starts_with('/')
                    && location.ends_with('/')
                    && !location.contains(['"', ';']),
                "nginx: the WebDAV location must look like /path/, not {location:?}"
            );
        }
        let binary = self
            .binary
            .clone()
            .or_else(|| NGINX.find())
            .unwrap_or_else(|| panic!("nginx not found: set {} or run scripts/test.sh", NGINX.env));
        let root = fs::canonicalize(&self.root)
            .unwrap_or_else(|error| panic!("nginx: cannot serve {}: {error}", self.root.display()));
        let dir = process::temp_dir("nginx");
        for temp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            process::create_dir("nginx", dir.path(), temp);
        }
        let conf = dir.path().join("nginx.conf");
        let error_log = dir.path().join("error.log");
        let pid_file = dir.path().join("nginx.pid");
        let launch = Launch {
            name: "nginx",
            log: &error_log,
            output: &dir.path().join("stderr.log"),
        };
        let process = ServerProcess::start(
            &launch,
            |port| {
                // A pid file left by an attempt that lost its port must not count as ready.
                let _ = fs::remove_file(&pid_file);
                process::write_file("nginx", &conf, &self.render(dir.path(), &root, port));
                let mut command = Command::new(&binary);
                // -e: errors before the configuration is read go to the temp dir too, not /var/log.
                command
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&conf)
                    .arg("-e")
                    .arg(&error_log);
                command
            },
            // nginx writes its pid file after it has bound its sockets.
            |port| pid_file.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Nginx { process, dir, root }
    }

    fn render(&self, dir: &Path, root: &Path, port: u16) -> String {
        let dir = dir.display();
        let root = root.display();
        let mutable = &self.mutable_cache_control;
        let dav = "dav_methods PUT DELETE MKCOL;\n            create_full_put_path on;\n            \
                   dav_access user:rw group:r all:r;\n            client_max_body_size 0;";
        let locations = match self.dav_location.as_deref() {
            Some("/") => format!("location / {{\n            {dav}\n        }}"),
            Some(location) => format!(
                "location / {{\n        }}\n        location ^~ {location} {{\n            {dav}\n        }}"
            ),
            None => "location / {\n        }".to_owned(),
        };
        format!(
            r#"# Written by mast-test-support for one test; see test-support/src/nginx.rs.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;

events {{
    worker_connections 512;
}}

http {{
    types {{
        application/json json;
        text/plain txt;
        text/html html;
        application/gzip gz;
        application/zstd zst;
    }}
    default_type application/octet-stream;

    log_format mast "$request_method\t$request_uri\t$status\t$body_bytes_sent\t$http_if_none_match\t$http_range";
    access_log {dir}/access.log mast;

    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    sendfile on;
    etag on;
    server_tokens off;
    keepalive_timeout 30s;

    # Names that can never change may be cached forever; everything else is revalidated every time.
    map $uri $mast_cache_control {{
        "~(^|/)[0-9]+\.[^/]+\.json$" "public, max-age=31536000, immutable";
        "~(^|/)[0-9a-f]{{64}}\.[^/]+$" "public, max-age=31536000, immutable";
        default "{mutable}";
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        autoindex off;
        add_header Cache-Control $mast_cache_control;

        {locations}
    }}
}}
"#
        )
    }
}

impl Nginx {
    /// Serves `root` with the defaults of [`NginxConfig::new`].
    ///
    /// # Panics
    /// As [`NginxConfig::start`].
    pub fn serve(root: &Path) -> Nginx {
        NginxConfig::new(root).start()
    }

    /// Whether nginx can be found; when not, prints why the test is skipped, or panics under
    /// `MAST_TEST_REQUIRE_TOOLS=1` (see [`crate::require_tool`]).
    pub fn available() -> bool {
        NGINX.require().is_some()
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The URL of `path` (relative to the served root, with or without a leading slash).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// The port nginx listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// nginx's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The access log: one tab-separated line per request, written when nginx finishes the request
    /// (so just after the client has its response); [`Nginx::requests`] parses it.
    pub fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    /// The nginx.conf written for this server.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// nginx's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    /// The requests logged so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        fs::read_to_string(self.access_log())
            .unwrap_or_default()
            .lines()
            .filter_map(LoggedRequest::parse)
            .collect()
    }

    /// The logged requests once there are at least `count` of them, waiting up to five seconds for nginx
    /// to write the last lines.
    ///
    /// # Panics
    /// When fewer than `count` requests are logged after five seconds.
    pub fn wait_for_requests(&self, count: usize) -> Vec<LoggedRequest> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "nginx logged {} requests, expected at least {count}: {requests:#?}",
                requests.len()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl LoggedRequest {
    fn parse(line: &str) -> Option<LoggedRequest> {
        let fields: Vec<&str> = line.split('\t').collect();
        let [method, uri, status, bytes, if_none_match, range] = fields[..] else {
            return None;
        };
        let header = |value: &str| (value != "-").then(|| unescape(value));
        Some(LoggedRequest {
            method: unescape(method),
            uri: unescape(uri),
            status: status.parse().ok()?,
            body_bytes: bytes.parse().ok()?,
            if_none_match: header(if_none_match),
            range: header(range),
        })
    }
}

/// Undoes nginx's access-log escaping, which writes `"`, `\\` and bytes outside printable ASCII as `\xHH`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes.get(i..i + 4).and_then(|window| {
            let hex = window.strip_prefix(b"\\x")?;
            u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        });
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let line = "GET\t/metadata/timestamp.json\t304\t0\t\\x226566-1a\\x22\t-";
        assert_eq!(
            LoggedRequest::parse(line),
            Some(LoggedRequest {
                method: "GET".to_owned(),
                uri: "/metadata/timestamp.json".to_owned(),
                status: 304,
                body_bytes: 0,
                if_none_match: Some("\"6566-1a\"".to_owned()),
                range: None,
            })
        );
        assert_eq!(LoggedRequest::parse("GET /x 200"), None);
        assert_eq!(unescape(r"a\x5Cb\x2"), r"a\b\x2");
    }

    #[test]
    fn dav_location_is_its_own_block_unless_it_is_the_root() {
        let dir = Path::new("/tmp/d");
        let root = Path::new("/srv");
        let whole = NginxConfig::new(root).render(dir, root, 1);
        assert_eq!(whole.matches("location").count(), 1);
        assert!(whole.contains("dav_methods PUT DELETE MKCOL"));

        let upload = NginxConfig::new(root)
            .dav_location("/upload/")
            .render(dir, root, 1);
        assert!(upload.contains("location ^~ /upload/ {"));

        let read_only = NginxConfig::new(root).read_only().render(dir, root, 1);
        assert!(!read_only.contains("dav_methods"));
    }
}
