#!/usr/bin/env python3
"""Writes TUF 1.0 repositories made with python-tuf, as scenarios for mast's TUF client, and checks them.

Usage: pytuf_repos.py OUT_DIR

Each scenario is a directory of *phases*; each phase is a complete repository as a mirror would serve it:
`metadata/` (consistent snapshots: `N.root.json`, `N.snapshot.json`, `N.targets.json`, `N.<role>.json`,
and a plain `timestamp.json`) and `targets/` (`<sha256>.<name>`; a name with directories keeps them:
`apps/<sha256>.web.yaml`, as the spec's consistent-snapshot rule and python-tuf have it). A client
starts from the scenario's `initial_root`, keeps its trusted metadata from one phase to the next, in
order, and in each phase refreshes, then looks up and downloads the phase's `target` (when not null).
`expect` is "ok" or one of the error kinds in _common.ERROR_KINDS; with "ok" and a target,
`expect_target_sha256` is the SHA-256 of the target's bytes.

OUT_DIR/scenarios.json is the list of them, in a JSON array:
  [{"name", "description", "initial_root", "now",
    "phases": [{"dir", "target", "expect", "expect_target_sha256"?, "pytuf"}]}]
`pytuf` is python-tuf's own verdict on the phase: the same as `expect` except where PYTUF_DIFFERS says.
Paths (`initial_root`, `dir`) are relative to OUT_DIR. `now` is when this script ran: metadata that must
be valid expires a year after that day, metadata that must be expired expired 30 days before it.

Every repository is built with python-tuf's metadata API, serialised with its JSONSerializer and signed
with real ed25519 keys (derived from fixed seeds, so the same day gives the same bytes); an attack then
tampers with bytes or versions, re-signing where the attack needs a valid signature. Before writing
scenarios.json the script runs python-tuf's own client (ngclient.Updater, through a fetcher reading the
phase directories) over every phase, records its verdict as `pytuf`, and exits non-zero if python-tuf
disagrees with `expect` anywhere python-tuf's behaviour is defined (see PYTUF_DIFFERS for where it is
not).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tuf.api.metadata import MetaFile, Root
from tuf.ngclient import Updater

sys.dont_write_bytecode = True  # import the modules beside this script without leaving __pycache__

from _common import ERROR_KINDS, DirectoryFetcher, classify
from _repo import EXPIRED, RUN_AT, VALID, Repo, dumps, sha256, sign_dict, signer

# Where python-tuf's verdict is defined but is not the kind mast must give, and why.
PYTUF_DIFFERS = {
    # python-tuf keeps signatures in a dict by keyid, so it refuses a duplicate keyid while parsing,
    # before it counts signatures; mast must count distinct keys and report the threshold shortfall.
    ("threshold_duplicate_sigs", "2"): "error:DeserializationError",
}


# --- scenarios -------------------------------------------------------------------------------------

BUNDLE_1 = b"mast interop bundle, release 1\n"
BUNDLE_2 = b"mast interop bundle, release 2 (longer)\n"


class Scenario:
    """A scenario being written: its phases and what a client must make of each."""

    def __init__(self, out: str, name: str, description: str):
        self.out = out
        self.name = name
        self.description = description
        self.initial_root: str | None = None
        self.phases: list[dict[str, Any]] = []

    def phase(self, directory: str, target: str | None, expect: str, sha: str | None = None) -> None:
        assert expect == "ok" or expect in ERROR_KINDS, expect
        assert (sha is not None) == (expect == "ok" and target is not None), (self.name, directory)
        phase: dict[str, Any] = {"dir": directory, "target": target, "expect": expect}
        if sha is not None:
            phase["expect_target_sha256"] = sha
        self.phases.append(phase)

    def record(self) -> dict[str, Any]:
        assert self.initial_root is not None and self.phases, self.name
        return {
            "name": self.name,
            "description": self.description,
            "initial_root": self.initial_root,
            "now": RUN_AT.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "phases": self.phases,
        }


def started(out: str, name: str, description: str, **repo_args: Any) -> tuple[Scenario, Repo, str]:
    """A scenario whose first phase is a good repository: root v1 and a release with BUNDLE_1."""
    scenario = Scenario(out, name, description)
    repo = Repo(name, **repo_args)
    repo.publish_root()
    sha = repo.add_target("bundle.tar.gz", BUNDLE_1)
    repo.release("targets")
    scenario.initial_root = f"{name}/1/metadata/1.root.json"
    return scenario, repo, sha


def basic(out: str) -> Scenario:
    s, repo, sha = started(out, "basic", "One good repository; the target downloads with its signed hash.")
    s.phase(repo.write_phase(out, "1"), "bundle.tar.gz", "ok", sha)
    return s


def delegation(out: str) -> Scenario:
    s = Scenario(
        out,
        "delegation",
        "targets delegates apps/* to role 'apps' (one level deep). apps/web.yaml is found only there; "
        "secret/evil.yaml is listed by 'apps' but outside its paths, and nothing/here.yaml matches no "
        "role: neither is found. All phases are the same repository.",
    )
    repo = Repo("delegation")
    repo.publish_root()
    repo.delegate("apps", ["apps/*"])
    sha = repo.add_target("apps/web.yaml", b"kind: Deployment\nmetadata:\n  name: web\n", role="apps")
    repo.add_target("secret/evil.yaml", b"kind: Secret\n", role="apps")
    repo.add_target("top.txt", b"listed by targets itself\n")
    repo.release("apps", "targets")
    s.initial_root = "delegation/1/metadata/1.root.json"
    directory = repo.write_phase(out, "1")
    s.phase(directory, "apps/web.yaml", "ok", sha)
    s.phase(directory, "secret/evil.yaml", "target_not_found")
    s.phase(directory, "nothing/here.yaml", "target_not_found")
    return s


def root_rotation(out: str) -> Scenario:
    s, repo, sha = started(
        out,
        "root_rotation",
        "Phase 2: root v2 replaces the one root key by two with threshold 2 (signed by v1's key and both "
        "new ones); root v3 replaces one of those two and gives targets and timestamp new keys (signed "
        "by v2's two keys and v3's). A new release is signed with the new keys.",
    )
    s.phase(repo.write_phase(out, "1"), "bundle.tar.gz", "ok", sha)

    a, b, c = (signer("root_rotation", name) for name in ("root2a", "root2b", "root3"))

    def v2(root: Root) -> None:
        for keyid in list(root.roles["root"].keyids):
            root.revoke_key(keyid, "root")
        root.add_key(a.public_key, "root")
        root.add_key(b.public_key, "root")
        root.roles["root"].threshold = 2

    def v3(root: Root) -> None:
        root.revoke_key(a.public_key.keyid, "root")
        root.add_key(c.public_key, "root")

    repo.rotate_root(v2, extra_signers=[a, b])
    v3_signers = [a, b, c]  # v2's threshold (a, b) and v3's own (b, c)
    repo.root.signed.version += 1
    v3(repo.root.signed)
    repo.set_role_key("targets", signer("root_rotation", "targets2"))
    repo.set_role_key("timestamp", signer("root_rotation", "timestamp2"))
    repo.publish_root(v3_signers)
    repo.signers["root"] = [b, c]
    sha2 = repo.add_target("bundle.tar.gz", BUNDLE_2)
    repo.release("targets")
    s.phase(repo.write_phase(out, "2"), "bundle.tar.gz", "ok", sha2)
    return s


def fast_forward_recovery(out: str) -> Scenario:
    s = Scenario(
        out,
        "fast_forward_recovery",
        "Phase 1: a timestamp fast-forwarded to version 100 is trusted. Phase 2: root v2 rotates the "
        "timestamp key and the timestamp restarts at version 1; a client deletes its trusted timestamp "
        "when the timestamp key changes (spec 5.3.11) and accepts it.",
    )
    repo = Repo("fast_forward_recovery")
    repo.publish_root()
    sha = repo.add_target("bundle.tar.gz", BUNDLE_1)
    repo.publish_role("targets")
    repo.publish_snapshot()
    repo.publish_timestamp(version=100)
    s.initial_root = "fast_forward_recovery/1/metadata/1.root.json"
    s.phase(repo.write_phase(out, "1"), "bundle.tar.gz", "ok", sha)

    repo.root.signed.version += 1
    repo.set_role_key("timestamp", signer("fast_forward_recovery", "timestamp2"))
    repo.publish_root()  # the root key is unchanged: it signs for v1 and v2 alike
    sha2 = repo.add_target("bundle.tar.gz", BUNDLE_2)
    repo.publish_role("targets")
    repo.publish_snapshot()
    repo.publish_timestamp(version=1)
    s.phase(repo.write_phase(out, "2"), "bundle.tar.gz", "ok", sha2)
    return s


def two_phase_attack(
    out: str, name: str, description: str, expect: str, attack: Callable[[Repo], dict[str, bytes] | None]
) -> Scenario:
    """Phase 1 is a good repository (released twice, so older versions exist); phase 2 is `attack`ed."""
    s, repo, _ = started(out, name, description)
    sha = repo.add_target("bundle.tar.gz", BUNDLE_2)
    repo.release("targets")
    s.phase(repo.write_phase(out, "1"), "bundle.tar.gz", "ok", sha)
    overrides = attack(repo)
    s.phase(repo.write_phase(out, "2", overrides), "bundle.tar.gz", expect)
    return s


def one_phase_attack(
    out: str, name: str, description: str, expect: str, attack: Callable[[Repo], dict[str, bytes]]
) -> Scenario:
    s, repo, _ = started(out, name, description)
    s.phase(repo.write_phase(out, "1", attack(repo)), "bundle.tar.gz", expect)
    return s


def rollback_timestamp(repo: Repo) -> dict[str, bytes]:
    return {"metadata/timestamp.json": repo.timestamps[1]}


def rollback_snapshot(repo: Repo) -> None:
    repo.publish_timestamp(snapshot_version=1)


def rollback_targets(repo: Repo) -> None:
    repo.snapshot.signed.meta["targets.json"] = MetaFile(1)
    repo.publish_snapshot()
    repo.publish_timestamp()


def freeze(role: str) -> Callable[[Repo], None]:
    def attack(repo: Repo) -> None:
        if role == "timestamp":
            repo.timestamp.signed.expires = EXPIRED
            repo.publish_timestamp()
        elif role == "snapshot":
            repo.snapshot.signed.expires = EXPIRED
            repo.release()
        elif role == "targets":
            repo.roles["targets"].signed.expires = EXPIRED
            repo.release("targets")
        else:
            repo.rotate_root(lambda root: setattr(root, "expires", EXPIRED))
            repo.release()

    return attack


def threshold_timestamp(repo: Repo) -> None:
    repo.publish_timestamp(signers=[signer(repo.scenario, "intruder")])


def threshold_duplicate_sigs(repo: Repo) -> dict[str, bytes]:
    repo.root.signed.version += 1
    repo.root.signed.expires = VALID + timedelta(days=1)
    first = repo.signers["root"][0]
    document = json.loads(repo.publish_root([first]))
    document["signatures"] = document["signatures"] * 2
    return {"metadata/2.root.json": dumps(document)}


def threshold_root_chain(repo: Repo) -> None:
    new = signer(repo.scenario, "root2")

    def change(root: Root) -> None:
        root.revoke_key(repo.signers["root"][0].public_key.keyid, "root")
        root.add_key(new.public_key, "root")

    repo.root.signed.version += 1
    change(repo.root.signed)
    repo.signers["root"] = [new]
    repo.publish_root([new])  # v1's key did not sign
    repo.release()


def root_chain_version(repo: Repo) -> None:
    repo.root.signed.version = 3
    repo.publish_root(version_in_name=2)  # a correctly signed root, but 2.root.json holds version 3
    repo.release()


def length_target(repo: Repo) -> dict[str, bytes]:
    return {Repo.target_file("bundle.tar.gz", BUNDLE_1): BUNDLE_1 + b"and more\n"}


def hash_target(repo: Repo) -> dict[str, bytes]:
    tampered = BUNDLE_1.replace(b"release 1", b"release X")
    assert len(tampered) == len(BUNDLE_1) and tampered != BUNDLE_1
    return {Repo.target_file("bundle.tar.gz", BUNDLE_1): tampered}


def length_snapshot(repo: Repo) -> dict[str, bytes]:
    repo.release()
    path = f"metadata/{repo.snapshot.signed.version}.snapshot.json"
    longer = dumps(json.loads(repo.files[path]), indent=4)  # same signed content, more whitespace
    assert len(longer) > len(repo.files[path])
    return {path: longer}


def hash_snapshot(repo: Repo) -> dict[str, bytes]:
    repo.release()
    path = f"metadata/{repo.snapshot.signed.version}.snapshot.json"
    document = json.loads(repo.files[path])
    reordered = dumps({"signed": document["signed"], "signatures": document["signatures"]}, sort_keys=False)
    # Same signed content and signatures, same length, other bytes: only the hash can tell.
    assert len(reordered) == len(repo.files[path]) and reordered != repo.files[path]
    return {path: reordered}


def spec_version(repo: Repo) -> dict[str, bytes]:
    repo.publish_timestamp()
    document = json.loads(repo.files["metadata/timestamp.json"])
    document["signed"]["spec_version"] = "2.0.0"
    document["signatures"] = sign_dict(document["signed"], repo.signers["timestamp"])
    return {"metadata/timestamp.json": dumps(document)}


ATTACKS: list[tuple[str, str, str, Callable[..., Any], bool]] = [
    # name, description, expected kind, attack, two phases (else one)
    ("rollback_timestamp", "Phase 2 replays timestamp v1 (validly signed) after v2 was trusted.",
     "rollback", rollback_timestamp, True),
    ("rollback_snapshot", "Phase 2: a new timestamp (v3) points at snapshot v1 after v2 was trusted.",
     "rollback", rollback_snapshot, True),
    ("rollback_targets", "Phase 2: a new snapshot (v3) lists targets v1 after v2 was trusted.",
     "rollback", rollback_targets, True),
    ("freeze_timestamp", "Phase 2: a new timestamp that has expired.", "expired", freeze("timestamp"), True),
    ("freeze_snapshot", "Phase 2: a new snapshot that has expired.", "expired", freeze("snapshot"), True),
    ("freeze_targets", "Phase 2: a new targets that has expired.", "expired", freeze("targets"), True),
    ("freeze_root", "Phase 2: root v2 (correctly signed) has expired; the newest root decides.",
     "expired", freeze("root"), True),
    ("threshold_timestamp", "Phase 2: a new timestamp signed by a key root does not list.",
     "threshold", threshold_timestamp, True),
    ("threshold_duplicate_sigs",
     "Root threshold is 2 of 2 keys. Phase 2: 2.root.json carries one key's signature twice.",
     "threshold", threshold_duplicate_sigs, True),
    ("threshold_root_chain",
     "Phase 2: root v2 replaces the root key and is signed only by the new key, not by v1's.",
     "threshold", threshold_root_chain, True),
    ("root_chain_version",
     "Phase 2: 2.root.json, correctly signed by the old and new keys, holds version 3.",
     "root_chain", root_chain_version, True),
    ("length_target", "The target file is longer than its signed length.", "length", length_target, False),
    ("hash_target", "The target file has its signed length but other bytes.", "hash", hash_target, False),
    ("length_snapshot",
     "Phase 2: the snapshot file (validly signed, re-indented) is longer than timestamp's length.",
     "length", length_snapshot, True),
    ("hash_snapshot",
     "Phase 2: the snapshot file (validly signed, keys reordered) has timestamp's length, other bytes.",
     "hash", hash_snapshot, True),
    ("spec_version", "Phase 2: a validly signed timestamp with spec_version 2.0.0.",
     "spec_version", spec_version, True),
]


GOOD = {
    "basic": basic,
    "delegation": delegation,
    "root_rotation": root_rotation,
    "fast_forward_recovery": fast_forward_recovery,
}


def build(out: str) -> list[Scenario]:
    scenarios = [make(out) for make in GOOD.values()]
    for name, description, expect, attack, two_phases in ATTACKS:
        if name == "threshold_duplicate_sigs":
            s, repo, _ = started(out, name, description, root_keys=2, root_threshold=2)
            sha = repo.add_target("bundle.tar.gz", BUNDLE_2)
            repo.release("targets")
            s.phase(repo.write_phase(out, "1"), "bundle.tar.gz", "ok", sha)
            s.phase(repo.write_phase(out, "2", attack(repo)), "bundle.tar.gz", expect)
            scenarios.append(s)
        elif two_phases:
            scenarios.append(two_phase_attack(out, name, description, expect, attack))
        else:
            scenarios.append(one_phase_attack(out, name, description, expect, attack))
    return scenarios


# --- python-tuf's own verdict ----------------------------------------------------------------------


def pytuf_verdict(out: str, phase: dict[str, Any], metadata_dir: str, bootstrap: bytes | None) -> tuple[str, str]:
    """Runs python-tuf's Updater over one phase; returns (verdict, detail). The verdict is "ok", an
    error kind, or "error:<Exception>" for an outcome that is none of them."""
    directory = os.path.join(out, phase["dir"])
    base = "http://mirror.invalid/"
    with tempfile.TemporaryDirectory() as downloads:
        try:
            updater = Updater(
                metadata_dir=metadata_dir,
                metadata_base_url=base + "metadata/",
                target_base_url=base + "targets/",
                target_dir=downloads,
                fetcher=DirectoryFetcher(base, directory),
                bootstrap=bootstrap,
            )
            updater.refresh()
            if phase["target"] is None:
                return "ok", ""
            info = updater.get_targetinfo(phase["target"])
            if info is None:
                return "target_not_found", f"no role lists {phase['target']}"
            with open(updater.download_target(info), "rb") as file:
                return "ok", sha256(file.read())
        except Exception as error:  # noqa: BLE001 - every outcome is a verdict
            return classify(error), f"{type(error).__name__}: {error}"


def check_with_pytuf(out: str, scenarios: list[Scenario]) -> list[str]:
    """Records python-tuf's verdict on every phase; returns the disagreements."""
    problems = []
    for scenario in scenarios:
        with tempfile.TemporaryDirectory() as metadata_dir:
            with open(os.path.join(out, scenario.initial_root), "rb") as file:
                bootstrap: bytes | None = file.read()
            for index, phase in enumerate(scenario.phases, start=1):
                verdict, detail = pytuf_verdict(out, phase, metadata_dir, bootstrap)
                bootstrap = None  # later phases start from the trusted state left in metadata_dir
                phase["pytuf"] = verdict
                phase_name = phase["dir"].rsplit("/", 1)[1]
                wanted = PYTUF_DIFFERS.get((scenario.name, phase_name), phase["expect"])
                where = f"{scenario.name} phase {index} ({phase['dir']})"
                if verdict != wanted:
                    problems.append(f"{where}: expected {wanted}, python-tuf says {verdict}: {detail}")
                elif verdict == "ok" and phase["target"] and detail != phase["expect_target_sha256"]:
                    problems.append(f"{where}: python-tuf downloaded sha256 {detail}")
                print(f"  {where}: expect {phase['expect']}; python-tuf: {verdict} {detail}"[:200])
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where to write the scenarios and scenarios.json")
    out = parser.parse_args().out_dir
    os.makedirs(out, exist_ok=True)
    for name in [*GOOD, *(attack[0] for attack in ATTACKS)]:  # only what this script writes
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)

    scenarios = build(out)
    print(f"pytuf_repos: wrote {len(scenarios)} scenarios to {out}; checking them with python-tuf")
    problems = check_with_pytuf(out, scenarios)
    if problems:
        print("pytuf_repos: python-tuf disagrees:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    index = [s.record() for s in scenarios]
    with open(os.path.join(out, "scenarios.json"), "w") as file:
        json.dump(index, file, indent=1)
        file.write("\n")
    print(f"pytuf_repos: python-tuf agrees on every phase; wrote {os.path.join(out, 'scenarios.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
