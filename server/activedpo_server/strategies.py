"""Selection strategies: ActiveDPO and the baselines users compare it with, behind one interface.

A strategy gets a :class:`Pool` (candidate pairs, labeled pairs, and a :class:`FeatureSource`
that computes whatever the strategy asks for) and returns ``budget`` :class:`Pick` objects in
pick order, each with the score that chose it. Strategies are small classes in a registry:

* ``activedpo`` — greedy ``φᵀV⁻¹φ`` on projected LoRA-gradient differences under the current
  policy (Lin et al., ICLR 2026); score: ``φᵀV⁻¹φ`` at pick time.
* ``random`` — uniform, from the caller's seeded generator; score: the random priority.
* ``aplp`` — Muldrew et al. 2024 (arXiv 2402.08114): keep the prompts with the highest
  predictive entropy ``H(x) ≈ −mean_y log π_θ(y|x)`` over their sampled responses, then take
  the pairs with the largest implicit-reward margin ``|r(y1) − r(y2)|``,
  ``r = β·log π_θ/π_ref``; score: the margin.
* ``apo`` — Das et al. 2024 (arXiv 2402.10500): the same greedy ``V⁻¹`` rule on a fixed,
  policy-independent embedding from π_ref; score: ``φᵀV⁻¹φ``.

Research strategies live in a registry of their own, :data:`RESEARCH_STRATEGIES`: the
label-efficiency benchmark runs them as arms, and a server answers them only when started with
``--research-strategies``. They stay out of the product: one is an ablation, and our variants
have not beaten ``activedpo`` (``benchmarks/README.md`` has the figures):

* ``activedpo-fisher`` — ours, beyond the paper: ActiveDPO with every pair weighted by the
  Bradley–Terry Fisher information of its current implicit-reward margin; see
  :class:`FisherActiveDPO`.
* ``activedpo-margin`` — ours: ActiveDPO weighted towards large implicit-reward margins, APLP's
  criterion (:class:`MarginActiveDPO`).
* ``activedpo-entropy`` — ours: ActiveDPO among APLP's high-entropy prompts (:class:`EntropyActiveDPO`).
* ``activedpo-topb`` — the ablation without the intra-batch update: the ``budget`` largest
  ``φᵀV₀⁻¹φ`` with ``V₀`` from the labeled pairs only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from activedpo_server.features import pair_features
from activedpo_server.selection import PairRows, greedy_select_scored, top_scores_select


class FeatureSource(Protocol):
    """Per-response quantities a strategy may ask for; responses are indices into the pool."""

    def gradient_features(self, responses: np.ndarray) -> np.ndarray:
        """Projected (normalised) LoRA-gradient features under the current policy: ``[n, d]``."""

    def embedding_features(self, responses: np.ndarray) -> np.ndarray:
        """Policy-independent embeddings from π_ref: ``[n, h]``."""

    def logprobs(self, responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log π_θ(y|x), log π_ref(y|x))`` per response."""


@dataclass
class Pool:
    """Candidate pairs to choose from and the labeled pairs that shape ``V``.

    ``pairs`` and ``labeled`` hold response indices ``(i, j)``; ``response_prompt[i]`` is the
    prompt index of response ``i``. ``source`` computes features and log-probs on demand.
    """

    pairs: np.ndarray  # [P, 2] int64
    response_prompt: np.ndarray  # [R] int64
    source: FeatureSource
    labeled: np.ndarray | None = None  # [k, 2] int64
    device: str | None = None  # where the greedy V⁻¹ math runs in torch (cpu, cuda); None: numpy

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.labeled = np.asarray(self.labeled if self.labeled is not None else [], dtype=np.int64).reshape(-1, 2)
        self.response_prompt = np.asarray(self.response_prompt, dtype=np.int64)
        n = len(self.response_prompt)
        for name, arr in (("pairs", self.pairs), ("labeled", self.labeled)):
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                raise ValueError(f"{name} refer to responses outside 0..{n - 1}")
        if self.pairs.size and (self.response_prompt[self.pairs[:, 0]] != self.response_prompt[self.pairs[:, 1]]).any():
            raise ValueError("every pair must hold two responses to the same prompt")


@dataclass(frozen=True)
class Pick:
    """One chosen pair: its index in ``pool.pairs``, its rank in the batch (0 first) and the score that chose it."""

    index: int
    rank: int
    score: float


class Strategy(Protocol):
    name: ClassVar[str]

    def select(self, pool: Pool, budget: int, rng: np.random.Generator) -> list[Pick]: ...


STRATEGIES: dict[str, type] = {}  # what a server answers
RESEARCH_STRATEGIES: dict[str, type] = {}  # benchmark arms; a server answers them under --research-strategies


def register(cls: type) -> type:
    STRATEGIES[cls.name] = cls
    return cls


def register_research(cls: type) -> type:
    RESEARCH_STRATEGIES[cls.name] = cls
    return cls


def strategy_class(name: str, research: bool = False) -> type:
    """The class of strategy ``name``; research strategies only when ``research`` is true."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    if name in RESEARCH_STRATEGIES:
        if research:
            return RESEARCH_STRATEGIES[name]
        raise ValueError(
            f"strategy {name!r} is a research strategy, not a product one; "
            "start the server with --research-strategies to use it"
        )
    known = sorted(STRATEGIES) + (sorted(RESEARCH_STRATEGIES) if research else [])
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(known)}")


def get_strategy(name: str, research: bool = False, **options) -> Strategy:
    """The strategy called ``name``, built with ``options`` (its constructor's keyword arguments).

    Research strategies (:data:`RESEARCH_STRATEGIES`) are found only when ``research`` is true.
    """
    cls = strategy_class(name, research)
    try:
        return cls(**options)
    except TypeError as e:
        raise ValueError(f"bad options for strategy {name!r}: {e}") from None


def _check_budget(budget: int) -> None:
    if not (isinstance(budget, int | np.integer) and budget >= 0):
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")


def _picks(indices: Sequence[int], scores: Sequence[float]) -> list[Pick]:
    return [Pick(int(i), rank, float(s)) for rank, (i, s) in enumerate(zip(indices, scores, strict=True))]


def _features_of_pairs(fetch, pool: Pool) -> tuple[PairRows, np.ndarray]:
    """Pair-difference features of the candidates (gathered on demand, never an [N, d] matrix) and of the
    labeled pairs, fetching each response once."""
    needed = np.unique(np.concatenate([pool.pairs.ravel(), pool.labeled.ravel()]))
    feats = fetch(needed)  # [len(needed), d]: an array, or a view of the feature store
    row = np.full(len(pool.response_prompt), -1, dtype=np.int64)
    row[needed] = np.arange(len(needed))
    return PairRows(feats, row[pool.pairs]), pair_features(feats, row[pool.labeled])


class _GreedyV:
    """Greedy ``φᵀV⁻¹φ`` over pair-difference features from ``_fetch``."""

    def __init__(self, lam: float = 1.0):
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam = lam

    def _fetch(self, source: FeatureSource, responses: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def select(self, pool: Pool, budget: int, rng: np.random.Generator) -> list[Pick]:
        _check_budget(budget)
        if len(pool.pairs) == 0 or budget == 0:
            return []
        cand, labeled = _features_of_pairs(lambda r: self._fetch(pool.source, r), pool)
        return _picks(*self._choose(pool, cand, labeled, budget))

    def _choose(self, pool: Pool, cand: PairRows, labeled: np.ndarray, budget: int):
        """(indices, scores) of the picks among the candidates' pair features."""
        return greedy_select_scored(cand, labeled, budget, self.lam, pool.device)


@register
class ActiveDPO(_GreedyV):
    """ActiveDPO: greedy ``V⁻¹`` on the policy's own projected LoRA gradients."""

    name = "activedpo"

    def _fetch(self, source, responses):
        return source.gradient_features(responses)


@register_research
class TopScores(ActiveDPO):
    """Ablation: ActiveDPO's scores without the intra-batch ``V`` update (plain top-B of ``φᵀV₀⁻¹φ``)."""

    name = "activedpo-topb"

    def _choose(self, pool, cand, labeled, budget):
        return top_scores_select(cand, labeled, budget, self.lam)


def _implicit_margins(pool: Pool, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``Δ̂ = r(y1) − r(y2)``, ``r = β·log π_θ/π_ref``, for the candidate and the labeled pairs."""
    responses = np.unique(np.concatenate([pool.pairs.ravel(), pool.labeled.ravel()]))
    policy, ref = pool.source.logprobs(responses)
    reward = np.zeros(len(pool.response_prompt))
    reward[responses] = beta * (np.asarray(policy, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    return (reward[pool.pairs[:, 0]] - reward[pool.pairs[:, 1]],
            reward[pool.labeled[:, 0]] - reward[pool.labeled[:, 1]])  # fmt: skip


def fisher_weight(margin: np.ndarray) -> np.ndarray:
    """``4·σ(Δ̂)(1 − σ(Δ̂))``: the Bradley–Terry Fisher information of a pair at margin Δ̂, scaled to 1 at Δ̂ = 0."""
    p = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(margin, dtype=np.float64)))  # σ, without overflow
    return 4.0 * p * (1.0 - p)


@register_research
class FisherActiveDPO(ActiveDPO):
    """ActiveDPO weighted by each pair's Bradley–Terry Fisher information (ours, beyond the paper).

    Under Bradley–Terry the information a label on pair ``i`` carries about the reward is
    ``σ(Δ̂_i)(1 − σ(Δ̂_i)) φ_iφ_iᵀ``, with ``Δ̂_i`` the current implicit-reward margin: a pair whose
    outcome the model already predicts confidently teaches little. So both the scores and ``V``
    use ``√w_i·φ_i`` with ``w = 4σ(Δ̂)(1 − σ(Δ̂))`` (the Laplace posterior of a logistic model):
    ``score = w·φᵀV⁻¹φ`` and ``V = λI + Σ w φφᵀ``. In round one π_θ = π_ref, every ``w`` is 1 and
    the picks equal ``activedpo``'s. ``beta`` is DPO's β.
    """

    name = "activedpo-fisher"

    def __init__(self, lam: float = 1.0, beta: float = 0.1):
        super().__init__(lam)
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = beta

    def _choose(self, pool, cand, labeled, budget):
        m_cand, m_lab = _implicit_margins(pool, self.beta)
        cand = cand.weighted(np.sqrt(fisher_weight(m_cand)))
        labeled = labeled * np.sqrt(fisher_weight(m_lab))[:, None].astype(labeled.dtype)
        return greedy_select_scored(cand, labeled, budget, self.lam, pool.device)


@register_research
class MarginActiveDPO(ActiveDPO):
    """ActiveDPO weighted towards pairs the policy already separates (ours, beyond the paper).

    APLP takes the pairs with the largest implicit-reward margin ``|Δ̂|``: where the policy commits
    to a preference, a label either confirms it or, when the policy is wrong, moves it most (DPO's
    gradient on a pair scales with ``σ(−Δ̂)`` of the labeled margin). Near-ties, pairs of equally
    good responses whose label is a coin flip, keep ``Δ̂ ≈ 0`` however long the policy trains. This
    variant folds that margin into ActiveDPO's rule, the opposite of ``activedpo-fisher``'s weight:
    ``w = 1 + |Δ̂|/mean|Δ̂|`` (scale-free, so DPO's β does not matter), with ``√w·φ`` in the scores
    and in ``V`` as there. In round one π_θ = π_ref, every weight is 1 and the picks are
    ``activedpo``'s.
    """

    name = "activedpo-margin"

    def _choose(self, pool, cand, labeled, budget):
        m_cand, m_lab = (np.abs(m) for m in _implicit_margins(pool, 1.0))
        scale = np.concatenate([m_cand, m_lab]).mean()  # never empty: select() returns early on no candidates
        w_cand, w_lab = (1.0 + m / scale if scale > 0 else np.ones_like(m) for m in (m_cand, m_lab))
        cand = cand.weighted(np.sqrt(w_cand))
        labeled = labeled * np.sqrt(w_lab)[:, None].astype(labeled.dtype)
        return greedy_select_scored(cand, labeled, budget, self.lam, pool.device)


@register_research
class EntropyActiveDPO(ActiveDPO):
    """ActiveDPO among APLP's high-entropy prompts (ours, beyond the paper).

    A prompt the policy has already solved is answered near-deterministically, and its candidate
    pairs are near-duplicates: a label there is noise. APLP's first stage drops such prompts by
    their predictive entropy; ActiveDPO's greedy ``V⁻¹`` rule then chooses among the pairs of the
    ``prompt_fraction`` most uncertain prompts (:func:`high_entropy_pairs`), with ``V`` from all
    labeled pairs.
    """

    name = "activedpo-entropy"

    def __init__(self, lam: float = 1.0, prompt_fraction: float = 0.5):
        super().__init__(lam)
        if not 0 < prompt_fraction <= 1:
            raise ValueError(f"prompt_fraction must be in (0, 1], got {prompt_fraction}")
        self.prompt_fraction = prompt_fraction

    def select(self, pool: Pool, budget: int, rng: np.random.Generator) -> list[Pick]:
        _check_budget(budget)
        if len(pool.pairs) == 0 or budget == 0:
            return []
        responses = np.unique(pool.pairs.ravel())
        policy, _ = pool.source.logprobs(responses)
        eligible = high_entropy_pairs(pool, responses, policy, budget, self.prompt_fraction)
        # filter before featurizing: only the kept prompts' responses get gradient features
        kept = Pool(pool.pairs[eligible], pool.response_prompt, pool.source, pool.labeled, pool.device)
        return [Pick(int(eligible[p.index]), p.rank, p.score) for p in super().select(kept, budget, rng)]


@register
class APO(_GreedyV):
    """APO: greedy ``V⁻¹`` on π_ref's fixed embedding, independent of the policy being trained."""

    name = "apo"

    def _fetch(self, source, responses):
        return source.embedding_features(responses)


@register
class Random:
    """Uniformly random pairs, seeded by the caller's generator."""

    name = "random"

    def select(self, pool: Pool, budget: int, rng: np.random.Generator) -> list[Pick]:
        _check_budget(budget)
        priority = rng.random(len(pool.pairs))
        order = np.argsort(-priority, kind="stable")[:budget]
        return _picks(order, priority[order])


@register
class APLP:
    """APLP: highest-entropy prompts first, then the largest implicit-reward margins among their pairs.

    ``prompt_fraction`` of the prompts (by predictive entropy) are kept, but never fewer than
    it takes to hold ``budget`` pairs; ``beta`` scales the implicit reward (DPO's β).
    """

    name = "aplp"

    def __init__(self, prompt_fraction: float = 0.5, beta: float = 0.1):
        if not 0 < prompt_fraction <= 1:
            raise ValueError(f"prompt_fraction must be in (0, 1], got {prompt_fraction}")
        self.prompt_fraction, self.beta = prompt_fraction, beta

    def select(self, pool: Pool, budget: int, rng: np.random.Generator) -> list[Pick]:
        _check_budget(budget)
        if len(pool.pairs) == 0 or budget == 0:
            return []
        responses = np.unique(pool.pairs.ravel())
        policy, ref = pool.source.logprobs(responses)
        eligible = high_entropy_pairs(pool, responses, policy, budget, self.prompt_fraction)
        reward = np.zeros(len(pool.response_prompt))
        reward[responses] = self.beta * (np.asarray(policy, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
        margin = np.abs(reward[pool.pairs[eligible, 0]] - reward[pool.pairs[eligible, 1]])
        order = np.lexsort((eligible, -margin))[:budget]  # largest margin first, ties to lowest index
        return _picks(eligible[order], margin[order])


def high_entropy_pairs(pool: Pool, responses: np.ndarray, policy_logp, budget: int, fraction: float) -> np.ndarray:
    """APLP's first stage: the candidate pairs (indices into ``pool.pairs``, ascending) of the prompts with the
    highest predictive entropy ``H(x) ≈ −mean_y log π_θ(y|x)`` over their candidate ``responses``.

    ``fraction`` of the prompts are kept, but never fewer than it takes to hold ``budget`` pairs; ties in
    entropy go to the lower prompt index."""
    prompts = pool.response_prompt[responses]
    uniq, inverse = np.unique(prompts, return_inverse=True)
    entropy = -np.bincount(inverse, weights=np.asarray(policy_logp, dtype=np.float64)) / np.bincount(inverse)
    ranked = uniq[np.lexsort((uniq, -entropy))]
    pair_prompt = pool.response_prompt[pool.pairs[:, 0]]
    held = np.cumsum(np.bincount(pair_prompt, minlength=len(pool.response_prompt))[ranked])
    keep_n = max(1, math.ceil(fraction * len(ranked)))
    enough = int(np.searchsorted(held, budget)) + 1  # prompts it takes to hold the budget (all when they cannot)
    kept = ranked[: max(keep_n, min(enough, len(ranked)))]
    return np.flatnonzero(np.isin(pair_prompt, kept))


LAM_STRATEGIES = frozenset(  # those taking λ
    n for n, c in (STRATEGIES | RESEARCH_STRATEGIES).items() if issubclass(c, _GreedyV)
)
