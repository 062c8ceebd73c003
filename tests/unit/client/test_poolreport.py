"""The pool report's text statistics, its reading of the policy's margins and scores, and what it predicts."""

from __future__ import annotations

import numpy as np

from activedpo_client.messages import CandidateGroup, CandidatePair, PoolDescription
from activedpo_client.poolreport import (
    TextStats,
    normalize,
    of_description,
    plot,
    prediction,
    text_stats,
    trivially_different,
)


def test_near_duplicates_and_trivial_differences():
    assert normalize("  Wave,  TIDE! ") == normalize("wave tide") == "wave tide"
    assert trivially_different(" Wave tide!", "wave tide")  # case and punctuation only
    long = "the sea is calm and blue today under a bright sky"
    assert trivially_different(long, long.replace("calm", "still"))  # one word of eleven
    assert not trivially_different("wave tide", "tree")  # every word differs, however few
    assert not trivially_different(long, "a storm came in at noon and the boats went home")


def test_text_stats_count_what_a_pool_is_made_of():
    pool = [
        CandidateGroup("p1", [" wave tide", " Wave tide!", " calm bright moss", " tree"]),  # 6 pairs, 1 near-dup pair
        CandidateGroup("p1", [" wave tide", " a new one"]),  # p1 again: " wave tide" verbatim a second time
        CandidatePair("p2", " yes", " no"),
    ]
    s = text_stats(pool)
    assert s == TextStats(pairs=8, prompts=2, responses=7, exact_duplicates=1, near_duplicates=1, trivial_pairs=1)
    assert text_stats(pool, {"repeated_in_row": 2}).exact_duplicates == 3  # what the reader dropped within rows
    assert s.lines()[0] == "8 pairs over 2 prompts, 7 distinct responses"


def test_the_policy_view_and_what_it_predicts(tmp_path):
    rng = np.random.default_rng(0)
    margins = np.concatenate([rng.normal(0, 0.2, 180), rng.normal(0, 30, 20)])  # most pairs near-ties, a few not
    ties = PoolDescription(500, tuple(f"p{i}" for i in range(200)), tuple(margins),
                           tuple(rng.uniform(0.1, 2.0, 200)), "ckpt-3")  # fmt: skip
    view = of_description(ties, beta=0.1)  # |β·Δ| mostly below 0.1
    assert view.described == 200 and 0.8 < view.near_ties() < 0.95
    assert "(a uniform sample of 200)" in view.lines(0.1)[0]
    text = TextStats(200, 50, 150, 0, 0, 10)
    assert "the benchmark's `mixed`" in prediction(text, view)
    apart = of_description(PoolDescription(200, ties.pair_ids, tuple(rng.normal(0, 30, 200)), ties.scores, "c"), 0.1)
    assert apart.near_ties() < 0.1 and "indistinguishable from random" in prediction(text, apart)
    ref = of_description(PoolDescription(200, ties.pair_ids, (0.0,) * 200, ties.scores, "sft"), 0.1)
    assert prediction(text, ref).startswith("the policy is π_ref (no DPO round yet)")
    barely = of_description(PoolDescription(200, ties.pair_ids, (3e-4,) * 200, ties.scores, "r1"), 0.1)  # one step
    assert prediction(text, barely).startswith("the policy barely tells any pair apart yet")
    trivial = TextStats(200, 50, 150, 0, 0, 150)
    assert "deduplicate before labeling" in prediction(trivial, ref)
    png = plot(view, tmp_path / "pool.png", 0.1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
