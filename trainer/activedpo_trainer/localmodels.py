"""Small causal LMs and reward models of real Hugging Face families, built locally from fresh configs.

They stand in for a user's own model where nothing may be downloaded (tests, benchmarks, trying
``round --model`` offline), saved with ``save_pretrained`` and loaded through the same code as any
model directory; they are untrained.

* Policies: GPT-2 (Conv1D layers), GPT-NeoX (fused ``query_key_value``) and Llama on a word-level
  tokenizer trained with ``tokenizers`` (an EOS but, like GPT-2's, no pad token; optionally a chat
  template); Qwen2 (grouped-query attention, tied embeddings), Bloom (ALiBi, fused
  ``query_key_value``) and Phi on a byte-level BPE tokenizer with Qwen2's ChatML chat template (a
  default system turn), ``<|im_end|>`` as EOS and no pad token, as users' models come.
* Reward models: a GPT-2 classifier on the policy's own tokenizer; a BERT classifier with its own
  WordPiece tokenizer and 256 positions (no chat template: scored on the text pair); and a Llama
  classifier with its own byte-level BPE tokenizer, a Llama-3-style chat template and no pad token.
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
# Qwen2's template: a conversation without a system turn gets the default one
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{%- for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
    "m['content'] + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
WORD_ARCHS = ("gpt2", "gpt_neox", "llama")  # on the word-level tokenizer
BPE_ARCHS = ("qwen2", "bloom", "phi")  # on the byte-level BPE ChatML tokenizer
ARCHS = WORD_ARCHS + BPE_ARCHS


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


def _corpus(words) -> list[str]:
    """Text a small BPE learns merges from: the words, with the punctuation and markup responses carry."""
    text = " ".join(words)
    return [text, text.capitalize() + ".", "**" + " ".join(words[:8]) + "**", "`code` 1, 2, 3!\n- item?\n"]


def build_bpe_tokenizer(words=WORDS, max_length: int = 512, special=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                        eos: str = "<|im_end|>", bos: str | None = None, chat_template: str | None = CHATML_TEMPLATE,
                        vocab_size: int = 400):  # fmt: skip
    """A byte-level BPE tokenizer (as GPT-2's and Qwen2's: any text encodes), a chat template, an EOS, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(_corpus(words), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=bos,
                                        model_max_length=max_length)  # fmt: skip
    if chat_template:
        tokenizer.chat_template = chat_template
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
    """Save a fresh ``arch`` model (see :data:`ARCHS`) and its tokenizer under ``root``; returns ``root``.

    gpt2, gpt_neox and llama get the word-level tokenizer (``chat_template``: with the small role-tag
    template); qwen2, bloom and phi the byte-level BPE tokenizer (``chat_template``: with ChatML).
    """
    import torch
    from transformers import (
        BloomConfig,
        BloomForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        PhiConfig,
        PhiForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    if arch in BPE_ARCHS:
        tokenizer = build_bpe_tokenizer(words, max_length, chat_template=CHATML_TEMPLATE if chat_template else None)
    else:
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
    elif arch == "qwen2":  # grouped-query attention (2 KV heads for 4 query heads), tied input/output embeddings
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=2 * heads, num_key_value_heads=heads, max_position_embeddings=max_length,
                          tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos)  # fmt: skip
        model = Qwen2ForCausalLM(cfg)
    elif arch == "bloom":  # ALiBi positions, fused query_key_value
        cfg = BloomConfig(vocab_size=vocab, hidden_size=hidden, n_layer=layers, n_head=heads, bos_token_id=eos,
                          eos_token_id=eos)  # fmt: skip
        model = BloomForCausalLM(cfg)
    elif arch == "phi":  # partial rotary embeddings, fc1/fc2 MLP, biases everywhere
        cfg = PhiConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, max_position_embeddings=max_length, bos_token_id=eos,
                        eos_token_id=eos)  # fmt: skip
        model = PhiForCausalLM(cfg)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    if arch in BPE_ARCHS:  # transformers' Qwen2 tokenizer class would otherwise default a pad token in
        _set_tokenizer_config(root, pad_token=None)
    return Path(root)


def _set_tokenizer_config(root: str | Path, **values) -> None:
    import json

    path = Path(root) / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2) + "\n")


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


def build_bert_reward_model(root: str | Path, words=WORDS, hidden: int = 32, max_length: int = 256,
                            seed: int = 2) -> Path:  # fmt: skip
    """A one-logit BERT classifier with its own WordPiece tokenizer (``[CLS] prompt [SEP] response [SEP]``),
    ``max_length`` positions and no chat template: a reward model of another family than any policy here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus(words), trainers.WordPieceTrainer(vocab_size=300, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    names = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT's own tokenizer returns them
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=max_length,
                                        model_input_names=names)  # fmt: skip
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=max_length, num_labels=1,
                     pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return Path(root)


def build_chat_reward_model(root: str | Path, words=WORDS, hidden: int = 32, max_length: int = 256,
                            seed: int = 3) -> Path:  # fmt: skip
    """A one-logit Llama classifier with its own byte-level BPE tokenizer, a Llama-3-style chat template, a BOS,
    ``<|eot_id|>`` as EOS and no pad token: a chat reward model scored on its own template."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = build_bpe_tokenizer(words, max_length, special=("<|begin_of_text|>", "<|start_header_id|>",
                                    "<|end_header_id|>", "<|eot_id|>"), eos="<|eot_id|>", bos="<|begin_of_text|>",
                                    chat_template=LLAMA3_TEMPLATE)  # fmt: skip
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_length, num_labels=1,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    LlamaForSequenceClassification(cfg).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return Path(root)
