//! File names on a consistent-snapshot mirror, exactly as python-tuf's client asks for them.

use crate::tuf::client::quote_role_name;
use crate::tuf::metadata::TargetFile;
use crate::tuf::verify::signed_sha256;

use super::BuildError;

/// The mirror path of a role's metadata at `version`: `metadata/VERSION.ROLE.json` with the role name
/// quoted as the client quotes it when asking ([`quote_role_name`], python-tuf's `quote(name, "")`), or
/// `metadata/timestamp.json` for the timestamp, which is the one file clients fetch without a version.
pub fn metadata_path(role: &str, version: u64) -> String {
    if role == "timestamp" {
        "metadata/timestamp.json".to_owned()
    } else {
        format!("metadata/{version}.{}.json", quote_role_name(role))
    }
}

/// The mirror path of a target: `targets/DIR/SHA256.BASENAME`, python-tuf's consistent-snapshot naming
/// (`prefix_targets_with_hash`). mast always puts sha256 first, so the prefix python-tuf picks (the first
/// hash listed) and the one named here agree for targets mast builds.
pub fn consistent_target_path(name: &str, target: &TargetFile) -> Result<String, BuildError> {
    check_target_name(name)?;
    let digest =
        signed_sha256(&target.hashes).ok_or_else(|| BuildError::MissingSha256(name.to_owned()))?;
    let (dir, basename) = match name.rsplit_once('/') {
        Some((dir, basename)) => (format!("{dir}/"), basename),
        None => (String::new(), name),
    };
    Ok(format!("targets/{dir}{digest}.{basename}"))
}

/// Refuses target names that a directory mirror could not serve as exactly one file under `targets/`.
pub(crate) fn check_target_name(name: &str) -> Result<(), BuildError> {
    let refuse = |reason| {
        Err(BuildError::TargetName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.starts_with('/') {
        return refuse("absolute");
    }
    if name.contains('\\') || name.bytes().any(|b| b.is_ascii_control()) {
        return refuse("backslash or control character");
    }
    for segment in name.split('/') {
        match segment {
            "" => return refuse("empty path segment"),
            "." | ".." => return refuse("`.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::digest::Sha256Digest;

    #[test]
    fn quotes_like_python_urllib() {
        // Pinned here too because the builder writes the names the client asks for: both must match python-tuf.
        // urllib.parse.quote("a b/c%d~e_f.g-h", "") == 'a%20b%2Fc%25d~e_f.g-h'
        assert_eq!(quote_role_name("a b/c%d~e_f.g-h"), "a%20b%2Fc%25d~e_f.g-h");
        // urllib.parse.quote("é", "") == '%C3%A9'
        assert_eq!(quote_role_name("é"), "%C3%A9");
        assert_eq!(metadata_path("prod/eu", 3), "metadata/3.prod%2Feu.json");
        assert_eq!(metadata_path("targets", 2), "metadata/2.targets.json");
        assert_eq!(metadata_path("timestamp", 9), "metadata/timestamp.json");
    }

    #[test]
    fn target_paths_put_the_hash_before_the_basename() {
        let digest = Sha256Digest::of(b"x");
        let tf = TargetFile {
            length: 1,
            hashes: [("sha256".to_owned(), digest.to_hex())].into(),
            custom: None,
            extra: BTreeMap::new(),
        };
        assert_eq!(
            consistent_target_path("channels/prod/3/bundle.tar.gz", &tf).unwrap(),
            format!("targets/channels/prod/3/{digest}.bundle.tar.gz")
        );
        assert_eq!(
            consistent_target_path("top.txt", &tf).unwrap(),
            format!("targets/{digest}.top.txt")
        );
        for bad in ["", "/abs", "a//b", "a/../b", "./a", "a\\b", "a/"] {
            assert!(consistent_target_path(bad, &tf).is_err(), "{bad:?}");
        }
        let no_sha = TargetFile {
            hashes: BTreeMap::new(),
            ..tf
        };
        assert!(matches!(
            consistent_target_path("a", &no_sha),
            Err(BuildError::MissingSha256(_))
        ));
    }
}
