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
    assert items == [CandidateGroup(HEAD, [" a", " b", " c"]), CandidatePair(HEAD, " good", " bad"),
                     CandidatePair(HEAD, " x", " y")]  # fmt: skip
    assert stats == {"rows": 4, "groups": 1, "pairs": 5, "skipped": 1}


def test_rows_the_server_would_refuse_are_named_before_anything_is_sent(tmp_path):
    too_many = [{"prompt": "tell me", "responses": [f" w{i}" for i in range(MAX_RESPONSES + 1)]}]
    with pytest.raises(PromptFileError, match=rf"row 1: {MAX_RESPONSES + 1} distinct responses; the server takes"):
        list(read_pool(write(tmp_path / "big.jsonl", too_many), RENDER, {}))
    with pytest.raises(PromptFileError, match="row 1: 'responses' must be a list"):
        list(read_pool(write(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": " a"}]), RENDER, {}))


def test_labels_get_content_ids_so_a_rerun_records_nothing_twice(tmp_path):
    path = write(tmp_path / "l.jsonl", [{"prompt": "tell me", "chosen": " a", "rejected": " b", "annotator": "ann"}])
    ((first, who),) = list(read_labeled(path, RENDER))
    ((again, _),) = list(read_labeled(path, RENDER))
    assert who == "ann" and first.pair_id == again.pair_id and first.pair_id.startswith("lab-")
    with pytest.raises(PromptFileError, match="chosen and rejected are the same response"):
        list(read_labeled(write(tmp_path / "s.jsonl", [{"prompt": "p", "chosen": " a", "rejected": " a"}]), RENDER))
