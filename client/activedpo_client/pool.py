"""Offline selection from an existing pool: candidates and past labels read from files, streamed to a server.

A pool file holds prompts with several responses (``{"prompt", "responses": [...]}``) or pairs
(``{"prompt", "chosen", "rejected"}`` or ``{"prompt", "response_a", "response_b"}``), strings or
TRL conversational messages, in any format :mod:`activedpo_trainer.prompts` reads. Rows are
streamed and sent in chunks, so the client's memory stays bounded whatever the pool's size;
each chunk is one server transaction, and ids are content hashes, so re-sending is harmless.

Past labels (``--labeled``, a labels export: ``{"prompt", "chosen", "rejected"}`` rows) are added
as pairs and submitted as labels with idempotency keys derived from their content, so V is
conditioned on them and running ``select`` again never records them twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.messages import AddResult, CandidateGroup, CandidatePair, Label
from activedpo_trainer.prompts import PromptFileError, PromptRenderer, check_prompt, iter_records

CHUNK = 5_000  # items per AddCandidates stream: bounds client memory, one transaction each
MAX_RESPONSES = 64  # the server's limit of responses per prompt group
LABELED_POOL = "labeled"  # the pool tag of imported labels (never selected from)


@dataclass(frozen=True)
class PoolStats:
    rows: int = 0
    groups: int = 0
    pairs: int = 0
    skipped: int = 0  # rows with fewer than two distinct non-empty responses


def _row_items(row: dict, where: str, render: PromptRenderer) -> CandidateGroup | CandidatePair | None:
    if "prompt" not in row:
        raise PromptFileError(f"{where}: no 'prompt' field (columns: {', '.join(row)})")
    raw = check_prompt(row["prompt"], where)
    prompt = render.prompt(raw)
    if row.get("responses") is not None:
        rs = row["responses"]
        if not isinstance(rs, list):
            raise PromptFileError(f"{where}: 'responses' must be a list")
        texts = [render.response(raw, r, f"{where} response {i}") for i, r in enumerate(rs)]
        texts = list(dict.fromkeys(t for t in texts if t.strip()))
        if len(texts) > MAX_RESPONSES:
            raise PromptFileError(f"{where}: {len(texts)} distinct responses; the server takes at most "
                                  f"{MAX_RESPONSES} per prompt: split the row into several")  # fmt: skip
        return CandidateGroup(prompt, texts) if len(texts) >= 2 else None
    for a, b in (("chosen", "rejected"), ("response_a", "response_b")):
        if row.get(a) is not None and row.get(b) is not None:
            ra = render.response(raw, row[a], f"{where} {a}")
            rb = render.response(raw, row[b], f"{where} {b}")
            return CandidatePair(prompt, ra, rb) if ra != rb else None
    raise PromptFileError(
        f"{where}: expected 'responses' (a list), 'chosen' and 'rejected', or 'response_a' and 'response_b'"
    )


def read_pool(path: Path, render: PromptRenderer, stats: dict) -> Iterator[CandidateGroup | CandidatePair]:
    """Candidates of a pool file, one per usable row, streamed; counts land in ``stats``."""
    for n, row in enumerate(iter_records(path), 1):
        stats["rows"] = n
        item = _row_items(row, f"{path} row {n}", render)
        if item is None:
            stats["skipped"] = stats.get("skipped", 0) + 1
            continue
        if isinstance(item, CandidateGroup):
            k = len(item.responses)
            stats["groups"] = stats.get("groups", 0) + 1
            stats["pairs"] = stats.get("pairs", 0) + k * (k - 1) // 2
        else:
            stats["pairs"] = stats.get("pairs", 0) + 1
        yield item


def chunked(items: Iterable, size: int = CHUNK) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def add_pool(client, items: Iterable, pool: str, progress: Callable[[int], None] | None = None) -> AddResult:
    """Stream ``items`` to the server in chunks of :data:`CHUNK`; the summed result."""
    total = AddResult(0, 0, 0, 0)
    for chunk in chunked(items):
        total = total + client.add_candidates(chunk, pool=pool)
        if progress:
            progress(total.pairs)
    return total


def _content_id(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def read_labeled(path: Path, render: PromptRenderer) -> Iterator[tuple[CandidatePair, str]]:
    """(pair, annotator) for each row of a labels export; chosen is response A."""
    for n, row in enumerate(iter_records(path), 1):
        where = f"{path} row {n}"
        if not all(row.get(k) is not None for k in ("prompt", "chosen", "rejected")):
            raise PromptFileError(f"{where}: a labels file row needs 'prompt', 'chosen' and 'rejected'")
        raw = check_prompt(row["prompt"], where)
        prompt = render.prompt(raw)
        chosen = render.response(raw, row["chosen"], f"{where} chosen")
        rejected = render.response(raw, row["rejected"], f"{where} rejected")
        if chosen == rejected:
            raise PromptFileError(f"{where}: chosen and rejected are the same response")
        pair_id = "lab-" + _content_id(prompt, chosen, rejected)
        yield CandidatePair(prompt, chosen, rejected, pair_id=pair_id), str(row.get("annotator") or "import")


def import_labeled(client, path: Path, render: PromptRenderer) -> int:
    """Add a labels export's pairs and submit its labels (idempotent); the number of labels it holds."""
    count = 0
    for chunk in chunked(read_labeled(path, render)):
        client.add_candidates([pair for pair, _ in chunk], pool=LABELED_POOL)
        labels = [Label(pair.pair_id, "A", who, f"import:{pair.pair_id}:{who}") for pair, who in chunk]
        rejected = [r for r in client.submit_labels(labels) if not r.accepted]
        if rejected:
            raise PromptFileError(f"{path}: the server refused label {rejected[0].pair_id}: {rejected[0].reason}")
        count += len(chunk)
    return count
