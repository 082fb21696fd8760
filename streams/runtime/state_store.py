"""Local state stores for the processor runtime (the Kafka Streams model: local store + checkpoint).

The changelog topic is the source of truth.  A local store keeps, per partition, the latest value of
every changelog key plus a checkpoint: the changelog offset up to which it is complete.  On restart a
worker loads the local store and reads only the changelog tail after the checkpoint, instead of the
whole partition.  If the checkpoint is past the changelog's end (the topic was recreated) the local
copy is discarded.  It is written only after a transaction commits, so it never holds uncommitted state.

- ``rocksdict://`` (production): one RocksDB database per partition under
  ``<worker.data_dir>/<app_id>/partition-<p>``.
- ``memory://`` (tests, demo): nothing is kept locally; recovery reads the whole changelog.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

CHECKPOINT_KEY = b"\x02checkpoint"


class LocalStore(Protocol):
    def load(self, partition: int) -> tuple[dict[str, bytes], int]:
        """(values by key, checkpoint offset or -1 when there is nothing local)."""
        ...

    def apply(self, partition: int, changes: dict[str, bytes | None], checkpoint: int) -> None: ...

    def discard(self, partition: int) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    def load(self, partition: int) -> tuple[dict[str, bytes], int]:
        return {}, -1

    def apply(self, partition: int, changes: dict[str, bytes | None], checkpoint: int) -> None:
        return None

    def discard(self, partition: int) -> None:
        return None

    def close(self) -> None:
        return None


class RocksdictStore:
    def __init__(self, directory: Path) -> None:
        from rocksdict import Rdict  # imported here: only production workers need the native library

        self._rdict_cls = Rdict
        self.directory = directory
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

    def discard(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()  # type: ignore[attr-defined]
        shutil.rmtree(self.directory / f"partition-{partition}", ignore_errors=True)

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()  # type: ignore[attr-defined]
        self._dbs.clear()


def open_store(url: str, data_dir: str, app_id: str) -> LocalStore:
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith("rocksdict://"):
        return RocksdictStore(Path(data_dir) / app_id)
    raise ValueError(f"unknown worker.store {url!r}: use rocksdict:// or memory://")
