"""The toy task and its hidden oracle: prompts, splits, reward attributes, Bradley-Terry labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from activedpo_trainer.tasks import Task, bradley_terry_preference, label_pairs, load_task, sigmoid, task_vocabulary
from activedpo_trainer.toytasks import (
    NEGATIVE,
    POSITIVE,
    SIGNOFFS,
    TOPICS,
    MixedTask,
    SignoffTask,
    ToyTask,
    format_prompt,
    parse_prompt,
)
from activedpo_trainer.toyworld import ToyWorldConfig, world_dir

PROMPT = format_prompt("poem", "ocean", "kids", 6)


def test_toy_task_does_what_the_task_protocol_promises():
    """Not ``isinstance`` (a runtime Protocol check only looks for the names): each promise, kept."""
    task: Task = ToyTask()
    train, held = task.train_prompts(), task.heldout_prompts()
    assert train and held and not set(train) & set(held)  # held-out prompts are never trained or selected on
    corpus = task.sft_corpus(20, seed=3)
    assert corpus == task.sft_corpus(20, seed=3) != task.sft_corpus(20, seed=4)  # seeded
    assert len(corpus) == 20 and all(p in train for p, _ in corpus)
    demo = sum(task.reward(p, r) for p, r in corpus) / len(corpus)
    noise = sum(task.reward(p, " zzz qqq") for p, _ in corpus) / len(corpus)
    assert demo > noise  # the demonstrations are what the hidden reward prefers over gibberish


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


# ---- pluggable tasks ---------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_signoff_task_rewards_the_audiences_sign_off_that_demonstrations_rarely_show():
    task = SignoffTask()
    assert isinstance(task, Task) and task.name == "signoff"
    prompt = format_prompt("poem", "ocean", "sailors", 4)
    plain = " wave tide reef coral"
    assert task.reward(prompt, plain + " ahoy") == pytest.approx(task.reward(prompt, plain) + 1.5)
    assert task.reward(prompt, plain + " cheers") == pytest.approx(task.reward(prompt, plain) - 0.5)
    assert task.reward(prompt, " ahoy" + plain) < task.reward(prompt, plain + " ahoy")  # it must end the response
    assert task.reward(format_prompt("poem", "ocean", "kids", 4), plain + " ahoy") < task.reward(
        prompt, plain + " ahoy"
    )
    # the toy oracle's sentiment does not count here
    assert task.reward(prompt, " wave tide reef bright") == task.reward(prompt, " wave tide reef dull")
    corpus = task.sft_corpus(4000, seed=0)
    signed = [r.split()[-1] in SIGNOFFS.values() for _, r in corpus]
    right = [r.split()[-1] == SIGNOFFS[p.split()[6]] for p, r in corpus]
    assert 0.12 < np.mean(signed) < 0.18 and 0.02 < np.mean(right) < 0.06
    assert set(SIGNOFFS.values()) <= set(task.vocabulary())
    assert task.train_prompts() == ToyTask().train_prompts()


def test_mixed_task_demonstrations_are_expert_on_solved_topics_and_mediocre_elsewhere():
    task = MixedTask()
    assert isinstance(task, Task) and task.name == "mixed" and isinstance(load_task("mixed"), MixedTask)
    assert task.train_prompts() == ToyTask().train_prompts()  # the toy task's prompts and oracle
    assert task.reward(PROMPT, " wave tide bright") == ToyTask().reward(PROMPT, " wave tide bright")
    corpus = task.sft_corpus(4000, seed=0)
    solved = [(p, r) for p, r in corpus if task.is_solved(p)]
    hard = [(p, r) for p, r in corpus if not task.is_solved(p)]
    assert 0.7 < len(solved) / len(corpus) < 0.8  # 9 of 12 topics: three quarters of the prompts
    # the expert: every solved demonstration is a best-possible response of the same reward
    assert {task.reward(p, r) for p, r in solved} == {2.0}
    assert all(len(r.split()) == parse_prompt(p)[1] and len(set(r.split())) == len(r.split()) for p, r in solved)
    assert len({r for _, r in solved}) > 0.9 * len(solved)  # near-duplicates, not copies
    rewards = [task.reward(p, r) for p, r in hard]
    assert np.std(rewards) > 1.0 and np.mean(rewards) < 0.5  # the mediocre writers: what pairs can teach
    assert task.sft_corpus(50, seed=3) == task.sft_corpus(50, seed=3)
    # the regime study's variants: the share of solved (uninformative) prompts
    half, most = load_task("activedpo_trainer.toytasks:mixed_6"), load_task("activedpo_trainer.toytasks:mixed_11")
    assert (half.name, len(half.solved_topics), most.name, len(most.solved_topics)) == ("mixed-6", 6, "mixed-11", 11)
    assert set(half.solved_topics) < set(task.solved_topics) < set(most.solved_topics)
    share = np.mean([most.is_solved(p) for p in most.train_prompts()])
    assert share == pytest.approx(11 / 12, abs=0.02)


def test_built_in_tasks_record_the_dpo_settings_their_sweep_chose():
    from activedpo_trainer.tasks import PAPER_DPO, recorded_dpo_settings

    # benchmarks/results/dpo_sweep.md: chosen on random labels only, by a rule fixed in advance
    assert recorded_dpo_settings(ToyTask()) == {"lr": 3e-4, "epochs": 4.0, "beta": 0.3}
    assert recorded_dpo_settings(SignoffTask()) == {"lr": 1e-4, "epochs": 4.0, "beta": 0.3}
    assert recorded_dpo_settings(MixedTask()) == {"lr": 1e-4, "epochs": 4.0, "beta": 0.3}
    assert recorded_dpo_settings(object()) == PAPER_DPO  # a task of the user's that records none
    sweep = (Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "dpo_sweep.md").read_text()
    for task, (lr, beta) in {
        "toy": ("0.0003", "0.3"),
        "signoff": ("0.0001", "0.3"),
        "mixed": ("0.0001", "0.3"),
    }.items():
        assert f"Chosen for `{task}`: lr {lr}, 4 epochs, β {beta} (a significant lift" in sweep


def test_load_task_builtins_and_import_paths(monkeypatch, tmp_path):
    assert isinstance(load_task("toy", seed=3), ToyTask) and load_task("toy", seed=3).seed == 3
    assert isinstance(load_task("signoff"), SignoffTask)
    monkeypatch.chdir(EXAMPLES)  # the current directory is importable, as with python -m
    echo = load_task("echo_task:make_task", seed=1)
    assert echo.name == "echo" and isinstance(echo, Task)
    assert echo.reward("say frog 3 times :", " frog frog frog") == 3.0
    assert echo.reward("say frog 3 times :", " frog um") < 0
    vocab = task_vocabulary(echo, echo.sft_corpus(50, 0))
    assert {"say", "frog", "times", ":"} <= set(vocab) and len(vocab) == len(set(vocab))
    with pytest.raises(ValueError, match=r"unknown task 'best': use a built-in \(toy, signoff, mixed\)"):
        load_task("best")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        load_task("no_such_module:make")
    with pytest.raises(ValueError, match="module 'echo_task' has no callable 'nothing'"):
        load_task("echo_task:nothing")
    (tmp_path / "bad_tasks.py").write_text("def as_list(seed=0):\n    return [seed]\n\ndef no_seed():\n    pass\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ValueError, match="returned list, which lacks name, train_prompts, heldout_prompts"):
        load_task("bad_tasks:as_list")
    with pytest.raises(ValueError, match=r"bad_tasks:no_seed.*factory\(seed=0\) failed"):
        load_task("bad_tasks:no_seed")


def test_world_config_key_is_stable_for_the_toy_task_and_names_other_tasks():
    assert ToyWorldConfig().key() == ToyWorldConfig(task="toy").key() == "e03461d1a4b6"  # worlds built before
    assert ToyWorldConfig(task="signoff").key() != ToyWorldConfig().key()
    assert "signoff" in world_dir(ToyWorldConfig(task="signoff"), Path("c")).name


def test_the_toy_world_page_shows_the_example_task_as_it_is():
    src = (EXAMPLES / "echo_task.py").read_text()
    code = src[src.index("from __future__") :].rstrip()
    assert code in (EXAMPLES.parent / "docs" / "toy-world.md").read_text()
