"""The seeded block-wise Rademacher projection."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from activedpo_server.projection import BLOCK_ROWS, RademacherProjector, rademacher_block


def full_matrix(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """S assembled from its blocks (only for small test sizes)."""
    blocks = [
        rademacher_block(seed, b, min(BLOCK_ROWS, in_dim - b * BLOCK_ROWS), out_dim)
        for b in range(-(-in_dim // BLOCK_ROWS))
    ]
    return np.concatenate(blocks).astype(np.float64)


def test_golden_values_pin_the_format():
    # changing how S is generated changes every stored feature: bump PROJECTION_FORMAT with it
    assert rademacher_block(0, 0, 3, 16).tolist() == [
        [1, 1, 1, 1, 1, -1, 1, -1, -1, 1, -1, -1, -1, -1, -1, 1],
        [1, -1, -1, -1, -1, 1, -1, -1, 1, 1, 1, -1, 1, -1, 1, 1],
        [-1, -1, -1, 1, 1, 1, -1, 1, -1, -1, -1, 1, -1, 1, 1, 1],
    ]
    block = rademacher_block(7, 3, BLOCK_ROWS, 100)
    assert int(block.sum()) == -68 and block[-1, :10].tolist() == [-1, 1, -1, 1, 1, 1, 1, -1, -1, -1]


def test_blocks_are_signs_a_short_block_is_the_head_of_the_full_one_and_seeds_differ():
    full = rademacher_block(1, 2, BLOCK_ROWS, 72)
    assert set(np.unique(full).tolist()) == {-1, 1}
    assert abs(full.mean()) < 0.02
    np.testing.assert_array_equal(rademacher_block(1, 2, 10, 72), full[:10])
    assert (rademacher_block(1, 3, 10, 72) != full[:10]).any()
    assert (rademacher_block(2, 2, 10, 72) != full[:10]).any()


def test_projection_equals_the_assembled_matrix_product():
    rng = np.random.default_rng(0)
    in_dim, out_dim = 2 * BLOCK_ROWS + 77, 48
    x = rng.normal(size=(5, in_dim)).astype(np.float32)
    got = RademacherProjector(in_dim, out_dim, seed=3).project(torch.from_numpy(x)).numpy()
    want = x.astype(np.float64) @ full_matrix(in_dim, out_dim, 3) / np.sqrt(out_dim)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_batch_splits_caching_and_zero_blocks_do_not_change_the_result():
    rng = np.random.default_rng(1)
    in_dim, out_dim = 3 * BLOCK_ROWS, 256
    x = torch.from_numpy(rng.normal(size=(7, in_dim)).astype(np.float32))
    x[:, BLOCK_ROWS : 2 * BLOCK_ROWS] = 0  # a block that is zero in every row is skipped

    cached = RademacherProjector(in_dim, out_dim, seed=5, cache_bytes=1 << 30)
    whole = cached.project(x)
    assert cached.stats.blocks_skipped == 1 and cached.stats.blocks_generated == 2
    again = cached.project(x)  # served from the cache: nothing generated
    assert cached.stats.blocks_generated == 2
    torch.testing.assert_close(again, whole, rtol=0, atol=0)

    uncached = RademacherProjector(in_dim, out_dim, seed=5, cache_bytes=0)
    split = torch.cat([uncached.project(x[:3]), uncached.project(x[3:])])
    assert not uncached._cache  # nothing kept: the whole matrix is never held
    rel = (split - whole).norm(dim=1) / whole.norm(dim=1)
    assert rel.max().item() <= 1e-5


def test_inner_products_of_unit_vectors_survive_at_d_8192():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 3000))
    x[10:] = 0.6 * x[:10] + 0.8 * x[10:]  # some correlated pairs, not only near-orthogonal ones
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = RademacherProjector(3000, 8192, seed=0).project(torch.from_numpy(x.astype(np.float32))).double().numpy()
    assert np.abs(y @ y.T - x @ x.T).max() <= 0.05


def test_same_seed_gives_the_same_features_in_another_process():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 1500)).astype(np.float32)
    here = RademacherProjector(1500, 64, seed=11).project(torch.from_numpy(x)).numpy()
    code = (
        "import sys, numpy as np, torch\n"
        "from activedpo_server.projection import RademacherProjector\n"
        "x = np.frombuffer(sys.stdin.buffer.read(), dtype=np.float32).reshape(2, 1500)\n"
        "y = RademacherProjector(1500, 64, seed=11).project(torch.from_numpy(x.copy())).numpy()\n"
        "sys.stdout.buffer.write(y.tobytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=x.tobytes(), capture_output=True, check=True).stdout
    there = np.frombuffer(out, dtype=np.float32).reshape(2, 64)
    np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_rejected():
    p = RademacherProjector(10, 4)
    with pytest.raises(ValueError, match=r"expected an \[n, 10\] tensor"):
        p.project(torch.zeros(3, 11))
    with pytest.raises(ValueError, match="must be positive"):
        RademacherProjector(0, 4)
    assert p.project(torch.zeros(0, 10)).shape == (0, 4)


# ---- projection kinds on LoRA gradients ---------------------------------------------------------

from activedpo_server.projection import (  # noqa: E402
    KroneckerProjection,
    LoraMatrix,
    SparseSketch,
    _poly_hash,
    make_projection,
)

# two LoRA layers of rank 4: A [4, 6], B [10, 4], A [4, 10], B [6, 4]
MATRICES = [LoraMatrix(0, 4, 6, 0), LoraMatrix(24, 10, 4, 1), LoraMatrix(64, 4, 10, 0), LoraMatrix(104, 6, 4, 1)]
D = 128


def factors(seed=0, b=3, t=5):
    """Per-token factors of every matrix and the per-example gradients they sum to: G = Σ_t left_t right_tᵀ."""
    g = torch.Generator().manual_seed(seed)
    fs = [(torch.randn(b, t, m.rows, generator=g), torch.randn(b, t, m.cols, generator=g)) for m in MATRICES]
    full = torch.cat([torch.bmm(left.transpose(1, 2), right).flatten(1) for left, right in fs], dim=1)
    return fs, full


def test_sjlt_golden_values_pin_the_hashes():
    # changing the hash changes every stored sjlt feature: bump PROJECTION_FORMAT with it
    assert _poly_hash(0, 0, 4).tolist() == GOLDEN_HASH
    p = SparseSketch(MATRICES, 16, seed=0)
    assert p.buckets_of(1)[0].tolist() == GOLDEN_BUCKETS and p.signs_of(1)[0, :5].tolist() == GOLDEN_SIGNS
    x = torch.arange(128, dtype=torch.float32).unsqueeze(0) / 100
    assert [round(v, 4) for v in p.project(x)[0, :6].tolist()] == GOLDEN_SJLT


def test_kron_golden_values_pin_its_factors():
    x = torch.arange(128, dtype=torch.float32).unsqueeze(0) / 100
    assert [round(v, 4) for v in KroneckerProjection(MATRICES, 16, seed=0).project(x)[0, :6].tolist()] == GOLDEN_KRON


def test_sjlt_is_a_countsketch_whose_bucket_keeps_the_rank_column():
    p = SparseSketch(MATRICES, 16, seed=3, groups=2)  # r = 4: columns 0, 2 in group 0 and 1, 3 in group 1
    s = torch.stack([p.project(torch.eye(128)[i : i + 1])[0] for i in range(128)])  # the sketch matrix, row by row
    assert ((s != 0).sum(1) == 1).all() and set(s[s != 0].tolist()) == {-1.0, 1.0}  # one ±1 per coordinate
    m = MATRICES[1]  # B [10, 4]: coordinate (i, j) lands in bucket h_{g(j)}(i)·r + j
    where = s[m.offset : m.offset + m.size].abs().argmax(1).view(10, 4)
    assert (where % 4 == torch.arange(4)).all()
    rows = where // 4
    assert (rows[:, 0] == rows[:, 2]).all() and (rows[:, 1] == rows[:, 3]).all()  # one row hash per group
    assert rows[:, 0].tolist() == p.buckets_of(1)[0].tolist() and rows[:, 1].tolist() == p.buckets_of(1)[1].tolist()
    assert (rows[:, 0] != rows[:, 1]).any()  # the groups hash rows independently


@pytest.mark.parametrize(("kind", "tokens"), [("sjlt", 1), ("sjlt", 5), ("kron", 5)])
def test_factored_projection_equals_the_projection_of_the_formed_gradient(kind, tokens):
    # sjlt hashes the factors token by token while tokens · groups ≤ r (here 1 · 4), else one matrix's G at a time
    fs, full = factors(t=tokens)
    p = make_projection(kind, MATRICES, D, seed=1)
    acc = p.new(3)
    for k, (left, right) in enumerate(fs):
        p.add(acc, k, left, right)
    torch.testing.assert_close(acc, p.project(full), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["sjlt", "kron", "dense"])
def test_every_kind_is_linear_split_independent_and_seeded(kind):
    _, full = factors(b=5)
    p = make_projection(kind, MATRICES, D, seed=2)
    whole = p.project(full)
    parts = torch.cat([p.project(full[:2]), p.project(full[2:])])
    torch.testing.assert_close(whole, parts)
    torch.testing.assert_close(p.project(2 * full[:1] - full[1:2]), 2 * whole[:1] - whole[1:2], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(make_projection(kind, MATRICES, D, seed=3).project(full), whole)


@pytest.mark.parametrize("kind", ["sjlt", "kron"])
def test_norms_are_kept_in_expectation(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 128, generator=g)
    norms = [make_projection(kind, MATRICES, D, seed=s).project(x).norm().item() ** 2 for s in range(300)]
    assert abs(np.mean(norms) / x.norm().item() ** 2 - 1) < 0.1


def test_kron_splits_d_equally_and_documents_the_leftover():
    p = KroneckerProjection(MATRICES, 50, seed=0)  # 4 matrices: shares 13, 13, 12, 12
    shapes = [(off, left.shape[0], right.shape[0]) for off, left, right, _ in p.blocks]
    assert [s[0] for s in shapes] == [0, 13, 26, 38]
    assert [(k1, k2) for _, k1, k2 in shapes] == [(3, 4), (3, 4), (3, 4), (3, 4)]


def test_projections_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match=r"multiple of the LoRA rank 4, got 30; use e\.g\. 28"):
        SparseSketch(MATRICES, 30)
    with pytest.raises(ValueError, match=r"one LoRA rank for every layer, got \[4, 8\]"):
        SparseSketch([*MATRICES, LoraMatrix(128, 8, 3, 0)], 64)
    with pytest.raises(ValueError, match=r"at least one dimension per LoRA matrix \(4\), got 3"):
        KroneckerProjection(MATRICES, 3)
    with pytest.raises(ValueError, match="unknown projection 'gauss'; choose one of sjlt, kron, dense"):
        make_projection("gauss", MATRICES, 16)


def test_sjlt_is_the_same_in_another_process():
    _, full = factors()
    here = make_projection("sjlt", MATRICES, 16, seed=4).project(full).numpy()
    code = (
        "import sys, numpy as np, torch\n"
        "sys.path.insert(0, 'tests/unit/server')\n"
        "from test_projection import MATRICES, factors\n"
        "from activedpo_server.projection import make_projection\n"
        "np.save(sys.argv[1], make_projection('sjlt', MATRICES, 16, seed=4).project(factors()[1]).numpy())\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", code, f"{tmp}/x.npy"], check=True)
        np.testing.assert_array_equal(np.load(f"{tmp}/x.npy"), here)


GOLDEN_KRON = [0.82, 0.06, 0.0, 0.0, -0.68, 0.68]
GOLDEN_HASH = [579362556, 576618915, 1384912690, 1079551683]
GOLDEN_BUCKETS = [0, 2, 3, 3, 3, 0, 0, 0, 3, 1]
GOLDEN_SIGNS = [-1.0, -1.0, -1.0, -1.0, -1.0]
GOLDEN_SJLT = [4.9, 0.7, -2.11, 4.29, 0.64, 0.57]
