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
