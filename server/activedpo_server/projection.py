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

Why one module of this length: the three kinds (``sjlt``, ``kron``, ``dense``) and the Rademacher blocks share
the LoRA matrix layout and the seeding scheme that makes every device and batch split agree.
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


# ---- projections of LoRA gradients, by kind -----------------------------------------------------

PROJECTIONS = ("sjlt", "kron", "dense")
_P = 2_147_483_647  # the Mersenne prime 2³¹ − 1: hashes are polynomials mod p, exact in int64 on any device


@dataclass(frozen=True)
class LoraMatrix:
    """Where one LoRA weight's per-example gradient sits in the flat gradient, and its shape.

    ``rank_axis`` is the axis of length r: 0 for ``lora_A`` ([r, in]), 1 for ``lora_B`` ([out, r]).
    """

    offset: int
    rows: int
    cols: int
    rank_axis: int

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @property
    def rank(self) -> int:
        return self.rows if self.rank_axis == 0 else self.cols

    @property
    def long(self) -> int:
        return self.cols if self.rank_axis == 0 else self.rows


def _poly_hash(seed: int, stream: int, n: int, degree: int = 4):
    """``h(i) mod p`` for ``i < n``, a random polynomial of ``degree − 1`` over GF(p): ``degree``-wise independent.

    Coefficients come from ``SeedSequence([seed, stream])``; evaluation is exact int64 arithmetic on
    the CPU (every product stays below 2⁶²), so any device gets the same values.
    """
    import torch

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(stream)])))
    coef = rng.integers(1, _P, degree)
    i = torch.arange(n, dtype=torch.int64)
    h = torch.full((n,), int(coef[0]), dtype=torch.int64)
    for c in coef[1:]:
        h = (h * i + int(c)) % _P
    return h


class Projection:
    """Projects per-example LoRA gradients to ``out_dim``: from full gradients (``project``), or, where
    ``factored``, from each matrix's per-token factors without forming the gradient (``add``)."""

    kind: str
    factored: bool

    def __init__(self, matrices: list[LoraMatrix], out_dim: int, seed: int = 0, device=None):
        import torch

        if out_dim < 1 or not matrices:
            raise ValueError(f"a projection needs LoRA matrices and a positive dimension, got out_dim={out_dim}")
        self.matrices, self.out_dim, self.seed = list(matrices), int(out_dim), int(seed)
        self.in_dim = sum(m.size for m in self.matrices)
        self.device = torch.device(device or "cpu")

    def key(self) -> str:
        return self.kind

    def state_bytes(self) -> int:
        """Memory the projection holds between calls (its seeded matrices or hashes)."""
        return 0

    def new(self, n: int):
        import torch

        return torch.zeros((n, self.out_dim), dtype=torch.float32, device=self.device)

    def add(self, acc, m: int, left, right) -> None:
        """``acc += projection of Σ_t left_t right_tᵀ`` (matrix ``m``'s gradient; left ``[b, T, rows]``,
        right ``[b, T, cols]``)."""
        raise NotImplementedError

    def project(self, x):
        """Project full per-example gradients ``[n, in_dim]`` (the reference path; every kind has it)."""
        acc = self.new(x.shape[0])
        x = x.to(device=self.device, dtype=acc.dtype)
        for k, m in enumerate(self.matrices):
            g = x[:, m.offset : m.offset + m.size].view(-1, m.rows, m.cols)
            self._add_full(acc, k, g)
        return acc

    def _add_full(self, acc, m: int, g) -> None:
        raise NotImplementedError


class SparseSketch(Projection):
    """A sparse JL sketch (CountSketch: one ±1 per coordinate) hashed along each LoRA matrix's factors.

    Every matrix's gradient is read as ``G_m`` of shape ``[long, r]`` (``lora_B``: out × r;
    ``lora_A`` transposed: in × r), its r rank columns dealt into ``groups`` groups (column j to
    group j mod groups). Coordinate ``(i, j)`` lands in bucket ``h_{m,g(j)}(i)·r + j`` of the output, viewed as an
    ``[out_dim / r, r]`` grid, with sign ``s_{m,g(j)}(i)·c_m(j)``; ``h``, ``s`` and ``c`` are 4-wise
    independent hashes seeded by ``(seed, m, group)``. The bucket of a coordinate depends on its
    row and its column group only, so the sketch applies to the factors before the token sum:

        sketch_{m,g} = Σ_t (C_{m,g} a_t) (b_t[cols of g] ∘ c_m)ᵀ,   C_{m,g}: [out_dim / r, long] signed buckets,

    with ``a_t`` the long factor (δ_t for B, x_t for A) and ``b_t`` the rank-r one (u_t = A x_t,
    Bᵀδ_t): per token the cost is O(groups · long) for the ``C a_t`` and O(out_dim) for the outer
    products. Where a batch has more than r / groups tokens, forming one matrix's gradient (a
    batched matmul) and hashing its long · r entries is cheaper, and gives the same sketch; either
    way only one matrix's gradient exists at a time, never the [n, D] whole. The state is the
    hashes, O(groups · Σ long) integers. Two coordinates in one column group collide with probability r / out_dim (in
    different groups or columns: never); against CountSketch's 1 / out_dim for every pair, the
    extra variance comes from rows that share a bucket across all columns of a group, and shrinks
    as the groups get narrower (``groups = r`` is CountSketch itself). 8 groups measured at the
    dense-vs-dense yardstick in ``benchmarks/projection.py``. Not scaled: CountSketch keeps squared
    norms in expectation.
    """

    kind = "sjlt"
    factored = True

    def __init__(self, matrices, out_dim, seed=0, device=None, groups: int = 8):
        import torch

        super().__init__(matrices, out_dim, seed, device)
        ranks = {m.rank for m in self.matrices}
        if len(ranks) != 1:
            raise ValueError(f"the sjlt projection needs one LoRA rank for every layer, got {sorted(ranks)}")
        self.r = ranks.pop()
        if self.out_dim % self.r or self.out_dim < self.r:
            raise ValueError(f"the sjlt projection needs a dimension that is a multiple of the LoRA rank {self.r}, "
                             f"got {self.out_dim}; use e.g. {max(1, self.out_dim // self.r) * self.r}")  # fmt: skip
        self.groups = math.gcd(self.r, max(1, int(groups)))  # rank column j is in group j mod groups
        self.width = self.r // self.groups
        self.buckets = self.out_dim // self.r
        # per matrix, over (group, row) flattened: 2·(g·buckets + h_g(i)) + [s_g(i) = −1], so that one index_add
        # of the unsigned values into 2·groups·buckets slots, then even − odd slots, hashes every group at once
        self.index, self.col = [], []
        streams = 2 * self.groups + 1
        for k, m in enumerate(self.matrices):
            base = streams * k
            offsets = torch.arange(self.groups).repeat_interleave(m.long) * self.buckets
            bucket = torch.cat([_poly_hash(self.seed, base + 2 * g, m.long) % self.buckets for g in range(self.groups)])
            neg = torch.cat([1 - _poly_hash(self.seed, base + 2 * g + 1, m.long) % 2 for g in range(self.groups)])
            col = _poly_hash(self.seed, base + 2 * self.groups, m.rank) % 2
            self.index.append((2 * (offsets + bucket) + neg).to(self.device))
            self.col.append((col.float() * 2 - 1).to(self.device))

    def key(self) -> str:
        return f"sjlt(groups={self.groups})"

    def buckets_of(self, m: int):
        """``h_g(i)`` for every group g and row i of matrix ``m``: ``[groups, long]``."""
        return (self.index[m].view(self.groups, -1) // 2) % self.buckets

    def signs_of(self, m: int):
        """``s_g(i)``: ``[groups, long]`` of ±1."""
        return 1.0 - 2.0 * (self.index[m].view(self.groups, -1) % 2).float()

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in (self.index, self.col) for t in ts)

    def _hash(self, m: int, x):
        """Signed bucket sums of ``x [..., groups·long]`` (group-major) into ``[..., groups, buckets]``."""
        import torch

        lead = x.shape[:-1]
        slots = torch.zeros((*lead, 2 * self.groups * self.buckets), dtype=torch.float32, device=x.device)
        slots.index_add_(len(lead), self.index[m], x)
        return (slots[..., 0::2] - slots[..., 1::2]).view(*lead, self.groups, self.buckets)

    def _to_grid(self, acc, hashed) -> None:
        """Add ``hashed [n, width, groups, buckets]`` into the output grid ``[n, buckets, r]`` (j = w·groups + g)."""
        n = hashed.shape[0]
        acc.view(n, self.buckets, self.width, self.groups).add_(hashed.permute(0, 3, 1, 2))

    def add(self, acc, m: int, left, right) -> None:
        import torch

        long_f, rank_f = (left, right) if self.matrices[m].rank_axis == 1 else (right, left)
        signed = rank_f.float() * self.col[m]  # [b, T, r]
        b, t = signed.shape[:2]
        if t * self.groups > self.r:  # long sequences: form Gᵀ = Σ_t signed_t long_tᵀ once and hash its long·r entries
            gt = torch.bmm(signed.transpose(1, 2), long_f.float())  # [b, r, long] = [b, width, groups, long]
            self._to_grid(acc, self._hash(m, gt.view(b, self.width, -1)))
            return
        hashed = self._hash(m, long_f.float().repeat(1, 1, self.groups))  # [b, T, groups, buckets]
        outer = torch.einsum("btgk,btwg->bwgk", hashed, signed.view(b, t, self.width, self.groups))
        self._to_grid(acc, outer)

    def _add_full(self, acc, m: int, g_full) -> None:
        n = g_full.shape[0]
        gt = g_full.transpose(1, 2) if self.matrices[m].rank_axis == 1 else g_full  # [n, r, long]
        gt = (gt.float() * self.col[m][:, None]).reshape(n, self.width, -1)  # [n, width, groups·long]
        self._to_grid(acc, self._hash(m, gt))


class KroneckerProjection(Projection):
    """LoGra's factorized projection: each matrix's gradient G (rows × cols) becomes ``P G Qᵀ / √(k₁k₂)``
    with seeded ±1 matrices ``P`` (k₁ × rows) and ``Q`` (k₂ × cols), applied to the factors:
    ``Σ_t (P a_t)(Q b_t)ᵀ``.

    The split: every matrix gets an equal share ``d_m = out_dim // M`` of the output (M matrices;
    the first ``out_dim mod M`` get one more), and ``k₁ = min(rows, ⌊√d_m⌋)``, ``k₂ = min(cols, ⌊d_m / k₁⌋)``;
    the ``d_m − k₁k₂`` dims left over stay zero. Features are concatenated in matrix order.
    """

    kind = "kron"
    factored = True

    def __init__(self, matrices, out_dim, seed=0, device=None):
        import torch

        super().__init__(matrices, out_dim, seed, device)
        n = len(self.matrices)
        if self.out_dim < n:
            raise ValueError(f"the kron projection needs at least one dimension per LoRA matrix ({n}), "
                             f"got {self.out_dim}")  # fmt: skip
        self.blocks = []  # per matrix: (offset in the output, P [k1, rows], Q [k2, cols], scale)
        offset = 0
        for k, m in enumerate(self.matrices):
            share = self.out_dim // n + (1 if k < self.out_dim % n else 0)
            k1 = max(1, min(m.rows, math.isqrt(share)))
            k2 = max(1, min(m.cols, share // k1))
            p = torch.from_numpy(rademacher_block(self.seed * 2 + 1, 2 * k, k1, m.rows).astype(np.float32))
            q = torch.from_numpy(rademacher_block(self.seed * 2 + 1, 2 * k + 1, k2, m.cols).astype(np.float32))
            self.blocks.append((offset, p.to(self.device), q.to(self.device), 1.0 / math.sqrt(k1 * k2)))
            offset += share

    def state_bytes(self) -> int:
        return sum(p.numel() * 4 + q.numel() * 4 for _, p, q, _ in self.blocks)

    def add(self, acc, m: int, left, right) -> None:
        import torch

        offset, p, q, scale = self.blocks[m]
        pa = left.float() @ p.T  # [b, T, k1]
        qb = right.float() @ q.T  # [b, T, k2]
        out = torch.bmm(pa.transpose(1, 2), qb)  # [b, k1, k2]
        acc[:, offset : offset + out.shape[1] * out.shape[2]] += out.flatten(1) * scale

    def _add_full(self, acc, m: int, g) -> None:
        offset, p, q, scale = self.blocks[m]
        out = p @ g.float() @ q.T  # [n, k1, k2]
        acc[:, offset : offset + out.shape[1] * out.shape[2]] += out.flatten(1) * scale


class DenseProjection(Projection):
    """The dense Rademacher reference (:class:`RademacherProjector`) on the full gradient; not factored."""

    kind = "dense"
    factored = False

    def __init__(self, matrices, out_dim, seed=0, device=None, cache_bytes: int | None = None):
        super().__init__(matrices, out_dim, seed, device)
        self.projector = RademacherProjector(self.in_dim, self.out_dim, self.seed, self.device, cache_bytes)

    def key(self) -> str:
        return f"dense(fmt={PROJECTION_FORMAT})"

    def state_bytes(self) -> int:
        return self.projector._cached_bytes

    def project(self, x):
        return self.projector.project(x)


def make_projection(kind: str, matrices: list[LoraMatrix], out_dim: int, seed: int = 0, device=None,
                    cache_bytes: int | None = None) -> Projection:  # fmt: skip
    """The projection called ``kind`` (``sjlt``, ``kron`` or ``dense``) for these LoRA matrices."""
    if kind == "sjlt":
        return SparseSketch(matrices, out_dim, seed, device)
    if kind == "kron":
        return KroneckerProjection(matrices, out_dim, seed, device)
    if kind == "dense":
        return DenseProjection(matrices, out_dim, seed, device, cache_bytes)
    raise ValueError(f"unknown projection {kind!r}; choose one of {', '.join(PROJECTIONS)}")
