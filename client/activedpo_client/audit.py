"""Audit labels: an unbiased learning curve without a reward model.

The strategy's picks are the pairs the policy is least sure of, so how often the policy already agreed
with people on them says little about the policy. Each batch therefore also holds a few *audit* pairs,
drawn uniformly at random from the same pool (the server draws them, :func:`audit_count` says how many),
labeled like the rest. Every selected pair carries the selecting policy's implicit-reward margin over β,
``Δ = log π_θ/π_ref(y_A) − log π_θ/π_ref(y_B)``, computed before any training on its label. The share
of audit answers whose preferred response has the larger implicit reward is an unbiased estimate of the
policy's preference accuracy on the pool's pairs the strategy did not pick (ties and "both unacceptable"
dropped); the picks are the census of their own stratum, so :func:`pool_accuracy` weighs the two into an
unbiased estimate for the whole pool. A policy with no preference (Δ = 0: π_ref itself, in round one)
gets half credit, its accuracy by a coin flip. After scoring, audit labels train the model like every
other label: none is wasted.

:func:`curve` turns the rounds' scores into what the metrics line, ``status`` and the plot show: each
round's audit accuracy ± SE, a running estimate pooled over recent rounds when a round's slice is small,
the accuracy on the strategy's own picks (how hard the picked pairs are), and the gain per 100 labels
with its 95% interval; :func:`stall_hint` says when that interval has held zero two rounds in a row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 95% normal quantile: gain intervals
POOL_UNTIL = 30  # the running estimate pools back over rounds until it holds this many audit labels
STALL_ROUNDS = 2  # the hint: the gain's interval has held zero this many rounds in a row


def audit_count(budget: int, fraction: float) -> int:
    """How many of ``budget`` pairs are audit pairs: ``ceil(fraction × budget)``, but never the whole batch
    when it holds more than one pair (the strategy keeps a pick); 0 when ``fraction`` is 0."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the audit fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or budget <= 0:
        return 0
    return min(math.ceil(fraction * budget - 1e-9), max(budget - 1, 1))


@dataclass(frozen=True)
class Accuracy:
    """How often the policy's implicit reward ranked ``n`` A/B answers as people did (half credit at Δ = 0)."""

    n: int = 0
    credit: float = 0.0  # agreeing answers, plus ½ for each the policy had no preference on
    square: float = 0.0  # the sum of squared credits (for the standard error)

    @property
    def mean(self) -> float | None:
        return self.credit / self.n if self.n else None

    @property
    def se(self) -> float | None:
        """The standard error of the accuracy: ``√(p̃(1 − p̃)/n)`` with ``p̃ = (credit + 1)/(n + 2)``, which
        a small slice that happens to be all right (or all wrong) does not turn into 0; exactly 0 for a
        policy with no preference on any of them (every credit ½: its accuracy is ½ by definition)."""
        if not self.n:
            return None
        if self.credit * 2 == self.n and self.square * 4 == self.n:
            return 0.0
        p = (self.credit + 1.0) / (self.n + 2.0)
        return math.sqrt(p * (1.0 - p) / self.n)

    def __add__(self, other: Accuracy) -> Accuracy:
        return Accuracy(self.n + other.n, self.credit + other.credit, self.square + other.square)


def credit(preference: str, margin: float) -> float | None:
    """1 when the implicit reward ranks the answer's preferred response higher, 0 when lower, ½ at Δ = 0;
    None for an answer that is not A or B (ties and "both unacceptable" are dropped)."""
    if preference not in ("A", "B"):
        return None
    if margin == 0.0:
        return 0.5
    return 1.0 if (margin > 0) == (preference == "A") else 0.0


def score(answers: Iterable[tuple[str, bool, float | None]]) -> tuple[Accuracy, Accuracy]:
    """(audit, picks): the accuracy on audit answers and on the strategy's picks, from (preference, audit,
    margin) per answer; answers without a margin (pairs never selected) are skipped."""
    audit, picks = Accuracy(), Accuracy()
    for preference, is_audit, margin in answers:
        c = None if margin is None else credit(preference, margin)
        if c is None:
            continue
        one = Accuracy(1, c, c * c)
        if is_audit:
            audit += one
        else:
            picks += one
    return audit, picks


def expected_accuracy(groups: Iterable[Sequence[tuple[str, float, float]]]) -> float | None:
    """The truth an audit estimate estimates, where the label model is known: a policy's expected preference
    accuracy on every pair of a pool under Bradley–Terry labels. Each group is one prompt's responses as (text,
    oracle reward, the policy's log π_θ/π_ref); its pairs are those of distinct texts (the server keeps no pair of
    identical responses). A pair earns P(label = the policy's ranking), ½ where the policy has no preference."""
    credits = []
    for group in groups:
        rows = list({text: (reward, ratio) for text, reward, ratio in group}.values())
        for i, (r_a, x_a) in enumerate(rows):
            for r_b, x_b in rows[i + 1:]:
                d = r_a - r_b  # P(A preferred) = σ(d), computed without overflow
                p_a = 1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d))
                credits.append(0.5 if x_a == x_b else p_a if x_a > x_b else 1.0 - p_a)
    return float(sum(credits) / len(credits)) if credits else None


@dataclass(frozen=True)
class Estimate:
    """An accuracy estimate with its standard error and the audit answers behind it."""

    mean: float
    se: float
    n: int


def pool_accuracy(audit: Accuracy, picks: Accuracy, pool: int = 0, picked: int = 0) -> Estimate | None:
    """The policy's preference accuracy on the whole pool the batch was chosen from (``pool`` pairs, ``picked``
    of them by the strategy). The picks are a census of their own stratum and the audit pairs a uniform sample
    of the rest, so ``w·picks + (1 − w)·audit`` with ``w = picked / pool`` is unbiased for the pool; without the
    pool's size (or any answered pick), the audit slice alone (unbiased for the pairs not picked)."""
    if not audit.n:
        return None
    w = picked / pool if pool and picked and picks.n else 0.0
    mean = w * (picks.mean or 0.0) + (1.0 - w) * audit.mean
    se = math.hypot(w * (picks.se or 0.0), (1.0 - w) * audit.se)
    return Estimate(mean, se, audit.n)


def pooled(estimates: Sequence[Estimate]) -> Estimate:
    """Several rounds' estimates as one, weighted by their audit answers (their policies differ: a running
    estimate of recent accuracy, for when one round's slice is small)."""
    total = sum(e.n for e in estimates)
    mean = sum(e.n * e.mean for e in estimates) / total
    return Estimate(mean, math.sqrt(sum((e.n * e.se) ** 2 for e in estimates)) / total, total)


@dataclass(frozen=True)
class RoundAudit:
    """One round's audit scores and where the curve stands after it."""

    round: int
    labels_before: int  # labels the selecting policy was trained on
    audit: Accuracy  # on the audit answers alone
    picks: Accuracy  # on the strategy's picks
    estimate: Estimate | None  # the policy's accuracy on the round's pool (pool_accuracy)
    pooled: Estimate | None = None  # this round and earlier ones, back until POOL_UNTIL audit answers
    pooled_from: int = 0  # the first round in ``pooled``
    gain: float | None = None  # accuracy gained per 100 labels since the previous round with audit answers
    gain_se: float | None = None
    since: int = 0  # the labels the previous audited policy was trained on (the gain spans since → labels_before)

    @property
    def gain_ci(self) -> tuple[float, float] | None:
        if self.gain is None or self.gain_se is None:
            return None
        return self.gain - Z95 * self.gain_se, self.gain + Z95 * self.gain_se


def curve(rounds: Sequence[tuple[int, int, Accuracy, Accuracy, int, int]]) -> list[RoundAudit]:
    """Each round's :class:`RoundAudit` from (round, labels the selecting policy was trained on, audit, picks,
    pool size, pairs picked by the strategy).

    The gain compares a round's estimate with the previous audited round's:
    ``(a_t − a_s) / (labels_t − labels_s) × 100`` with standard error ``√(se_t² + se_s²)`` on the same scale
    (independent draws; a policy with no preference is exact at ½)."""
    out: list[RoundAudit] = []
    for r, before, audit, picks, pool, picked in rounds:
        est = pool_accuracy(audit, picks, pool, picked)
        window, first = [est] if est else [], r
        for prev in reversed(out):
            if sum(e.n for e in window) >= POOL_UNTIL:
                break
            if prev.estimate is not None:
                window, first = [prev.estimate, *window], prev.round
        gain = gain_se = None
        prev = next((x for x in reversed(out) if x.estimate is not None), None)
        if est is not None and prev is not None and before > prev.labels_before:
            per = 100.0 / (before - prev.labels_before)
            gain = (est.mean - prev.estimate.mean) * per
            gain_se = math.hypot(est.se, prev.estimate.se) * per
        since = prev.labels_before if gain is not None else before
        out.append(RoundAudit(r, before, audit, picks, est, pooled(window) if window else None, first, gain, gain_se,
                              since))  # fmt: skip
    return out


def stall_hint(history: Sequence[RoundAudit]) -> str:
    """The hint, when the gain's 95% interval has held zero for the last STALL_ROUNDS rounds in a row: the
    labels those rounds added did not measurably raise the policy's accuracy on its pools. It says how wide the
    last interval is (a few audit answers a round resolve only large changes) and that on pools of the policy's
    own samples this accuracy can stay near ½ while the reward rises (the benchmark's finding,
    benchmarks/README.md). It stops nothing."""
    recent = [h for h in history if h.gain_ci is not None][-STALL_ROUNDS:]
    if len(recent) < STALL_ROUNDS or not all(lo <= 0.0 <= hi for lo, hi in (h.gain_ci for h in recent)):
        return ""
    labels = recent[-1].labels_before - recent[0].since
    lo, hi = recent[-1].gain_ci
    return (f"the last {labels} labels did not measurably raise the policy's accuracy on its pools: the audit gain's "
            f"95% interval (±{(hi - lo) / 2 * 100:.1f} points per 100 labels) has held zero for {STALL_ROUNDS} rounds; "
            "on pools of its own samples that accuracy can stay near ½ while the reward rises, so read it beside the "
            "drift and any held-out evaluation")


def summary_line(audit: Accuracy, picks: Accuracy, what: str) -> str:
    """``audit accuracy 0.62 ± 0.11 on 12 audit answers, 0.48 on the strategy's 108 picks (what)``; empty when
    no answer could be scored."""
    if not audit.n and not picks.n:
        return ""
    parts = []
    if audit.n:
        parts.append(f"audit accuracy {audit.mean:.2f} ± {audit.se:.2f} on {audit.n} audit answers")
    if picks.n:
        parts.append(f"{picks.mean:.2f} on the strategy's {picks.n} picks")
    return f"{', '.join(parts)} ({what})"
