"""Greedy V⁻¹ selection against the literal dense rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activedpo_server.selection import PairRows, greedy_select, greedy_select_dense, greedy_select_scored


@pytest.mark.parametrize(
    ("n", "k", "d", "lam", "budget"),
    [
        (60, 0, 8, 1.0, 10),  # no labels: V = λI
        (300, 5, 32, 0.1, 40),  # Woodbury, k < d
        (200, 31, 32, 1.0, 50),  # Woodbury at the edge
        (250, 32, 32, 1.0, 30),  # k = d: dense Cholesky
        (300, 90, 16, 10.0, 60),  # k > d: dense Cholesky
        (150, 3, 64, 1e-3, 60),  # tiny λ (below d picks: past d, tiny λ leaves scores at rounding level)
        (120, 2, 16, 1.0, 120),  # budget = N
        (400, 0, 12, 1.0, 100),  # more picks than dimensions: scores collapse towards zero
    ],
)
def test_picks_match_the_dense_rule_on_random_data(n, k, d, lam, budget):
    rng = np.random.default_rng(n + k + d)
    x = rng.normal(size=(n, d)).astype(np.float32)
    lab = rng.normal(size=(k, d)).astype(np.float32)
    picks, scores = greedy_select_scored(x, lab, budget, lam)
    dense_picks, dense_scores = greedy_select_dense(x, lab, budget, lam)
    assert picks == dense_picks
    np.testing.assert_allclose(scores, dense_scores, rtol=1e-4, atol=1e-6 * max(dense_scores))
    assert all(a >= b - 1e-9 for a, b in itertools.pairwise(scores))  # scores never rise


def test_clustered_candidates_where_every_pick_moves_many_scores():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 24))
    x = (centres[rng.integers(0, 6, 1500)] + 0.05 * rng.normal(size=(1500, 24))).astype(np.float32)
    lab = centres[:2].astype(np.float32)
    assert greedy_select(x, lab, 40) == greedy_select_dense(x, lab, 40)[0]
    # diversity: the first picks come from different clusters
    first = greedy_select(x, None, 6)
    nearest = np.argmin(((x[first, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert len(set(nearest.tolist())) == 6


def test_ties_go_to_the_lowest_index():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(5, 8)).astype(np.float32)
    order = rng.permutation(15)
    x = np.repeat(base, 3, axis=0)[order]  # every row appears three times
    picks = greedy_select(x, None, 15)
    assert picks == greedy_select_dense(x, None, 15)[0]
    for value in range(5):  # the copies of one row are picked lowest index first
        copies = [i for i in picks if (x[i] == base[value]).all()]
        assert copies == sorted(copies)
    same = np.ones((4, 3), dtype=np.float32)
    assert greedy_select(same, None, 4) == [0, 1, 2, 3]


def test_budget_edges():
    x = np.eye(4, dtype=np.float32)
    assert greedy_select(x, None, 0) == []
    assert sorted(greedy_select(x, None, 10)) == [0, 1, 2, 3]  # budget > N returns all N
    assert greedy_select(x * np.array([[1], [3], [2], [3]], dtype=np.float32), None, 2) == [1, 3]
    # a labeled direction makes its candidates uninteresting
    assert greedy_select(x, 10 * np.eye(4, dtype=np.float32)[:3], 1) == [3]


@pytest.mark.parametrize(
    ("candidates", "labeled", "budget", "lam", "message"),
    [
        (np.zeros((0, 4)), None, 1, 1.0, "no candidates"),
        (np.zeros(4), None, 1, 1.0, "2-D array"),
        (np.array([[1.0, np.nan]]), None, 1, 1.0, "candidates contain NaN or inf"),
        (np.array([[1.0, np.inf]]), None, 1, 1.0, "candidates contain NaN or inf"),
        (np.ones((2, 2)), np.array([[np.nan, 0.0]]), 1, 1.0, "labeled features contain NaN"),
        (np.ones((2, 2)), np.ones((1, 3)), 1, 1.0, r"labeled must be \[k, 2\]"),
        (np.ones((2, 2)), None, -1, 1.0, "budget must be a non-negative integer"),
        (np.ones((2, 2)), None, 1.5, 1.0, "budget must be a non-negative integer"),
        (np.ones((2, 2)), None, 1, 0.0, "lam"),
    ],
)
def test_bad_input_raises_a_clear_value_error(candidates, labeled, budget, lam, message):
    with pytest.raises(ValueError, match=message):
        greedy_select(candidates, labeled, budget, lam)


@settings(max_examples=60, deadline=None, derandomize=True)  # the same cases on every run
@given(
    n=st.integers(1, 40),
    k=st.integers(0, 12),
    d=st.integers(1, 10),
    budget=st.integers(0, 45),
    lam=st.sampled_from([0.3, 1.0, 7.0]),  # well conditioned: the dense reference is exact enough
    seed=st.integers(0, 2**16),
)
def test_property_same_picks_as_dense(n, k, d, budget, lam, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    lab = rng.normal(size=(k, d)).astype(np.float32)
    picks = greedy_select(x, lab, budget, lam)
    assert len(picks) == min(budget, n) and len(set(picks)) == len(picks)
    assert picks == greedy_select_dense(x, lab, budget, lam)[0]


# ---- pair rows gathered on demand, and the torch path -------------------------------------------

SETTINGS = [(60, 0, 8, 1.0, 10), (300, 5, 32, 0.1, 40), (250, 32, 32, 1.0, 30), (300, 90, 16, 10.0, 60),
            (400, 0, 12, 1.0, 100), (5000, 20, 64, 1.0, 50)]  # fmt: skip


def response_pool(n_responses, n_pairs, d, seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n_responses, d)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    pairs = rng.integers(0, n_responses, size=(n_pairs, 2))
    return f, pairs[pairs[:, 0] != pairs[:, 1]]


@pytest.mark.parametrize(("n", "k", "d", "lam", "budget"), SETTINGS)
def test_pair_rows_and_torch_pick_what_the_dense_matrix_picks(n, k, d, lam, budget):
    f, pairs = response_pool(n // 2 + 2, n, d, n + k + d)
    lab = np.random.default_rng(k).normal(size=(k, d)).astype(np.float32)
    matrix = f[pairs[:, 0]] - f[pairs[:, 1]]
    want, want_scores = greedy_select_scored(matrix, lab, budget, lam)
    rows = PairRows(f, pairs)  # never forms the [N, d] matrix
    for got, scores in (greedy_select_scored(rows, lab, budget, lam),
                        greedy_select_scored(rows, lab, budget, lam, device="cpu"),
                        greedy_select_scored(matrix, lab, budget, lam, device="cpu")):  # fmt: skip
        assert got == want
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-9)


def test_torch_ties_weights_and_bad_rows_behave_as_numpy():
    f, pairs = response_pool(40, 120, 6, 3)
    pairs = np.concatenate([pairs, pairs[:10]])  # duplicate rows: exact ties, lowest index wins
    w = np.random.default_rng(4).uniform(0.1, 2.0, size=len(pairs)).astype(np.float32)
    rows = PairRows(f, pairs).weighted(w)
    dense = (f[pairs[:, 0]] - f[pairs[:, 1]]) * w[:, None]
    want = greedy_select(dense, None, 30)
    assert greedy_select_scored(rows, None, 30)[0] == want
    assert greedy_select_scored(rows, None, 30, device="cpu")[0] == want
    f[7, 2] = np.nan
    bad = int(np.flatnonzero((pairs == 7).any(axis=1))[0])
    for device in (None, "cpu"):
        with pytest.raises(ValueError, match=rf"candidates contain NaN or inf \(row {bad}\)"):
            greedy_select_scored(PairRows(f, pairs), None, 5, device=device)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("n", "k", "d", "lam", "budget"), SETTINGS)
def test_cuda_picks_equal_the_cpu_picks(n, k, d, lam, budget):
    f, pairs = response_pool(n // 2 + 2, n, d, n + k + d)
    lab = np.random.default_rng(k).normal(size=(k, d)).astype(np.float32)
    want = greedy_select_scored(PairRows(f, pairs), lab, budget, lam)
    got = greedy_select_scored(PairRows(f, pairs), lab, budget, lam, device="cuda")
    assert got[0] == want[0]
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-9)
