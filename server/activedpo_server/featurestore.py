"""Per-checkpoint feature indexes: FAISS ``IndexIDMap2`` over a flat inner-product index.

Rows are stored as float32 (``IndexFlatIP``) or, with ``dtype="float16"``, as half precision
(``IndexScalarQuantizer`` with ``QT_fp16``): half the memory and disk, features read back as
float32 with a relative error around 1e-3.

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

from activedpo_core.atomic import atomic_write
from activedpo_server.errors import ResourceExhausted, is_disk_full

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")


class FeatureStore:
    """Features of responses under one feature key, persisted in ``directory``."""

    def __init__(self, directory: str | Path, key: str, dim: int, dtype: str = "float32"):
        import faiss

        if dtype not in DTYPES:
            raise ValueError(f"feature storage dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key, self.dim, self.dtype = key, int(dim), dtype
        stem = hashlib.sha256((key if dtype == "float32" else f"{key}|{dtype}").encode()).hexdigest()[:24]
        self.path = self.dir / f"{stem}.faiss"
        self.meta_path = self.dir / f"{stem}.json"
        self.index = None
        if self.path.exists():
            try:
                meta = json.loads(self.meta_path.read_text())
                if meta.get("key") != key or int(meta.get("dim", -1)) != self.dim:
                    raise ValueError("written for another feature key")
                if meta.get("dtype", "float32") != dtype:
                    raise ValueError(f"stored as {meta.get('dtype')}, not {dtype}")
                self.index = faiss.read_index(str(self.path))
                if self.index.d != self.dim:
                    raise ValueError(f"dimension {self.index.d} != {self.dim}")
            except (OSError, ValueError, RuntimeError) as e:
                log.warning("feature index %s is unusable (%s); its features will be recomputed", self.path, e)
                self.index = None
        if self.index is None:
            if dtype == "float16":
                inner = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
            else:
                inner = faiss.IndexFlatIP(self.dim)
            self.index = faiss.IndexIDMap2(inner)
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

    def view(self, ids) -> FeatureView:
        """Features of ``ids`` without copying them out of the index: an ``[n, dim]`` array-like whose
        row gathers (``view[idx]``) read the index's storage directly. Valid while the store is not
        modified (the engine adds features only under its selection lock, before taking a view)."""
        import faiss

        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        stored = faiss.vector_to_array(self.index.id_map)  # position → id
        order = np.argsort(stored, kind="stable")
        at = np.searchsorted(stored, ids, sorter=order)
        at = np.minimum(at, len(stored) - 1) if len(stored) else at
        if not len(stored) or (stored[order[at]] != ids).any():
            absent = ids if not len(stored) else ids[stored[order[at]] != ids]
            raise KeyError(f"no features for response rows {absent[:5].tolist()}")
        inner = faiss.downcast_index(self.index.index)
        raw = faiss.rev_swig_ptr(inner.codes.data(), inner.codes.size())  # uint8 view, no copy
        codes = raw.view(np.float16 if self.dtype == "float16" else np.float32).reshape(-1, self.dim)
        return FeatureView(codes, order[at], self)

    def save(self) -> None:
        """Write the index and its sidecar atomically; a crash leaves the previous files."""
        import faiss

        if not self.dirty:
            return
        meta = json.dumps({"key": self.key, "dim": self.dim, "dtype": self.dtype})
        try:
            atomic_write(self.path, lambda tmp: faiss.write_index(self.index, str(tmp)))
            atomic_write(self.meta_path, lambda tmp: tmp.write_text(meta))
        except (OSError, RuntimeError) as e:  # faiss reports a failed write as a RuntimeError naming errno
            if is_disk_full(e) or any(s in str(e) for s in ("No space left", "File too large", "quota exceeded")):
                raise ResourceExhausted(f"the disk of the feature store {self.path.parent} is full: {self.path.name} "
                                        f"could not be written; free space, then retry") from None  # fmt: skip
            raise
        self.dirty = False


class FeatureView:
    """Rows of a :class:`FeatureStore` read in place: ``view[idx]`` gathers float32 rows by position.

    Holds the store, so the index's memory outlives the view; never copies more than is gathered.
    """

    def __init__(self, codes: np.ndarray, positions: np.ndarray, owner: FeatureStore):
        self._codes, self._pos, self._owner = codes, positions, owner
        self.shape = (len(positions), codes.shape[1])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2
        self.nbytes = codes[:0].itemsize * codes.shape[1] * len(positions)  # what these rows occupy in the index

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        return np.asarray(self._codes[self._pos[idx]], dtype=np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype, copy=False)
