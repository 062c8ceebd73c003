"""Reading a pool file for `select`: every row shape becomes the candidates the server takes, or a named error."""

from __future__ import annotations

import json

import pytest

from activedpo_client.messages import CandidateGroup, CandidatePair
from activedpo_client.pool import MAX_RESPONSES, read_labeled, read_pool
from activedpo_trainer.localmodels import build_tokenizer
from activedpo_trainer.prompts import PromptFileError, PromptRenderer

RENDER = PromptRenderer(build_tokenizer(), "auto")
HEAD = "<|user|> tell me <|assistant|>"


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_row_shape_becomes_a_candidate_and_counts_add_up(tmp_path):
    rows = [
        {"prompt": "tell me", "responses": [" a", " b", " a", " c"]},  # the repeat is dropped: 3 pairs
        {"prompt": "tell me", "chosen": " good", "rejected": " bad"},
        {"prompt": "tell me", "response_a": " x", "response_b": " y"},
        {"prompt": "tell me", "responses": [" same", " same"]},  # one distinct response: skipped
    ]
    stats: dict = {}
    items = list(read_pool(write(tmp_path / "p.jsonl", rows), RENDER, stats))
    said = json.dumps([{"role": "user", "content": "tell me"}])  # what people read: the prompt as written
    assert items == [CandidateGroup(HEAD, [" a", " b", " c"], messages=said), CandidatePair(HEAD, " good", " bad",
                     messages=said), CandidatePair(HEAD, " x", " y", messages=said)]  # fmt: skip
    assert stats == {"rows": 4, "groups": 1, "pairs": 5, "skipped": 1, "skipped_at": ["line 4"],
                     "repeated_in_row": 2}  # " a" and " same" twice in their rows: the pool report counts them


def test_rows_the_server_would_refuse_are_named_before_anything_is_sent(tmp_path):
    too_many = [{"prompt": "tell me", "responses": [f" w{i}" for i in range(MAX_RESPONSES + 1)]}]
    with pytest.raises(PromptFileError, match=rf"line 1: {MAX_RESPONSES + 1} distinct responses; the server takes"):
        list(read_pool(write(tmp_path / "big.jsonl", too_many), RENDER, {}))
    with pytest.raises(PromptFileError, match="line 1: 'responses' must be a list"):
        list(read_pool(write(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": " a"}]), RENDER, {}))


def test_a_malformed_line_is_named_by_its_line_in_the_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "tell me", "responses": [" a", " b"]}) + "\n\n" + '{"prompt": "x", \n')
    with pytest.raises(PromptFileError, match=r"p\.jsonl line 3: not valid JSON \(Expecting"):
        list(read_pool(path, RENDER, {}))


def test_a_rendered_prompt_is_not_rendered_again(tmp_path):
    rows = [{"prompt": HEAD, "chosen": " good", "rejected": " bad"}, {"prompt": "tell me", "responses": [" a", " b"]}]
    items = list(read_pool(write(tmp_path / "p.jsonl", rows), RENDER, {}))
    assert [i.prompt for i in items] == [HEAD, HEAD]


def test_trl_conversational_rows_implicit_prompt_and_repeated_turns(tmp_path):
    sys_turn, user = {"role": "system", "content": "be kind"}, {"role": "user", "content": "tell me"}
    good, bad = {"role": "assistant", "content": "good"}, {"role": "assistant", "content": "bad"}
    rows = [
        {"chosen": [sys_turn, user, good], "rejected": [sys_turn, user, bad]},  # TRL's implicit prompt
        {"prompt": [sys_turn, user], "chosen": [sys_turn, user, good], "rejected": [bad]},  # UltraFeedback's shape
    ]
    items = list(read_pool(write(tmp_path / "p.jsonl", rows), RENDER, {}))
    head = "<|system|> be kind <|user|> tell me <|assistant|>"
    said = json.dumps([sys_turn, user])  # people read the conversation, not the template
    assert items == [CandidatePair(head, "good", "bad", messages=said)] * 2  # as string responses
    with pytest.raises(PromptFileError, match="line 1: no 'prompt' field, and 'chosen' and 'rejected' share no"):
        list(read_pool(write(tmp_path / "q.jsonl", [{"chosen": [good], "rejected": [bad]}]), RENDER, {}))


def test_every_label_form_is_read(tmp_path):
    path = write(tmp_path / "l.jsonl", [
        {"prompt": "tell me", "chosen": " a", "rejected": " b", "annotator": "ann"},  # TRL, raw prompt
        {"prompt": HEAD, "chosen": " c", "rejected": " d"},  # TRL, rendered prompt (select's own output)
        {"pair_id": "p-1", "preference": "b", "annotator": "bob"},  # a batch answered (labels import's form)
        {"prompt": HEAD, "chosen": " e", "rejected": " f", "pair_id": "p-2", "preference": "TIE",
         "idempotency_key": "k"},  # OUT.labels.jsonl: the server's own label, by id
    ])  # fmt: skip
    rows = list(read_labeled(path, RENDER))
    assert [(r.where.split()[-2:], r.annotator, r.preference, r.pair_id) for r in rows] == [
        (["line", "1"], "ann", "A", ""), (["line", "2"], "import", "A", ""), (["line", "3"], "bob", "B", "p-1"),
        (["line", "4"], "import", "TIE", "p-2")]  # fmt: skip
    said = json.dumps([{"role": "user", "content": "tell me"}])
    assert rows[0].pair == CandidatePair(HEAD, " a", " b", messages=said)
    assert rows[1].pair == CandidatePair(HEAD, " c", " d")  # rendered already: its text is all there is
    assert rows[3].idempotency_key == "k" and rows[3].pair is None
    with pytest.raises(PromptFileError, match="chosen and rejected are the same response"):
        list(read_labeled(write(tmp_path / "s.jsonl", [{"prompt": "p", "chosen": " a", "rejected": " a"}]), RENDER))
    with pytest.raises(PromptFileError, match=r"line 1: a label needs 'pair_id' and 'preference'.*columns: pair_id"):
        list(read_labeled(write(tmp_path / "t.jsonl", [{"pair_id": "p-1"}]), RENDER))
    with pytest.raises(PromptFileError, match="line 1: preference must be one of A, B, TIE, BOTH_BAD, got 'left'"):
        list(read_labeled(write(tmp_path / "u.jsonl", [{"pair_id": "p-1", "preference": "left"}]), RENDER))
    batch_rows = [{"pair_id": f"p-{i}", "prompt": HEAD, "response_a": " a", "response_b": " b", "rank": i,
                   **({"preference": "A"} if i == 1 else {"preference": ""} if i == 2 else {})} for i in range(3)]
    stats: dict = {}  # a batch answered in part: the rows nobody answered are counted, not refused
    rows = list(read_labeled(write(tmp_path / "part.jsonl", batch_rows), RENDER, stats))  # fmt: skip
    assert [(r.pair_id, r.preference) for r in rows] == [("p-1", "A")] and stats == {"unanswered": 2}


def test_a_label_studio_export_is_read_by_task(tmp_path):
    export = [
        {"id": 7, "data": {"pair_id": "p-1"}, "annotations": [
            {"completed_by": 1, "result": [{"type": "pairwise", "value": {"selected": "right"}}]},
            {"completed_by": 2, "result": [{"type": "pairwise", "value": {"selected": "left"}}]}]},
        {"id": 8, "data": {"pair_id": "p-2"}, "annotations": []},  # not labeled yet
        {"id": 9, "data": {"pair_id": "p-3"}, "annotations": [{"completed_by": 1, "was_cancelled": True,
                                                               "result": []}]},  # skipped
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    stats: dict = {}
    rows = list(read_labeled(path, RENDER, stats))
    assert [(r.pair_id, r.preference, r.annotator) for r in rows] == [("p-1", "B", "label-studio:user-1"),
                                                                      ("p-1", "A", "label-studio:user-2")]
    assert stats == {"unanswered": 2}
