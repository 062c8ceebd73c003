"""Small causal LMs and reward models of real Hugging Face families, built locally from fresh configs.

They stand in for a user's own model where nothing may be downloaded (tests, benchmarks, trying
``round --model`` offline): a word-level tokenizer trained with ``tokenizers`` (an EOS but, like
GPT-2's, no pad token; optionally a chat template) and a randomly initialised GPT-2 (Conv1D
layers), GPT-NeoX (fused ``query_key_value``) or Llama model, saved with ``save_pretrained``. They
are loaded through the same code as any model directory; they are untrained.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "tell",
    "me",
    "about",
    "the",
    "sea",
    "sky",
    "cats",
    "dogs",
    "rain",
    "sun",
    "a",
    "story",
    "poem",
    "song",
    "line",
    "good",
    "bad",
    "nice",
    "kind",
    "cold",
    "warm",
    "very",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "and",
    "is",
    "it",
    "was",
    "yes",
    "no",
    "please",
    "write",
    "short",
    "long",
    "happy",
    "sad",
)
ROLES = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
ARCHS = ("gpt2", "gpt_neox", "llama")


def build_tokenizer(words=WORDS, chat_template: bool = True, max_length: int = 128):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=["<eos>", "<unk>"], min_frequency=1)
    tok.train_from_iterator([" ".join([*ROLES, *words])], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>", model_max_length=max_length
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_local_model(
    root: str | Path,
    arch: str = "gpt2",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    words=WORDS,
    chat_template: bool = True,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """Save a fresh ``arch`` model (gpt2, gpt_neox or llama) and its tokenizer under ``root``; returns ``root``."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = build_tokenizer(words, chat_template, max_length)
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=max_length, n_embd=hidden, n_layer=layers, n_head=heads,
                         bos_token_id=eos, eos_token_id=eos)  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=2 * hidden, max_position_embeddings=max_length, bos_token_id=eos,
                            eos_token_id=eos)  # fmt: skip
        model = GPTNeoXForCausalLM(cfg)
    elif arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_length,
                          bos_token_id=None, eos_token_id=eos)  # fmt: skip
        model = LlamaForCausalLM(cfg)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return Path(root)


def build_local_reward_model(root: str | Path, tokenizer_dir: str | Path, hidden: int = 32, seed: int = 1) -> Path:
    """A one-logit GPT-2 sequence classifier on ``tokenizer_dir``'s tokenizer (an untrained reward model)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=tokenizer.model_max_length, n_embd=hidden, n_layer=1,
                     n_head=2, num_labels=1, pad_token_id=tokenizer.eos_token_id)  # fmt: skip
    GPT2ForSequenceClassification(cfg).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return Path(root)
