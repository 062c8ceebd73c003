"""Seeded Rademacher random projection (Johnson–Lindenstrauss), generated block by block.

A gradient ``g ∈ R^D`` becomes ``g @ P ∈ R^d`` with ``P = S / √d`` and ``S ∈ {−1, +1}^{D×d}``.
``S`` is never held whole (``D × d`` is 18 GB for the toy world's rank-128 adapter at
``d = 8192``): it is cut into blocks of :data:`BLOCK_ROWS` rows, and block ``b`` is generated
from its own seed ``SeedSequence([seed, b])`` by numpy's PCG64 on the CPU. So the same seed
gives the same matrix on every device, in every process, for every batch split; the layout is
versioned by :data:`PROJECTION_FORMAT` and pinned by a golden-value test.

Bit ``i`` of byte ``j`` of a block's random bytes gives element ``8j + i`` of the row-major
block padded to a multiple of 64 columns: 1 → +1, 0 → −1. Expanding bits to floats goes
through a 256-entry table of 8 signs packed in an int64, about 2.6 G elements/s on one core.

Blocks are generated on the CPU, moved to the projection device, and kept there while they
fit in ``cache_bytes``; the rest are regenerated on every call. Column blocks of the input that
are zero in every row (the A-gradients of a fresh adapter, whose B is zero) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROJECTION_FORMAT = 1  # bump when the way S is generated changes: features of different formats never mix
BLOCK_ROWS = 1024  # rows of S per seeded block: 32 MiB of float32 at d = 8192

# _SIGNS[v] holds the 8 signs of byte v (bit i → sign i), as 8 int8 packed in one int64
_SIGNS = np.array([[1 if (v >> i) & 1 else -1 for i in range(8)] for v in range(256)], dtype=np.int8).view(np.int64)


def block_seed(seed: int, block: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(block)])


def rademacher_block(seed: int, block: int, rows: int, cols: int) -> np.ndarray:
    """Rows ``[block·BLOCK_ROWS, block·BLOCK_ROWS + rows)`` of ``S`` as an int8 ``[rows, cols]`` array of ±1.

    Always generates the full block and slices it, so a short last block equals the head of
    the full one.
    """
    width = -(-cols // 64) * 64  # pad each row to whole 64-bit words
    raw = np.random.Generator(np.random.PCG64(block_seed(seed, block))).bytes(BLOCK_ROWS * width // 8)
    signs = _SIGNS[np.frombuffer(raw, dtype=np.uint8)].view(np.int8).reshape(BLOCK_ROWS, width)
    return signs[:rows, :cols]


@dataclass
class ProjectionStats:
    """Where projection time goes (seconds), for benchmarks; reset with :meth:`RademacherProjector.reset_stats`."""

    generate_s: float = 0.0  # generating and moving blocks of S
    matmul_s: float = 0.0  # the batched matmuls
    flops: float = 0.0  # 2 · rows · block rows · d per matmul
    blocks_generated: int = 0
    blocks_skipped: int = 0


class RademacherProjector:
    """Projects ``[n, in_dim]`` tensors to ``[n, out_dim]`` with the seeded matrix ``S / √out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, device=None, cache_bytes: int | None = None):
        import torch

        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"projection dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim, self.seed = int(in_dim), int(out_dim), int(seed)
        self.device = torch.device(device or "cpu")
        if cache_bytes is None:
            cache_bytes = _default_cache_bytes(self.device)
        self.cache_bytes = int(cache_bytes)
        self.n_blocks = -(-self.in_dim // BLOCK_ROWS)
        self._cache: dict[int, object] = {}
        self._cached_bytes = 0
        self._scratch = None  # the block buffer used when a block is not cached; valid until the next block()
        self.stats = ProjectionStats()

    def reset_stats(self) -> None:
        self.stats = ProjectionStats()

    def block(self, b: int):
        """Block ``b`` of ``S`` (unscaled ±1) as float32 on the projection device.

        A block that is not cached lives in a scratch buffer that the next call overwrites.
        """
        import time

        import torch

        hit = self._cache.get(b)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        rows = min(BLOCK_ROWS, self.in_dim - b * BLOCK_ROWS)
        signs = torch.from_numpy(rademacher_block(self.seed, b, rows, self.out_dim))
        nbytes = rows * self.out_dim * 4
        keep = self._cached_bytes + nbytes <= self.cache_bytes
        if keep:
            out = torch.empty((rows, self.out_dim), dtype=torch.float32, device=self.device)
            self._cache[b] = out
            self._cached_bytes += nbytes
        else:  # reuse one scratch block: a fresh 32 MiB allocation per block costs page faults
            if self._scratch is None:
                self._scratch = torch.empty((BLOCK_ROWS, self.out_dim), dtype=torch.float32, device=self.device)
            out = self._scratch[:rows]
        out.copy_(signs)  # int8 → float32 (and host → device) in one pass
        self.stats.generate_s += time.perf_counter() - t0
        self.stats.blocks_generated += 1
        return out

    def project(self, x):
        """``x @ S / √d`` for ``x`` of shape ``[n, in_dim]`` (float32, on any device): ``[n, out_dim]`` float32."""
        import time

        import torch

        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected an [n, {self.in_dim}] tensor, got {tuple(x.shape)}")
        x = x.to(device=self.device, dtype=torch.float32)
        out = torch.zeros((x.shape[0], self.out_dim), dtype=torch.float32, device=self.device)
        if x.shape[0] == 0:
            return out
        # blocks of x that are zero in every row contribute nothing: one cheap pass finds them
        nonzero = (x != 0).any(dim=0)
        pad = self.n_blocks * BLOCK_ROWS - self.in_dim
        live = torch.nn.functional.pad(nonzero, (0, pad)).view(self.n_blocks, BLOCK_ROWS).any(dim=1).tolist()
        for b, is_live in enumerate(live):
            if not is_live:
                self.stats.blocks_skipped += 1
                continue
            s = self.block(b)
            lo = b * BLOCK_ROWS
            xb = x[:, lo : lo + s.shape[0]]  # [n, rows]
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            out.addmm_(xb, s)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.stats.matmul_s += time.perf_counter() - t0
            self.stats.flops += 2.0 * x.shape[0] * s.shape[0] * self.out_dim
        out.mul_(1.0 / math.sqrt(self.out_dim))
        return out


def _default_cache_bytes(device) -> int:
    """Half the free memory of a GPU; 2 GiB of host memory on a CPU."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return 2 << 30
