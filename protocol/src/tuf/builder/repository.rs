//! An in-memory TUF repository: edits are staged, a commit signs exactly the roles that need it.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::tuf::metadata::{
    Common, DelegatedRole, Delegations, MetaFile, Role, Root, Signed, Snapshot, TargetFile,
    Targets, Timestamp,
};
use crate::tuf::verify::signed_sha256;

use super::naming::{check_target_name, metadata_path};
use super::root::{RoleSpec, check_root_signed_by};
use super::{BuildError, Expiries, Trust, check_role_keys, to_bytes, unsigned};
use crate::tuf::client::quote_role_name;

/// A delegated targets role to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationSpec {
    /// The role's name; any text but a top-level role's name (it is percent-encoded in its file name).
    pub name: String,
    /// Its keys and threshold.
    pub keys: RoleSpec,
    /// Shell-style patterns of the target paths it may sign for (`*` does not cross `/`).
    pub paths: Vec<String>,
    /// Whether a client that finds no target in this role stops searching.
    pub terminating: bool,
}

/// A TUF repository held in memory: the root chain, targets, delegated targets roles, snapshot and
/// timestamp, and any edits not yet committed.
///
/// Every signed document it holds verifies under the trust it was signed for; edits are staged beside them
/// until [`commit`](Self::commit) signs new versions, which it does for all roles at once or for none.
#[derive(Debug, Clone)]
pub struct Repository {
    /// Roots 1..=N; the last is the one in force.
    pub(super) roots: Vec<Signed<Root>>,
    pub(super) targets: Signed<Targets>,
    pub(super) delegated: BTreeMap<String, Signed<Targets>>,
    pub(super) snapshot: Signed<Snapshot>,
    pub(super) timestamp: Signed<Timestamp>,
    /// Targets-role content edited since the last commit, by role name.
    pub(super) staged: BTreeMap<String, Targets>,
    /// Roles built but never signed: their first commit signs the version they have instead of bumping it.
    pub(super) unpublished: BTreeSet<String>,
    pub(super) expiries: Expiries,
}

impl Repository {
    /// A new repository under `root` (version 1, fully signed), with empty targets and version 1 of
    /// targets, snapshot and timestamp, unsigned until the first [`commit`](Self::commit).
    pub fn create(
        root: Signed<Root>,
        now: OffsetDateTime,
        expiries: Expiries,
    ) -> Result<Self, BuildError> {
        if root.version() != 1 {
            return Err(BuildError::RootChain {
                version: root.version(),
                reason: "a new repository starts at root version 1; load an existing one instead"
                    .to_owned(),
            });
        }
        check_consistent(&root)?;
        check_root_signed_by(&root, &root)?;
        let targets = Targets {
            common: Common::new(Targets::NAME, 1, expiries.expiry(Targets::NAME, now)?),
            targets: BTreeMap::new(),
            delegations: None,
            extra: BTreeMap::new(),
        };
        // The meta entries are placeholders: the first commit recomputes them from the signed bytes.
        let snapshot = Snapshot {
            common: Common::new(Snapshot::NAME, 1, expiries.expiry(Snapshot::NAME, now)?),
            meta: [("targets.json".to_owned(), placeholder_meta())].into(),
            extra: BTreeMap::new(),
        };
        let timestamp = Timestamp {
            common: Common::new(Timestamp::NAME, 1, expiries.expiry(Timestamp::NAME, now)?),
            meta: [("snapshot.json".to_owned(), placeholder_meta())].into(),
            extra: BTreeMap::new(),
        };
        Ok(Self {
            roots: vec![root],
            targets: unsigned(Targets::NAME, targets)?,
            delegated: BTreeMap::new(),
            snapshot: unsigned(Snapshot::NAME, snapshot)?,
            timestamp: unsigned(Timestamp::NAME, timestamp)?,
            staged: BTreeMap::new(),
            unpublished: ["targets", "snapshot", "timestamp"]
                .map(str::to_owned)
                .into(),
            expiries,
        })
    }

    /// The root in force.
    pub fn root(&self) -> &Signed<Root> {
        // `roots` is never empty: `create` and `load` both put at least one root in it.
        &self.roots[self.roots.len() - 1]
    }

    /// The whole root chain, version 1 first.
    pub fn roots(&self) -> &[Signed<Root>] {
        &self.roots
    }

    /// The committed top-level targets metadata.
    pub fn targets(&self) -> &Signed<Targets> {
        &self.targets
    }

    /// A committed delegated targets role.
    pub fn delegated_role(&self, name: &str) -> Option<&Signed<Targets>> {
        self.delegated.get(name)
    }

    /// The committed snapshot.
    pub fn snapshot(&self) -> &Signed<Snapshot> {
        &self.snapshot
    }

    /// The committed timestamp.
    pub fn timestamp(&self) -> &Signed<Timestamp> {
        &self.timestamp
    }

    /// The lifetimes new signatures get.
    pub fn expiries(&self) -> &Expiries {
        &self.expiries
    }

    /// Changes the lifetimes used from the next commit or refresh on ([`load`](Self::load) starts with the
    /// defaults).
    pub fn set_expiries(&mut self, expiries: Expiries) {
        self.expiries = expiries;
    }

    /// Whether any edit or new role awaits a commit.
    pub fn has_uncommitted_changes(&self) -> bool {
        !self.staged.is_empty() || !self.unpublished.is_empty()
    }

    /// Appends root N+1 to the chain. It must be signed by a threshold of root N's root keys and of its own;
    /// the roles whose keys changed are re-signed by the next [`commit`](Self::commit).
    pub fn push_root(&mut self, new: Signed<Root>) -> Result<(), BuildError> {
        let current = self.root();
        if Some(new.version()) != current.version().checked_add(1) {
            return Err(BuildError::RootChain {
                version: new.version(),
                reason: format!("must follow the current root version {}", current.version()),
            });
        }
        check_consistent(&new)?;
        check_root_signed_by(&new, current)?;
        check_root_signed_by(&new, &new)?;
        self.roots.push(new);
        Ok(())
    }

    /// Adds or replaces a target in the top-level targets role; returns what it replaced.
    pub fn add_target(
        &mut self,
        name: &str,
        target: TargetFile,
    ) -> Result<Option<TargetFile>, BuildError> {
        self.add_target_to(Targets::NAME, name, target)
    }

    /// Removes a target from the top-level targets role; returns it if it was there.
    pub fn remove_target(&mut self, name: &str) -> Option<TargetFile> {
        // The top-level role always exists, so the only error of `remove_target_from` cannot happen.
        self.remove_target_from(Targets::NAME, name).ok().flatten()
    }

    /// Adds or replaces a target in `role` (`targets` or a delegated role trusted for the path).
    ///
    /// Adding a target identical to the one present changes nothing, so re-running a publish does not
    /// bump versions.
    pub fn add_target_to(
        &mut self,
        role: &str,
        name: &str,
        target: TargetFile,
    ) -> Result<Option<TargetFile>, BuildError> {
        check_target_name(name)?;
        if signed_sha256(&target.hashes).is_none() {
            return Err(BuildError::MissingSha256(name.to_owned()));
        }
        if role != Targets::NAME {
            let (_, delegation) = self.delegation_of(role)?;
            if !delegation.is_delegated_path(name) {
                return Err(BuildError::TargetNotDelegated {
                    role: role.to_owned(),
                    target: name.to_owned(),
                });
            }
        }
        if self.content(role)?.targets.get(name) == Some(&target) {
            return Ok(Some(target));
        }
        let previous = self
            .content_mut(role)?
            .targets
            .insert(name.to_owned(), target);
        self.unstage_if_unchanged(role);
        Ok(previous)
    }

    /// Removes a target from `role`; returns it if it was there.
    pub fn remove_target_from(
        &mut self,
        role: &str,
        name: &str,
    ) -> Result<Option<TargetFile>, BuildError> {
        if !self.content(role)?.targets.contains_key(name) {
            return Ok(None);
        }
        let removed = self.content_mut(role)?.targets.remove(name);
        self.unstage_if_unchanged(role);
        Ok(removed)
    }

    /// Delegates to a new targets role from `parent` (`targets` or an existing delegated role). The new
    /// role starts empty at version 1 and is first signed by the next commit.
    ///
    /// The name must be ASCII letters, digits and `_.-~`: those are the names whose metadata file is
    /// called the same on disk and in the URL a client asks for. Repositories made by other tools may use
    /// any name; [`load`](Self::load) and [`files`](Self::files) handle those, percent-encoded.
    pub fn delegate(&mut self, parent: &str, spec: DelegationSpec) -> Result<(), BuildError> {
        let name = spec.name.as_str();
        let refuse = |reason| BuildError::RoleName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || crate::tuf::TOP_LEVEL_ROLES.contains(&name) {
            return Err(refuse("empty or a top-level role's"));
        }
        // Clients ask for `N.<quoted name>.json`, and static servers (nginx, python's http.server) decode
        // the request path before opening the file; a name that quoting changes would need its file stored
        // under the decoded name (`/` even making a directory). Names quoting leaves alone avoid that.
        if quote_role_name(name) != name {
            return Err(refuse(
                "only ASCII letters, digits and `_.-~` keep file and URL names equal",
            ));
        }
        if self.delegated.contains_key(name) {
            return Err(BuildError::RoleExists(name.to_owned()));
        }
        let checked = check_role_keys(name, &spec.keys.keys, spec.keys.threshold)?;
        let expires = self.content(parent)?.common.expires;
        let parent_content = self.content_mut(parent)?;
        let delegations = parent_content
            .delegations
            .get_or_insert_with(|| Delegations {
                keys: BTreeMap::new(),
                roles: Vec::new(),
                extra: BTreeMap::new(),
            });
        delegations.roles.push(DelegatedRole {
            name: name.to_owned(),
            keyids: checked.iter().map(|(id, _)| id.clone()).collect(),
            threshold: spec.keys.threshold,
            terminating: spec.terminating,
            paths: Some(spec.paths),
            path_hash_prefixes: None,
            extra: BTreeMap::new(),
        });
        delegations.keys.extend(checked);
        // The expiry is a placeholder: the first commit sets it from `now`.
        let doc = Targets {
            common: Common::new(Targets::NAME, 1, expires),
            targets: BTreeMap::new(),
            delegations: None,
            extra: BTreeMap::new(),
        };
        self.delegated.insert(name.to_owned(), unsigned(name, doc)?);
        self.unpublished.insert(name.to_owned());
        Ok(())
    }

    /// Every metadata file a mirror must serve, as `(path, bytes)`: the whole root chain, the current
    /// targets, delegated roles and snapshot under their versioned names, and `metadata/timestamp.json`.
    ///
    /// Paths are URL paths, as a client asks for them: a delegated role name from another tool that needs
    /// quoting appears percent-encoded, and a static server expects that file under the decoded name.
    /// Write these without deleting older versioned files: a client that read the previous timestamp a
    /// moment ago still asks for the snapshot and targets versions it named. Target files are served at
    /// [`super::consistent_target_path`].
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
        if let Some(role) = self.unpublished.first().or(self.staged.keys().next()) {
            return Err(BuildError::Uncommitted(role.clone()));
        }
        let mut out = Vec::with_capacity(self.roots.len() + self.delegated.len() + 3);
        for root in &self.roots {
            out.push((
                metadata_path(Root::NAME, root.version()),
                to_bytes(Root::NAME, root)?,
            ));
        }
        let targets = std::iter::once((Targets::NAME, &self.targets)).chain(
            self.delegated
                .iter()
                .map(|(name, doc)| (name.as_str(), doc)),
        );
        for (role, doc) in targets {
            out.push((metadata_path(role, doc.version()), to_bytes(role, doc)?));
        }
        out.push((
            metadata_path(Snapshot::NAME, self.snapshot.version()),
            to_bytes(Snapshot::NAME, &self.snapshot)?,
        ));
        out.push((
            metadata_path(Timestamp::NAME, self.timestamp.version()),
            to_bytes(Timestamp::NAME, &self.timestamp)?,
        ));
        Ok(out)
    }

    /// `targets` then the delegated roles, by name.
    pub(super) fn targets_role_names(&self) -> Vec<String> {
        std::iter::once(Targets::NAME.to_owned())
            .chain(self.delegated.keys().cloned())
            .collect()
    }

    pub(super) fn doc(&self, role: &str) -> Result<&Signed<Targets>, BuildError> {
        if role == Targets::NAME {
            return Ok(&self.targets);
        }
        self.delegated
            .get(role)
            .ok_or_else(|| BuildError::UnknownRole(role.to_owned()))
    }

    /// A targets role's content with staged edits.
    pub(super) fn content(&self, role: &str) -> Result<&Targets, BuildError> {
        match self.staged.get(role) {
            Some(content) => Ok(content),
            None => self.doc(role).map(|doc| &doc.signed),
        }
    }

    fn content_mut(&mut self, role: &str) -> Result<&mut Targets, BuildError> {
        if !self.staged.contains_key(role) {
            let content = self.doc(role)?.signed.clone();
            self.staged.insert(role.to_owned(), content);
        }
        self.staged
            .get_mut(role)
            .ok_or_else(|| BuildError::UnknownRole(role.to_owned()))
    }

    /// Drops a staged edit that has come back to the committed content (a target added then removed), so
    /// that it does not cost a new version.
    fn unstage_if_unchanged(&mut self, role: &str) {
        let unchanged = match (self.staged.get(role), self.doc(role)) {
            (Some(staged), Ok(doc)) => staged == &doc.signed,
            _ => false,
        };
        if unchanged {
            self.staged.remove(role);
        }
    }

    /// The delegation (in staged content) that names `role`, with its parent's delegations block.
    pub(super) fn delegation_of(
        &self,
        role: &str,
    ) -> Result<(&Delegations, &DelegatedRole), BuildError> {
        for parent in self.targets_role_names() {
            let Some(delegations) = &self.content(&parent)?.delegations else {
                continue;
            };
            if let Some(found) = delegations.roles.iter().find(|r| r.name == role) {
                return Ok((delegations, found));
            }
        }
        Err(BuildError::UnknownRole(role.to_owned()))
    }

    /// Who may sign `role`: the root for top-level roles, the (staged) delegating role otherwise.
    pub(super) fn trust(&self, role: &str) -> Result<Trust<'_>, BuildError> {
        if crate::tuf::TOP_LEVEL_ROLES.contains(&role) {
            let root = &self.root().signed;
            let keys = root
                .role(role)
                .ok_or_else(|| BuildError::UnknownRole(role.to_owned()))?;
            return Ok(Trust {
                keys: &root.keys,
                keyids: &keys.keyids,
                threshold: keys.threshold,
            });
        }
        let (delegations, delegation) = self.delegation_of(role)?;
        Ok(Trust {
            keys: &delegations.keys,
            keyids: &delegation.keyids,
            threshold: delegation.threshold,
        })
    }
}

fn placeholder_meta() -> MetaFile {
    MetaFile {
        version: 1,
        length: None,
        hashes: None,
        extra: BTreeMap::new(),
    }
}

/// mast names every file but the timestamp by version, which only a consistent-snapshot root allows.
pub(super) fn check_consistent(root: &Signed<Root>) -> Result<(), BuildError> {
    if root.signed.consistent_snapshot {
        return Ok(());
    }
    Err(BuildError::RootChain {
        version: root.version(),
        reason: "consistent_snapshot must be true".to_owned(),
    })
}
