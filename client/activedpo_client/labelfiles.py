"""Labeling by people: the files handed out for a batch, and reading the finished labels back.

For a batch the client writes ``to_label.jsonl`` (one pair per line) and a Label Studio
import (``label_studio.json`` with ``label_config.xml``, a pairwise-comparison interface).
Finished labels come back as JSONL (``{"pair_id", "preference": "A"|"B"|"TIE", "annotator"}``)
or as a Label Studio JSON export; :func:`read_labels` validates every row against the batch and
keeps the valid ones, reporting each bad row with its line (or task) number and reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from activedpo_client.messages import Batch
from activedpo_trainer.atomic import write_text

LABEL_CONFIG = """<View>
  <Header value="Which response is better? Click it, then Submit."/>
  <Header value="Prompt" size="5"/>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="preference" toName="response_a,response_b" selectionStyle="background-color: #BFB"/>
  <View style="display: flex; gap: 1em">
    <View style="flex: 1; padding: 0.5em; border: 1px solid #ccc">
      <Header value="Response A" size="5"/>
      <Text name="response_a" value="$response_a"/>
    </View>
    <View style="flex: 1; padding: 0.5em; border: 1px solid #ccc">
      <Header value="Response B" size="5"/>
      <Text name="response_b" value="$response_b"/>
    </View>
  </View>
</View>
"""


TO_LABEL_FIELDS = ("pair_id", "prompt", "response_a", "response_b", "score", "rank", "prompt_id", "response_a_id",
                   "response_b_id")  # fmt: skip


def write_label_files(batch: Batch, directory: Path, name: str = "to_label.jsonl", prefix: str = "") -> list[Path]:
    """The files people label from, written atomically into ``directory``: ``name`` (one pair per
    line: pair id, prompt, both responses, score, rank and ids), ``label_studio.json`` and
    ``label_config.xml`` (a Label Studio import and its pairwise interface), each name after ``prefix``."""
    rows = [{k: getattr(p, k) for k in TO_LABEL_FIELDS} for p in batch.pairs]
    out = []
    for file, text in (
        (name, "".join(json.dumps(r) + "\n" for r in rows)),
        (prefix + "label_studio.json", json.dumps([{"data": r} for r in rows], indent=1) + "\n"),
        (prefix + "label_config.xml", LABEL_CONFIG),
    ):
        out.append(write_text(directory / file, text))
    return out


def _label_studio_rows(tasks: list) -> list[tuple[str, dict]]:
    """(where, row) for each annotation of a Label Studio export; ``left`` is A, ``right`` is B."""
    rows = []
    for t, task in enumerate(tasks, 1):
        pair_id = (task.get("data") or {}).get("pair_id", "") if isinstance(task, dict) else ""
        annotations = task.get("annotations", []) if isinstance(task, dict) else []
        if not annotations:
            rows.append((f"task {t}", {"pair_id": pair_id, "preference": None, "annotator": ""}))
        for a in annotations:
            picks = [r.get("value", {}).get("selected") for r in a.get("result", []) if r.get("type") == "pairwise"]
            pref = {"left": "A", "right": "B"}.get(picks[0]) if len(picks) == 1 else ("BOTH" if picks else None)
            who = a.get("completed_by")
            who = who.get("email") if isinstance(who, dict) else who
            rows.append(
                (f"task {t}", {"pair_id": pair_id, "preference": pref, "annotator": str(who or "label-studio")})
            )
    return rows


def label_studio_tasks(path: Path) -> list[tuple[str, dict]] | None:
    """A Label Studio JSON export's answers as (``task N``, ``{pair_id, preference, annotator}``), one per
    annotation (``preference`` None: no answer); None when ``path`` is not such an export."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head.startswith("["):
        return None
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not tasks or not all(isinstance(t, dict) and "data" in t for t in tasks):
        return None
    return _label_studio_rows(tasks)


def _by_texts(row: dict, batch: Batch, render) -> dict:
    """A TRL row ``{prompt, chosen, rejected}`` as ``{pair_id, preference}`` of the batch pair with those texts."""
    from activedpo_trainer.prompts import PromptFileError, check_prompt

    try:
        raw = check_prompt(row["prompt"], "the row")
        prompt = render.prompt(raw) if render is not None else raw
        chosen, rejected = (render.response(raw, row[k], k) if render is not None else row[k]
                            for k in ("chosen", "rejected"))  # fmt: skip
    except PromptFileError as e:
        return {"error": str(e)}
    for p in batch.pairs:
        if p.prompt == prompt and {p.response_a, p.response_b} == {chosen, rejected}:
            return row | {"pair_id": p.pair_id, "preference": "A" if chosen == p.response_a else "B"}
    return {"error": "no pair of this round's batch has this prompt and these two responses"}


def read_labels(path: Path, batch: Batch, render=None) -> tuple[list[dict], list[str], int]:
    """Valid labels (``pair_id``, ``preference``, ``annotator``), one error line per bad row, and the number
    of rows without an answer yet (a batch answered in part). Rows are ``{pair_id, preference}``, TRL rows
    ``{prompt, chosen, rejected}`` matched to the batch by their texts (``render`` renders a raw prompt as the
    batch holds it), or a Label Studio export; a row without an annotator is ``import``'s, as ``select
    --labeled`` counts it."""
    text = Path(path).read_text()
    known = {p.pair_id for p in batch.pairs}
    if text.lstrip().startswith("["):
        try:
            rows = _label_studio_rows(json.loads(text))
        except json.JSONDecodeError as e:
            return [], [f"{path}: not valid JSON ({e})"]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                rows.append((f"line {n}", {"error": f"not a JSON object ({e})"}))
                continue
            rows.append((f"line {n}", row))
    good, errors, seen, unanswered = [], [], set(), 0
    for where, row in rows:
        if "error" not in row and not row.get("pair_id") and "chosen" in row and "rejected" in row and "prompt" in row:
            row = _by_texts(row, batch, render)
        row = {**row, "annotator": row.get("annotator") or "import"}
        pref = row.get("preference")
        pref = pref.upper() if isinstance(pref, str) else pref
        if "error" not in row and row.get("pair_id") in known and pref in (None, ""):
            unanswered += 1  # not answered yet: neither a label nor an error
            continue
        if "error" in row:
            problem = row["error"]
        elif row.get("pair_id") not in known:
            problem = f"unknown pair id {row.get('pair_id')!r} (not in this round's batch)"
        elif pref == "BOTH":
            problem = "both responses marked preferred"
        elif pref not in ("A", "B", "TIE"):
            problem = f"preference must be A, B or TIE, got {row.get('preference')!r}"
        elif not str(row.get("annotator", "")).strip():
            problem = "annotator is missing"
        elif (row["pair_id"], row["annotator"]) in seen:
            problem = f"duplicate label for {row['pair_id']} by {row['annotator']}"
        else:
            seen.add((row["pair_id"], row["annotator"]))
            good.append({"pair_id": row["pair_id"], "preference": pref, "annotator": str(row["annotator"])})
            continue
        errors.append(f"{path} {where}: {problem}")
    return good, errors, unanswered
