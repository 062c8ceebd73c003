"""What a pool of candidate pairs is made of, and how the policy sees it: ``activedpo-client pool report`` and a
section of ``select``'s output.

From the pool file alone (:func:`text_stats`): pairs, prompts, distinct responses, responses repeated
verbatim under the same prompt (exact duplicates), distinct responses that are the same text once case,
whitespace and punctuation are set aside (near duplicates), and the pairs whose two responses differ only
trivially that way or in at most :data:`TRIVIAL_TOKENS` words. From the server (:meth:`SelectorClient.
describe_pool`): each pair's implicit-reward margin ``|β·Δ log π/π_ref|`` under the policy and its ActiveDPO
score ``φᵀV⁻¹φ``, summarized by quantiles and drawn as histograms (PNG).

What such a pool predicts comes from the committed benchmark (benchmarks/README.md): ActiveDPO reached
random's final reward with about half the labels on ``mixed`` (three quarters of its prompts give near-tie
pairs) and was indistinguishable from random on ``toy`` and ``signoff``, matching published findings that
random is hard to beat on diverse on-policy pools. Of what the report shows, the spread of the ActiveDPO
scores told those pools apart, under π_ref and after a round, with the labels so far or without (the 90%/10%
quantile ratio: 3.0 to 4.2 on ``mixed``, 1.7 to 2.4 on the others); the margins' near-tie share did not
(``signoff``'s were the most near-tied), and the text statistics found no duplicates in any of them. Three
tasks are little to generalize from: the line says which benchmark pool a pool resembles, not what selection
will buy on it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activedpo_client.messages import CandidateGroup, CandidatePair

TRIVIAL_TOKENS = 2  # two responses differing in at most this many words (after normalizing) differ trivially,
TRIVIAL_SHARE = 0.2  # if those words are at most this share of the longer one
NEAR_TIE = 0.1  # |β·Δ| below this: the policy's implicit reward barely tells the pair apart
TRIVIAL_POOL = 0.5  # a pool where more than this share of pairs differ only trivially: deduplicate first
UNEVEN = 2.6  # ActiveDPO scores' 90%/10% quantile ratio from which the pairs differ widely in what they would
# teach: between the benchmark's `mixed` (3.0 to 4.2, where selection paid) and `toy` and `signoff` (1.7 to 2.4)
QUANTILES = (0.1, 0.5, 0.9)


def normalize(text: str) -> str:
    """Case, whitespace and punctuation set aside: what near-duplicate responses share."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def trivially_different(a: str, b: str) -> bool:
    """The same once normalized, or differing in at most TRIVIAL_TOKENS words (changed, added or dropped in one
    stretch) that are at most TRIVIAL_SHARE of the longer response."""
    x, y = normalize(a).split(), normalize(b).split()
    if x == y:
        return True
    if abs(len(x) - len(y)) > TRIVIAL_TOKENS:
        return False
    start = 0
    while start < min(len(x), len(y)) and x[start] == y[start]:
        start += 1
    end = 0
    while end < min(len(x), len(y)) - start and x[-1 - end] == y[-1 - end]:
        end += 1
    changed = max(len(x), len(y)) - start - end
    return changed <= TRIVIAL_TOKENS and changed <= TRIVIAL_SHARE * max(len(x), len(y))


@dataclass(frozen=True)
class TextStats:
    pairs: int
    prompts: int
    responses: int  # distinct responses (per prompt)
    exact_duplicates: int  # responses repeated verbatim under the same prompt (beyond their first)
    near_duplicates: int  # distinct responses the same as another of their prompt once normalized (beyond the first)
    trivial_pairs: int  # pairs whose responses differ only trivially

    def lines(self) -> list[str]:
        share = self.trivial_pairs / self.pairs if self.pairs else 0.0
        return [f"{self.pairs:,} pairs over {self.prompts:,} prompts, {self.responses:,} distinct responses",
                f"duplicates: {self.exact_duplicates:,} responses repeated verbatim under their prompt, "
                f"{self.near_duplicates:,} more that repeat another but for case, spacing and punctuation",
                f"pairs whose responses differ only trivially (case and punctuation, or ≤ {TRIVIAL_TOKENS} words and "
                f"≤ {TRIVIAL_SHARE:.0%} of them): "
                f"{self.trivial_pairs:,} ({share:.1%})"]  # fmt: skip


def text_stats(items: Iterable[CandidateGroup | CandidatePair], read: dict | None = None) -> TextStats:
    """:class:`TextStats` of a pool as :func:`activedpo_client.pool.read_pool` reads it; ``read`` is the stats dict
    it fills (the responses a row repeats, which it drops before they reach here). Streams: each pair is judged as
    it comes, and a prompt keeps only the hashes of its responses (raw and normalized), not their texts."""
    by_prompt: dict[int, list[tuple[int, int]]] = {}
    pairs = trivial = 0
    for item in items:
        if isinstance(item, CandidateGroup):
            rs = list(dict.fromkeys(item.responses))
            group = [(rs[i], rs[j]) for i in range(len(rs)) for j in range(i + 1, len(rs))]
            responses = item.responses
        else:
            group, responses = [(item.response_a, item.response_b)], (item.response_a, item.response_b)
        pairs += len(group)
        trivial += sum(trivially_different(a, b) for a, b in group)
        by_prompt.setdefault(hash(item.prompt), []).extend((hash(r), hash(normalize(r))) for r in responses)
    distinct = exact = near = 0
    for responses in by_prompt.values():
        unique = set(responses)
        distinct += len(unique)
        exact += len(responses) - len(unique)
        near += len(unique) - len({norm for _, norm in unique})  # beyond the first of each normalized text
    exact += (read or {}).get("repeated_in_row", 0)
    return TextStats(pairs, len(by_prompt), distinct, exact, near, trivial)


@dataclass(frozen=True)
class PolicyView:
    """How the policy sees the pool: from the server's DescribePool."""

    pairs: int  # unleased, unlabeled pairs on the server
    described: int  # of which described (all, or a uniform sample)
    margin: np.ndarray  # |β·Δ| per described pair
    score: np.ndarray  # φᵀV⁻¹φ per described pair
    checkpoint_id: str

    def near_ties(self) -> float:
        return float(np.mean(self.margin < NEAR_TIE)) if self.margin.size else 0.0

    def spread(self) -> float:
        """The ActiveDPO scores' 90%/10% quantile ratio: how unevenly the pairs would teach (∞ when a tenth of
        them would teach nothing)."""
        if not self.score.size:
            return float("nan")
        low, high = np.quantile(self.score, (0.1, 0.9))
        return float(high / low) if low > 0 else float("inf") if high > 0 else 1.0

    def lines(self, beta: float) -> list[str]:
        if not self.described:
            return ["the server holds no unlabeled pair of this pool"]
        q = _quantiles
        sample = "" if self.described == self.pairs else f" (a uniform sample of {self.described:,})"
        return [f"under {self.checkpoint_id}{sample}: implicit-reward margin |β·Δ log π/π_ref| (β = {beta:g}) "
                f"quantiles {q(self.margin)}; {self.near_ties():.1%} of pairs below {NEAR_TIE:g} (near-ties)",
                f"ActiveDPO score φᵀV⁻¹φ quantiles {q(self.score)} (90%/10% ratio {self.spread():.2f}); the top "
                f"10% hold {_top_share(self.score):.1%} of the total"]  # fmt: skip


def _quantiles(a: np.ndarray) -> str:
    return ", ".join(f"{int(p * 100)}% {v:.3g}" for p, v in zip(QUANTILES, np.quantile(a, QUANTILES), strict=True))


def _top_share(score: np.ndarray) -> float:
    s = np.sort(score)[::-1]
    return float(s[: max(1, len(s) // 10)].sum() / s.sum()) if s.size and s.sum() > 0 else 0.0


def of_description(description, beta: float) -> PolicyView:
    """A :class:`PolicyView` from the client's ``PoolDescription``; margins scaled by DPO's β."""
    margin = np.abs(np.asarray(description.margins, dtype=np.float64)) * beta
    return PolicyView(description.pairs, len(description.pair_ids), margin,
                      np.asarray(description.scores, dtype=np.float64), description.checkpoint_id)  # fmt: skip


def prediction(text: TextStats, view: PolicyView | None) -> str:
    """What such a pool predicts, from the committed benchmark: by the spread of the ActiveDPO scores, which
    benchmark pool it resembles; and whether to deduplicate first."""
    said = []
    if text.pairs and text.trivial_pairs / text.pairs > TRIVIAL_POOL:
        said.append("most pairs differ only trivially: many labels would be coin flips (deduplicate before labeling)")
    if view is not None and view.described:
        r = view.spread()
        if r >= UNEVEN:
            said.append(f"the ActiveDPO scores are uneven (90%/10% ratio {r:.2f}): some pairs would teach far more "
                        "than others, as in the benchmark's `mixed` pool (ratio 3.0 to 4.2), where ActiveDPO reached "
                        "random's final reward with about half the labels")  # fmt: skip
        else:
            said.append(f"the ActiveDPO scores are even (90%/10% ratio {r:.2f}): the pairs would teach alike, as in "
                        "the benchmark's `toy` and `signoff` pools (ratio 1.7 to 2.4), where ActiveDPO was "
                        "indistinguishable from random")  # fmt: skip
        if not view.margin.any():
            said.append("the policy is π_ref (no DPO round yet), so the margins say nothing yet")
    else:
        said.append("without the policy's scores the text alone does not tell which benchmark pool this resembles")
    return "; ".join(said)


def plot(view: PolicyView, out: Path, beta: float) -> Path:
    """Histograms of the margin and the score, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from activedpo_core.atomic import atomic_write

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    left.hist(view.margin, bins=40, color="tab:blue")
    left.axvline(NEAR_TIE, color="gray", ls=":", lw=1)
    left.set_xlabel(f"|β·Δ log π/π_ref| (β = {beta:g})")
    left.set_ylabel("pairs")
    left.set_title(f"implicit-reward margin: {view.near_ties():.0%} near-ties")
    right.hist(view.score, bins=40, color="tab:orange")
    right.set_xlabel("φᵀV⁻¹φ")
    right.set_title(f"ActiveDPO score before any pick: 90%/10% ratio {view.spread():.2f}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"{view.described:,} of {view.pairs:,} pairs under {view.checkpoint_id}", fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
