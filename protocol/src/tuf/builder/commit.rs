//! Committing: which roles a commit or a timestamp refresh must sign, and signing them all or none.

use std::collections::BTreeMap;

use time::{Duration, OffsetDateTime};

use crate::crypto::SigningKey;
use crate::digest::Sha256Digest;
use crate::tuf::metadata::{Common, MetaFile, Role, Signed, Snapshot, Targets, Timestamp};
use crate::tuf::verify::verify_threshold;

use super::repository::Repository;
use super::{BuildError, RoleSigners, Trust, to_bytes, unsigned, valid_signers};

/// Documents signed by one commit or refresh, applied to the repository together or not at all.
struct Update {
    /// In [`Repository::targets_role_names`] order, so callers see `targets` before delegated roles.
    targets: Vec<(String, Signed<Targets>)>,
    snapshot: Option<Signed<Snapshot>>,
    timestamp: Signed<Timestamp>,
}

impl Repository {
    /// Signs new versions of what needs it: every edited, new or no-longer-verifying targets role (next
    /// version, fresh expiry), then snapshot when a targets role changed or it would expire before the new
    /// timestamp does, then always the timestamp. Returns the roles signed.
    ///
    /// All keys given are first checked against their role, whether or not this commit needs them, so a
    /// wrong key file is reported on the first run rather than on the day that role next needs signing.
    /// Nothing changes unless every role that needs signing reaches its threshold.
    pub fn commit(
        &mut self,
        signers: &RoleSigners<'_>,
        now: OffsetDateTime,
    ) -> Result<Vec<String>, BuildError> {
        self.check_signers(signers)?;
        let mut targets = Vec::new();
        for role in self.targets_role_names() {
            let trust = self.trust(&role)?;
            let doc = self.doc(&role)?;
            let needed = self.staged.contains_key(&role)
                || self.unpublished.contains(&role)
                || !verifies(doc, trust);
            if !needed {
                continue;
            }
            let mut content = self.content(&role)?.clone();
            content.common.version = self.next_version(&role, doc.version())?;
            content.common.expires = self.expiries.expiry(&role, now)?;
            let signed = sign_checked(&role, content, signers.for_role(&role), trust)?;
            targets.push((role, signed));
        }
        let ts_expiry = self.expiries.expiry(Timestamp::NAME, now)?;
        let snapshot_needed = !targets.is_empty()
            || self.unpublished.contains(Snapshot::NAME)
            || !verifies(&self.snapshot, self.trust(Snapshot::NAME)?)
            || self.snapshot.expires() < ts_expiry;
        let update = self.sign_tail(signers, now, targets, snapshot_needed)?;
        Ok(self.apply(update))
    }

    /// Re-signs the timestamp if it expires within `window` of `now` (and the snapshot if it does, or if it
    /// would expire before the new timestamp). Calling it again at once changes nothing. Returns the roles
    /// signed, empty when nothing was due. Staged edits are left for the next commit.
    pub fn refresh_timestamp(
        &mut self,
        signers: &RoleSigners<'_>,
        now: OffsetDateTime,
        window: Duration,
    ) -> Result<Vec<String>, BuildError> {
        // A window as long as the lifetime would find the fresh timestamp due again on the next call.
        let lifetime = self.expiries.timestamp.min(self.expiries.snapshot);
        if window >= lifetime {
            return Err(BuildError::RefreshWindow { window, lifetime });
        }
        if let Some(role) = self.unpublished.first() {
            return Err(BuildError::Uncommitted(role.clone()));
        }
        self.check_signers(signers)?;
        let horizon = now
            .checked_add(window)
            .ok_or_else(|| BuildError::Overflow {
                role: Timestamp::NAME.to_owned(),
                what: "expiry",
            })?;
        let ts_expiry = self.expiries.expiry(Timestamp::NAME, now)?;
        let mut snapshot_needed = self.snapshot.expires().at() <= horizon
            || !verifies(&self.snapshot, self.trust(Snapshot::NAME)?);
        let ts_needed = snapshot_needed
            || self.timestamp.expires().at() <= horizon
            || !verifies(&self.timestamp, self.trust(Timestamp::NAME)?);
        if !ts_needed {
            return Ok(Vec::new());
        }
        snapshot_needed |= self.snapshot.expires() < ts_expiry;
        let update = self.sign_tail(signers, now, Vec::new(), snapshot_needed)?;
        Ok(self.apply(update))
    }

    fn check_signers(&self, signers: &RoleSigners<'_>) -> Result<(), BuildError> {
        let roles = [Targets::NAME, Snapshot::NAME, Timestamp::NAME]
            .into_iter()
            .chain(signers.delegated.keys().map(String::as_str));
        for role in roles {
            let trust = self.trust(role)?;
            for key in signers.for_role(role) {
                let keyid = key.key_id();
                if !trust.keyids.contains(&keyid) {
                    return Err(BuildError::KeyNotInRole {
                        keyid,
                        role: role.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    fn next_version(&self, role: &str, current: u64) -> Result<u64, BuildError> {
        if self.unpublished.contains(role) {
            return Ok(current);
        }
        current.checked_add(1).ok_or_else(|| BuildError::Overflow {
            role: role.to_owned(),
            what: "version",
        })
    }

    /// Signs the snapshot (when needed) over the new or current targets roles, then the timestamp over it.
    fn sign_tail(
        &self,
        signers: &RoleSigners<'_>,
        now: OffsetDateTime,
        targets: Vec<(String, Signed<Targets>)>,
        snapshot_needed: bool,
    ) -> Result<Update, BuildError> {
        let snapshot = if snapshot_needed {
            let mut meta = BTreeMap::new();
            for role in self.targets_role_names() {
                let doc = match targets.iter().find(|(name, _)| *name == role) {
                    Some((_, doc)) => doc,
                    None => self.doc(&role)?,
                };
                // Snapshot keys are the plain role name (python-tuf's `f"{role}.json"`); only URLs are quoted.
                meta.insert(
                    format!("{role}.json"),
                    meta_file(doc.version(), &to_bytes(&role, doc)?),
                );
            }
            let content = Snapshot {
                common: Common::new(
                    Snapshot::NAME,
                    self.next_version(Snapshot::NAME, self.snapshot.version())?,
                    self.expiries.expiry(Snapshot::NAME, now)?,
                ),
                meta,
                extra: self.snapshot.signed.extra.clone(),
            };
            let trust = self.trust(Snapshot::NAME)?;
            Some(sign_checked(
                Snapshot::NAME,
                content,
                &signers.snapshot,
                trust,
            )?)
        } else {
            None
        };
        let snap = snapshot.as_ref().unwrap_or(&self.snapshot);
        let content = Timestamp {
            common: Common::new(
                Timestamp::NAME,
                self.next_version(Timestamp::NAME, self.timestamp.version())?,
                self.expiries.expiry(Timestamp::NAME, now)?,
            ),
            meta: [(
                "snapshot.json".to_owned(),
                meta_file(snap.version(), &to_bytes(Snapshot::NAME, snap)?),
            )]
            .into(),
            extra: self.timestamp.signed.extra.clone(),
        };
        let trust = self.trust(Timestamp::NAME)?;
        let timestamp = sign_checked(Timestamp::NAME, content, &signers.timestamp, trust)?;
        Ok(Update {
            targets,
            snapshot,
            timestamp,
        })
    }

    fn apply(&mut self, update: Update) -> Vec<String> {
        let mut signed = Vec::new();
        for (role, doc) in update.targets {
            self.staged.remove(&role);
            self.unpublished.remove(&role);
            if role == Targets::NAME {
                self.targets = doc;
            } else {
                self.delegated.insert(role.clone(), doc);
            }
            signed.push(role);
        }
        if let Some(doc) = update.snapshot {
            self.snapshot = doc;
            self.unpublished.remove(Snapshot::NAME);
            signed.push(Snapshot::NAME.to_owned());
        }
        self.timestamp = update.timestamp;
        self.unpublished.remove(Timestamp::NAME);
        signed.push(Timestamp::NAME.to_owned());
        signed
    }
}

/// Signs `content` with `keys` and refuses the result unless it meets the role's threshold.
fn sign_checked<T: Role>(
    role: &str,
    content: T,
    keys: &[&SigningKey],
    trust: Trust<'_>,
) -> Result<Signed<T>, BuildError> {
    let mut doc = unsigned(role, content)?;
    for key in keys {
        doc.sign(key);
    }
    verify_threshold(&doc, role, trust.keys, trust.keyids, trust.threshold)
        .map_err(BuildError::NotEnoughKeys)?;
    Ok(doc)
}

fn verifies<T: Role>(doc: &Signed<T>, trust: Trust<'_>) -> bool {
    valid_signers(doc, trust).len() as u64 >= trust.threshold
}

/// Version, length and sha256 of a metadata file, so a client can cap the download and check it.
pub(super) fn meta_file(version: u64, bytes: &[u8]) -> MetaFile {
    MetaFile {
        version,
        length: Some(bytes.len() as u64),
        hashes: Some([("sha256".to_owned(), Sha256Digest::of(bytes).to_hex())].into()),
        extra: BTreeMap::new(),
    }
}
