"""What the store takes and gives, and the checks on it: the limits on sizes, the preference values, the rows
(candidates in, labels in and out, pairs' texts, exports, the pool as the engine sees it) and one-line errors
for input the store refuses. No SQL here: :mod:`activedpo_server.store` holds the database."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from activedpo_server.errors import InvalidArgument

MAX_TEXT_CHARS = 200_000  # a prompt or response longer than this is a mistake, not a candidate
MAX_ID_CHARS = 256  # ids, pool tags, projects, annotators, idempotency keys, request ids, client names
MAX_RESPONSES_PER_GROUP = 64  # K responses make K·(K−1)/2 pairs: 64 → 2,016 pairs from one group
MAX_PAIRS_PER_REQUEST = 1_000_000  # candidate pairs one AddCandidates request may make (one transaction)

PREF_A, PREF_B, PREF_TIE, PREF_BOTH_BAD = 1, 2, 3, 4  # activedpo.v1.Preference values
# A withdrawn answer stays as a row with preference 0 (never exported or counted) so that its key keeps
# its revision: a retry of the answer it replaced cannot bring that answer back.
WITHDRAWN = 0
MAX_MESSAGES_CHARS = 4 * MAX_TEXT_CHARS  # a prompt's conversation (JSON) shown to people


class StoreError(InvalidArgument):
    """Input the store refuses (a clash of ids, an empty text); the message says which."""


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def check_text(what: str, text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise StoreError(f"{what} is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise StoreError(f"{what} is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}")
    return text


def check_id(what: str, value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > MAX_ID_CHARS:
        raise StoreError(f"{what} {value[:40]!r}… is longer than {MAX_ID_CHARS} characters")
    return value


@dataclass
class Candidates:
    """One item of an AddCandidates stream: a prompt with responses (all pairs) or one explicit pair."""

    prompt: str
    responses: list[tuple[str | None, str]]  # (caller id or None, text); a pair has exactly two
    prompt_id: str | None = None
    pair_id: str | None = None  # only for an explicit pair
    pool: str = ""
    explicit_pair: bool = False
    messages: str = ""  # the conversation the prompt was rendered from (JSON), shown to people


@dataclass(frozen=True)
class AddedPair:
    """Where an explicit pair item landed: its id, whether it is new, and whether the stored A is the item's b."""

    pair_id: str
    added: bool
    swapped: bool


@dataclass
class AddResult:
    prompts_added: int = 0
    responses_added: int = 0
    pairs_added: int = 0
    pairs_deduplicated: int = 0
    pairs: list[AddedPair] = field(default_factory=list)  # one per explicit pair item, in order


@dataclass
class LabelIn:
    pair_id: str
    preference: int
    annotator: str
    idempotency_key: str | None = None
    revision: int = 0  # with a key: a larger one replaces the answer recorded under it
    withdrawn: bool = False  # with a key and a larger revision: the person took the answer back


@dataclass(frozen=True)
class PairText:
    """A pair's ids and texts."""

    pair_id: str
    prompt_id: str
    prompt: str
    response_a_id: str
    response_a: str
    response_b_id: str
    response_b: str
    prompt_messages: str = ""  # the prompt's conversation (JSON) when it was added with one


@dataclass(frozen=True)
class Request:
    """A SelectBatch request id, scoped to (project, client), with the parameters it was made with."""

    project: str
    client: str
    request_id: str
    params: str  # canonical JSON of budget, strategy, pool, seed, lease_seconds


@dataclass(frozen=True)
class ExportRow:
    """One recorded label with its pair's texts, chosen first."""

    label_id: int
    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    preference: int
    annotator: str
    created: float
    checkpoint_id: str
    late: bool
    idempotency_key: str = ""
    revision: int = 0
    audit: bool = False  # the pair was leased as an audit pair
    margin: float | None = None  # the selecting policy's margin (A minus B); None: the pair was never selected


@dataclass(frozen=True)
class LeasedBatch:
    """The pairs of a lease still held, in rank order, as they were chosen."""

    rows: list[int]
    scores: list[float]
    expires: float
    audit: list[bool]
    margins: list[float]


@dataclass
class PoolView:
    """Unlabeled, unleased candidates and the labeled pairs, as response row ids."""

    pair_rows: np.ndarray  # [P] pair row ids
    pairs: np.ndarray  # [P, 2] response row ids
    pair_prompt: np.ndarray  # [P] prompt row ids
    labeled: np.ndarray  # [k, 2] response row ids of A/B-labeled pairs (one row per pair)
    labeled_prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [k] prompt row ids


def short(value: str) -> str:
    """``value`` for a message: its repr, cut to 60 characters with its length when longer."""
    return repr(value) if len(value) <= 60 else f"{value[:60]!r}… ({len(value):,} characters)"


def check_messages(what: str, text: str) -> None:
    """A prompt's conversation: JSON ``[{"role": str, "content": str}, ...]`` of bounded size."""
    if len(text) > MAX_MESSAGES_CHARS:
        raise StoreError(f"{what} are {len(text):,} characters long; the limit is {MAX_MESSAGES_CHARS:,}")
    try:
        msgs = json.loads(text)
    except ValueError as e:
        raise StoreError(f"{what} are not JSON ({e})") from None
    if (
        not isinstance(msgs, list)
        or not msgs
        or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in msgs
        )
    ):
        raise StoreError(f'{what} must be a JSON list of {{"role": str, "content": str}} objects')


def label_problem(lab: LabelIn) -> str:
    if len(lab.pair_id) > MAX_ID_CHARS:
        return f"pair id {short(lab.pair_id)} is longer than {MAX_ID_CHARS} characters"
    if not lab.withdrawn and lab.preference not in (PREF_A, PREF_B, PREF_TIE, PREF_BOTH_BAD):
        return "preference must be A, B, TIE or BOTH_BAD"
    if lab.withdrawn and not (lab.idempotency_key and lab.revision > 0):
        return "a withdrawal needs the idempotency key of the answer it withdraws and a revision > 0"
    if lab.revision < 0:
        return "revision must be ≥ 0"
    if not lab.annotator or not lab.annotator.strip():
        return "annotator is required"
    if len(lab.annotator) > MAX_ID_CHARS:
        return f"annotator is longer than {MAX_ID_CHARS} characters"
    if lab.idempotency_key and len(lab.idempotency_key) > MAX_ID_CHARS:
        return f"idempotency key is longer than {MAX_ID_CHARS} characters"
    return ""
