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
    uneven = np.concatenate([np.full(100, 0.5), np.full(100, 2.0)])  # half the pairs would teach four times more
    ties = PoolDescription(500, tuple(f"p{i}" for i in range(200)), tuple(margins), tuple(uneven), "ckpt-3")
    view = of_description(ties, beta=0.1)  # |β·Δ| mostly below 0.1
    assert view.described == 200 and 0.8 < view.near_ties() < 0.95 and view.spread() == 4.0
    assert "(a uniform sample of 200)" in view.lines(0.1)[0] and "(90%/10% ratio 4.00)" in view.lines(0.1)[1]
    text = TextStats(200, 50, 150, 0, 0, 10)
    assert prediction(text, view).startswith("the ActiveDPO scores are uneven (90%/10% ratio 4.00)")
    assert "the benchmark's `mixed` pool" in prediction(text, view)
    even = of_description(PoolDescription(200, ties.pair_ids, ties.margins, tuple(rng.uniform(1.0, 2.0, 200)), "c"),
                          0.1)  # fmt: skip
    assert even.spread() < 2.0 and "indistinguishable from random" in prediction(text, even)
    assert prediction(text, even) == prediction(text, of_description(  # the margins do not decide it
        PoolDescription(200, ties.pair_ids, tuple(rng.normal(0, 30, 200)), even.score, "c"), 0.1))
    ref = of_description(PoolDescription(200, ties.pair_ids, (0.0,) * 200, ties.scores, "sft"), 0.1)
    assert prediction(text, ref).endswith("the policy is π_ref (no DPO round yet), so the margins say nothing yet")
    assert "`mixed` pool" in prediction(text, ref)  # the scores speak before any DPO round
    none = of_description(PoolDescription(200, ties.pair_ids, ties.margins, (0.0,) * 30 + (1.0,) * 170, "c"), 0.1)
    assert none.spread() == float("inf") and "uneven (90%/10% ratio inf)" in prediction(text, none)
    trivial = TextStats(200, 50, 150, 0, 0, 150)
    assert prediction(trivial, ref).startswith("most pairs differ only trivially: many labels would be coin flips "
                                               "(deduplicate before labeling); the ActiveDPO scores")  # fmt: skip
    assert "does not tell" in prediction(text, None)
    png = plot(view, tmp_path / "pool.png", 0.1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
