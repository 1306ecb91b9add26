//! [`BundlePath`]: a file's path inside a bundle, checked once at the boundary.
//!
//! Every path that reaches the agent came out of an untrusted tar header (a mirror may serve anything until
//! the digest check, and a compromised packager may sign anything). The agent never writes bundle files to
//! a directory named by these paths, but tools downstream might, so the type only admits paths that mean the
//! same thing to every consumer: relative, `/`-separated, no `.`/`..`, no empty segments, no backslashes
//! (a separator on Windows), no control characters (which hide in logs and terminals).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest path accepted, in bytes: Linux's `PATH_MAX`.
pub const MAX_PATH_LEN: usize = 4096;

/// The longest segment accepted, in bytes: Linux's `NAME_MAX`.
pub const MAX_SEGMENT_LEN: usize = 255;

/// How many bytes of a refused path an error keeps, so that a hostile megabyte-long name cannot flood a log.
const ERROR_PATH_PREFIX: usize = 512;

/// A relative, `/`-separated UTF-8 path of a regular file inside a bundle.
///
/// Orders by bytes, which is the order of entries in mast's canonical tar.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(String);

/// A path that is not a valid [`BundlePath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bundle path {path:?}: {fault}")]
pub struct BundlePathError {
    /// The refused path (lossily decoded, and cut short if it is very long).
    pub path: String,
    /// What is wrong with it.
    pub fault: PathFault,
}

/// What makes a path unacceptable as a [`BundlePath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathFault {
    /// The path is empty.
    #[error("it is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("it is {0} bytes long, more than the {MAX_PATH_LEN} allowed")]
    TooLong(usize),
    /// A segment is longer than [`MAX_SEGMENT_LEN`] bytes.
    #[error("a segment is {0} bytes long, more than the {MAX_SEGMENT_LEN} allowed")]
    SegmentTooLong(usize),
    /// The bytes are not UTF-8.
    #[error("it is not UTF-8")]
    NotUtf8,
    /// The path starts with `/`.
    #[error("it is absolute")]
    Absolute,
    /// The path ends with `/`, naming a directory.
    #[error("it ends with '/'")]
    TrailingSlash,
    /// Two `/` in a row.
    #[error("it has an empty segment ('//')")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("it has a '.' or '..' segment")]
    DotSegment,
    /// A `\`, which Windows tools read as a separator.
    #[error("it contains a backslash")]
    Backslash,
    /// NUL or another control character.
    #[error("it contains the control character {0:?}")]
    ControlChar(char),
}

impl BundlePath {
    /// Parses raw bytes, as found in a tar header.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundlePathError> {
        let fail = |fault| Err(BundlePathError::new(bytes, fault));
        // Length first, so that nothing below runs over an unbounded input.
        if bytes.len() > MAX_PATH_LEN {
            return fail(PathFault::TooLong(bytes.len()));
        }
        let Ok(s) = std::str::from_utf8(bytes) else {
            return fail(PathFault::NotUtf8);
        };
        if let Err(fault) = check(s) {
            return fail(fault);
        }
        Ok(Self(s.to_owned()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments, none of them empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether `self` is a directory that holds `other` at some depth (`a` holds `a/b` but not `ab`).
    pub fn is_ancestor_of(&self, other: &BundlePath) -> bool {
        other
            .0
            .strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl BundlePathError {
    fn new(bytes: &[u8], fault: PathFault) -> Self {
        let shown = &bytes[..bytes.len().min(ERROR_PATH_PREFIX)];
        let mut path = String::from_utf8_lossy(shown).into_owned();
        if shown.len() < bytes.len() {
            path.push('…');
        }
        Self { path, fault }
    }
}

impl FromStr for BundlePath {
    type Err = BundlePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes())
    }
}

impl TryFrom<String> for BundlePath {
    type Error = BundlePathError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() > MAX_PATH_LEN {
            return Err(BundlePathError::new(
                s.as_bytes(),
                PathFault::TooLong(s.len()),
            ));
        }
        match check(&s) {
            Ok(()) => Ok(Self(s)),
            Err(fault) => Err(BundlePathError::new(s.as_bytes(), fault)),
        }
    }
}

impl From<BundlePath> for String {
    fn from(path: BundlePath) -> Self {
        path.0
    }
}

impl AsRef<str> for BundlePath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Serialize for BundlePath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BundlePath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Every rule but the total length, which callers check before they have a `str`.
fn check(s: &str) -> Result<(), PathFault> {
    if s.is_empty() {
        return Err(PathFault::Empty);
    }
    if s.starts_with('/') {
        return Err(PathFault::Absolute);
    }
    if s.ends_with('/') {
        return Err(PathFault::TrailingSlash);
    }
    // `char::is_control` covers C0, DEL and C1: all of them can rewrite a terminal line.
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(PathFault::ControlChar(c));
    }
    if s.contains('\\') {
        return Err(PathFault::Backslash);
    }
    for segment in s.split('/') {
        match segment {
            "" => return Err(PathFault::EmptySegment),
            "." | ".." => return Err(PathFault::DotSegment),
            _ if segment.len() > MAX_SEGMENT_LEN => {
                return Err(PathFault::SegmentTooLong(segment.len()));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fault(s: &str) -> PathFault {
        s.parse::<BundlePath>().unwrap_err().fault
    }

    #[test]
    fn accepts_ordinary_manifest_paths() {
        for ok in [
            "a",
            "deploy/app.yaml",
            "crds/v1/x.yaml",
            ".hidden/..x/...",
            "a b/ü.yaml",
            "mast.toml",
        ] {
            let p: BundlePath = ok.parse().unwrap();
            assert_eq!(p.as_str(), ok);
            assert_eq!(p.to_string(), ok);
        }
    }

    #[test]
    fn refuses_each_kind_of_bad_path() {
        assert_eq!(fault(""), PathFault::Empty);
        assert_eq!(fault("/etc/passwd"), PathFault::Absolute);
        assert_eq!(fault("/"), PathFault::Absolute);
        assert_eq!(fault("a/"), PathFault::TrailingSlash);
        assert_eq!(fault("a//b"), PathFault::EmptySegment);
        assert_eq!(fault("../a"), PathFault::DotSegment);
        assert_eq!(fault("a/../b"), PathFault::DotSegment);
        assert_eq!(fault("a/.."), PathFault::DotSegment);
        assert_eq!(fault("./a"), PathFault::DotSegment);
        assert_eq!(fault("a/./b"), PathFault::DotSegment);
        assert_eq!(fault("a\\b"), PathFault::Backslash);
        assert_eq!(fault("..\\a"), PathFault::Backslash);
        assert_eq!(fault("a\0b"), PathFault::ControlChar('\0'));
        assert_eq!(fault("a\nb"), PathFault::ControlChar('\n'));
        assert_eq!(fault("a\u{1b}[2Kb"), PathFault::ControlChar('\u{1b}'));
        assert_eq!(fault("a\u{7f}"), PathFault::ControlChar('\u{7f}'));
        assert_eq!(fault("a\u{9b}"), PathFault::ControlChar('\u{9b}'));
        let err = BundlePath::from_bytes(b"a/\xff.yaml").unwrap_err();
        assert_eq!(err.fault, PathFault::NotUtf8);
    }

    #[test]
    fn length_limits_are_inclusive() {
        let seg = "s".repeat(MAX_SEGMENT_LEN);
        assert!(seg.parse::<BundlePath>().is_ok());
        assert_eq!(fault(&format!("{seg}s")), PathFault::SegmentTooLong(256));

        // 16 segments of 255 bytes and 15 slashes: 4095 bytes, then one more byte crosses the cap.
        let long = vec![seg.as_str(); 16].join("/");
        assert_eq!(long.len(), 4095);
        assert!(long.parse::<BundlePath>().is_ok());
        let exactly_max = format!("{}/a", &long[..long.len() - 1]);
        assert_eq!(exactly_max.len(), MAX_PATH_LEN);
        assert!(exactly_max.parse::<BundlePath>().is_ok());
        let too_long = format!("a/{long}");
        assert_eq!(fault(&too_long), PathFault::TooLong(4097));
    }

    #[test]
    fn errors_keep_only_a_prefix_of_huge_paths() {
        let huge = "a".repeat(1 << 20);
        let err = huge.parse::<BundlePath>().unwrap_err();
        assert_eq!(err.fault, PathFault::TooLong(1 << 20));
        assert!(err.path.len() < 1024, "{}", err.path.len());
        // Control characters are escaped in the message, so a hostile name cannot rewrite the log line.
        let msg = "a\u{1b}[2K".parse::<BundlePath>().unwrap_err().to_string();
        assert!(msg.contains("\\u{1b}"), "{msg}");
    }

    #[test]
    fn ancestor_means_whole_segments() {
        let a: BundlePath = "a".parse().unwrap();
        assert!(a.is_ancestor_of(&"a/b".parse().unwrap()));
        assert!(a.is_ancestor_of(&"a/b/c".parse().unwrap()));
        assert!(!a.is_ancestor_of(&"ab".parse().unwrap()));
        assert!(!a.is_ancestor_of(&a));
    }

    #[test]
    fn serde_is_a_checked_string() {
        let p: BundlePath = "x/y.yaml".parse().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"x/y.yaml\"");
        assert_eq!(
            serde_json::from_str::<BundlePath>("\"x/y.yaml\"").unwrap(),
            p
        );
        assert!(serde_json::from_str::<BundlePath>("\"../y\"").is_err());
        assert!(BundlePath::try_from("../y".to_owned()).is_err());
        assert_eq!(String::from(p), "x/y.yaml");
    }

    #[test]
    fn orders_by_bytes() {
        let mut v: Vec<BundlePath> = ["b", "a/b", "a-b", "a", "B", "é"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        let got: Vec<&str> = v.iter().map(BundlePath::as_str).collect();
        assert_eq!(got, ["B", "a", "a-b", "a/b", "b", "é"]);
    }

    proptest! {
        /// Whatever parses displays back to itself, and a `..` spliced in anywhere is refused.
        #[test]
        fn parse_display_round_trip_and_dotdot(segs in prop::collection::vec("[a-zA-Z0-9._-]{1,12}", 1..6), at in 0usize..6) {
            let s = segs.join("/");
            match s.parse::<BundlePath>() {
                Ok(p) => prop_assert_eq!(p.as_str(), s.as_str()),
                Err(e) => prop_assert_eq!(e.fault, PathFault::DotSegment),
            }
            let mut hostile = segs.clone();
            hostile.insert(at.min(segs.len()), "..".to_owned());
            prop_assert_eq!(fault(&hostile.join("/")), PathFault::DotSegment);
        }
    }
}
