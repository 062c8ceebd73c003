"""Per-checkpoint feature indexes: FAISS ``IndexIDMap2`` over a flat inner-product index.

One index per feature key (checkpoint id + projection settings, see
:attr:`~activedpo_server.features.GradientFeaturizer.feature_key`), holding one row per response,
keyed by the response's row id in the state database. Features are derived data: an index file
is written atomically (temp file + rename), and one that is missing, unreadable or written for
another key is started afresh and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from activedpo_server.store import atomic_write

log = logging.getLogger(__name__)


class FeatureStore:
    """Features of responses under one feature key, persisted in ``directory``."""

    def __init__(self, directory: str | Path, key: str, dim: int):
        import faiss

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.dim = key, int(dim)
        stem = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = self.dir / f"{stem}.faiss"
        self.meta_path = self.dir / f"{stem}.json"
        self.index = None
        if self.path.exists():
            try:
                meta = json.loads(self.meta_path.read_text())
                if meta.get("key") != key or int(meta.get("dim", -1)) != self.dim:
                    raise ValueError("written for another feature key")
                self.index = faiss.read_index(str(self.path))
                if self.index.d != self.dim:
                    raise ValueError(f"dimension {self.index.d} != {self.dim}")
            except (OSError, ValueError, RuntimeError) as e:
                log.warning("feature index %s is unusable (%s); its features will be recomputed", self.path, e)
                self.index = None
        if self.index is None:
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._ids = set(faiss.vector_to_array(self.index.id_map).tolist()) if self.index.ntotal else set()
        self.dirty = False

    def __len__(self) -> int:
        return len(self._ids)

    def missing(self, ids) -> np.ndarray:
        """The ids among ``ids`` that have no features yet (in the given order, unique)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        return np.array([i for i in ids.tolist() if i not in self._ids], dtype=np.int64)

    def add(self, ids, vectors: np.ndarray) -> None:
        """Insert or replace the features of ``ids`` (upsert: FAISS itself accepts duplicate ids silently)."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected features of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        present = np.array([i for i in ids.tolist() if i in self._ids], dtype=np.int64)
        if present.size:
            self.index.remove_ids(present)
        self.index.add_with_ids(vectors, ids)
        self._ids.update(ids.tolist())
        self.dirty = True

    def get(self, ids) -> np.ndarray:
        """Features of ``ids`` (all must be present), ``[n, dim]`` float32."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        absent = [i for i in ids.tolist() if i not in self._ids]
        if absent:
            raise KeyError(f"no features for response rows {absent[:5]}")
        if not ids.size:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.index.reconstruct_batch(ids)

    def save(self) -> None:
        """Write the index and its sidecar atomically; a crash leaves the previous files."""
        import faiss

        if not self.dirty:
            return
        atomic_write(self.path, lambda tmp: faiss.write_index(self.index, str(tmp)))
        atomic_write(self.meta_path, lambda tmp: tmp.write_text(json.dumps({"key": self.key, "dim": self.dim})))
        self.dirty = False
