"""People's answers as Label Studio records them, and what the labeling page shows (no server needed)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from activedpo_client.labelfiles import (
    CHOICES,
    LABEL_CONFIG,
    agreement,
    current_answers,
    instructions_html,
    read_labels,
    render_markdown,
    task_data,
)
from activedpo_client.messages import Batch, Label, SelectedPair


def pick(alias: str) -> list[dict]:
    return [{"from_name": "preference", "to_name": "response_a", "type": "choices", "value": {"choices": [alias]}}]


def ann(id_: int, who, at: str, result=None, cancelled: bool = False) -> dict:
    return {"id": id_, "completed_by": who, "updated_at": at, "result": result or [], "was_cancelled": cancelled}


def test_each_persons_latest_annotation_is_their_answer():
    answers = current_answers([
        ann(1, 1, "2026-12-05T10:00:00Z", pick("A")),
        ann(2, 1, "2026-12-05T10:05:00.250000Z", pick("B")),  # the same person again: replaces the first
        ann(3, {"id": 2, "email": "bo@example.com"}, "2026-12-05T10:01:00Z", pick("TIE")),
        ann(4, 3, "2026-12-05T10:02:00Z", [{"type": "pairwise", "value": {"selected": "left"}}]),  # the older page
        ann(5, 4, "2026-12-05T10:03:00Z", cancelled=True),
        ann(6, 5, "2026-12-05T10:04:00Z"),  # saved with no choice
        ann(7, 6, "2026-12-05T10:04:00Z", pick("BOTH_BAD")),
    ])  # fmt: skip
    got = {(a.person, a.state, a.annotation_id, a.email) for a in answers}
    assert got == {("1", "B", 2, ""), ("2", "TIE", 3, "bo@example.com"), ("3", "A", 4, ""), ("4", "skip", 5, ""),
                   ("5", "empty", 6, ""), ("6", "BOTH_BAD", 7, "")}  # fmt: skip
    by = {a.person: a for a in answers}
    assert by["1"].revision == 1_796_465_100_250_000  # µs: an edit a quarter second later is later
    assert [by[p].done for p in "12345"] == [True, True, True, True, False]  # an empty save is no answer
    assert by["1"].key(7, 42) == "ls-7-42-u1"
    edited = current_answers([ann(1, 1, "2026-12-05T10:00:00Z", pick("A")) | {"updated_at": "2026-12-05T11:00:00Z"}])
    assert edited[0].revision > by["1"].revision


def test_a_label_studio_export_counts_each_person_once_with_the_key_a_live_pull_uses(tmp_path):
    pairs = tuple(SelectedPair(f"p-{i}", "q", "a", "b", 0.0, i) for i in range(3))
    export = [
        {"id": 11, "project": 7, "data": {"pair_id": "p-0"}, "annotations": [
            ann(1, 1, "2026-12-05T10:00:00Z", pick("A")), ann(2, 1, "2026-12-05T10:01:00Z", pick("B"))]},
        {"id": 12, "project": 7, "data": {"pair_id": "p-1"}, "annotations": [ann(3, 1, "2026-12-05T10:00:00Z")]},
        {"id": 13, "project": 7, "data": {"pair_id": "p-2"}, "annotations": [
            ann(4, 1, "2026-12-05T10:00:00Z", pick("BOTH_BAD")), ann(5, 2, "2026-12-05T10:00:00Z", pick("A"))]},
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    good, errors, unanswered = read_labels(path, Batch("c", "s", "l", 3, pairs))
    assert errors == [] and unanswered == 1  # the empty save leaves p-1 unanswered
    assert [(g["pair_id"], g["preference"], g["annotator"], g["idempotency_key"]) for g in good] == [
        ("p-0", "B", "label-studio:user-1", "ls-7-11-u1"), ("p-2", "BOTH_BAD", "label-studio:user-1", "ls-7-13-u1"),
        ("p-2", "A", "label-studio:user-2", "ls-7-13-u2")]  # fmt: skip


def test_markdown_is_rendered_and_nothing_in_it_runs():
    html = render_markdown("**Routine:** <script>alert(1)</script>\n[x](javascript:alert(1))\n![i](http://e/x.png)"
                           "\n\n```python\nxs[::-1]\n```")  # fmt: skip
    assert "<strong>Routine:</strong>" in html and '<code class="language-python">xs[::-1]' in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # raw HTML is shown, never run
    assert "javascript:" not in html.replace("[x](javascript:", "")  # an unsafe link stays text
    assert "<img" not in html  # no image is fetched from a labeler's browser


def test_instructions_come_from_a_markdown_or_html_file_or_the_default(tmp_path):
    default = instructions_html(None)
    assert "<h2>Which response is better?</h2>" in default and "<strong>Both unacceptable</strong>" in default
    md, page = tmp_path / "guide.md", tmp_path / "guide.html"
    md.write_text("Prefer **correct** code.")
    page.write_text("<p>Prefer <em>safe</em> answers.</p>")
    assert instructions_html(md) == "<p>Prefer <strong>correct</strong> code.</p>\n"
    assert instructions_html(page) == "<p>Prefer <em>safe</em> answers.</p>"
    (tmp_path / "empty.md").write_text(" \n")
    with pytest.raises(ValueError, match=r"--ls-instructions .*empty\.md: the file is empty"):
        instructions_html(tmp_path / "empty.md")
    with pytest.raises(ValueError, match=r"--ls-instructions .*nope\.md: cannot read it"):
        instructions_html(tmp_path / "nope.md")


def test_the_page_asks_one_required_question_with_a_hotkey_per_answer():
    root = ET.fromstring(LABEL_CONFIG)
    (choices,) = root.iter("Choices")
    assert choices.get("required") == "true" and choices.get("choice") == "single-radio"
    assert [(c.get("alias"), c.get("value"), c.get("hotkey")) for c in choices] == list(CHOICES)
    assert {p.get("value") for p in root.iter("Paragraphs")} == {"$messages"}
    assert [h.get("value") for h in root.iter("HyperText")] == ["$response_a_html", "$response_b_html"]
    said = json.dumps([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    pair = SelectedPair("p-1", "<|user|> hi <|assistant|>", "**a**", "b", 0.0, 0, prompt_messages=said)
    data = task_data(pair, "batch-1")
    assert data["messages"][0] == {"role": "system", "content": "s"}
    assert data["response_a_html"] == "<p><strong>a</strong></p>\n"
    assert data["prompt"] == pair.prompt and data["activedpo_batch"] == "batch-1"  # the model's text, kept hidden
    plain = task_data(SelectedPair("p-2", "tell me", "a", "b", 0.0, 1))
    assert plain["messages"] == [{"role": "user", "content": "tell me"}] and "activedpo_batch" not in plain


def test_agreement_compares_every_two_peoples_answers_on_a_pair():
    labels = [Label("p1", "A", "x"), Label("p1", "A", "y"), Label("p1", "B", "z"), Label("p2", "TIE", "x"),
              Label("p2", "TIE", "y"), Label("p3", "A", "x")]  # fmt: skip
    several, rate = agreement(labels)
    assert several == 2 and rate == pytest.approx(2 / 4)  # p1: 1 of 3 answer pairs agree; p2: 1 of 1
    assert agreement(labels[-1:])[0] == 0
