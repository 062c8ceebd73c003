"""What the client and the selection server exchange, as typed dataclasses.

``SelectorClient`` turns protobuf messages into these at the edge (``from_pb``/``to_pb``), and
the round loop, the CLI and the label files use them; nothing past the edge touches ``pb2``.
Batches are stored in a run directory as JSON (``Batch.to_dict``/``from_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from activedpo_core.lora import LoraSpec


@dataclass(frozen=True)
class ServerStatus:
    checkpoint_id: str = ""
    strategy: str = ""
    pool_size: int = 0
    featurized: int = 0
    labeled: int = 0
    leased: int = 0
    feature_dim: int = 0
    lam: float = 0.0
    version: str = ""
    prompts: int = 0
    responses: int = 0
    annotations: int = 0
    loading_checkpoint_id: str = ""
    lora: LoraSpec | None = None  # the adapter whose gradients are the features
    fresh_adapter: bool = False  # True: ``lora`` is the fresh adapter of a checkpoint without one (round one)
    ties: int = 0  # current answers that are ties ("about the same")
    both_bad: int = 0  # current answers that say both responses are unacceptable

    def adapter_line(self) -> str:
        """``fresh LoRA r=4, α=8, targets auto`` (round one) or ``LoRA r=4, α=8, targets q_proj,v_proj``."""
        if self.lora is None:
            return "no adapter"
        return f"{'fresh ' if self.fresh_adapter else ''}LoRA {self.lora.describe()}"


@dataclass(frozen=True)
class LoadResult:
    checkpoint_id: str
    loaded: bool  # False: it was already current
    previous_checkpoint_id: str = ""
    refeaturized: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class AddedPair:
    """Where an explicit pair landed on the server (``add_candidates(..., return_pairs=True)``)."""

    pair_id: str
    added: bool  # False: it was already there
    swapped: bool  # the server's response A is the item's response_b: a preference for the item's A is "B"

    def preference(self, item_preference: str) -> str:
        """A preference stated in the item's order (A = its response_a), in the server's order."""
        return {"A": "B", "B": "A"}.get(item_preference, item_preference) if self.swapped else item_preference


@dataclass(frozen=True)
class AddResult:
    prompts_added: int
    responses_added: int
    pairs_added: int
    pairs_deduplicated: int
    added: tuple[AddedPair, ...] = ()  # with return_pairs: one per explicit pair item, in order

    @property
    def pairs(self) -> int:
        return self.pairs_added + self.pairs_deduplicated

    def __add__(self, other: AddResult) -> AddResult:
        return AddResult(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class CandidateGroup:
    """A prompt with K ≥ 2 responses: every unordered pair of them is a candidate."""

    prompt: str
    responses: list[str] | tuple[str, ...]
    prompt_id: str = ""  # empty: the server hashes the content
    response_ids: tuple[str, ...] = ()
    messages: str = ""  # the conversation ``prompt`` was rendered from (JSON), shown to people

    def to_pb(self, pb):
        ids = self.response_ids or ("",) * len(self.responses)
        responses = [pb.CandidateResponse(id=i, text=r) for i, r in zip(ids, self.responses, strict=True)]
        return pb.PromptGroup(id=self.prompt_id, prompt=self.prompt, responses=responses, messages=self.messages)


@dataclass(frozen=True)
class CandidatePair:
    """One explicit pair of responses to a prompt."""

    prompt: str
    response_a: str
    response_b: str
    pair_id: str = ""
    prompt_id: str = ""
    messages: str = ""  # as CandidateGroup.messages

    def to_pb(self, pb):
        return pb.CandidatePair(id=self.pair_id, prompt_id=self.prompt_id, prompt=self.prompt,
                                a=pb.CandidateResponse(text=self.response_a),
                                b=pb.CandidateResponse(text=self.response_b), messages=self.messages)  # fmt: skip


@dataclass(frozen=True)
class SelectedPair:
    pair_id: str
    prompt: str
    response_a: str
    response_b: str
    score: float  # what chose it: φᵀV⁻¹φ for activedpo/apo, the margin for aplp
    rank: int  # 0 = picked first
    prompt_id: str = ""
    response_a_id: str = ""
    response_b_id: str = ""
    prompt_messages: str = ""  # the prompt's conversation (JSON) when the server holds one
    audit: bool = False  # drawn uniformly at random to audit the policy, not by the strategy
    # the selecting policy's log π_θ/π_ref of response A minus that of B (> 0: prefers A); None in batch files
    # written before servers sent it
    margin: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def conversation(self) -> list[dict]:
        """The prompt as people should read it: its messages, or the prompt text as one user turn."""
        import json

        if self.prompt_messages:
            return json.loads(self.prompt_messages)
        return [{"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class Batch:
    checkpoint_id: str
    strategy: str
    lease_id: str
    candidates: int  # unleased, unlabeled candidates it was chosen from
    pairs: tuple[SelectedPair, ...]

    @classmethod
    def from_pb(cls, batch) -> Batch:
        pairs = tuple(SelectedPair(**{f.name: getattr(p, f.name) for f in fields(SelectedPair)}) for p in batch.pairs)
        return cls(batch.checkpoint_id, batch.strategy, batch.lease_id, batch.candidates, pairs)

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("checkpoint_id", "strategy", "lease_id", "candidates")},
                "pairs": [p.to_dict() for p in self.pairs]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> Batch:
        known = {f.name for f in fields(SelectedPair)}
        pairs = tuple(SelectedPair(**{k: v for k, v in p.items() if k in known}) for p in data["pairs"])
        return cls(data["checkpoint_id"], data["strategy"], data["lease_id"], data["candidates"], pairs)


PREFERENCES = ("A", "B", "TIE", "BOTH_BAD")  # a person's answer about a pair; only A and B are trained on


@dataclass(frozen=True)
class Label:
    """One person's current answer about one pair."""

    pair_id: str
    preference: str  # one of PREFERENCES (ignored when ``withdrawn``)
    annotator: str
    idempotency_key: str = ""  # a retry with the same key is recorded once
    revision: int = 0  # with a key: a larger one revises the answer recorded under it (an edit)
    withdrawn: bool = False  # with a key and a larger revision: the person took the answer back

    @classmethod
    def from_dict(cls, data: dict) -> Label:
        return cls(data["pair_id"], data["preference"], data["annotator"], data.get("idempotency_key", ""),
                   int(data.get("revision", 0)), bool(data.get("withdrawn", False)))  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ExportedLabel:
    label_id: int
    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    annotator: str
    checkpoint_id: str
    late: bool
    preference: str = ""  # A, B, TIE or BOTH_BAD
    idempotency_key: str = ""
    revision: int = 0
    audit: bool = False  # the pair was selected as an audit pair
    margin: float | None = None  # the selecting policy's margin (A minus B); None: the pair was never selected

    def dpo_row(self) -> dict:
        """The ``{"prompt", "chosen", "rejected"}`` row TRL's DPOTrainer and ``datasets`` read."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass(frozen=True)
class PoolDescription:
    """How the server's current policy sees a pool (DescribePool)."""

    pairs: int  # unleased, unlabeled pairs in the pool
    pair_ids: tuple[str, ...]  # the pairs described: all, or a uniform sample
    margins: tuple[float, ...]  # log π_θ/π_ref of response A minus that of B, per pair
    scores: tuple[float, ...]  # φᵀV⁻¹φ against the labeled pairs, per pair
    checkpoint_id: str
