"""Labeling by people: the files handed out for a batch, and reading the finished labels back.

For a batch the client writes ``to_label.jsonl`` (one pair per line) and a Label Studio
import (``label_studio.json`` with ``label_config.xml``, the labeling page: the conversation as
messages, both responses as rendered Markdown, and A / B / about the same / both unacceptable).
Finished labels come back as JSONL (``{"pair_id", "preference": "A"|"B"|"TIE"|"BOTH_BAD",
"annotator"}``) or as a Label Studio JSON export, of which each person's current answer counts
(:func:`current_answers`); :func:`read_labels` validates every row against the batch and keeps the
valid ones, reporting each bad row with its line (or task) number and reason.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.messages import PREFERENCES, Batch
from activedpo_core.atomic import write_text

# Answers people give about a pair, as Label Studio's ``Choices`` record them (each choice's alias),
# with the hotkeys the page shows. Ctrl+Enter submits and Ctrl+Space skips (Label Studio's own keys).
CHOICES = (("A", "A is better", "1"), ("B", "B is better", "2"), ("TIE", "About the same", "3"),
           ("BOTH_BAD", "Both unacceptable", "4"))  # fmt: skip
KEYS_LINE = ("Keys: " + ", ".join(f"{key} = {text}" for _, text, key in CHOICES)
             + "; Ctrl+Enter submits, Ctrl+Space skips (cannot judge).")  # fmt: skip

# The labeling page: the conversation as messages (kept in view), both responses side by side as
# rendered Markdown (each scrolling on its own), and one required choice with hotkeys.
LABEL_CONFIG = (
    """<View>
  <Style>
    .adpo-prompt { position: sticky; top: 0; z-index: 10; background: #fff; max-height: 35vh; overflow-y: auto;
                   border-bottom: 1px solid #ccc; padding-bottom: 0.5em; }
    .adpo-pair { display: flex; gap: 1em; align-items: stretch; }
    .adpo-resp { flex: 1; min-width: 0; max-height: 55vh; overflow-y: auto; padding: 0.5em 1em;
                 border: 1px solid #ccc; border-radius: 4px; }
    .adpo-resp pre { background: #f6f8fa; padding: 0.5em; overflow-x: auto; }
    .adpo-resp ol { list-style: decimal; padding-left: 1.5em; } .adpo-resp ul { list-style: disc; padding-left: 1.5em; }
  </Style>
  <View className="adpo-prompt">
    <Header value="Conversation" size="5"/>
    <Paragraphs name="conversation" value="$messages" layout="dialogue" nameKey="role" textKey="content"/>
  </View>
  <View className="adpo-pair">
    <View className="adpo-resp">
      <Header value="Response A" size="5"/>
      <HyperText name="response_a" value="$response_a_html" inline="true"/>
    </View>
    <View className="adpo-resp">
      <Header value="Response B" size="5"/>
      <HyperText name="response_b" value="$response_b_html" inline="true"/>
    </View>
  </View>
  <Header value="Which response is better?" size="5"/>
  <Choices name="preference" toName="response_a" choice="single-radio" required="true" showInline="true">
"""
    + "".join(f'    <Choice value="{text}" alias="{alias}" hotkey="{key}"/>\n' for alias, text, key in CHOICES)
    + f"""  </Choices>
  <Text name="keys" value="{KEYS_LINE}"/>
</View>
"""
)

# Shown before labeling (``--ls-instructions FILE`` replaces it; Markdown or HTML).
DEFAULT_INSTRUCTIONS = f"""\
## Which response is better?

Read the conversation, then both responses, and pick the one a careful expert would rather send as the
next assistant turn:

- **Correct** first: facts, code and arithmetic that are right beat fluent ones that are wrong.
- **Helpful**: it does what was asked (including the system message's instructions), completely and
  directly; it asks for clarification only when the request is truly ambiguous.
- **Safe and honest**: no harmful content; it says so when it does not know.
- **Clear**: length is not quality; prefer the shorter response when both are equally good.

Pick **About the same** when neither is meaningfully better, and **Both unacceptable** when neither
could be sent (wrong, harmful or off-topic): those answers are recorded but never trained on.
**Skip** a pair you cannot judge (e.g. outside your expertise); someone else will get it. Skip is in
"Label All Tasks", the stream that serves one pair after another; a single task opened from the list has none.

{KEYS_LINE}
"""


@functools.cache
def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"]).disable("image")


def render_markdown(text: str) -> str:
    """Markdown (a response, instructions) as HTML safe to show in a page: raw HTML is escaped, links with
    unsafe schemes (``javascript:``) are refused, images are not loaded, line breaks are kept."""
    return _markdown().render(text)


def instructions_html(path: Path | None) -> str:
    """The project instructions: ``path`` (``.html``/``.htm`` as it is, else Markdown) or the default."""
    if path is None:
        return render_markdown(DEFAULT_INSTRUCTIONS)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--ls-instructions {path}: cannot read it ({e})") from None
    if not text.strip():
        raise ValueError(f"--ls-instructions {path}: the file is empty")
    return text if Path(path).suffix.lower() in (".html", ".htm") else render_markdown(text)


def task_data(pair, tag: str = "") -> dict:
    """A Label Studio task's data for a selected pair: what people see (the conversation as messages, both
    responses as rendered Markdown), the texts the model sees (``prompt``, ``response_a``, ``response_b``)
    and the ids that link answers back (``pair_id``, ``rank``, ``activedpo_batch``) and ``audit`` (drawn at
    random to audit the policy), hidden from labelers."""
    data = {"pair_id": pair.pair_id, "messages": pair.conversation(),
            "response_a_html": render_markdown(pair.response_a), "response_b_html": render_markdown(pair.response_b),
            "prompt": pair.prompt, "response_a": pair.response_a, "response_b": pair.response_b,
            "rank": pair.rank, "audit": pair.audit}  # fmt: skip
    return data | ({"activedpo_batch": tag} if tag else {})


TO_LABEL_FIELDS = ("pair_id", "prompt", "response_a", "response_b", "score", "rank", "prompt_id", "response_a_id",
                   "response_b_id", "audit")  # fmt: skip


def write_label_files(batch: Batch, directory: Path, name: str = "to_label.jsonl", prefix: str = "") -> list[Path]:
    """The files people label from, written atomically into ``directory``: ``name`` (one pair per
    line: pair id, prompt, both responses, score, rank, ids and the audit flag), ``label_studio.json`` and
    ``label_config.xml`` (a Label Studio import and its labeling page), each name after ``prefix``."""
    rows = [{k: getattr(p, k) for k in TO_LABEL_FIELDS} for p in batch.pairs]
    out = []
    for file, text in (
        (name, "".join(json.dumps(r) + "\n" for r in rows)),
        (prefix + "label_studio.json", json.dumps([{"data": task_data(p)} for p in batch.pairs], indent=1) + "\n"),
        (prefix + "label_config.xml", LABEL_CONFIG),
    ):
        out.append(write_text(directory / file, text))
    return out


@dataclass(frozen=True)
class Answer:
    """One person's current answer on one Label Studio task: the latest state of their annotations."""

    person: str  # the user's id as Label Studio numbers them
    state: str  # A, B, TIE, BOTH_BAD, "skip" (cancelled: cannot judge) or "empty" (saved with no choice)
    revision: int  # the annotation's last update, in µs since the epoch: a later edit has a larger one
    annotation_id: int = 0
    email: str = ""  # when the annotation names the person by more than an id

    def key(self, project, task) -> str:
        """The idempotency key of this person's answer on this task: one current answer per (task, person)."""
        return answer_key(project, task, self.person)

    @property
    def answered(self) -> bool:
        return self.state in PREFERENCES

    @property
    def done(self) -> bool:
        """The person has finished the task: an answer or a skip (an empty save is not an answer)."""
        return self.state != "empty"


def answer_key(project, task, person) -> str:
    """``ls-<project>-<task>-u<user>``: one key per (task, person), whatever annotation holds the answer."""
    return f"ls-{project}-{task}-u{person}"


def agreement(labels) -> tuple[int, float]:
    """(pairs answered by several people, the share of their answer pairs that agree): for each such pair,
    every two people's answers are compared (A, B, TIE and BOTH_BAD each agree only with themselves)."""
    by_pair: dict[str, list[str]] = {}
    for lab in labels:
        by_pair.setdefault(lab.pair_id, []).append(lab.preference)
    agree = total = several = 0
    for prefs in by_pair.values():
        if len(prefs) < 2:
            continue
        several += 1
        for i in range(len(prefs)):
            for j in range(i + 1, len(prefs)):
                agree, total = agree + (prefs[i] == prefs[j]), total + 1
    return several, (agree / total if total else float("nan"))


def agreement_line(labels) -> str:
    """``agreement: 75% of answers agree on the 4 pairs answered by several people``, or "" when none is."""
    several, rate = agreement(labels)
    if not several:
        return ""
    return f"agreement: {rate:.0%} of answers agree on the {several} pair{'s' if several > 1 else ''} answered by " \
           "several people"


def _micros(stamp) -> int:
    """An ISO-8601 time (Label Studio's ``updated_at``) in µs since the epoch; 0 when absent."""
    from datetime import datetime, timezone

    if not stamp:
        return 0
    t = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return int(t.timestamp() * 1_000_000)


def _state(annotation: dict) -> str:
    """What one annotation says: a preference (``Choices`` alias, or the older ``Pairwise`` left/right),
    "skip", "empty", or "BOTH" (two picks: malformed)."""
    if annotation.get("was_cancelled"):
        return "skip"
    picks = []
    for r in annotation.get("result") or []:
        value = r.get("value") or {}
        if r.get("type") == "pairwise":
            picks.append({"left": "A", "right": "B"}.get(value.get("selected"), "?"))
        elif r.get("type") == "choices" and r.get("from_name") == "preference":
            picks += [str(c).upper() for c in value.get("choices") or []]
    picks = [{"A IS BETTER": "A", "B IS BETTER": "B", "ABOUT THE SAME": "TIE", "BOTH UNACCEPTABLE": "BOTH_BAD"}
             .get(p, p) for p in picks]  # fmt: skip
    if not picks:
        return "empty"
    return picks[0] if len(picks) == 1 and picks[0] in PREFERENCES else "BOTH"


def current_answers(annotations) -> list[Answer]:
    """Each person's current answer on a task, from its annotations (dicts as the API or an export gives
    them): the latest by ``updated_at`` of that person's annotations wins, so an edit or a second
    annotation by the same person replaces the first, and several people stay several answers."""
    latest: dict[str, tuple] = {}
    for a in annotations or []:
        who = a.get("completed_by")
        person = str(who.get("id") or who.get("email")) if isinstance(who, dict) else str(who)
        order = (_micros(a.get("updated_at") or a.get("created_at")), int(a.get("id") or 0))
        if person not in latest or order > latest[person][0]:
            latest[person] = (order, a)
    out = []
    for person, (order, a) in latest.items():
        who = a.get("completed_by")
        email = str(who.get("email") or "") if isinstance(who, dict) else ""
        out.append(Answer(person, _state(a), order[0], int(a.get("id") or 0), email))
    return out


def _label_studio_rows(tasks: list) -> list[tuple[str, dict]]:
    """(where, row) for each person's current answer of a Label Studio export (see :func:`current_answers`);
    a task nobody has answered gives one row without a preference."""
    rows = []
    for t, task in enumerate(tasks, 1):
        task = task if isinstance(task, dict) else {}
        pair_id = (task.get("data") or {}).get("pair_id", "")
        answers = [x for x in current_answers(task.get("annotations")) if x.state != "skip"]
        if not any(x.answered or x.state == "BOTH" for x in answers):
            rows.append((f"task {t}", {"pair_id": pair_id, "preference": None, "annotator": ""}))
        for x in answers:
            if x.state == "empty":
                continue
            row = {"pair_id": pair_id, "preference": x.state, "annotator": x.email or f"label-studio:user-{x.person}"}
            if task.get("project") and task.get("id"):  # the key a live pull of the same answer uses
                row |= {"idempotency_key": x.key(task["project"], task["id"]), "revision": x.revision}
            rows.append((f"task {t}", row))
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
        elif pref not in PREFERENCES:
            problem = f"preference must be one of {', '.join(PREFERENCES)}, got {row.get('preference')!r}"
        elif not str(row.get("annotator", "")).strip():
            problem = "annotator is missing"
        elif (row["pair_id"], row["annotator"]) in seen:
            problem = f"duplicate label for {row['pair_id']} by {row['annotator']}"
        else:
            seen.add((row["pair_id"], row["annotator"]))
            good.append({"pair_id": row["pair_id"], "preference": pref, "annotator": str(row["annotator"])})
            if row.get("idempotency_key"):  # an answer Label Studio can revise: the key and revision it had
                good[-1] |= {"idempotency_key": row["idempotency_key"], "revision": int(row.get("revision") or 0)}
            continue
        errors.append(f"{path} {where}: {problem}")
    return good, errors, unanswered
