"""What a run directory holds, as types: each step's result (``rounds/NNN/state.json``), the round's evaluation
(``eval.json``) and its metrics (one line of ``metrics.jsonl``). One name per quantity in all of them, in the
report and in the benchmarks: ``reward`` (the held-out mean reward), ``ref_reward`` (π_ref's), ``pref_acc``, ...

Files written by earlier versions are read too: the names they used (``mean``, ``ref_mean``, ``from``) map to
today's, and a key this version does not know is kept out of the typed value (never an error on resume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

LEGACY = {"mean": "reward", "ref_mean": "ref_reward", "from": "candidates"}  # the old spelling → today's


class Record:
    """A dataclass written as one JSON object: ``to_dict`` leaves out what is None, ``from_dict`` takes
    today's names and the legacy ones, and drops what it does not know."""

    KEEP_NONE: ClassVar[bool] = False  # metrics.jsonl keeps every key (a missing value is null, not absent)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return d if self.KEEP_NONE else {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        out = {}
        for k, v in data.items():
            k = LEGACY.get(k, k) if k not in known else k
            if k in known:
                out[k] = v
        return cls(**out)

    def summary(self) -> str:
        """``key value, ...`` for the progress line of a step, its wall time last."""
        d = self.to_dict()
        if "seconds" in d:
            d["seconds"] = d.pop("seconds")  # moved to the end
        return ", ".join(f"{k} {v}" for k, v in d.items())


# ---- the steps of a round (rounds/NNN/state.json) ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StepResult(Record):
    seconds: float = 0.0  # the step's wall time


@dataclass(frozen=True, kw_only=True)
class Generated(StepResult):
    prompts: int  # prompts sampled this round
    with_pairs: int  # of which at least two distinct non-empty responses came back


@dataclass(frozen=True, kw_only=True)
class Added(StepResult):
    pairs: int  # candidate pairs the server now holds for the round's pool


@dataclass(frozen=True, kw_only=True)
class Selected(StepResult):
    pairs: int  # pairs picked for labeling
    candidates: int  # pairs they were picked from
    checkpoint: str  # the checkpoint whose features chose them
    audit: int | None = None  # of the pairs, drawn uniformly at random to audit the policy
    pool_acc_oracle: float | None = None  # toy world, oracle annotator: the truth the audit estimate estimates


@dataclass(frozen=True, kw_only=True)
class Annotated(StepResult):
    labels: int
    A: int | None = None  # preferred A (the rest: B, ties, both bad)
    tie: int | None = None  # Label Studio: answered "tie"
    both_bad: int | None = None
    skipped: int | None = None  # Label Studio tasks skipped or cancelled
    tasks: int | None = None
    unlabeled: int | None = None  # people: pairs of the batch without a label (--done)
    released: int | None = None  # of which leases were released back to the pool
    truncated: int | None = None  # a reward model: responses cut to fit its context


@dataclass(frozen=True, kw_only=True)
class Submitted(StepResult):
    accepted: int
    replayed: int  # labels the server held already (a retry): not counted twice


@dataclass(frozen=True, kw_only=True)
class Trained(StepResult):
    labels: int  # labels DPO trained on (every round's so far)
    checkpoint: str  # the new checkpoint's id
    agreement: float | None = None  # share of this round's A/B labels the policy already ranked the same way


@dataclass(frozen=True, kw_only=True)
class Loaded(StepResult):
    server_checkpoint: str


@dataclass(frozen=True, kw_only=True)
class Evaluated(StepResult):
    """The round's held-out evaluation: ``eval.json`` and the evaluate step's result."""

    evaluate: str  # the evaluator: oracle | reward-model:PATH | none
    reward: float | None = None  # mean held-out reward of the policy's samples
    se: float | None = None  # its standard error over prompts
    n: int | None = None  # held-out prompts
    samples: int | None = None  # responses sampled per prompt
    win_rate: float | None = None  # against π_ref on the same prompts; ties count ½
    ref_reward: float | None = None  # π_ref's mean held-out reward
    ref_se: float | None = None
    pref_pairs: int | None = None  # judged held-out pairs sampled from π_ref
    pref_acc: float | None = None  # implicit reward vs the judge on them (π_ref: 0.5)
    pref_acc_se: float | None = None
    pref_pairs_policy: int | None = None  # judged held-out pairs sampled from this round's policy
    pref_acc_policy: float | None = None
    pref_acc_policy_se: float | None = None
    truncated: int | None = None  # responses cut to fit the reward model's context
    # drift from π_ref (activedpo_trainer.drift): no judge needed, so with --evaluate none too
    kl_seq: float | None = None  # KL(π_θ‖π_ref) per response (nats), on the policy's own samples
    kl_seq_se: float | None = None
    kl_token: float | None = None  # the same per token
    ref_loglik: float | None = None  # mean per-token log π_θ of π_ref's samples: capability retention
    ref_loglik_ref: float | None = None  # the same under π_ref
    drift_prompts: int | None = None
    drift_on: str | None = None  # "held-out" prompts, or "round" prompts where none are held out


STEP_RESULTS: dict[str, type[StepResult]] = {
    "generate": Generated, "add": Added, "select": Selected, "annotate": Annotated, "submit": Submitted,
    "train": Trained, "load": Loaded, "evaluate": Evaluated,
}  # fmt: skip
STEPS = tuple(STEP_RESULTS)  # in the order a round runs them


def read_step(step: str, data: dict) -> StepResult:
    return STEP_RESULTS[step].from_dict(data)


# ---- a finished round (metrics.jsonl) ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RoundMetrics(Record):
    """One line of ``metrics.jsonl``: what the status table, the plot, the report and the benchmarks read."""

    KEEP_NONE: ClassVar[bool] = True

    round: int
    labels: int  # labels trained on so far
    reward: float | None = None  # held-out mean reward (None without an evaluator)
    se: float | None = None
    win_rate: float | None = None
    ref_reward: float | None = None
    pref_acc: float | None = None  # on π_ref's judged held-out pairs
    pref_acc_se: float | None = None
    pref_pairs: int | None = None
    pref_acc_policy: float | None = None  # on pairs sampled from this round's policy
    agreement: float | None = None
    # audit pairs (activedpo_client.audit): the selecting policy's accuracy, scored before training on them
    labels_before: int | None = None  # labels the policy that selected this round's batch was trained on
    audit_acc: float | None = None  # on this round's pool, from its audit answers (and picks): unbiased
    audit_se: float | None = None
    audit_n: int | None = None
    audit_pooled: float | None = None  # pooled back over rounds until 30 audit answers (from audit_pooled_from)
    audit_pooled_se: float | None = None
    audit_pooled_n: int | None = None
    audit_pooled_from: int | None = None
    picks_acc: float | None = None  # on the strategy's own picks: how hard the picked pairs are
    pool_acc_oracle: float | None = None  # toy world, oracle annotator: the selecting policy's expected accuracy
    # on every pair of the round's pool under the oracle's label model (what audit_acc estimates)
    picks_n: int | None = None
    # audit accuracy gained per 100 labels since the previous audited round, as a fraction (0.05: the lines say
    # "+5.0 points"); a round of few labels extrapolates far
    gain: float | None = None
    gain_lo: float | None = None  # its 95% interval
    gain_hi: float | None = None
    hint: str = ""  # said when the gain's interval has held zero two rounds in a row
    kl_seq: float | None = None  # drift: KL(π_θ‖π_ref) per response, on the policy's samples (an estimate: ± SE)
    kl_seq_se: float | None = None
    kl_token: float | None = None
    ref_loglik: float | None = None  # per-token log π_θ of π_ref's samples (π_ref's own: ref_loglik_ref)
    ref_loglik_ref: float | None = None
    evaluate: str = "none"
    checkpoint: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # per step

    @classmethod
    def of_round(cls, r: int, trained: Trained, evaluated: Evaluated, seconds: dict[str, float],
                 audited=None, hint: str = "", selected: Selected | None = None) -> RoundMetrics:  # fmt: skip
        """``audited``: this round's :class:`activedpo_client.audit.RoundAudit`, when it had audit answers."""
        audit = {}
        if audited is not None and audited.estimate is not None:
            e, pooled, ci = audited.estimate, audited.pooled, audited.gain_ci
            audit = dict(labels_before=audited.labels_before, audit_acc=_r(e.mean), audit_se=_r(e.se), audit_n=e.n,
                         audit_pooled=_r(pooled.mean), audit_pooled_se=_r(pooled.se), audit_pooled_n=pooled.n,
                         audit_pooled_from=audited.pooled_from, picks_acc=_r(audited.picks.mean),
                         picks_n=audited.picks.n or None, gain=_r(audited.gain), gain_lo=_r(ci and ci[0]),
                         gain_hi=_r(ci and ci[1]))  # fmt: skip
        return cls(round=r, labels=trained.labels, reward=evaluated.reward, se=evaluated.se,
                   win_rate=evaluated.win_rate, ref_reward=evaluated.ref_reward, pref_acc=evaluated.pref_acc,
                   pref_acc_se=evaluated.pref_acc_se, pref_pairs=evaluated.pref_pairs,
                   pref_acc_policy=evaluated.pref_acc_policy, agreement=trained.agreement, **audit, hint=hint,
                   kl_seq=evaluated.kl_seq, kl_seq_se=evaluated.kl_seq_se, kl_token=evaluated.kl_token,
                   ref_loglik=evaluated.ref_loglik,
                   ref_loglik_ref=evaluated.ref_loglik_ref,
                   pool_acc_oracle=selected.pool_acc_oracle if selected is not None else None,
                   evaluate=evaluated.evaluate, checkpoint=trained.checkpoint, seconds=seconds)  # fmt: skip

    def drift_line(self) -> str:
        """``KL(π_θ‖π_ref) 0.420 nats per response (0.0210 per token); log-likelihood of π_ref's samples …``."""
        if self.kl_seq is None:
            return ""
        se = f" ± {self.kl_seq_se:.3f}" if self.kl_seq_se is not None else ""
        return (f"KL(π_θ‖π_ref) {self.kl_seq:.3f}{se} nats per response ({self.kl_token:.4f} per token); "
                f"log-likelihood of π_ref's samples {self.ref_loglik:.3f} per token (π_ref "
                f"{self.ref_loglik_ref:.3f})")  # fmt: skip

    def audit_line(self) -> str:
        """``audit 0.62 ± 0.11 (n 5; pooled r2–3 0.60 ± 0.07, n 10), picks 0.48 (n 45), gain …``; empty without."""
        if not self.audit_n:
            return ""
        out = f"audit {self.audit_acc:.2f} ± {self.audit_se:.2f} (n {self.audit_n}"
        if self.audit_pooled_from is not None and self.audit_pooled_from < self.round:
            out += (f"; pooled r{self.audit_pooled_from}–{self.round} {self.audit_pooled:.2f} ± "
                    f"{self.audit_pooled_se:.2f}, n {self.audit_pooled_n}")  # fmt: skip
        out += ")"
        if self.picks_n:
            out += f", picks {self.picks_acc:.2f} (n {self.picks_n})"
        if self.gain is not None:
            out += (f", gain {100 * self.gain:+.1f} [{100 * self.gain_lo:+.1f}, {100 * self.gain_hi:+.1f}] points "
                    "per 100 labels")  # fmt: skip
        return out

    def value(self, metric: str) -> float | None:
        """A metric by name (``reward``, ``pref_acc``, ...), as the benchmark's tables ask for it."""
        if metric not in METRIC_NAMES:
            raise KeyError(f"unknown metric {metric!r}; one of {', '.join(METRIC_NAMES)}")
        return getattr(self, metric)


METRIC_NAMES = ("reward", "se", "win_rate", "ref_reward", "pref_acc", "pref_acc_se", "pref_acc_policy", "agreement",
                "audit_acc", "audit_se", "audit_pooled", "picks_acc", "gain", "pool_acc_oracle", "kl_seq",
                "kl_token", "ref_loglik")  # fmt: skip


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
