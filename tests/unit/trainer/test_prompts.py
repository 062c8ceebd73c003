"""Prompt files through datasets (JSONL, JSON, CSV, Parquet, save_to_disk), rendering with a chat
template, and the one-line errors for what is wrong with a file or a row."""

from __future__ import annotations

import json
import re

import pytest

from activedpo_trainer.localmodels import build_tokenizer
from activedpo_trainer.prompts import PromptFileError, PromptRenderer, iter_records, read_prompts

CONVO = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "write a poem"}]


def test_every_format_gives_the_same_prompts(tmp_path):
    import datasets

    rows = [{"prompt": "tell me about the sea", "id": 1}, {"prompt": "write a song", "id": 2}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    (tmp_path / "p.csv").write_text("prompt,id\ntell me about the sea,1\nwrite a song,2\n")
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(tmp_path / "p.parquet")
    ds.save_to_disk(tmp_path / "saved")
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(tmp_path / "dict")
    (tmp_path / "p.txt").write_text("tell me about the sea\n\nwrite a song\n")
    want = ["tell me about the sea", "write a song"]
    for name in ("p.jsonl", "p.json", "p.csv", "p.parquet", "saved", "dict", "p.txt"):
        assert read_prompts(tmp_path / name) == want, name
    assert [r["id"] for r in iter_records(tmp_path / "p.csv")] == [1, 2]


def test_string_and_conversational_prompts_in_one_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"q": "tell me"}) + "\n" + json.dumps({"q": CONVO}) + "\n")
    assert read_prompts(path, field="q") == ["tell me", CONVO]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.tsv", "a\tb\n", "unknown format '.tsv'; use .jsonl, .json, .csv, .parquet"),
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "broken\n', "p.jsonl line 2: not valid JSON (Invalid control"),
        ("p.json", '[{"prompt": "ok"}, {"prompt": ', "cannot read it as json"),
        ("p.jsonl", '\n{"text": "x"}\n', "line 2: no 'prompt' field (columns: text); pass --prompt-field"),
        ("p.jsonl", '{"prompt": "  "}\n', "line 1: empty prompt"),
        ("p.jsonl", '{"prompt": [{"role": "user"}]}\n', "line 1: every message needs string 'role' and 'content'"),
        ("p.jsonl", '{"prompt": 5}\n', "line 1: expected a string or a list of {'role', 'content'} messages"),
        ("p.jsonl", '["tell me"]\n', "line 1: expected a JSON object, got list"),
        ("p.csv", "text\nx\n", "row 1: no 'prompt' field (columns: text)"),
        ("p.jsonl", "", "no prompts in"),
    ],
)
def test_bad_files_and_rows_are_named(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PromptFileError, match=re.escape(message)):
        read_prompts(path)


def test_a_missing_file_or_a_foreign_directory(tmp_path):
    with pytest.raises(PromptFileError, match="file not found"):
        read_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "dir").mkdir()
    with pytest.raises(PromptFileError, match="not a directory written by datasets' save_to_disk"):
        read_prompts(tmp_path / "dir")


def test_a_rendered_prompt_is_rendered_once_for_a_chatml_template_with_a_default_system_turn():
    from activedpo_trainer.localmodels import build_bpe_tokenizer

    render = PromptRenderer(build_bpe_tokenizer(), "auto")  # Qwen2's template: a default system turn
    once = render.prompt("tell me")
    assert once.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\ntell me")
    assert render.prompt(once) == once and render.is_rendered(once)
    custom = render.prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert render.prompt(custom) == custom  # another system turn: still a rendering of this template
    for text in ("tell me", "what does <|im_start|>assistant mean?", "<|im_start|>user\nhi"):
        assert not render.is_rendered(text) and render.prompt(text) != text  # a user's own text is rendered


def test_rendering_with_and_without_a_chat_template():
    tok = build_tokenizer()
    auto = PromptRenderer(tok, "auto")
    assert auto.templated
    assert auto.prompt("tell me") == "<|user|> tell me <|assistant|>"
    assert auto.prompt(CONVO) == "<|system|> be kind <|user|> write a poem <|assistant|>"
    # one assistant message is its text, as a string response is; several are what the template puts after the prompt
    assert auto.response(CONVO, [{"role": "assistant", "content": "a song"}], "row 1") == "a song"
    turns = [{"role": "assistant", "content": "a song"}, {"role": "user", "content": "more"}]
    assert auto.response(CONVO, turns, "row 1") == " a song <|user|> more "
    assert auto.response("tell me", " as is", "row 1") == " as is"
    off = PromptRenderer(tok, "off")
    assert off.prompt("tell me") == "tell me"
    with pytest.raises(PromptFileError, match="a conversational prompt needs a chat template"):
        off.prompt(CONVO)
    plain = build_tokenizer(chat_template=False)
    assert not PromptRenderer(plain, "auto").templated
    with pytest.raises(ValueError, match="--chat-template on, but the model's tokenizer has no chat template"):
        PromptRenderer(plain, "on")
    with pytest.raises(PromptFileError, match="row 3 response 0: empty response"):
        auto.response("tell me", "  ", "row 3 response 0")
