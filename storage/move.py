"""Moving a whole install to another database and blob store (`cvbot move`): every row of every table cvbot's
schema defines, and every blob a row references, each checked against its sha256 while it is copied.

Blobs go first, rows last in one transaction: the target never holds a row that names a missing blob, and a move
cut off anywhere leaves the target's tables empty, so running it again continues (blobs already in the target are
content-addressed, hence already right, and are not copied again). Nothing is deleted from the source.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, func, insert, null, select

from core.ports import BlobStore

from .tables import metadata

ROW_BATCH = 1000


@dataclass
class BlobCopy:
    referenced: int = 0
    copied: int = 0  # written to the target by this run
    present: int = 0  # already in the target (an earlier, interrupted run)
    bytes: int = 0  # of every referenced blob
    failures: list[str] = field(default_factory=list)  # "key: why"


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows per table of cvbot's schema (the tables absent from the database count 0)."""
    from sqlalchemy import inspect

    present = set(inspect(engine).get_table_names())
    with engine.connect() as c:
        return {t.name: (c.execute(select(func.count()).select_from(t)).scalar_one() if t.name in present else 0)
                for t in metadata.sorted_tables}


def copy_blobs(keys: Iterable[str], source: BlobStore, target: BlobStore, workers: int = 8,
               progress: Callable[[int, int], None] | None = None) -> BlobCopy:
    """Copy each of `keys` from `source` to `target`, streamed and checked against its sha256 (a blob whose
    content does not match its key, or that is missing, is a failure and is not written). Keys the target holds
    already are skipped. `progress(blobs_done, bytes_done)` after each blob."""
    wanted = sorted(set(keys))
    result = BlobCopy(referenced=len(wanted))
    present = set(target.keys())
    lock = threading.Lock()

    def one(key: str) -> None:
        size, copied, failure = 0, False, None
        try:
            if key in present:
                size = source.size(key)
            else:
                with source.open(key) as stream:
                    size = target.put_stream(stream, key)
                copied = True
        except KeyError:
            failure = f"{key}: missing from the source"
        except ValueError as e:
            failure = f"{key}: {e}"
        with lock:
            if failure:
                result.failures.append(failure)
            else:
                result.copied += copied
                result.present += not copied
                result.bytes += size
            if progress:
                progress(1, size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in pool.map(one, wanted):
            pass
    result.failures.sort()
    return result


def verify_blobs(keys: Iterable[str], target: BlobStore, workers: int = 8) -> tuple[int, int, list[str]]:
    """What the target holds of `keys`: (count, bytes, the keys it lacks)."""
    wanted = sorted(set(keys))
    listed = set(target.keys())
    missing = [k for k in wanted if k not in listed]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        sizes = list(pool.map(target.size, [k for k in wanted if k in listed]))
    return len(sizes), sum(sizes), missing


def copy_rows(source: Engine, target: Engine, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every row of every table of cvbot's schema from `source` to `target` (migrated to the same head, its
    tables empty) in one transaction, parents before children. SQL NULL stays SQL NULL in JSON columns (distinct
    from a JSON `null`), and a naive timestamp (SQLite keeps no zone; cvbot writes UTC) is stored as UTC.
    Returns the rows copied per table; `progress(table, rows)` after each batch."""
    copied: dict[str, int] = {}
    with source.connect() as src, target.begin() as dst:
        for table in metadata.sorted_tables:
            json_cols = [c.name for c in table.columns if isinstance(c.type, JSON)]
            zoned = [c.name for c in table.columns if isinstance(c.type, DateTime) and c.type.timezone]
            flags = [table.c[name].is_(None).label(f"_null_{name}") for name in json_cols]
            result = src.execution_options(yield_per=ROW_BATCH).execute(select(table, *flags))
            copied[table.name] = 0
            for batch in result.mappings().partitions(ROW_BATCH):
                rows = [_row(dict(r), table.columns.keys(), json_cols, zoned) for r in batch]
                dst.execute(insert(table), rows)
                copied[table.name] += len(rows)
                if progress:
                    progress(table.name, len(rows))
    return copied


def _row(r: dict[str, Any], columns: list[str], json_cols: list[str], zoned: list[str]) -> dict[str, Any]:
    out = {c: r[c] for c in columns}
    for name in json_cols:
        if r[f"_null_{name}"]:
            out[name] = null()
    for name in zoned:
        value = out[name]
        if isinstance(value, datetime) and value.tzinfo is None:
            out[name] = value.replace(tzinfo=UTC)
    return out
