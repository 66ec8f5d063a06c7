"""Who uses the store: an advisory lock on `<data dir>/cvbot.lock` (fcntl.flock).

Every cvbot process that opens the store (`cvbot serve`, each CLI command) holds it shared for as long as it runs;
`cvbot doctor --repair` needs it exclusive, so it refuses to run while a server or another command uses the
store, and nothing opens the store while it repairs. Start-up recovery takes it exclusive when it can and then
shares it, so orphan blobs are deleted only when no other process may be writing one. The lock lives beside the
blobs, so it covers every process that shares them (also with PostgreSQL, whose processes share the data dir)."""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from core import errors


class StoreLock:
    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / "cvbot.lock"
        self._fd: int | None = None
        self.exclusive = False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def try_exclusive(self) -> bool:
        """Take the store for this process alone, if no other process holds it; True if taken."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.exclusive = True
        return True

    def share(self, wait: float = 0.0) -> None:
        """Hold the store shared (also turns an exclusive hold into a shared one); refused while it is repaired,
        after waiting up to `wait` seconds for the exclusive holder to finish (a process starting at the same time
        as another holds it exclusive for its start-up recovery, which takes a moment)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._open(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise errors.StoreBusy("the store is being repaired (cvbot doctor --repair); try again when it "
                                           "has finished") from None
                time.sleep(0.05)
        self.exclusive = False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
            self.exclusive = False
