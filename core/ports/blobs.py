"""The blob store port: content-addressed bytes (images, models, exports)."""
from __future__ import annotations

import hashlib
import io
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class PartialFile:
    """A blob write that never finished (the process died between creating its temporary file and renaming it
    into place): `name` identifies it to `BlobStore.delete_partial`."""

    name: str
    size: int
    age_seconds: float


class BlobStore(ABC):
    """Content-addressed bytes: the key of a blob is the sha256 of its content. A write that finds no room raises
    `errors.StorageFull` and stores nothing.

    A `shared` store (an S3 bucket) may be written by processes on other machines, which this machine's store lock
    does not see: blobs are then collected as orphans only once `age_seconds` says nobody wrote them for a while,
    and `put` of content already stored makes it young again, so a writer's blob is never taken for an orphan
    between its `put` and the commit of the row that names it."""

    shared: bool = False

    @abstractmethod
    def put(self, data: bytes) -> str: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def keys(self) -> Iterable[str]: ...

    def open(self, key: str) -> BinaryIO:
        """The blob's bytes as a stream (KeyError when it is missing): a store that can streams them, so a large
        blob is never held whole in memory; this default reads it whole."""
        return io.BytesIO(self.get(key))

    def put_stream(self, stream: BinaryIO, key: str) -> int:
        """Store the bytes read from `stream` under `key`, which must be their sha256: a mismatch raises
        ValueError and stores nothing. Returns the number of bytes. A store that can writes in bounded memory;
        this default reads the stream whole."""
        data = stream.read()
        if hashlib.sha256(data).hexdigest() != key:
            raise ValueError(f"the content does not match its key {key}: nothing was stored")
        self.put(data)
        return len(data)

    def size(self, key: str) -> int:
        """The blob's length in bytes (KeyError when it is missing); this default reads it."""
        return len(self.get(key))

    def age_seconds(self, key: str) -> float | None:
        """Seconds since the blob was written, or None when it is missing or the store cannot tell."""
        return None

    def partial_files(self, older_than: float = 0.0) -> list[PartialFile]:
        """Unfinished writes untouched for at least `older_than` seconds (a younger one may be a concurrent
        writer's, still being written); none for a store whose writes cannot be left half done."""
        return []

    def delete_partial(self, name: str) -> None:
        """Remove one of `partial_files`."""
        raise NotImplementedError(f"{type(self).__name__} has no partial files")
