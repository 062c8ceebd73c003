"""Offline selection from an existing pool: candidates and past labels read from files, streamed to a server.

A pool file holds prompts with several responses (``{"prompt", "responses": [...]}``) or pairs
(``{"prompt", "chosen", "rejected"}`` or ``{"prompt", "response_a", "response_b"}``), strings or
TRL conversational messages, in any format :mod:`activedpo_trainer.prompts` reads. Rows are
streamed and sent in chunks, so the client's memory stays bounded whatever the pool's size;
each chunk is one server transaction, and ids are content hashes, so re-sending is harmless.

Past labels (``--labeled``) come in every form the project writes or reads (see :func:`read_labeled`);
pairs given by their texts are found on the server by content or added as labeled pairs, and every
label is submitted with an idempotency key, so V is conditioned on them, a labeled pair is never
offered again, and running ``select`` again never records them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.messages import PREFERENCES, AddResult, CandidateGroup, CandidatePair, Label
from activedpo_trainer.prompts import PromptFileError, PromptRenderer, check_prompt, implicit_prompt, iter_rows

CHUNK = 5_000  # items per AddCandidates stream: bounds client memory, one transaction each
MAX_RESPONSES = 64  # the server's limit of responses per prompt group
LABELED_POOL = "labeled"  # the pool tag of imported labels (never selected from)


@dataclass(frozen=True)
class PoolStats:
    rows: int = 0
    groups: int = 0
    pairs: int = 0
    skipped: int = 0  # rows with fewer than two distinct non-empty responses


def display_messages(raw, rendered: str) -> str:
    """The conversation people should read for a prompt (JSON messages), or "" when ``rendered`` is the
    prompt as written (no chat template: the text itself is what to show)."""
    import json

    from activedpo_trainer.prompts import as_messages

    return "" if isinstance(raw, str) and raw == rendered else json.dumps(as_messages(raw), ensure_ascii=False)


def _row_items(row: dict, where: str, render: PromptRenderer,
               stats: dict | None = None) -> CandidateGroup | CandidatePair | None:  # fmt: skip
    if row.get("prompt") is None and row.get("chosen") is not None and row.get("rejected") is not None:
        raw, chosen, rejected = implicit_prompt(row["chosen"], row["rejected"], where)  # TRL's implicit prompt
        row = {"prompt": raw, "chosen": chosen, "rejected": rejected}
    if "prompt" not in row:
        raise PromptFileError(f"{where}: no 'prompt' field (columns: {', '.join(row)})")
    raw = check_prompt(row["prompt"], where)
    prompt = render.prompt(raw)
    if row.get("responses") is not None:
        rs = row["responses"]
        if not isinstance(rs, list):
            raise PromptFileError(f"{where}: 'responses' must be a list")
        texts = [t for t in (render.response(raw, r, f"{where} response {i}") for i, r in enumerate(rs)) if t.strip()]
        if stats is not None and len(set(texts)) < len(texts):  # the same response twice in one row
            stats["repeated_in_row"] = stats.get("repeated_in_row", 0) + len(texts) - len(set(texts))
        texts = list(dict.fromkeys(texts))
        if len(texts) > MAX_RESPONSES:
            raise PromptFileError(f"{where}: {len(texts)} distinct responses; the server takes at most "
                                  f"{MAX_RESPONSES} per prompt: split the row into several")  # fmt: skip
        return CandidateGroup(prompt, texts, messages=display_messages(raw, prompt)) if len(texts) >= 2 else None
    for a, b in (("chosen", "rejected"), ("response_a", "response_b")):
        if row.get(a) is not None and row.get(b) is not None:
            ra = render.response(raw, row[a], f"{where} {a}")
            rb = render.response(raw, row[b], f"{where} {b}")
            return CandidatePair(prompt, ra, rb, messages=display_messages(raw, prompt)) if ra != rb else None
    raise PromptFileError(
        f"{where}: expected 'responses' (a list), 'chosen' and 'rejected', or 'response_a' and 'response_b'"
    )


def read_pool(path: Path, render: PromptRenderer, stats: dict) -> Iterator[CandidateGroup | CandidatePair]:
    """Candidates of a pool file, one per usable row, streamed; counts land in ``stats``, and where the
    skipped rows are (the first few) in ``stats["skipped_at"]``."""
    for where, row in iter_rows(path):
        stats["rows"] = stats.get("rows", 0) + 1
        item = _row_items(row, f"{path} {where}", render, stats)
        if item is None:
            stats["skipped"] = stats.get("skipped", 0) + 1
            if len(stats.setdefault("skipped_at", [])) < 5:
                stats["skipped_at"].append(where)
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


@dataclass(frozen=True)
class LabeledRow:
    """One answer of a labels file: a pair the server holds (by id) or a pair given by its texts."""

    where: str  # "line 3", "row 3" or "task 2", for messages
    annotator: str
    preference: str = "A"  # A, B, TIE or BOTH_BAD: in ``pair``'s order (chosen first) or the server pair's order
    pair_id: str = ""  # a pair the server already holds (a batch's rows, a Label Studio export)
    pair: CandidatePair | None = None  # a pair given by its texts (TRL rows): found on the server or added
    idempotency_key: str = ""  # the key it was submitted with before, if the file says
    revision: int = 0  # with the key: a larger one revises the answer recorded under it (an edit)


@dataclass(frozen=True)
class LabelImport:
    labels: int  # answers in the file
    matched: int  # of which on pairs the server already held
    added: int  # of which added as new labeled pairs (not in the pool: they still condition V)
    replayed: int  # already recorded (the same idempotency key): nothing new was written
    unanswered: int = 0  # batch rows or Label Studio tasks without an answer (not labeled yet, skipped or empty)


def _preference(value, where: str) -> str:
    pref = value.upper() if isinstance(value, str) else value
    if pref not in PREFERENCES:
        raise PromptFileError(f"{where}: preference must be one of {', '.join(PREFERENCES)}, got {value!r}")
    return pref


def _labeled_row(row: dict, where: str, render: PromptRenderer) -> LabeledRow | None:
    """The answer of one row; None for a batch row not answered yet (a batch labeled in part)."""
    who = str(row.get("annotator") or "import")
    key = str(row.get("idempotency_key") or "")
    if row.get("pair_id") and row.get("preference") not in (None, ""):  # a batch row answered, labels import's form
        return LabeledRow(where, who, _preference(row["preference"], where), pair_id=str(row["pair_id"]),
                          idempotency_key=key, revision=int(row.get("revision") or 0))  # fmt: skip
    if row.get("pair_id") and row.get("chosen") is None and ("response_a" in row or row.get("preference") == ""):
        return None  # a row of a batch file that nobody answered
    if row.get("chosen") is None or row.get("rejected") is None:
        raise PromptFileError(f"{where}: a label needs 'pair_id' and 'preference' (A, B, TIE, BOTH_BAD), or 'prompt', "
                              f"'chosen' and 'rejected' (columns: {', '.join(row)})")  # fmt: skip
    if row.get("prompt") is None:  # TRL's implicit prompt: whole conversations
        raw, chosen, rejected = implicit_prompt(row["chosen"], row["rejected"], where)
    else:
        raw, chosen, rejected = check_prompt(row["prompt"], where), row["chosen"], row["rejected"]
    a = render.response(raw, chosen, f"{where} chosen")
    b = render.response(raw, rejected, f"{where} rejected")
    if a == b:
        raise PromptFileError(f"{where}: chosen and rejected are the same response")
    prompt = render.prompt(raw)
    pair = CandidatePair(prompt, a, b, messages=display_messages(raw, prompt))
    return LabeledRow(where, who, "A", pair=pair, idempotency_key=key)


def read_labeled(path: Path, render: PromptRenderer, stats: dict | None = None) -> Iterator[LabeledRow]:
    """Every answer of a labels file, in any form the project writes or reads: ``{pair_id, preference}`` rows
    (a batch answered, as ``labels import`` takes them), TRL preference rows ``{prompt, chosen, rejected}``
    (strings or messages, the prompt raw or already rendered, or TRL's implicit prompt), ``OUT.labels.jsonl``
    and a Label Studio JSON export. Tasks without an answer are counted in ``stats["unanswered"]``."""
    from activedpo_client.labelfiles import label_studio_tasks

    stats = {} if stats is None else stats
    tasks = label_studio_tasks(path)
    if tasks is not None:
        for where, row in tasks:
            if row["preference"] is None:
                stats["unanswered"] = stats.get("unanswered", 0) + 1
                continue
            if row["preference"] == "BOTH" or not row["pair_id"]:
                problem = "both responses marked preferred" if row["pair_id"] else "no pair_id in its data"
                raise PromptFileError(f"{path} {where}: {problem}")
            yield LabeledRow(where, row["annotator"], row["preference"], pair_id=row["pair_id"],
                             idempotency_key=row.get("idempotency_key", ""), revision=row.get("revision", 0))
        return
    for where, row in iter_rows(path):
        answer = _labeled_row(row, f"{path} {where}", render)
        if answer is None:
            stats["unanswered"] = stats.get("unanswered", 0) + 1
        else:
            yield answer


def import_labeled(client, rows: Iterable[LabeledRow], path: Path, unanswered: int = 0) -> LabelImport:
    """Submit the answers of labels file ``path`` (idempotent): pairs given by id as they are, pairs given by
    their texts found on the server by content (in either order) or added as new labeled pairs. Rows the
    server refuses (a pair id it does not hold) are reported by line in one error, after the others are
    recorded."""
    total = matched = added = replayed = 0
    refused: list[str] = []
    for chunk in chunked(rows):
        by_text = [row for row in chunk if row.pair is not None]
        landed = iter(client.add_candidates([r.pair for r in by_text], pool=LABELED_POOL, return_pairs=True).added
                      if by_text else ())  # fmt: skip
        labels = []
        for row in chunk:
            pair_id, pref = row.pair_id, row.preference
            if row.pair is not None:
                where = next(landed)
                pair_id, pref = where.pair_id, where.preference(row.preference)
                matched, added = matched + (not where.added), added + where.added
            key = row.idempotency_key or f"import:{pair_id}:{row.annotator}"
            labels.append(Label(pair_id, pref, row.annotator, key, row.revision))
        for row, res in zip(chunk, client.submit_labels(labels), strict=True):
            if not res.accepted:
                hint = " (not on this server: was its batch selected with another --state-dir or --server?)"
                refused.append(f"{row.where}: {res.reason}{hint if 'unknown pair' in res.reason else ''}")
            else:
                replayed += res.replayed
                matched += row.pair is None
        total += len(chunk)
    if refused:
        more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
        raise PromptFileError(f"{len(refused)} of {total} labels in {path} were refused, the others recorded: "
                              f"{'; '.join(refused[:3])}{more}")  # fmt: skip
    return LabelImport(total, matched, added, replayed, unanswered)
