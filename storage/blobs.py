"""Content-addressed blobs on the local filesystem (the BlobStore port)."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from core import errors
from core.ports import BlobStore, PartialFile

log = logging.getLogger(__name__)
_KEY = re.compile(r"^[0-9a-f]{64}$")
_PARTIAL = ".tmp-"  # the prefix of a blob being written (renamed to its key once complete)
FULL = (errno.ENOSPC, errno.EDQUOT)
CHUNK = 1 << 20  # bytes read at a time when a blob is streamed


def storage_full(what: str, where: object, cause: BaseException) -> errors.StorageFull:
    """The error for a write that found no room, logged once here at ERROR so the operator sees why."""
    log.error("storage full: no space left for %s in %s (%s); free disk space, nothing was stored", what, where, cause)
    return errors.StorageFull(f"the server has no space left for {what}; nothing was stored (the operator "
                              "must free disk space)")


class LocalBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_PARTIAL)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic: readers see the whole blob or none
        except BaseException as e:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError) and e.errno in FULL:
                raise storage_full(f"{len(data):,} bytes", self.root, e) from e
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyError(key) from None

    def put_stream(self, stream: BinaryIO, key: str) -> int:
        """Copy `stream` into a partial file while hashing it; renamed into place only when its sha256 is `key`."""
        path = self._path(key)
        digest, size, tmp = hashlib.sha256(), 0, None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_PARTIAL)
            with os.fdopen(fd, "wb") as fh:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            if digest.hexdigest() != key:
                raise ValueError(f"the content does not match its key {key}: nothing was stored")
            os.replace(tmp, path)
            tmp = None
        except BaseException as e:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError) and e.errno in FULL:
                raise storage_full(f"{size:,} bytes", self.root, e) from e
            raise
        return size

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise KeyError(key) from None

    def age_seconds(self, key: str) -> float | None:
        try:
            return max(0.0, time.time() - self._path(key).stat().st_mtime)
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterable[str]:
        for _dirpath, _, files in os.walk(self.root):
            for name in files:
                if _KEY.match(name):
                    yield name

    def partial_files(self, older_than: float = 0.0) -> list[PartialFile]:
        now, found = time.time(), []
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if not name.startswith(_PARTIAL):
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # its writer finished (renamed it) or gave up meanwhile
                    continue
                age = max(0.0, now - st.st_mtime)
                if age >= older_than:
                    found.append(PartialFile(str(path.relative_to(self.root)), st.st_size, age))
        return sorted(found, key=lambda p: p.name)

    def delete_partial(self, name: str) -> None:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or not path.name.startswith(_PARTIAL):
            raise ValueError(f"not a partial blob file: {name!r}")
        path.unlink(missing_ok=True)
