"""The toy task and its hidden oracle: prompts, splits, reward attributes, Bradley-Terry labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activedpo_trainer.tasks import Task, bradley_terry_preference, label_pairs, sigmoid
from activedpo_trainer.toyworld import NEGATIVE, POSITIVE, TOPICS, ToyTask, format_prompt, parse_prompt

PROMPT = format_prompt("poem", "ocean", "kids", 6)


def test_toy_task_implements_the_task_protocol():
    assert isinstance(ToyTask(), Task)


def test_prompt_round_trip_and_rejects_foreign_prompts():
    assert parse_prompt(PROMPT) == ("ocean", 6)
    for bad in ["hello", "write a poem about pluto for kids in 6 words :", PROMPT.replace("words", "lines")]:
        with pytest.raises(ValueError, match="not a toy-world prompt"):
            parse_prompt(bad)


def test_oracle_ranks_known_good_above_known_bad():
    task = ToyTask()
    good = " wave tide reef coral bright calm"  # six distinct on-topic/positive words, right length
    bad = " sand sand dull the grim cold dune bleak gray"  # off-topic, negative, repeated, too long
    assert task.reward(PROMPT, good) == pytest.approx(3.0)
    assert task.reward(PROMPT, bad) < 0 < task.reward(PROMPT, good)


NEUTRAL = " a the and with very its"  # six distinct filler words, the asked length: reward 0


@pytest.mark.parametrize(
    ("response", "delta", "attribute"),
    [
        (" wave the and with very its", +0.5, "an on-topic word"),
        (" sand the and with very its", -0.5, "an off-topic word"),
        (" bright the and with very its", +0.5, "a positive word"),
        (" dull the and with very its", -0.5, "a negative word"),
        (" a the and with", -0.6, "two words short"),
        (" a a and with very its", -0.5, "a repeat"),
    ],
)
def test_each_attribute_moves_the_reward_on_its_own(response, delta, attribute):
    task = ToyTask()
    assert task.reward(PROMPT, NEUTRAL) == 0.0
    assert task.reward(PROMPT, response) == pytest.approx(delta), attribute


def test_topic_words_only_count_for_their_own_topic():
    task = ToyTask()
    ocean = " " + " ".join(TOPICS["ocean"])
    assert task.reward(PROMPT, ocean) > 0
    assert task.reward(PROMPT.replace("ocean", "desert"), ocean) < 0


def test_splits_are_disjoint_deterministic_and_seeded():
    a, b = ToyTask(seed=0), ToyTask(seed=0)
    assert a.train_prompts() == b.train_prompts() and a.heldout_prompts() == b.heldout_prompts()
    assert not set(a.train_prompts()) & set(a.heldout_prompts())
    assert len(a.heldout_prompts()) == 200 and len(a.train_prompts()) + 200 == 1680
    assert ToyTask(seed=1).heldout_prompts() != a.heldout_prompts()


def test_sft_corpus_is_seeded_and_made_of_continuations():
    task = ToyTask()
    corpus = task.sft_corpus(300, seed=5)
    assert corpus == task.sft_corpus(300, seed=5)
    assert corpus != task.sft_corpus(300, seed=6)
    held = set(task.heldout_prompts())
    for prompt, response in corpus:
        assert prompt not in held
        assert response.startswith(" ") and response.split()
    # an upbeat writer never mixes sentiments: the trait the SFT model can learn and DPO can shift
    mixed = [r for _, r in corpus if set(r.split()) & set(POSITIVE) and set(r.split()) & set(NEGATIVE)]
    assert not mixed


def test_bradley_terry_draws_match_the_sigmoid_of_the_reward_gap():
    task = ToyTask()
    a, b = " wave tide bright", " wave the dull"
    gap = task.reward(PROMPT, a) - task.reward(PROMPT, b)
    rng = np.random.default_rng(0)
    draws = [bradley_terry_preference(task, PROMPT, a, b, rng).chosen for _ in range(4000)]
    p_first = 1 - np.mean(draws)
    assert p_first == pytest.approx(sigmoid(gap), abs=0.025)
    assert 0.5 < sigmoid(gap) < 0.95  # the test would be vacuous for a certain outcome


def test_deterministic_preference_picks_the_higher_reward_and_draws_need_an_rng():
    task = ToyTask()
    pref = bradley_terry_preference(task, PROMPT, " the dull", " wave bright", deterministic=True)
    assert pref.chosen == 1 and pref.reward_second > pref.reward_first
    with pytest.raises(ValueError, match="rng"):
        bradley_terry_preference(task, PROMPT, " a", " b")


def test_label_pairs_orders_chosen_and_rejected():
    task = ToyTask()
    rows = label_pairs(task, [PROMPT, PROMPT], [(" dull", " wave"), (" wave", " dull")], deterministic=True)
    assert [r["chosen"] for r in rows] == [" wave", " wave"]
    assert [r["rejected"] for r in rows] == [" dull", " dull"]


def test_sigmoid_is_stable_at_the_extremes():
    assert sigmoid(1000) == 1.0 and sigmoid(-1000) == 0.0
    assert sigmoid(0.3) == pytest.approx(1 / (1 + math.exp(-0.3)))
