"""Audit pairs: a few of each batch drawn uniformly at random from the pool, and every selected pair's margin.

Labels on pairs the strategy picked say little about the policy (ActiveDPO picks the pairs it is least sure
of); labels on pairs drawn at random from the same pool estimate its preference accuracy on the pool. The
engine draws them (:func:`audit_draw`) disjoint from the picks, places them at random among the picks
(:func:`audit_slots`), and sends every selected pair with the selecting policy's implicit-reward margin
(:func:`pair_margins`), so each label can be scored before any training on it (the client's
``activedpo_client.audit``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from activedpo_server.strategies import Pool

AUDIT_STREAM = 0xA0D17  # the audit draw's random stream: the same seed, apart from every strategy's draws


def audit_draw(n_pairs: int, picked: Sequence[int], k: int, seed: int) -> list[int]:
    """``k`` indices drawn uniformly at random, without replacement, from the ``n_pairs`` pool pairs not
    ``picked`` (all of them when fewer remain): audit pairs, disjoint from the strategy's picks."""
    if k <= 0:
        return []
    rest = np.setdiff1d(np.arange(n_pairs, dtype=np.int64), np.asarray(list(picked), dtype=np.int64))
    rng = np.random.default_rng([seed, AUDIT_STREAM])
    return [int(i) for i in rng.choice(rest, size=min(k, len(rest)), replace=False)]


def audit_slots(picks: int, audit: int, seed: int) -> list[bool]:
    """Where the ``audit`` pairs go among the ``picks`` (True: an audit pair), uniformly at random: people who
    label a batch in order and stop early leave out audit pairs no more often than picks (no missingness bias)."""
    rng = np.random.default_rng([seed, AUDIT_STREAM, 1])
    slots = set(rng.choice(picks + audit, size=audit, replace=False).tolist()) if audit else set()
    return [i in slots for i in range(picks + audit)]


def pair_margins(pool: Pool, index: Sequence[int]) -> list[float]:
    """``log π_θ/π_ref`` of response A minus that of B for the pool pairs ``index``: the policy's implicit-reward
    margin over β (> 0: it prefers A); one forward pass of each model over the pairs' responses."""
    if not len(index):
        return []
    responses, inverse = np.unique(pool.pairs[np.asarray(index, dtype=np.int64)].ravel(), return_inverse=True)
    policy, ref = pool.source.logprobs(responses)
    ratio = (np.asarray(policy, dtype=np.float64) - np.asarray(ref, dtype=np.float64))[inverse].reshape(-1, 2)
    return [float(m) for m in ratio[:, 0] - ratio[:, 1]]


def with_audit(picks: Sequence, n_pairs: int, audit: int, seed: int) -> tuple[list[int], list[float], list[bool]]:
    """The batch as (pool indices, scores, audit flags): the strategy's ``picks`` (``strategies.Pick``) in their
    order, and ``audit`` pairs of the ``n_pairs`` (fewer in a small pool) at random places among them, score 0."""
    drawn = iter(audit_draw(n_pairs, [p.index for p in picks], audit, seed))
    flags = audit_slots(len(picks), min(audit, n_pairs - len(picks)), seed)
    chosen = iter(picks)
    index, scores = [], []
    for is_audit in flags:
        pick = None if is_audit else next(chosen)
        index.append(next(drawn) if is_audit else pick.index)
        scores.append(0.0 if is_audit else pick.score)
    return index, scores, flags
