"""Local state stores for the processor runtime (the Kafka Streams model: local store + checkpoint).

The changelog topic is the source of truth.  A local store keeps, per partition, the latest value of
every changelog key plus a checkpoint: the changelog offset up to which it is complete.  On restart a
worker loads the local store and reads only the changelog tail after the checkpoint, instead of the
whole partition.  If the checkpoint is past the changelog's end (the topic was recreated) the local
copy is discarded.  It is written only after a transaction commits, so it never holds uncommitted state.

- ``rocksdict://`` (production): one RocksDB database per partition under
  ``<worker.data_dir>/<app_id>/partition-<p>``. A worker process owns that directory through an
  exclusive lock (released by the OS when the process dies); a second live worker on the same host takes
  ``<app_id>.worker-2`` (and, without an instance id of its own, ``<hostname>-2`` as transactional.id
  suffix) instead of crashing on the first one's RocksDB lock. Any worker may use a directory another
  one left: the checkpoint says up to where it is complete, the changelog holds the rest.
- ``memory://`` (tests, demo): nothing is kept locally; recovery reads the whole changelog.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHECKPOINT_KEY = b"\x02checkpoint"


@dataclass(frozen=True)
class DirectoryClaim:
    directory: Path
    slot: int  # 1 for <data_dir>/<app_id>, n for <data_dir>/<app_id>.worker-<n>
    lock_fd: int  # held open for the process's life; closing it releases the claim


LOCK_FILE = "shopmail.lock"


def claim_directory(base: Path) -> DirectoryClaim:
    """Lock ``base`` (an exclusive ``flock`` on a file inside it, released by the OS when the process
    dies); when another live process holds it, the next free ``<base>.worker-<n>``."""
    for n in itertools.count(1):
        directory = base if n == 1 else base.with_name(f"{base.name}.worker-{n}")
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return DirectoryClaim(directory, n, fd)
    raise AssertionError("unreachable")


class LocalStore(Protocol):
    slot: int  # 1, or n > 1 when n − 1 other live workers on this host hold the directories before it

    def load(self, partition: int) -> tuple[dict[str, bytes], int]:
        """(values by key, checkpoint offset or -1 when there is nothing local)."""
        ...

    def apply(self, partition: int, changes: dict[str, bytes | None], checkpoint: int) -> None: ...

    def discard(self, partition: int) -> None: ...

    def release(self, partition: int) -> None:
        """Close the partition's local database (revoked: another worker may take it)."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    slot = 1

    def load(self, partition: int) -> tuple[dict[str, bytes], int]:
        return {}, -1

    def apply(self, partition: int, changes: dict[str, bytes | None], checkpoint: int) -> None:
        return None

    def discard(self, partition: int) -> None:
        return None

    def release(self, partition: int) -> None:
        return None

    def close(self) -> None:
        return None


class RocksdictStore:
    def __init__(self, claim: DirectoryClaim) -> None:
        from rocksdict import Rdict  # imported here: only production workers need the native library

        self._rdict_cls = Rdict
        self._claim = claim
        self._released = False
        self.slot = claim.slot
        self.directory = claim.directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._dbs: dict[int, object] = {}

    def _db(self, partition: int):  # type: ignore[no-untyped-def]
        db = self._dbs.get(partition)
        if db is None:
            from rocksdict import Options

            db = self._rdict_cls(str(self.directory / f"partition-{partition}"), options=Options(raw_mode=True))
            self._dbs[partition] = db
        return db

    def load(self, partition: int) -> tuple[dict[str, bytes], int]:
        db = self._db(partition)
        values: dict[str, bytes] = {}
        checkpoint = -1
        for key, value in db.items():
            if key == CHECKPOINT_KEY:
                checkpoint = int(value)
            else:
                values[key.decode()] = value
        return values, checkpoint

    def apply(self, partition: int, changes: dict[str, bytes | None], checkpoint: int) -> None:
        from rocksdict import WriteBatch

        db = self._db(partition)
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key.encode())
            else:
                batch.put(key.encode(), value)
        batch.put(CHECKPOINT_KEY, str(checkpoint).encode())
        db.write(batch)  # type: ignore[attr-defined]

    def release(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()  # type: ignore[attr-defined]

    def discard(self, partition: int) -> None:
        self.release(partition)
        shutil.rmtree(self.directory / f"partition-{partition}", ignore_errors=True)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()  # type: ignore[attr-defined]
        self._dbs.clear()
        if not self._released:
            self._released = True
            os.close(self._claim.lock_fd)


def open_store(url: str, data_dir: str, app_id: str) -> LocalStore:
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("rocksdict://"):
        return RocksdictStore(claim_directory(Path(data_dir) / app_id))
    raise ValueError(f"unknown worker.store {url!r}: use rocksdict:// or memory://")
