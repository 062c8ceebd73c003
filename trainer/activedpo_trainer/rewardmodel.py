"""A reward model as an annotator: any Hugging Face sequence-classification model from a path.

The reward model is fed as the ecosystem trains it (TRL's ``RewardTrainer``, OpenRLHF, public chat
RMs' model cards), not as the policy sees the prompt:

* a chat RM (its tokenizer has a chat template) scores the *conversation*: the prompt's messages (a
  string prompt is one user message) plus ``{"role": "assistant", "content": response}``, rendered by
  the RM's own template and tokenized without added special tokens (the template writes BOS etc.);
  a template that refuses a system turn gets the system text folded into the first user message;
* a standard RM (no chat template) scores its tokenizer's text pair ``tok(prompt, response)`` with its
  special tokens (``[CLS] prompt [SEP] response [SEP]``); a conversational prompt becomes its
  messages' contents joined by blank lines.

Inputs longer than the RM's positions are truncated as ``truncation="only_first"`` with left
truncation does: the prompt loses tokens from its left (the special tokens the tokenizer adds and a
leading BOS stay in place), and only a response that does not fit alone loses its end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

Prompt = str | list[dict]  # a raw prompt: a string, or TRL conversational messages (system turns allowed)

_UNSET_MAX_LENGTH = 10**29  # tokenizers without a model_max_length get transformers' VERY_LARGE_INTEGER (1e30)
_SPECIAL, _PROMPT, _RESPONSE = 0, 1, 2  # what each token of an encoded item is, for truncation


class RewardModelError(ValueError):
    """A reward model that cannot be loaded or used; the message names the path."""


def check_reward_model(path: str | os.PathLike) -> None:
    """Refuse, from its config and files alone (no weights are read), what cannot be a reward model: a missing
    directory, a causal LM or a classifier of more than one logit, a directory without its tokenizer."""
    from transformers import AutoConfig

    from activedpo_core.checkpoint import CheckpointError, check_tokenizer_files

    path = Path(path)
    if not (path / "config.json").is_file():
        raise RewardModelError(f"reward model {path} is not a Hugging Face model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise RewardModelError(f"cannot load reward model {path}: {_one_line(e)}") from None
    heads = [a for a in (config.architectures or []) if not a.endswith("ForSequenceClassification")]
    if heads:
        raise RewardModelError(f"reward model {path} is a {heads[0]}, not a reward model: a reward model is a "
                               f"one-logit AutoModelForSequenceClassification")  # fmt: skip
    if config.num_labels != 1:
        raise RewardModelError(f"reward model {path} has {config.num_labels} labels; a reward model has 1")
    try:
        check_tokenizer_files(path, "reward model")
    except CheckpointError as e:
        raise RewardModelError(str(e)) from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _messages(prompt: Prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    ok = isinstance(prompt, (list, tuple)) and all(
        isinstance(m, dict) and {"role", "content"} <= m.keys() for m in prompt
    )
    if ok:
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise TypeError(f"a prompt is a string or a list of {{'role', 'content'}} messages, not {prompt!r:.80}")


def _fold_system(messages: list[dict]) -> list[dict]:
    """The conversation for a template without a system role: system text leads the first user message."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _limit(tokenizer, config) -> int | None:
    """The longest input the RM takes: the least of its tokenizer's model_max_length and its config's positions."""
    limits = []
    mml = getattr(tokenizer, "model_max_length", None)
    if isinstance(mml, int) and 0 < mml < _UNSET_MAX_LENGTH:
        limits.append(mml)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits) if limits else None


def _fit(features: dict[str, list[int]], kinds: list[int], limit: int | None) -> tuple[dict[str, list[int]], bool]:
    """Drop prompt tokens from the left, then (only if still too long) response tokens from the right."""
    n = len(kinds)
    if limit is None or n <= limit:
        return features, False
    excess, drop = n - limit, set()
    for kind, order in ((_PROMPT, range(n)), (_RESPONSE, range(n - 1, -1, -1))):
        for i in order:
            if excess and kinds[i] == kind:
                drop.add(i)
                excess -= 1
    keep = [i for i in range(n) if i not in drop][:limit]  # [:limit]: special tokens alone longer than the limit
    return {k: [v[i] for i in keep] for k, v in features.items()}, True


class RewardModel:
    """Scores (prompt, response) with a one-logit sequence-classification model, in batches.

    ``truncated`` counts the items (over all calls) that had to be cut to ``max_length`` tokens;
    ``max_length`` is None when neither the tokenizer nor the config states a limit.
    """

    def __init__(self, path: str | os.PathLike, device: str | None = None, batch_size: int = 32):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from activedpo_core.checkpoint import resolve_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        path = Path(path)
        self.path = path
        check_reward_model(path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as e:
            raise RewardModelError(f"cannot load reward model {path}: {_one_line(e)}") from None
        self.batch_size = batch_size
        self.max_length = _limit(self.tokenizer, self.model.config)
        self.truncated = 0
        self._chat = bool(getattr(self.tokenizer, "chat_template", None))
        self._fold = False  # set once the template has refused a system turn
        self._special_ids = set(self.tokenizer.all_special_ids)
        self._setup_pad()
        self.device = resolve_device(device)
        self.model.to(self.device).eval()

    # ---- padding ------------------------------------------------------------------------------

    def _setup_pad(self) -> None:
        """Give tokenizer and config a pad id when the RM came without one.

        Sequence classifiers that pool the last token (Llama, GPT-2, ...) take the rightmost token that is
        not ``pad_token_id``; a pad id that also ends the inputs (EOS, where the chat template closes the
        turn with it) would move the pooled token. So the pad is a special token that does not end a
        probe input, and items that end with it anyway are scored alone as the model came (no pad id).
        """
        tok, config = self.tokenizer, self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self._own_pad = text_config.pad_token_id is None
        if not self._own_pad:
            pad = text_config.pad_token_id
        elif tok.pad_token_id is not None:
            pad = tok.pad_token_id
        else:
            candidates = [tok.eos_token_id, tok.unk_token_id, tok.bos_token_id, tok.sep_token_id, tok.cls_token_id,
                          tok.mask_token_id, *tok.all_special_ids]  # fmt: skip
            candidates = list(dict.fromkeys(c for c in candidates if isinstance(c, int)))
            try:
                last = self._features("Hello?", "Hi.")[0]["input_ids"][-1]
            except Exception:  # a template that needs more than a plain exchange: no probe
                last = None
            pad = next((c for c in candidates if c != last), candidates[0] if candidates else 0)
        for c in {id(config): config, id(text_config): text_config}.values():
            if c.pad_token_id is None:
                c.pad_token_id = pad
        if tok.pad_token is None:
            tok.pad_token = tok.convert_ids_to_tokens(pad)
        self.pad_token_id = pad

    # ---- encoding -----------------------------------------------------------------------------

    def _render(self, messages: list[dict], **kwargs) -> str:
        from jinja2 import TemplateError

        if self._fold:
            messages = _fold_system(messages)
        try:
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
            except TemplateError:
                if self._fold or not any(m["role"] == "system" for m in messages):
                    raise
                out = self.tokenizer.apply_chat_template(_fold_system(messages), tokenize=False, **kwargs)
                self._fold = True
                return out
        except TemplateError as e:
            raise RewardModelError(f"the chat template of reward model {self.path} refused: {_one_line(e)}") from None

    def _features(self, prompt: Prompt, response: str) -> tuple[dict[str, list[int]], list[int]]:
        """The untruncated model inputs of one item, and what each token is (special, prompt, response)."""
        tok = self.tokenizer
        keys = ["input_ids", *(["token_type_ids"] if "token_type_ids" in tok.model_input_names else [])]
        messages = _messages(prompt)
        if self._chat:
            text = self._render([*messages, {"role": "assistant", "content": response}])
            head = self._render(messages, add_generation_prompt=True)
            # where the response's part of the text begins: after the prompt with its assistant header
            split = next((i for i, (a, b) in enumerate(zip(text, head, strict=False)) if a != b), len(head))
            if tok.is_fast:
                enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
                kinds = [_PROMPT if end <= split else _RESPONSE for _, end in enc["offset_mapping"]]
            else:
                head_ids = tok(text[:split], add_special_tokens=False, verbose=False)
                tail_ids = tok(text[split:], add_special_tokens=False, verbose=False)
                enc = {k: head_ids[k] + tail_ids[k] for k in keys if k in head_ids}
                kinds = [_PROMPT] * len(head_ids["input_ids"]) + [_RESPONSE] * len(tail_ids["input_ids"])
            for i, t in enumerate(enc["input_ids"]):  # a leading BOS stays in place
                if kinds[i] != _PROMPT or t not in self._special_ids:
                    break
                kinds[i] = _SPECIAL
        else:
            prompt_text = prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in messages)
            if tok.is_fast:
                enc = tok(prompt_text, response, verbose=False)  # verbose: no "longer than" warning; it is cut below
                kinds = [{None: _SPECIAL, 0: _PROMPT, 1: _RESPONSE}[s] for s in enc.sequence_ids(0)]
            else:
                p = tok(prompt_text, add_special_tokens=False, verbose=False)["input_ids"]
                r = tok(response, add_special_tokens=False, verbose=False)["input_ids"]
                enc = {"input_ids": tok.build_inputs_with_special_tokens(p, r)}
                if "token_type_ids" in keys:
                    enc["token_type_ids"] = tok.create_token_type_ids_from_sequences(p, r)
                mask, kinds, plain = tok.get_special_tokens_mask(p, r), [], 0
                for m in mask:
                    kinds.append(_SPECIAL if m else _PROMPT if plain < len(p) else _RESPONSE)
                    plain += not m
        return {k: list(enc[k]) for k in keys if k in enc}, kinds

    def _encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[dict[str, list[int]], bool]]:
        if isinstance(prompts, str) or isinstance(responses, str):
            raise TypeError("prompts and responses are sequences, one item each")
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [_fit(*self._features(p, r), self.max_length) for p, r in zip(prompts, responses, strict=True)]

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[int]]:
        """The token ids the RM sees for each item, truncated to ``max_length`` (``truncated`` is not counted)."""
        return [f["input_ids"] for f, _ in self._encode(prompts, responses)]

    # ---- scoring ------------------------------------------------------------------------------

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """One reward per (prompt, response); prompts are raw (a string or conversational messages)."""
        items = self._encode(prompts, responses)
        self.truncated += sum(t for _, t in items)
        scores: list[float] = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]["input_ids"]))  # less padding
        alone = {i for i in order if self._own_pad and items[i][0]["input_ids"][-1:] == [self.pad_token_id]}
        batched = [i for i in order if i not in alone]
        for s in range(0, len(batched), self.batch_size):
            chunk = batched[s : s + self.batch_size]
            for i, x in zip(chunk, self._forward([items[i][0] for i in chunk]), strict=True):
                scores[i] = x
        for i in sorted(alone):  # the pooled token would be taken for padding: score it as the model came
            scores[i] = self._forward([items[i][0]], as_shipped=True)[0]
        return scores

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        """The scorer interface of :func:`activedpo_trainer.evaluate.evaluate_policy`."""
        return self.score(prompts, responses)

    def _forward(self, batch: list[dict[str, list[int]]], as_shipped: bool = False) -> list[float]:
        """Logits of right-padded items; ``as_shipped``: one item, without the pad id this class set."""
        import torch

        width = max(len(f["input_ids"]) for f in batch)
        inputs = {k: [f[k] + [self.pad_token_id if k == "input_ids" else 0] * (width - len(f[k])) for f in batch]
                  for k in batch[0]}  # fmt: skip
        inputs["attention_mask"] = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in batch]
        inputs = {k: torch.tensor(v, dtype=torch.long, device=self.device) for k, v in inputs.items()}
        config = self.model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        saved = (config.pad_token_id, text_config.pad_token_id)
        if as_shipped:
            config.pad_token_id = text_config.pad_token_id = None
        try:
            with torch.no_grad():
                logits = self.model(**inputs).logits
        finally:
            config.pad_token_id, text_config.pad_token_id = saved
        return logits[:, 0].float().cpu().tolist()
