#!/usr/bin/env python3
"""Downloads one target from an HTTP TUF repository with python-tuf's client, as an independent verifier.

Usage:
  ngclient_download.py --metadata-url URL --targets-url URL --root ROOT_JSON --metadata-dir DIR
                       --target NAME --out DIR

Runs python-tuf's ngclient.Updater: refresh (root chain, timestamp, snapshot, targets), get_targetinfo
(delegations included), download_target (length and hashes checked). On success prints one JSON line,
{"target": NAME, "sha256": HEX, "length": N, "path": FILE}, and exits 0. On failure prints one JSON line,
{"target": NAME, "error": KIND, "exception": NAME, "message": TEXT}, where KIND is one of mast's error
kinds (see _common.ERROR_KINDS) or "error:<Exception>", repeats the message on stderr, and exits 1.

--metadata-dir holds the client's trusted state. When it has no root.json yet, ROOT_JSON is the trust
anchor; when it has one (an earlier run left it), that trusted state is used and ROOT_JSON is not read,
so successive runs with the same directory behave as one client updating over time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

from tuf.ngclient import Updater

sys.dont_write_bytecode = True  # import the modules beside this script without leaving __pycache__

from _common import classify


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metadata-url", required=True, help="base URL of the metadata files")
    parser.add_argument("--targets-url", required=True, help="base URL of the target files")
    parser.add_argument("--root", required=True, help="root.json to trust when DIR has none")
    parser.add_argument("--metadata-dir", required=True, help="the client's trusted metadata (created)")
    parser.add_argument("--target", required=True, help="target name, e.g. bundle.tar.gz")
    parser.add_argument("--out", required=True, help="directory to download the target into (created)")
    args = parser.parse_args()

    os.makedirs(args.metadata_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    try:
        if os.path.exists(os.path.join(args.metadata_dir, "root.json")):
            bootstrap = None
        else:
            with open(args.root, "rb") as file:
                bootstrap = file.read()
        updater = Updater(
            metadata_dir=args.metadata_dir,
            metadata_base_url=args.metadata_url,
            target_base_url=args.targets_url,
            target_dir=args.out,
            bootstrap=bootstrap,
        )
        updater.refresh()
        info = updater.get_targetinfo(args.target)
        if info is None:
            message = f"no trusted role lists {args.target}"
            return fail(args.target, "target_not_found", "TargetNotFound", message)
        path = updater.download_target(info)
        with open(path, "rb") as file:
            data = file.read()
    except Exception as error:  # noqa: BLE001 - every failure is reported the same way
        return fail(args.target, classify(error), type(error).__name__, str(error))
    digest = hashlib.sha256(data).hexdigest()
    print(json.dumps({"target": args.target, "sha256": digest, "length": len(data), "path": path}))
    return 0


def fail(target: str, kind: str, exception: str, message: str) -> int:
    print(json.dumps({"target": target, "error": kind, "exception": exception, "message": message}))
    print(f"ngclient_download: {target}: {kind} ({exception}): {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
