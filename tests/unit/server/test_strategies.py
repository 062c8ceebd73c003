"""The strategy registry and each strategy's rule, on hand-made features and on real models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from activedpo_server.features import EmbeddingFeaturizer, GradientFeaturizer, LoraSpec, pair_features
from activedpo_server.selection import greedy_select_scored
from activedpo_server.source import ModelFeatureSource
from activedpo_server.strategies import (
    LAM_STRATEGIES,
    RESEARCH_STRATEGIES,
    STRATEGIES,
    Pool,
    fisher_weight,
    get_strategy,
)


class ArraySource:
    """A FeatureSource over fixed arrays, counting what is asked for."""

    def __init__(self, grad, embed, policy, ref):
        self.grad, self.embed, self.policy, self.ref = grad, embed, policy, ref
        self.asked: list[str] = []

    def gradient_features(self, responses):
        self.asked.append("gradient")
        return self.grad[responses]

    def embedding_features(self, responses):
        self.asked.append("embedding")
        return self.embed[responses]

    def logprobs(self, responses):
        self.asked.append("logprobs")
        return self.policy[responses], self.ref[responses]


def all_pairs(k: int, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(p * k + i, p * k + j) for p in range(n_prompts) for i in range(k) for j in range(i + 1, k)]
    return np.array(pairs), np.repeat(np.arange(n_prompts), k)


@pytest.fixture
def pool():
    rng = np.random.default_rng(0)
    pairs, prompt_of = all_pairs(3, 20)  # 60 responses, 60 pairs
    grad = rng.normal(size=(60, 16)).astype(np.float32)
    embed = rng.normal(size=(60, 5)).astype(np.float32)
    policy = -rng.uniform(2, 20, size=60)
    ref = policy + rng.normal(size=60)
    return Pool(pairs, prompt_of, ArraySource(grad, embed, policy, ref), labeled=pairs[[0, 7]])


def test_registry_names_and_errors():
    assert set(STRATEGIES) == {"activedpo", "random", "aplp", "apo"}  # what a server answers
    assert set(RESEARCH_STRATEGIES) == {  # benchmark arms
        "activedpo-fisher",
        "activedpo-margin",
        "activedpo-entropy",
        "activedpo-topb",
    }
    assert set(RESEARCH_STRATEGIES) | {"activedpo", "apo"} == LAM_STRATEGIES
    with pytest.raises(ValueError, match=r"unknown strategy 'best'; choose one of activedpo, aplp, apo, random$"):
        get_strategy("best")
    with pytest.raises(ValueError, match=r"'activedpo-fisher' is a research strategy.*--research-strategies"):
        get_strategy("activedpo-fisher")
    with pytest.raises(
        ValueError,
        match="one of activedpo, aplp, apo, random, activedpo-entropy, activedpo-fisher, activedpo-margin, "
        "activedpo-topb",
    ):
        get_strategy("best", research=True)
    with pytest.raises(ValueError, match="bad options for strategy 'random'"):
        get_strategy("random", lam=2.0)
    with pytest.raises(ValueError, match="lam must be positive"):
        get_strategy("activedpo", lam=0)


def test_activedpo_is_greedy_v_inverse_on_gradient_differences(pool):
    picks = get_strategy("activedpo", lam=0.5).select(pool, 10, np.random.default_rng(0))
    src = pool.source
    want, scores = greedy_select_scored(
        pair_features(src.grad, pool.pairs), pair_features(src.grad, pool.labeled), 10, 0.5
    )
    assert [p.index for p in picks] == want and [p.rank for p in picks] == list(range(10))
    np.testing.assert_allclose([p.score for p in picks], scores)
    assert src.asked == ["gradient"]  # one fetch for candidates and labeled together
    # the labels matter: without them the batch differs
    unlabeled = Pool(pool.pairs, pool.response_prompt, src)
    assert [p.index for p in get_strategy("activedpo", lam=0.5).select(unlabeled, 10, None)] != want


def test_topb_ranks_by_the_labeled_only_scores_without_batch_diversity():
    # two clusters: greedy V⁻¹ alternates between them, plain top-B takes the larger-scored cluster first
    rng = np.random.default_rng(1)
    pairs, prompt_of = all_pairs(2, 12)  # 24 responses, 12 pairs (difference = response 2i − 2i+1)
    grad = np.zeros((24, 6), dtype=np.float32)
    for i in range(12):
        direction = np.eye(6)[0] * 1.2 if i < 6 else np.eye(6)[1]
        grad[2 * i] = direction + 0.01 * rng.normal(size=6)
    pool = Pool(pairs, prompt_of, ArraySource(grad, None, None, None))
    top = get_strategy("activedpo-topb", research=True).select(pool, 4, None)
    assert len({p.index for p in top}) == 4
    assert all(p.index < 6 for p in top)  # all from the larger-norm cluster
    assert all(x.score >= y.score for x, y in itertools.pairwise(top))
    greedy = get_strategy("activedpo").select(pool, 4, None)
    assert {p.index < 6 for p in greedy} == {True, False}  # the update spreads the batch
    # scores equal the labeled-only V⁻¹ norm: λ = 1, no labels → |φ|²
    d = pair_features(grad, pairs)
    np.testing.assert_allclose([p.score for p in top], (d[[p.index for p in top]] ** 2).sum(1), rtol=1e-5)


def test_fisher_weights_pairs_by_bradley_terry_information(pool):
    assert fisher_weight(np.array([0.0]))[0] == pytest.approx(1.0)
    np.testing.assert_allclose(fisher_weight(np.array([2.0, -2.0, 800.0])), [0.419974, 0.419974, 0.0], atol=1e-6)
    src = pool.source
    cand, lab = pair_features(src.grad, pool.pairs), pair_features(src.grad, pool.labeled)
    reward = 0.1 * (src.policy - src.ref)
    w_c = fisher_weight(reward[pool.pairs[:, 0]] - reward[pool.pairs[:, 1]])
    w_l = fisher_weight(reward[pool.labeled[:, 0]] - reward[pool.labeled[:, 1]])
    want, scores = greedy_select_scored(cand * np.sqrt(w_c)[:, None], lab * np.sqrt(w_l)[:, None], 8, 1.0)
    picks = get_strategy("activedpo-fisher", research=True, beta=0.1).select(pool, 8, None)
    assert [p.index for p in picks] == want
    np.testing.assert_allclose([p.score for p in picks], scores, rtol=1e-5)
    assert want != [p.index for p in get_strategy("activedpo").select(pool, 8, None)]  # the weights matter here
    # at π_θ = π_ref every margin is 0, every weight 1: the picks are activedpo's
    same = Pool(pool.pairs, pool.response_prompt, ArraySource(src.grad, None, src.policy, src.policy), pool.labeled)
    assert [p.index for p in get_strategy("activedpo-fisher", research=True).select(same, 8, None)] == [
        p.index for p in get_strategy("activedpo").select(same, 8, None)
    ]
    with pytest.raises(ValueError, match="beta must be positive"):
        get_strategy("activedpo-fisher", research=True, beta=0)


def test_margin_variant_weights_pairs_up_by_their_implicit_margin(pool):
    src = pool.source
    cand, lab = pair_features(src.grad, pool.pairs), pair_features(src.grad, pool.labeled)
    reward = src.policy - src.ref
    m_c = np.abs(reward[pool.pairs[:, 0]] - reward[pool.pairs[:, 1]])
    m_l = np.abs(reward[pool.labeled[:, 0]] - reward[pool.labeled[:, 1]])
    scale = np.concatenate([m_c, m_l]).mean()
    w_c, w_l = 1 + m_c / scale, 1 + m_l / scale
    want, scores = greedy_select_scored(cand * np.sqrt(w_c)[:, None], lab * np.sqrt(w_l)[:, None], 8, 1.0)
    picks = get_strategy("activedpo-margin", research=True).select(pool, 8, None)
    assert [p.index for p in picks] == want
    np.testing.assert_allclose([p.score for p in picks], scores, rtol=1e-5)
    assert want != [p.index for p in get_strategy("activedpo").select(pool, 8, None)]  # the weights matter here
    fisher = [p.index for p in get_strategy("activedpo-fisher", research=True, beta=1.0).select(pool, 8, None)]
    assert want != fisher  # the opposite weighting
    # scale-free: margins three times as large (another β) pick the same pairs
    tripled = ArraySource(src.grad, None, 3 * src.policy, 3 * src.ref)
    same = Pool(pool.pairs, pool.response_prompt, tripled, pool.labeled)
    assert [p.index for p in get_strategy("activedpo-margin", research=True).select(same, 8, None)] == want
    # at π_θ = π_ref every weight is 1: activedpo's picks
    flat = Pool(pool.pairs, pool.response_prompt, ArraySource(src.grad, None, src.policy, src.policy), pool.labeled)
    assert [p.index for p in get_strategy("activedpo-margin", research=True).select(flat, 8, None)] == [
        p.index for p in get_strategy("activedpo").select(flat, 8, None)
    ]


def test_entropy_variant_runs_activedpo_among_the_high_entropy_prompts(pool):
    src = pool.source
    prompt_of_pair = pool.response_prompt[pool.pairs[:, 0]]
    entropy = -np.array([src.policy[pool.response_prompt == p].mean() for p in range(20)])
    top = np.argsort(-entropy, kind="stable")[:5]  # a quarter of 20 prompts, 15 pairs: enough for 6
    eligible = np.flatnonzero(np.isin(prompt_of_pair, top))
    want, scores = greedy_select_scored(
        pair_features(src.grad, pool.pairs[eligible]), pair_features(src.grad, pool.labeled), 6, 1.0
    )
    picks = get_strategy("activedpo-entropy", research=True, prompt_fraction=0.25).select(pool, 6, None)
    assert [p.index for p in picks] == eligible[want].tolist()
    np.testing.assert_allclose([p.score for p in picks], scores, rtol=1e-5)
    plain = [p.index for p in get_strategy("activedpo").select(pool, 6, None)]
    assert not set(plain) <= set(eligible)  # activedpo alone would pick from low-entropy prompts
    # never fewer prompts than the budget needs; all prompts kept: activedpo's picks
    wide = get_strategy("activedpo-entropy", research=True, prompt_fraction=0.25).select(pool, 30, None)
    assert len(wide) == 30 and len({int(prompt_of_pair[p.index]) for p in wide}) >= 10
    everything = get_strategy("activedpo-entropy", research=True, prompt_fraction=1.0).select(pool, 6, None)
    assert [p.index for p in everything] == plain
    with pytest.raises(ValueError, match=r"prompt_fraction must be in \(0, 1\]"):
        get_strategy("activedpo-entropy", research=True, prompt_fraction=0)


def test_apo_uses_the_fixed_embedding(pool):
    picks = get_strategy("apo").select(pool, 5, None)
    src = pool.source
    want, _ = greedy_select_scored(pair_features(src.embed, pool.pairs), pair_features(src.embed, pool.labeled), 5)
    assert [p.index for p in picks] == want and src.asked == ["embedding"]


def test_random_is_seeded_distinct_and_covers_small_pools(pool):
    a = get_strategy("random").select(pool, 20, np.random.default_rng(5))
    b = get_strategy("random").select(pool, 20, np.random.default_rng(5))
    c = get_strategy("random").select(pool, 20, np.random.default_rng(6))
    assert [p.index for p in a] == [p.index for p in b] != [p.index for p in c]
    assert len({p.index for p in a}) == 20
    assert all(x.score >= y.score for x, y in itertools.pairwise(a))
    assert sorted(p.index for p in get_strategy("random").select(pool, 100, np.random.default_rng(0))) == list(
        range(60)
    )
    assert pool.source.asked == []  # random computes nothing


def test_aplp_filters_prompts_by_entropy_then_takes_the_largest_margins():
    pairs, prompt_of = all_pairs(3, 4)  # 12 responses, 12 pairs
    policy = np.array([-1, -2, -3, -10, -11, -12, -5, -5, -5, -20, -20, -20], dtype=float)
    ref = policy.copy()
    ref[[9, 10, 11]] += [0.0, 3.0, 10.0]  # prompt 3: margins |r9-r10|=.3, |r9-r11|=1.0, |r10-r11|=.7
    ref[[3, 4]] += [0.0, 5.0]  # prompt 1: pairs 3, 4, 5 have margins .5, 0, .5
    ref[[0]] += 50.0  # prompt 0 has the largest margins of all but the lowest entropy
    pool = Pool(pairs, prompt_of, ArraySource(None, None, policy, ref))
    # entropies: prompt 3 (20) > prompt 1 (11) > prompt 2 (5) > prompt 0 (2); keep half = prompts 3 and 1
    picks = get_strategy("aplp", prompt_fraction=0.5, beta=0.1).select(pool, 4, None)
    assert [p.index for p in picks] == [10, 11, 3, 5]  # equal margins: lowest index first
    np.testing.assert_allclose([p.score for p in picks], [1.0, 0.7, 0.5, 0.5])
    # never fewer prompts than the budget needs: 8 picks need 3 prompts
    many = get_strategy("aplp", prompt_fraction=0.25).select(pool, 8, None)
    assert {int(prompt_of[pairs[p.index, 0]]) for p in many} == {1, 2, 3}


def test_pool_validation():
    pairs, prompt_of = all_pairs(2, 2)
    with pytest.raises(ValueError, match="same prompt"):
        Pool(np.array([[0, 2]]), prompt_of, None)
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        Pool(pairs, prompt_of, None, labeled=np.array([[0, 4]]))
    with pytest.raises(ValueError, match="budget must be a non-negative integer"):
        get_strategy("random").select(Pool(pairs, prompt_of, None), -1, np.random.default_rng(0))


def test_all_strategies_on_real_models_reuse_each_response_gradient(tiny_world, random_adapter):
    prompts = tiny_world.task.heldout_prompts()[:5]
    words = ["wave tide", "bright moss", "calm", "tree tree", "a"]
    prompt_texts, responses = [], []
    for i, p in enumerate(prompts):
        for k in range(3):
            prompt_texts.append(p)
            responses.append(f" {words[(i + k) % 5]} {words[(2 * i + k) % 5]}")
    pairs, prompt_of = all_pairs(3, 5)
    source = ModelFeatureSource(
        prompt_texts,
        responses,
        gradient=GradientFeaturizer(random_adapter, proj_dim=256, lora=LoraSpec(r=8, alpha=16)),
        embedding=EmbeddingFeaturizer(random_adapter),
    )
    pool = Pool(pairs[3:], prompt_of, source, labeled=pairs[:3])
    results = {}
    for name in sorted(STRATEGIES | RESEARCH_STRATEGIES):
        picks = get_strategy(name, research=True).select(pool, 4, np.random.default_rng(0))
        assert len({p.index for p in picks}) == 4 and all(np.isfinite(p.score) for p in picks)
        results[name] = [p.index for p in picks]
    assert source.computed == {"gradient": 15, "embedding": 15, "logprobs": 15}  # once per response
    get_strategy("activedpo").select(pool, 4, None)
    assert source.computed["gradient"] == 15  # cached
    # a new checkpoint's featurizer makes the cached features stale
    source.gradient = GradientFeaturizer(tiny_world.sft_dir, proj_dim=256, lora=LoraSpec(r=8, alpha=16))
    get_strategy("activedpo").select(pool, 4, None)
    assert source.computed["gradient"] == 30


def test_audit_draws_are_uniform_over_the_unpicked_pairs_and_placed_uniformly_among_the_picks():
    from activedpo_server.audit import audit_draw, audit_slots

    picked, seeds = [0, 5, 7], 3000
    counts = np.zeros(20)
    for seed in range(seeds):
        drawn = audit_draw(20, picked, 4, seed)
        assert len(set(drawn)) == 4 and not set(drawn) & set(picked)
        counts[drawn] += 1
    assert counts[picked].sum() == 0
    expected = seeds * 4 / 17  # each of the 17 others, equally often
    assert np.abs(counts[np.setdiff1d(np.arange(20), picked)] - expected).max() < 4 * np.sqrt(expected)
    assert sorted(audit_draw(5, [0, 1, 2], 4, 0)) == [3, 4]  # a small pool: what remains
    assert audit_draw(20, picked, 4, 1) == audit_draw(20, picked, 4, 1) != audit_draw(20, picked, 4, 2)
    place = np.zeros(10)
    for seed in range(seeds):
        slots = audit_slots(8, 2, seed)
        assert len(slots) == 10 and sum(slots) == 2
        place += slots
    assert np.abs(place - seeds * 2 / 10).max() < 4 * np.sqrt(seeds * 2 / 10)  # every position equally often
    assert audit_slots(3, 0, 0) == [False] * 3
