"""Prompt and candidate files, read through ``datasets``, and prompts rendered for a tokenizer.

A file is JSONL, JSON, CSV or Parquet (by extension), or a directory written by
``datasets``' ``save_to_disk``. Files are streamed row by row (``streaming=True``), so a pool
of any size is read in bounded memory and nothing is cached or downloaded.

A prompt is a string or a TRL conversational list of ``{"role", "content"}`` messages. With a
chat template (``auto``: when the tokenizer has one; ``on``; ``off``) a prompt is rendered with
``add_generation_prompt=True`` and a string prompt becomes one user message; the rendered text
is then the prompt everywhere (generation, features, DPO), and a response is the text that
follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
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
        for n, row in enumerate(iter_records(path), 1):
            if field not in row:
                raise PromptFileError(f"{path} row {n}: no {field!r} field (columns: {', '.join(row)}); "
                                      f"pass --prompt-field")  # fmt: skip
            prompts.append(check_prompt(row[field], f"{path} row {n}"))
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
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def response(self, prompt: Prompt, response: Any, where: str) -> str:
        """A candidate response as the text that follows the rendered prompt.

        A string is taken as that text. A conversational response (a list of assistant
        messages) is rendered after the prompt with the chat template, keeping what follows the
        prompt's own rendering (TRL's convention for conversational completions).
        """
        if isinstance(response, str):
            if not response.strip():
                raise PromptFileError(f"{where}: empty response")
            return response
        messages = check_messages(response, where)
        if not self.templated:
            return "".join(m["content"] for m in messages)
        head = self.prompt(prompt)
        convo = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        full = self.tokenizer.apply_chat_template(convo + messages, tokenize=False)
        return full[len(head) :] if full.startswith(head) else "".join(m["content"] for m in messages)
