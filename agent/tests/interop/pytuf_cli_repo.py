#!/usr/bin/env python3
"""Writes one TUF repository with python-tuf, for `mast-agent tuf` tests and its benchmark.

Usage: pytuf_cli_repo.py OUT [--plain] [--delegate ROLE=PATTERN]... --target NAME=BYTES[@ROLE]...

OUT/metadata/ and OUT/targets/ are what a static server serves; OUT/root.json is the initial root to
trust. With consistent snapshots (the default) metadata is versioned (`N.snapshot.json`) and targets are
`DIR/<sha256>.NAME`; with --plain the root says `consistent_snapshot: false`, metadata other than root is
under its plain name (`snapshot.json`, `targets.json`, `ROLE.json`) and targets under their own name, and
no versioned copy exists, so a client that asks for one fails. Each target is BYTES pseudo-random bytes
seeded by its name, listed by `targets` or by the delegated ROLE. Prints one JSON line:
{"root": PATH, "consistent_snapshot": BOOL, "targets": {NAME: {"sha256": HEX, "length": N}}}.

The repository is built with mast's python-tuf helpers (protocol/tests/interop/_repo.py): python-tuf's
metadata API, its JSONSerializer, ed25519 keys from fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.dont_write_bytecode = True
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../protocol/tests/interop")
)

from _repo import Repo  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--plain", action="store_true", help="consistent_snapshot: false")
    parser.add_argument("--delegate", action="append", default=[], help="ROLE=PATTERN")
    parser.add_argument("--target", action="append", default=[], help="NAME=BYTES[@ROLE]")
    parser.add_argument("--scenario", default="mast-agent-tuf", help="seeds the keys")
    args = parser.parse_args()

    repo = Repo(args.scenario)
    repo.root.signed.consistent_snapshot = not args.plain
    repo.publish_root()
    for spec in args.delegate:
        role, pattern = spec.split("=", 1)
        repo.delegate(role, [pattern])
    listed, contents = {}, {}
    for spec in args.target:
        name, rest = spec.split("=", 1)
        size, _, role = rest.partition("@")
        data = random.Random(name).randbytes(int(size))
        listed[name] = {"sha256": repo.add_target(name, data, role=role or "targets"), "length": len(data)}
        contents[name] = data
    roles = [role for role in repo.roles if role != "targets"]
    repo.release(*roles, "targets")

    files = dict(repo.files)
    if args.plain:
        files = plain_layout(repo, files, contents)
    for path, data in files.items():
        target = os.path.join(args.out, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as file:
            file.write(data)
    root = os.path.join(args.out, "root.json")
    with open(root, "wb") as file:
        file.write(files["metadata/1.root.json"])
    print(json.dumps({"root": root, "consistent_snapshot": not args.plain, "targets": listed}))
    return 0


def plain_layout(repo: Repo, files: dict[str, bytes], contents: dict[str, bytes]) -> dict[str, bytes]:
    """The same repository under plain names: root stays versioned (the spec fetches it so always)."""
    out = {path: data for path, data in files.items() if path.endswith(".root.json")}
    out["metadata/timestamp.json"] = files["metadata/timestamp.json"]
    snapshot = repo.snapshot.signed.version
    out["metadata/snapshot.json"] = files[f"metadata/{snapshot}.snapshot.json"]
    for role, md in repo.roles.items():
        out[f"metadata/{role}.json"] = files[f"metadata/{md.signed.version}.{role}.json"]
    for name, data in contents.items():
        out[f"targets/{name}"] = data
    return out


if __name__ == "__main__":
    sys.exit(main())
