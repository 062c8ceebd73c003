"""Audit labels: the estimate is unbiased on a synthetic pool with known preference probabilities, its
intervals cover, the picks' accuracy is biased the way the strategy makes it, and the curve, gain and hint
say what they should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activedpo_client.artifacts import Evaluated, RoundMetrics, Trained
from activedpo_client.audit import (
    Accuracy,
    audit_count,
    credit,
    curve,
    expected_accuracy,
    pool_accuracy,
    score,
    stall_hint,
)
from activedpo_server.audit import audit_draw


def test_audit_count_and_credit():
    assert [audit_count(50, f) for f in (0.0, 0.1, 0.2, 0.5)] == [0, 5, 10, 25]
    assert audit_count(8, 0.1) == 1 and audit_count(3, 0.9) == 2 and audit_count(1, 0.1) == 1
    with pytest.raises(ValueError, match=r"audit fraction must be in \[0, 1\), got 1.0"):
        audit_count(50, 1.0)
    assert [credit("A", 1.2), credit("B", 1.2), credit("B", -0.1), credit("A", 0.0)] == [1.0, 0.0, 1.0, 0.5]
    assert credit("TIE", 3.0) is None and credit("BOTH_BAD", -1.0) is None
    audit, picks = score([("A", True, 2.0), ("B", True, 2.0), ("TIE", True, 1.0), ("A", False, -1.0),
                          ("A", False, None)])  # fmt: skip
    assert (audit.n, audit.mean, picks.n, picks.mean) == (2, 0.5, 1, 0.0)
    assert audit.se == pytest.approx(math.sqrt(0.5 * 0.5 / 2))  # p̃ = (1 + 1) / (2 + 2)
    no_preference = score([("A", True, 0.0), ("B", True, 0.0), ("A", True, 0.0)])[0]
    assert (no_preference.mean, no_preference.se) == (0.5, 0.0)  # π_ref: a coin flip by definition, exactly


def test_the_truth_counts_each_pair_of_distinct_responses_once_and_a_policy_without_preference_at_half():
    sig = 1.0 / (1.0 + math.exp(-1.0))  # σ(1): the oracle prefers the reward-1 response with this probability
    group = [("good", 1.0, 0.3), ("good", 1.0, 0.3), ("bad", 0.0, -0.2)]  # a duplicate: one pair, not three
    assert expected_accuracy([group]) == pytest.approx(sig)
    wrong = [("good", 1.0, -0.3), ("bad", 0.0, 0.2)]
    assert expected_accuracy([group, wrong]) == pytest.approx((sig + 1.0 - sig) / 2)
    assert expected_accuracy([[("a", 5.0, 0.0), ("b", -5.0, 0.0)]]) == 0.5  # π_ref: ½ whatever the labels
    assert expected_accuracy([[("a", 900.0, 1.0), ("b", -900.0, 0.0)]]) == 1.0  # no overflow far from a tie
    assert expected_accuracy([[("same", 1.0, 0.0), ("same", 1.0, 0.0)]]) is None  # no pair of distinct responses


def synthetic_pool(rng, n=3000):
    """Margins of a policy and each pair's true P(people prefer A): the policy is right more often than not."""
    margin = rng.normal(0.0, 1.0, n)
    truth = 0.7 * margin + 0.7 * rng.normal(0.0, 1.0, n)
    p_a = 1.0 / (1.0 + np.exp(-2.0 * truth))
    exact = float(np.mean(np.where(margin > 0, p_a, 1.0 - p_a)))  # its accuracy on the pool, in expectation
    return margin, p_a, exact


def test_the_audit_estimate_is_unbiased_on_a_pool_of_known_preference_probabilities_and_its_intervals_cover():
    rng = np.random.default_rng(0)
    margin, p_a, exact = synthetic_pool(rng)
    picks = np.argsort(np.abs(margin))[:45]  # the strategy's picks: the pairs the policy is least sure of
    est, pick_acc, covered = [], [], 0
    for seed in range(1500):
        audit_idx = audit_draw(len(margin), picks, 20, seed)
        labels = {i: "A" if rng.random() < p_a[i] else "B" for i in [*picks, *audit_idx]}
        audit, picked = score([(labels[i], i in audit_idx, margin[i]) for i in labels])
        e = pool_accuracy(audit, picked, pool=len(margin), picked=len(picks))
        est.append(e.mean)
        pick_acc.append(picked.mean)
        covered += abs(e.mean - exact) <= 1.645 * e.se
    est = np.array(est)
    assert abs(est.mean() - exact) < 3 * est.std() / math.sqrt(len(est))  # unbiased: within 3 SE of the truth
    assert 0.86 <= covered / len(est) <= 0.96  # the 90% intervals cover about 90% of the time
    assert np.mean(pick_acc) < exact - 0.1  # the picks' accuracy is far below the pool's: near-ties are hard


def rounds_of(accuracies, n=10, labels=50):
    """(round, labels before, audit, picks, pool, picked) rows whose audit slices have these accuracies."""
    return [(r + 1, r * labels, Accuracy(n, a * n, a * n), Accuracy(40, 20.0, 20.0), 0, 0)
            for r, a in enumerate(accuracies)]  # fmt: skip


def test_the_curve_pools_small_slices_and_the_gain_and_its_interval_drive_the_hint():
    history = curve(rounds_of([0.5, 0.9, 0.9, 0.9]))
    assert [h.estimate.mean for h in history] == [0.5, 0.9, 0.9, 0.9]
    assert [(h.pooled_from, h.pooled.n) for h in history] == [(1, 10), (1, 20), (1, 30), (2, 30)]
    assert history[3].pooled.mean == pytest.approx(0.9)
    assert history[0].gain is None
    assert history[1].gain == pytest.approx(0.8)  # 0.4 of accuracy over 50 labels: 0.8 per 100
    assert history[1].gain_ci[0] > 0  # a clear gain
    assert history[2].gain == pytest.approx(0.0) and history[2].gain_ci[0] < 0 < history[2].gain_ci[1]
    assert stall_hint(history[:3]) == ""  # one flat round is not a stall
    hint = stall_hint(history)
    # 10 answers at 0.9 twice: p̃ = 10/12, SE 0.118 each; the gain's SE √2 × 0.118 × 2 per 100 labels = 0.333
    assert hint.startswith("the last 100 labels did not measurably raise the policy's accuracy on its pools: the "
                           "audit gain's 95% interval (±65.3 points per 100 labels) has held zero")  # fmt: skip
    rising = curve(rounds_of([0.5, 0.6, 0.7, 0.8, 0.9], n=400))
    assert stall_hint(rising) == "" and all(h.gain_ci[0] > 0 for h in rising[1:])


def test_the_pool_estimate_weighs_the_picks_as_the_census_of_their_stratum():
    audit, picks = Accuracy(20, 16.0, 16.0), Accuracy(10, 3.0, 3.0)
    e = pool_accuracy(audit, picks, pool=100, picked=10)
    assert e.mean == pytest.approx(0.1 * 0.3 + 0.9 * 0.8) and e.n == 20
    assert pool_accuracy(audit, picks).mean == 0.8  # the pool's size unknown: the audit slice alone
    assert pool_accuracy(Accuracy(), picks, 100, 10) is None


def test_round_metrics_carry_the_audit_and_say_it_in_one_line():
    history = curve(rounds_of([0.5, 0.8], n=12))
    none = Evaluated(evaluate="none")
    m = RoundMetrics.of_round(2, Trained(labels=100, checkpoint="c2"), none, {}, audited=history[-1])
    assert (m.labels_before, m.audit_acc, m.audit_n, m.picks_acc, m.picks_n) == (50, 0.8, 12, 0.5, 40)
    assert (m.audit_pooled, m.audit_pooled_n, m.audit_pooled_from) == (0.65, 24, 1)
    assert m.gain == pytest.approx(0.6)
    again = RoundMetrics.from_dict(m.to_dict())
    assert again == m and again.value("audit_acc") == 0.8
    assert again.audit_line() == (f"audit 0.80 ± {m.audit_se:.2f} (n 12; pooled r1–2 0.65 ± {m.audit_pooled_se:.2f}, "
                                  f"n 24), picks 0.50 (n 40), gain +60.0 [{100 * m.gain_lo:+.1f}, "
                                  f"{100 * m.gain_hi:+.1f}] points per 100 labels")  # fmt: skip
    assert RoundMetrics.of_round(1, Trained(labels=50, checkpoint="c1"), none, {}).audit_line() == ""
