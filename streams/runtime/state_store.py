"""Local state stores for the processor runtime (the Kafka Streams model: local store + checkpoint).

The changelog topic is the source of truth.  A local store keeps, per partition, the latest value of
every changelog key plus a checkpoint: the changelog offset up to which it is complete.  On restart a
worker loads the local store and reads only the changelog tail after the checkpoint, instead of the
whole partition.  If the checkpoint is past the changelog's end (the topic was recreated) the local
copy is discarded.  It is written only after a transaction commits, so it never holds uncommitted state.

- ``rocksdict://`` (production): one RocksDB database per partition under
  ``<worker.data_dir>/<app_id>/<instance_id>/partition-<p>``. Each worker instance owns its directory
  through an exclusive lock (``<instance_id>.lock``, released by the OS when the process dies): a second
  worker on the same host without an instance id of its own takes ``<hostname>-2`` (its own directory
  and transactional.id) instead of crashing on the first one's RocksDB lock.
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


class StateDirLocked(RuntimeError):
    """Another live process on this host runs the same worker instance."""


@dataclass(frozen=True)
class InstanceClaim:
    instance_id: str
    directory: Path
    lock_fd: int  # held open for the process's life; closing it releases the claim


def claim_instance(base: Path, wanted: str, fixed: bool) -> InstanceClaim:
    """Lock ``<base>/<wanted>.lock``. When another process holds it: a ``fixed`` (configured) instance id
    raises ``StateDirLocked``; a defaulted one (the hostname) tries ``<wanted>-2``, ``-3``, …"""
    base.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        name = wanted if n == 1 else f"{wanted}-{n}"
        fd = os.open(base / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if fixed:
                raise StateDirLocked(f"worker instance {name!r} already runs on this host ({base / name} is locked "
                                     "by another process): give this worker an --instance-id of its own") from None
            continue
        return InstanceClaim(name, base / name, fd)
    raise AssertionError("unreachable")


class LocalStore(Protocol):
    instance_id: str  # the worker instance whose state this is (its transactional.id suffix)

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
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

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
    def __init__(self, claim: InstanceClaim) -> None:
        from rocksdict import Rdict  # imported here: only production workers need the native library

        self._rdict_cls = Rdict
        self._claim = claim
        self._released = False
        self.instance_id = claim.instance_id
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


def open_store(url: str, data_dir: str, app_id: str, instance_id: str, fixed: bool = True) -> LocalStore:
    """The worker's local store; ``instance_id`` is the wanted one (``fixed``: configured, else a default
    that a second worker on the host replaces with ``<id>-2``); the store's ``instance_id`` is the one
    it got."""
    if url.startswith("memory://"):
        return MemoryStore(instance_id)
    if url.startswith("rocksdict://"):
        return RocksdictStore(claim_instance(Path(data_dir) / app_id, instance_id, fixed))
    raise ValueError(f"unknown worker.store {url!r}: use rocksdict:// or memory://")
