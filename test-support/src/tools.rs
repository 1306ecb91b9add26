//! Finding the external tools a test needs, and deciding between skipping and failing without them.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The variable that turns a missing tool from a skip into a failure. `scripts/test.sh` sets it to `1`.
pub const REQUIRE_TOOLS_ENV: &str = "MAST_TEST_REQUIRE_TOOLS";

/// An external program a test may need: the variable that names it, and where to look otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The `MAST_TEST_*` environment variable holding the tool's path; it wins over `candidates`.
    pub env: &'static str,
    /// Absolute paths, tried as they are, and bare names, looked up on `PATH`, in order.
    pub candidates: &'static [&'static str],
}

/// nginx, the CDN origin of the tests (Debian package `nginx`; `/usr/sbin` is not on a user's `PATH`).
pub const NGINX: Tool = Tool {
    env: "MAST_TEST_NGINX",
    candidates: &["/usr/sbin/nginx", "nginx"],
};

/// Debian's `docker-registry` (the CNCF distribution registry), the OCI mirror of the tests.
pub const DOCKER_REGISTRY: Tool = Tool {
    env: "MAST_TEST_REGISTRY",
    candidates: &["/usr/bin/docker-registry", "docker-registry"],
};

/// skopeo, an independent OCI client to check what a registry holds.
pub const SKOPEO: Tool = Tool {
    env: "MAST_TEST_SKOPEO",
    candidates: &["/usr/bin/skopeo", "skopeo"],
};

/// A Python for plain helpers such as `http.server`: the test venv's, else any `python3`.
pub const PYTHON: Tool = Tool {
    env: "MAST_TEST_PYTHON",
    candidates: &[
        concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"),
        "python3",
    ],
};

/// A Python with python-tuf installed: only the test venv's (`scripts/test.sh` creates it), never a system
/// `python3`, which would fail later with an import error instead of a clear "missing tool".
pub const PYTHON_TUF: Tool = Tool {
    env: "MAST_TEST_PYTHON",
    candidates: &[concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python")],
};

impl Tool {
    /// Finds the tool; see [`tool`].
    pub fn find(&self) -> Option<PathBuf> {
        tool(self.env, self.candidates)
    }

    /// Finds the tool, or skips or fails the test without it; see [`require_tool`].
    pub fn require(&self) -> Option<PathBuf> {
        require_tool(self.env, self.candidates)
    }
}

/// Finds a tool: the path in the environment variable `name_env` if it is set, else the first of
/// `default_paths` that is an executable file (absolute paths as they are, bare names on `PATH`).
///
/// Returns `None` when nothing is found.
///
/// # Panics
/// When `name_env` is set to something that is not an executable file: a path given on purpose that is
/// wrong is a broken setup, and falling back to another binary would hide it.
pub fn tool(name_env: &str, default_paths: &[&str]) -> Option<PathBuf> {
    match locate(
        name_env,
        env::var_os(name_env),
        default_paths,
        env::var_os("PATH"),
    ) {
        Ok(found) => found,
        Err(message) => panic!("{message}"),
    }
}

/// Finds a tool like [`tool`]; when it is missing, either skips or fails the calling test.
///
/// Without `MAST_TEST_REQUIRE_TOOLS=1` it prints why the test is skipped and returns `None`, so that a
/// bare `cargo test` on a machine without the tool passes the rest of the suite. With it (as under
/// `scripts/test.sh`) it panics, so that a missing tool can never pass for a green test.
pub fn require_tool(name_env: &str, default_paths: &[&str]) -> Option<PathBuf> {
    if let Some(found) = tool(name_env, default_paths) {
        return Some(found);
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_owned();
    let reason = format!(
        "{name_env} is not set and none of {default_paths:?} is an executable; run scripts/test.sh, \
         which installs the test tools, or point {name_env} at one"
    );
    if tools_required() {
        panic!("{test}: {reason} ({REQUIRE_TOOLS_ENV}=1 forbids skipping)");
    }
    eprintln!("SKIPPED {test}: {reason}");
    None
}

/// Whether a missing tool fails the test (`MAST_TEST_REQUIRE_TOOLS=1`) rather than skipping it.
pub fn tools_required() -> bool {
    env::var_os(REQUIRE_TOOLS_ENV).is_some_and(|value| value == "1")
}

/// The workspace's root directory (where `Cargo.toml`, `scripts/` and `.venv/` are).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // test-support/ sits directly under the workspace root; its parent always exists.
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The lookup itself, with the environment passed in so that it can be tested without touching the
/// process's environment.
fn locate(
    name_env: &str,
    env_value: Option<OsString>,
    default_paths: &[&str],
    path_var: Option<OsString>,
) -> Result<Option<PathBuf>, String> {
    if let Some(value) = env_value.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(&value);
        return if is_executable(&path) {
            Ok(Some(path))
        } else {
            Err(format!(
                "{name_env}={} is not an executable file",
                path.display()
            ))
        };
    }
    for candidate in default_paths {
        let candidate = Path::new(candidate);
        let found = if candidate.is_absolute() {
            Some(candidate.to_path_buf()).filter(|path| is_executable(path))
        } else {
            search_path(candidate.as_os_str(), path_var.as_deref())
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

fn search_path(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn env_variable_wins_over_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let chosen = executable(dir.path(), "chosen");
        let other = executable(dir.path(), "other");
        let found = locate(
            "MAST_TEST_X",
            Some(chosen.clone().into()),
            &[other.to_str().unwrap()],
            None,
        );
        assert_eq!(found, Ok(Some(chosen)));
    }

    #[test]
    fn env_variable_naming_a_missing_or_plain_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "not executable").unwrap();
        for path in [plain, dir.path().join("missing"), dir.path().to_path_buf()] {
            let found = locate(
                "MAST_TEST_X",
                Some(path.into()),
                &["sh"],
                env::var_os("PATH"),
            );
            assert!(found.unwrap_err().starts_with("MAST_TEST_X="));
        }
    }

    #[test]
    fn empty_env_variable_counts_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let fallback = executable(dir.path(), "fallback");
        let found = locate(
            "MAST_TEST_X",
            Some("".into()),
            &[fallback.to_str().unwrap()],
            None,
        );
        assert_eq!(found, Ok(Some(fallback)));
    }

    #[test]
    fn candidates_are_tried_in_order_and_bare_names_searched_on_path() {
        let absolute = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let tool_on_path = executable(on_path.path(), "mast-tool");
        let path_var = env::join_paths([absolute.path(), on_path.path()]).unwrap();
        let missing = absolute.path().join("mast-tool");

        let found = locate(
            "MAST_TEST_X",
            None,
            &[missing.to_str().unwrap(), "mast-tool"],
            Some(path_var),
        );
        assert_eq!(found, Ok(Some(tool_on_path)));
    }

    #[test]
    fn nothing_found_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("mast-tool");
        fs::write(&plain, "not executable").unwrap();
        let found = locate(
            "MAST_TEST_X",
            None,
            &[plain.to_str().unwrap(), "mast-tool"],
            Some(dir.path().into()),
        );
        assert_eq!(found, Ok(None));
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
