"""RewardModel feeds a reward model as the ecosystem trains it: the conversation on the RM's own chat template,
or its tokenizer's text pair; the prompt is cut from the left to fit; batches score as items alone do."""

import re
import shutil

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from activedpo_trainer.localmodels import LLAMA3_TEMPLATE, build_bert_reward_model, build_chat_reward_model
from activedpo_trainer.rewardmodel import RewardModel, RewardModelError, check_reward_model

SYSTEM_PROMPT = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "tell me about the sea"}]


class Reference:
    """The RM's tokenizer and model as loaded, untouched: what the hand-rendered inputs are scored with."""

    def __init__(self, path):
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()

    def logit(self, **enc) -> float:
        with torch.no_grad():
            return self.model(**{k: torch.tensor([v]) for k, v in enc.items()}).logits[0, 0].item()

    def chat_ids(self, messages, response) -> list[int]:
        text = self.tok.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
        return self.tok(text, add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return build_bert_reward_model(tmp_path_factory.mktemp("bert_rm"))


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return build_chat_reward_model(tmp_path_factory.mktemp("chat_rm"))


@pytest.fixture(scope="module")
def bert(bert_dir):
    return RewardModel(bert_dir, device="cpu", batch_size=3), Reference(bert_dir)


@pytest.fixture(scope="module")
def chat(chat_dir):
    return RewardModel(chat_dir, device="cpu", batch_size=3), Reference(chat_dir)


@pytest.fixture(scope="module")
def gpt2(reward_dir):  # conftest: a GPT-2 classifier on the policy's word-level tokenizer and its chat template
    return RewardModel(reward_dir, device="cpu", batch_size=3), Reference(reward_dir)


# ---- the input the RM sees -----------------------------------------------------------------------


def test_a_standard_rm_scores_its_tokenizers_text_pair(bert):
    rm, ref = bert
    assert not ref.tok.chat_template and rm.max_length == 256
    prompts = ["tell me about the sea", SYSTEM_PROMPT, "write a poem"]
    responses = ["the sea is blue and cold", "the sea is warm", "a small red poem"]
    texts = ["tell me about the sea", "be kind\n\ntell me about the sea", "write a poem"]  # messages joined
    want = [ref.logit(**ref.tok(t, r)) for t, r in zip(texts, responses, strict=True)]
    assert rm.score(prompts, responses) == pytest.approx(want, abs=1e-5)
    assert rm(prompts, responses) == pytest.approx(want, abs=1e-5)  # the scorer interface
    cls, sep = ref.tok.cls_token_id, ref.tok.sep_token_id
    ids = rm.encode(prompts[:1], responses[:1])[0]
    assert ids[0] == cls and ids.count(sep) == 2 and ids == ref.tok(texts[0], responses[0]).input_ids
    assert len(set(want)) == 3  # distinct inputs score apart: the equality above is not vacuous


def test_a_chat_rm_scores_the_conversation_on_its_own_template(chat):
    rm, ref = chat
    assert ref.tok.pad_token is None and ref.model.config.pad_token_id is None  # as the builder makes it
    responses = ["the sea is blue", "**cold** and `green`!"]
    want = [ref.logit(input_ids=ref.chat_ids(SYSTEM_PROMPT, r)) for r in responses]
    assert rm.score([SYSTEM_PROMPT, SYSTEM_PROMPT], responses) == pytest.approx(want, abs=1e-5)
    ids = rm.encode([SYSTEM_PROMPT], responses[:1])[0]
    assert ids == ref.chat_ids(SYSTEM_PROMPT, responses[0])
    assert ids[0] == ref.tok.bos_token_id and ids[-1] == ref.tok.eos_token_id  # BOS from the template, once
    # a string prompt is one user message
    user = [{"role": "user", "content": "tell me about the sea"}]
    assert rm.score(["tell me about the sea"], responses[:1]) == pytest.approx(rm.score([user], responses[:1]))
    assert rm.score([user], responses[:1])[0] != pytest.approx(want[0], abs=1e-6)  # the system turn counts


def test_an_rm_on_the_policy_tokenizer_uses_its_chat_template(gpt2):
    rm, ref = gpt2
    assert ref.tok.chat_template and rm.max_length == 128
    prompts, responses = ["tell me a story", SYSTEM_PROMPT], ["a good story", "yes it is"]
    conversations = [[{"role": "user", "content": "tell me a story"}], SYSTEM_PROMPT]
    want = [ref.logit(input_ids=ref.chat_ids(m, r)) for m, r in zip(conversations, responses, strict=True)]
    assert rm.score(prompts, responses) == pytest.approx(want, abs=1e-5)


def test_a_template_that_refuses_a_system_turn_gets_it_in_the_first_user_message(chat_dir, tmp_path):
    from jinja2 import TemplateError

    shutil.copytree(chat_dir, tmp_path / "rm")
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}" + LLAMA3_TEMPLATE)  # fmt: skip
    tok.save_pretrained(tmp_path / "rm")
    ref = Reference(tmp_path / "rm")
    with pytest.raises(TemplateError):
        ref.chat_ids(SYSTEM_PROMPT, "x")
    rm = RewardModel(tmp_path / "rm", device="cpu")
    folded = [{"role": "user", "content": "be kind\n\ntell me about the sea"}]
    want = ref.logit(input_ids=ref.chat_ids(folded, "the sea is blue"))
    assert rm.score([SYSTEM_PROMPT, "hi"], ["the sea is blue", "yes"])[0] == pytest.approx(want, abs=1e-5)
    # a template that refuses the conversation for another reason is an error naming the RM
    tok.chat_template = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
    tok.save_pretrained(tmp_path / "rm")
    with pytest.raises(RewardModelError, match=r"chat template of reward model .*rm refused: Conversation roles"):
        RewardModel(tmp_path / "rm", device="cpu").score(["hi"], ["yes"])


# ---- batches -------------------------------------------------------------------------------------

PROMPTS = ["tell", "tell me about the sea and the sky " * 4, SYSTEM_PROMPT, "a", "write a long poem " * 9, "sun", "no"]
RESPONSES = ["yes", "the sea", "blue " * 20, "it is a very good and kind story", "no", "warm sun " * 12, "!"]


@pytest.mark.parametrize("name", ["chat", "bert", "gpt2"])
def test_batches_of_different_lengths_score_as_items_alone(name, request):
    rm, _ = request.getfixturevalue(name)
    lengths = {len(ids) for ids in rm.encode(PROMPTS, RESPONSES)}
    assert len(lengths) >= 5 and rm.batch_size < len(PROMPTS)  # padding happens, in several batches
    alone = [rm.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES, strict=True)]
    assert rm.score(PROMPTS, RESPONSES) == pytest.approx(alone, abs=1e-5)


def test_the_chat_rm_without_a_pad_token_batches_as_it_scores_alone_unpadded(chat):
    """Its inputs end with EOS, so EOS cannot be the pad id: the classifier pools the last non-pad token."""
    rm, ref = chat
    assert rm.model.config.pad_token_id is not None and rm.tokenizer.pad_token is not None
    assert rm.pad_token_id != ref.tok.eos_token_id  # EOS ends every input: another pad lets them batch
    msgs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in PROMPTS]
    want = [ref.logit(input_ids=ref.chat_ids(m, r)) for m, r in zip(msgs, RESPONSES, strict=True)]
    assert rm.score(PROMPTS, RESPONSES) == pytest.approx(want, abs=1e-5)


def test_items_that_end_with_the_pad_id_are_scored_as_the_model_came(chat_dir):
    rm = RewardModel(chat_dir, device="cpu", batch_size=4)
    ref = Reference(chat_dir)
    eos = rm.tokenizer.eos_token_id
    rm.pad_token_id = rm.model.config.pad_token_id = eos  # as if EOS had been taken for the pad
    msgs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in PROMPTS]
    want = [ref.logit(input_ids=ref.chat_ids(m, r)) for m, r in zip(msgs, RESPONSES, strict=True)]
    assert rm.score(PROMPTS, RESPONSES) == pytest.approx(want, abs=1e-5)
    assert rm.model.config.pad_token_id == eos  # restored after the items scored alone


# ---- truncation ----------------------------------------------------------------------------------


def test_the_text_pair_loses_the_prompts_start_then_the_responses_end(bert):
    rm, ref = bert
    tok = ref.tok
    cls, sep = tok.cls_token_id, tok.sep_token_id
    n = len(tok("sun", add_special_tokens=False).input_ids)
    fits = "sun " * ((256 - 4) // n)  # with a one-token response: exactly 256 tokens
    assert len(tok(fits, "yes").input_ids) == 256
    long_prompt, long_response = "tell me about the sea " * 60, "the sky is very blue " * 60
    prompts = ["a poem", long_prompt, fits, "write a song", [{"role": "user", "content": long_prompt}]]
    responses = ["yes", "a good story", "yes", long_response, "no"]
    before = rm.truncated
    scores = rm.score(prompts, responses)
    assert rm.truncated - before == 3  # the long prompts (string and messages) and the long response; not `fits`
    ids = rm.encode(prompts, responses)
    assert [len(x) for x in ids] == [len(tok("a poem", "yes").input_ids), 256, 256, 256, 256]
    # the prompt is cut from the left, [CLS] stays, the response is whole: as the tokenizer's own only_first
    tok.truncation_side = "left"
    try:
        want = tok(long_prompt, "a good story", truncation="only_first", max_length=256)
    finally:
        tok.truncation_side = "right"
    response_ids = tok("a good story", add_special_tokens=False).input_ids
    assert ids[1] == want.input_ids and ids[1][0] == cls and ids[1][-len(response_ids) - 1 :] == [*response_ids, sep]
    assert scores[1] == pytest.approx(ref.logit(**want), abs=1e-5)
    # a response too long alone keeps its start; the prompt is gone
    long_ids = tok(long_response, add_special_tokens=False).input_ids
    assert len(long_ids) > 256 and ids[3] == [cls, sep, *long_ids[:253], sep]
    assert scores[3] == pytest.approx(ref.logit(input_ids=ids[3], token_type_ids=[0, 0] + [1] * 254), abs=1e-5)
    rm.score(prompts[1:2], responses[1:2])
    assert rm.truncated - before == 4  # cumulative over calls


def test_the_conversation_keeps_bos_and_the_whole_response(chat):
    rm, ref = chat
    tok = ref.tok
    long_prompt = [{"role": "system", "content": "be very kind " * 40}, {"role": "user", "content": "tell me " * 50}]
    long_response = "the sea is blue " * 80
    before = rm.truncated
    scores = rm.score([long_prompt, "hi", "hi"], ["a nice song", long_response, "yes"])
    assert rm.truncated - before == 2
    ids = rm.encode([long_prompt, "hi"], ["a nice song", long_response])
    full = ref.chat_ids(long_prompt, "a nice song")
    assert len(full) > 256 and ids[0] == [full[0], *full[-255:]] and ids[0][0] == tok.bos_token_id
    assert tok.decode(ids[0]).endswith("<|start_header_id|>assistant<|end_header_id|>\n\na nice song<|eot_id|>")
    assert scores[0] == pytest.approx(ref.logit(input_ids=ids[0]), abs=1e-5)
    response_ids = tok(long_response, add_special_tokens=False).input_ids
    assert len(response_ids) > 256 and ids[1] == [tok.bos_token_id, *response_ids[:255]]
    assert scores[1] == pytest.approx(ref.logit(input_ids=ids[1]), abs=1e-5)


# ---- errors --------------------------------------------------------------------------------------


def test_a_causal_lm_or_a_dir_without_config_is_a_one_line_error_naming_the_path(gpt2_dir, bert_dir, tmp_path):
    import json

    cases = [(gpt2_dir, "is a GPT2LMHeadModel, not a reward model: a reward model is a one-logit"),
             (tmp_path, "no config.json")]  # fmt: skip
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{ not json")
    cases.append((tmp_path / "broken", "cannot load reward model"))
    two = tmp_path / "two-logits"  # a classifier, but of two classes
    shutil.copytree(bert_dir, two)
    (two / "config.json").write_text(json.dumps(json.loads((two / "config.json").read_text()) |
                                                {"id2label": {"0": "a", "1": "b"}}))  # fmt: skip
    cases.append((two, "has 2 labels; a reward model has 1"))
    bare = tmp_path / "no-tokenizer"  # weights and config, no tokenizer: transformers would build an empty one
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(bert_dir / f, bare / f)
    cases.append((bare, "has no tokenizer (tokenizer.json, vocab.json, vocab.txt, …)"))
    for path, message in cases:
        with pytest.raises(RewardModelError, match=re.escape(message)) as e:
            check_reward_model(path)  # from the config and file names alone, before any weight is read
        with pytest.raises(RewardModelError, match=re.escape(message)):
            RewardModel(path, device="cpu")
        assert isinstance(e.value, ValueError) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_prompts_and_responses_pair_up(bert):
    rm, _ = bert
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="a prompt is a string or a list"):
        rm.score([[{"text": "a"}]], ["c"])
    assert rm.score([], []) == []
