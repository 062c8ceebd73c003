"""Prompt and candidate files, read through ``datasets``, and prompts rendered for a tokenizer.

A file is JSONL, JSON, CSV or Parquet (by extension), or a directory written by
``datasets``' ``save_to_disk``. Files are streamed row by row (``streaming=True``), so a pool
of any size is read in bounded memory and nothing is cached or downloaded.

A prompt is a string or a TRL conversational list of ``{"role", "content"}`` messages. With a
chat template (``auto``: when the tokenizer has one; ``on``; ``off``) a prompt is rendered with
``add_generation_prompt=True`` and a string prompt becomes one user message; the rendered text
is then the prompt everywhere (generation, features, DPO), and a response is the text that
follows it. A prompt is rendered exactly once: a string that already is a rendering (as
``select``'s and ``export``'s output give it back) is taken as it is.

Rows are located as people see them: ``line N`` of a JSONL file (blank lines counted), ``row N``
of other formats.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
CHAT_TEMPLATE_MODES = ("auto", "on", "off")
Prompt = str | list[dict]


class PromptFileError(ValueError):
    """A prompt or candidate file cannot be read, or a row in it is malformed."""


def iter_records(path: str | Path) -> Iterator[dict]:
    """Rows of a JSONL/JSON/CSV/Parquet file or a ``save_to_disk`` directory, streamed, as dicts."""
    path = Path(path)
    if path.is_dir():
        yield from _iter_saved(path)
        return
    if not path.is_file():
        raise PromptFileError(f"file not found: {path}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PromptFileError(
            f"{path}: unknown format {path.suffix or '(no extension)'!r}; use .jsonl, .json, .csv, .parquet "
            f"or a directory written by datasets' save_to_disk"
        )
    if path.stat().st_size == 0:  # an empty file has no rows (datasets cannot infer a schema from it)
        return
    from datasets import load_dataset

    try:
        data = load_dataset(fmt, data_files=str(path), split="train", streaming=True)
        yield from data
    except PromptFileError:
        raise
    except Exception as e:  # pyarrow and datasets raise many kinds on malformed files
        raise PromptFileError(f"{path}: cannot read it as {fmt}: {_one_line(e)}") from None


def iter_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """``(where, row)`` for every row of a prompt or candidate file: ``where`` is ``line N`` for JSONL (the
    line in the file) and ``row N`` otherwise. A malformed JSONL line is an error naming that line."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        for n, row in enumerate(iter_records(path), 1):
            yield f"row {n}", row
        return
    with open(path, encoding="utf-8", errors="strict") as f:
        n = 0
        try:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PromptFileError(f"{path} line {n}: not valid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(row, dict):
                    raise PromptFileError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
                yield f"line {n}", row
        except UnicodeDecodeError as e:
            raise PromptFileError(f"{path} line {n + 1}: not UTF-8 text ({e.reason})") from None


def _iter_saved(path: Path) -> Iterator[dict]:
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as e:
        raise PromptFileError(f"{path}: not a directory written by datasets' save_to_disk ({_one_line(e)})") from None
    if isinstance(data, DatasetDict):
        if "train" in data:
            data = data["train"]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise PromptFileError(f"{path}: a dataset with splits {sorted(data)}; save the one split to use")
    yield from data


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def check_prompt(value: Any, where: str) -> Prompt:
    """A prompt as given (a non-empty string, or a list of role/content messages); an error naming ``where``."""
    if isinstance(value, str):
        if not value.strip():
            raise PromptFileError(f"{where}: empty prompt")
        return value
    return check_messages(value, where)


def check_messages(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise PromptFileError(f"{where}: expected a string or a list of {{'role', 'content'}} messages")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise PromptFileError(f"{where}: every message needs string 'role' and 'content', got {m!r:.80}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def read_prompts(path: str | Path, field: str = "prompt") -> list[Prompt]:
    """Every prompt in ``path`` (the ``field`` column; a plain-text ``.txt`` file is one prompt per line)."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        prompts: list[Prompt] = [line for line in path.read_text().splitlines() if line.strip()]
    else:
        prompts = []
        for where, row in iter_rows(path):
            if field not in row:
                raise PromptFileError(f"{path} {where}: no {field!r} field (columns: {', '.join(row)}); "
                                      f"pass --prompt-field")  # fmt: skip
            prompts.append(check_prompt(row[field], f"{path} {where}"))
    if not prompts:
        raise PromptFileError(f"no prompts in {path}")
    return prompts


class PromptRenderer:
    """Turns prompts (strings or messages) into the text a tokenizer's model continues.

    ``mode``: ``auto`` uses the tokenizer's chat template when it has one, ``on`` requires one,
    ``off`` never uses one (conversational prompts are then an error).
    """

    def __init__(self, tokenizer, mode: str = "auto"):
        if mode not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"--chat-template must be auto, on or off, got {mode!r}")
        has = bool(getattr(tokenizer, "chat_template", None))
        if mode == "on" and not has:
            raise ValueError("--chat-template on, but the model's tokenizer has no chat template")
        self.tokenizer, self.templated = tokenizer, mode == "on" or (mode == "auto" and has)

    def prompt(self, prompt: Prompt) -> str:
        if not self.templated:
            if not isinstance(prompt, str):
                raise PromptFileError(
                    "a conversational prompt needs a chat template, but the tokenizer has none "
                    "(or --chat-template off); give plain-string prompts or a tokenizer with a chat template"
                )
            return prompt
        if isinstance(prompt, str) and self.is_rendered(prompt):
            return prompt  # rendered once already (an earlier output of ours, or the user's own rendering)
        return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)

    @cached_property
    def _frame(self) -> tuple[str, str]:
        """(head, tail): what every rendering of a conversation ending in a user turn, with the generation
        prompt, starts and ends with (e.g. ``<|im_start|>`` and ``<|im_end|>\\n<|im_start|>assistant\\n``)."""
        probes = ([{"role": "user", "content": "probe one"}], [{"role": "user", "content": "probe two"}],
                  [{"role": "system", "content": "probe sys"}, {"role": "user", "content": "probe three"}])  # fmt: skip
        renders = []
        for messages in probes:
            try:
                renders.append(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            except Exception:  # a template that refuses a system turn: it cannot have rendered one either
                continue
        if len(renders) < 2:
            return "", ""
        return _common_prefix(renders), _common_prefix([r[::-1] for r in renders])[::-1]

    def is_rendered(self, text: str) -> bool:
        """Whether ``text`` already is a rendering by this chat template (starts and ends as every one does)."""
        head, tail = self._frame
        return bool(tail.strip()) and text.endswith(tail) and text.startswith(head) and len(text) > len(head + tail)

    def response(self, prompt: Prompt, response: Any, where: str) -> str:
        """A candidate response as the text that follows the rendered prompt.

        A string is taken as that text, and so is the content of a single assistant message (the form
        a generated response has). Several messages (an assistant turn with tool calls and their
        results) are rendered after the prompt with the chat template, keeping what follows the
        prompt's own rendering. A response that repeats the prompt's turns first (as UltraFeedback's
        ``chosen`` does) is taken after them.
        """
        if isinstance(response, str):
            if not response.strip():
                raise PromptFileError(f"{where}: empty response")
            return response
        messages = check_messages(response, where)
        rendered = isinstance(prompt, str) and self.templated and self.is_rendered(prompt)
        if not rendered:
            convo = as_messages(prompt)
            if messages[: len(convo)] == convo:
                messages = messages[len(convo) :]
        if not "".join(m["content"] for m in messages).strip():
            raise PromptFileError(f"{where}: empty response")
        if not self.templated or rendered or [m["role"] for m in messages] == ["assistant"]:
            # one assistant turn is its text, as a string response and a generated one are: the same answer
            # matches whichever way a file gives it (TRL appends the EOS that ends the turn when it trains)
            return "".join(m["content"] for m in messages)
        head = self.prompt(prompt)
        full = self.tokenizer.apply_chat_template(as_messages(prompt) + messages, tokenize=False)
        return full[len(head) :] if full.startswith(head) else "".join(m["content"] for m in messages)


def _common_prefix(texts: list[str]) -> str:
    n = 0
    while all(len(t) > n and t[n] == texts[0][n] for t in texts):
        n += 1
    return texts[0][:n]


def as_messages(prompt: Prompt) -> list[dict]:
    """A prompt as TRL conversational messages: a string is one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def implicit_prompt(chosen: Any, rejected: Any, where: str) -> tuple[list[dict], list[dict], list[dict]]:
    """TRL's implicit-prompt preference format (no ``prompt``: ``chosen`` and ``rejected`` are whole
    conversations): (prompt, chosen, rejected) with the prompt the turns both share, up to the last
    non-assistant one."""
    a, b = check_messages(chosen, f"{where} chosen"), check_messages(rejected, f"{where} rejected")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    while n and a[n - 1]["role"] == "assistant":
        n -= 1
    if n == 0:
        raise PromptFileError(f"{where}: no 'prompt' field, and 'chosen' and 'rejected' share no opening turn to "
                              f"take as the prompt")  # fmt: skip
    return a[:n], a[n:], b[n:]
