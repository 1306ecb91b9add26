"""Building TUF repositories with python-tuf's metadata API, the way a mirror accumulates their files.

Used by pytuf_repos.py. Keys are ed25519, derived from fixed seeds (same names, same keys); dates are
relative to the day the script runs, so one day's runs write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    MetaFile,
    Metadata,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

RUN_AT = datetime.now(timezone.utc).replace(microsecond=0)
TODAY = RUN_AT.replace(hour=0, minute=0, second=0)
VALID = TODAY + timedelta(days=365)
EXPIRED = TODAY - timedelta(days=30)
SERIALIZER = JSONSerializer(compact=False)


def signer(scenario: str, name: str) -> CryptoSigner:
    """An ed25519 signer whose key is derived from the scenario and key name: same names, same key."""
    seed = hashlib.sha256(f"mast interop key {scenario}/{name}".encode()).digest()
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dumps(document: dict[str, Any], indent: int = 1, sort_keys: bool = True) -> bytes:
    """JSON as JSONSerializer writes it (unless told otherwise), for documents built by hand."""
    return json.dumps(document, indent=indent, separators=(",", ": "), sort_keys=sort_keys).encode()


def sign_dict(signed: dict[str, Any], signers: list[CryptoSigner]) -> list[dict[str, str]]:
    """Signs a `signed` object that python-tuf's classes refuse to hold (e.g. spec_version 2.0.0)."""
    canonical = encode_canonical(signed).encode()
    return [s.sign(canonical).to_dict() for s in signers]


class Repo:
    """A repository being published: its metadata objects, its signers, and every file a mirror holds."""

    def __init__(self, scenario: str, root_keys: int = 1, root_threshold: int = 1):
        self.scenario = scenario
        self.signers = {
            "root": [signer(scenario, f"root{i}") for i in range(1, root_keys + 1)],
            "timestamp": [signer(scenario, "timestamp")],
            "snapshot": [signer(scenario, "snapshot")],
            "targets": [signer(scenario, "targets")],
        }
        root = Root(expires=VALID, consistent_snapshot=True)
        for role, signers in self.signers.items():
            for s in signers:
                root.add_key(s.public_key, role)
        root.roles["root"].threshold = root_threshold
        self.root = Metadata(root)
        self.roles: dict[str, Metadata[Targets]] = {"targets": Metadata(Targets(expires=VALID))}
        self.snapshot = Metadata(Snapshot(expires=VALID))
        self.timestamp = Metadata(Timestamp(expires=VALID))
        self.files: dict[str, bytes] = {}  # path under a phase directory -> bytes
        self.published: set[tuple[str, int]] = set()
        self.timestamps: dict[int, bytes] = {}  # every timestamp.json published, by version

    # --- publishing ------------------------------------------------------------------------------

    def publish_root(
        self, signers: list[CryptoSigner] | None = None, version_in_name: int | None = None
    ) -> bytes:
        """Signs the root as it is (with the current root keys unless `signers` is given) and stores
        it as `<version>.root.json`."""
        data = self._sign(self.root, signers or self.signers["root"])
        name = version_in_name or self.root.signed.version
        self.files[f"metadata/{name}.root.json"] = data
        return data

    def rotate_root(
        self, change: Callable[[Root], None], extra_signers: list[CryptoSigner] | None = None
    ) -> bytes:
        """Publishes root N+1 after `change`, signed by root N's keys and root N+1's own keys."""
        old_signers = list(self.signers["root"])
        extra_signers = extra_signers or []
        self.root.signed.version += 1
        change(self.root.signed)
        new_ids = set(self.root.signed.roles["root"].keyids)
        every = {s.public_key.keyid: s for s in [*old_signers, *extra_signers]}
        self.signers["root"] = [s for keyid, s in every.items() if keyid in new_ids]
        signers = [s for keyid, s in every.items() if keyid in new_ids or s in old_signers]
        return self.publish_root(signers)

    def set_role_key(self, role: str, new: CryptoSigner) -> None:
        """Replaces a top-level role's key in the (unpublished) root."""
        root = self.root.signed
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(new.public_key, role)
        self.signers[role] = [new]

    def delegate(self, name: str, paths: list[str]) -> None:
        """Delegates `paths` from targets to a new role `name`, with its own key."""
        key = signer(self.scenario, name)
        targets = self.roles["targets"].signed
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        targets.delegations.keys[key.public_key.keyid] = key.public_key
        targets.delegations.roles[name] = DelegatedRole(
            name, [key.public_key.keyid], 1, terminating=False, paths=paths
        )
        self.signers[name] = [key]
        self.roles[name] = Metadata(Targets(expires=VALID))

    def add_target(self, path: str, data: bytes, role: str = "targets") -> str:
        """Lists `data` as `path` in `role` and stores its file; returns its SHA-256."""
        info = TargetFile.from_data(path, data, ["sha256"])
        self.roles[role].signed.targets[path] = info
        self.files[self.target_file(path, data)] = data
        return sha256(data)

    @staticmethod
    def target_file(path: str, data: bytes) -> str:
        directory, _, name = path.rpartition("/")
        return f"targets/{directory + '/' if directory else ''}{sha256(data)}.{name}"

    def publish_role(self, role: str) -> None:
        """Publishes a targets role as its next version and records it in the snapshot."""
        md = self.roles[role]
        self._bump(role, md)
        self.files[f"metadata/{md.signed.version}.{role}.json"] = self._sign(md, self.signers[role])
        self.snapshot.signed.meta[f"{role}.json"] = MetaFile(md.signed.version)

    def publish_snapshot(self) -> bytes:
        self._bump("snapshot", self.snapshot)
        data = self._sign(self.snapshot, self.signers["snapshot"])
        self.files[f"metadata/{self.snapshot.signed.version}.snapshot.json"] = data
        return data

    def publish_timestamp(
        self,
        snapshot_version: int | None = None,
        version: int | None = None,
        signers: list[CryptoSigner] | None = None,
    ) -> bytes:
        """Publishes timestamp.json pointing at snapshot `snapshot_version` (default: the current one)."""
        snapshot_version = snapshot_version or self.snapshot.signed.version
        snapshot = self.files[f"metadata/{snapshot_version}.snapshot.json"]
        self.timestamp.signed.snapshot_meta = MetaFile(
            snapshot_version, length=len(snapshot), hashes={"sha256": sha256(snapshot)}
        )
        if version is None:
            self._bump("timestamp", self.timestamp)
        else:
            self.timestamp.signed.version = version
        data = self._sign(self.timestamp, signers or self.signers["timestamp"])
        self.files["metadata/timestamp.json"] = data
        self.timestamps[self.timestamp.signed.version] = data
        return data

    def release(self, *roles: str) -> None:
        """Publishes the given targets roles, then a new snapshot and timestamp."""
        for role in roles:
            self.publish_role(role)
        self.publish_snapshot()
        self.publish_timestamp()

    def write_phase(self, out: str, phase: str, overrides: dict[str, bytes] | None = None) -> str:
        """Writes every file the mirror holds now (with `overrides` for this phase only) to
        OUT/<scenario>/<phase>; returns that directory relative to OUT."""
        relative = f"{self.scenario}/{phase}"
        files = {**self.files, **(overrides or {})}
        for path, data in files.items():
            target = os.path.join(out, relative, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as file:
                file.write(data)
        return relative

    def _bump(self, role: str, md: Metadata) -> None:
        """Moves `md` to its next version if its current one was already published."""
        if (role, md.signed.version) in self.published:
            md.signed.version += 1
        self.published.add((role, md.signed.version))

    @staticmethod
    def _sign(md: Metadata, signers: list[CryptoSigner]) -> bytes:
        md.signatures.clear()
        for s in signers:
            md.sign(s, append=True)
        return md.to_bytes(SERIALIZER)
