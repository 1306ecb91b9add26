//! A server child process: started on a free port, waited for, killed by PID when dropped.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;

/// How long a server may take from spawn to ready. Generous: CI machines are small and busy.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Fresh ports to try when another process takes the chosen port between `free_port` and the bind.
const PORT_ATTEMPTS: usize = 3;

/// A running server; dropping it kills the process (SIGKILL to its PID) and reaps it.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    port: u16,
}

/// What to start, and how to tell that it is ready.
pub(crate) struct Launch<'a> {
    /// The server's name in error messages.
    pub(crate) name: &'a str,
    /// The file where the server writes its errors, shown when it fails to start.
    pub(crate) log: &'a Path,
    /// Where the child's stdout and stderr go (may be the same file as `log`).
    pub(crate) output: &'a Path,
}

impl ServerProcess {
    /// Starts `command(port)` on a free port and waits until `ready(port)`; on a lost race for the port
    /// (the server exits saying the address is in use) it tries again with another port.
    ///
    /// # Panics
    /// When the server cannot be spawned, exits, or is not ready in time: the message carries the tail
    /// of its log.
    pub(crate) fn start(
        launch: &Launch<'_>,
        mut command: impl FnMut(u16) -> Command,
        ready: impl Fn(u16) -> bool,
    ) -> ServerProcess {
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let mut command = command(port);
            let output = File::create(launch.output).unwrap_or_else(|error| {
                panic!(
                    "{}: cannot create {}: {error}",
                    launch.name,
                    launch.output.display()
                )
            });
            let stderr = output.try_clone().unwrap_or_else(|error| {
                panic!("{}: cannot duplicate a file handle: {error}", launch.name)
            });
            command.stdin(Stdio::null()).stdout(output).stderr(stderr);
            let child = command.spawn().unwrap_or_else(|error| {
                panic!("{}: cannot start {command:?}: {error}", launch.name)
            });
            let mut server = ServerProcess { child, port };
            match server.wait_ready(launch, &ready) {
                Ok(()) => return server,
                Err(Exited {
                    address_in_use: true,
                }) if attempt < PORT_ATTEMPTS => continue,
                Err(Exited { .. }) => {
                    let status = server.child.try_wait().ok().flatten();
                    panic!(
                        "{} exited during start ({status:?}); {}",
                        launch.name,
                        log_tail(launch.log)
                    );
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The port the server was started on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(
        &mut self,
        launch: &Launch<'_>,
        ready: impl Fn(u16) -> bool,
    ) -> Result<(), Exited> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                let log = fs::read_to_string(launch.log)
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                return Err(Exited {
                    address_in_use: log.contains("address already in use"),
                });
            }
            if ready(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} (pid {}) not ready on 127.0.0.1:{} after {START_TIMEOUT:?}; {}",
                    launch.name,
                    self.child.id(),
                    self.port,
                    log_tail(launch.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to the PID; the servers here run as a single process (nginx with
        // `master_process off`), so nothing is left behind holding the port.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server exited before it was ready.
struct Exited {
    address_in_use: bool,
}

/// The last lines of a log file, for a failure message.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            format!("last lines of {}:\n{tail}", path.display())
        }
        Err(error) => format!("(no log at {}: {error})", path.display()),
    }
}

/// Creates `dir/name`, panicking with the server's name when that fails.
pub(crate) fn create_dir(server: &str, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::create_dir_all(&path)
        .unwrap_or_else(|error| panic!("{server}: cannot create {}: {error}", path.display()));
    path
}

/// Writes a file, panicking with the server's name when that fails.
pub(crate) fn write_file(server: &str, path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|error| panic!("{server}: cannot write {}: {error}", path.display()));
}

/// A fresh temporary directory for one server's files.
pub(crate) fn temp_dir(server: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mast-test-{server}-"))
        .tempdir()
        .unwrap_or_else(|error| panic!("{server}: cannot create a temporary directory: {error}"))
}
