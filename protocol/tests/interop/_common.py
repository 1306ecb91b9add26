"""Shared by the interop scripts: mast's error kinds, and how python-tuf's outcomes map onto them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib import parse

from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

# The error kinds a scenario may expect, exactly as written in scenarios.json.
ERROR_KINDS = (
    "rollback",  # a version lower than the trusted one (timestamp, snapshot, or a role in snapshot)
    "expired",  # the final root, timestamp, snapshot or targets is past its expiry
    "threshold",  # fewer valid signatures from distinct authorised keys than the role's threshold
    "length",  # a file longer than its signed length
    "hash",  # a file whose digest differs from its signed hash
    "root_chain",  # N.root.json does not hold version N (the chain of roots does not follow)
    "spec_version",  # metadata of a TUF spec major version other than 1
    "target_not_found",  # no role trusted for that path lists the target
)


def classify(error: BaseException) -> str:
    """Maps a python-tuf exception onto one of ERROR_KINDS, or "error:<ExceptionName>" when none fits."""
    messages = " | ".join(str(e) for e in _chain(error)).lower()
    if isinstance(error, exceptions.DownloadLengthMismatchError):
        return "length"
    if isinstance(error, exceptions.LengthOrHashMismatchError):
        if "length" in messages:
            return "length"
        if "hash" in messages:
            return "hash"
    if isinstance(error, exceptions.ExpiredMetadataError):
        return "expired"
    if isinstance(error, exceptions.UnsignedMetadataError):
        return "threshold"
    if isinstance(error, exceptions.BadVersionNumberError):
        # update_root: "Expected root version N+1 instead got version M".
        return "root_chain" if "root version" in messages else "rollback"
    if isinstance(error, exceptions.RepositoryError) and "spec_version" in messages:
        return "spec_version"
    return f"error:{type(error).__name__}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class DirectoryFetcher(FetcherInterface):
    """Serves URLs under `base_url` from a directory, as a mirror would: a missing file is a 404."""

    def __init__(self, base_url: str, directory: str, chunk_size: int = 8192):
        self._base = base_url.rstrip("/") + "/"
        self._directory = os.path.realpath(directory)
        self._chunk_size = chunk_size

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self._base):
            raise exceptions.DownloadHTTPError(f"{url} is not under {self._base}", 404)
        relative = parse.unquote(url[len(self._base) :])
        path = os.path.realpath(os.path.join(self._directory, relative))
        if not path.startswith(self._directory + os.sep) or not os.path.isfile(path):
            raise exceptions.DownloadHTTPError(f"not found: {relative}", 404)
        return self._chunks(path)

    def _chunks(self, path: str) -> Iterator[bytes]:
        with open(path, "rb") as file:
            while chunk := file.read(self._chunk_size):
                yield chunk
