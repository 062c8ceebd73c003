"""A run's artifacts as types: one name per quantity, earlier files still read, and one parse of who judges."""

from __future__ import annotations

import json

import pytest

from activedpo_client.artifacts import STEPS, Evaluated, RoundMetrics, Selected, Trained, read_step
from activedpo_client.report import read_metrics
from activedpo_client.settings import Judge, RoundConfig
from activedpo_trainer.evaluate import EvalReport


def test_eval_json_and_metrics_share_the_names_and_round_trip():
    report = EvalReport(reward=0.5, se=0.1, n=4, win_rate=0.75, ref_reward=0.25, ref_se=0.05)
    evaluated = Evaluated(evaluate="oracle", **report.to_dict(), pref_pairs=12, pref_acc=0.6, pref_acc_se=0.1)
    assert Evaluated.from_dict(json.loads(json.dumps(evaluated.to_dict()))) == evaluated
    trained = Trained(labels=8, checkpoint="run-r002", agreement=0.25)
    m = RoundMetrics.of_round(2, trained, evaluated, {s: 1.0 for s in STEPS})
    assert (m.reward, m.ref_reward, m.pref_acc, m.labels, m.agreement) == (0.5, 0.25, 0.6, 8, 0.25)
    assert RoundMetrics.from_dict(m.to_dict()) == m
    assert set(m.to_dict()) >= {"reward", "ref_reward", "pref_acc", "win_rate"} and "mean" not in m.to_dict()
    assert m.value("pref_acc") == 0.6
    with pytest.raises(KeyError, match="unknown metric 'accuracy'"):
        m.value("accuracy")


def test_files_written_by_earlier_versions_are_read_with_todays_names(tmp_path):
    old_eval = {"evaluate": "oracle", "mean": -1.2, "se": 0.1, "n": 20, "ref_mean": -1.5, "ref_se": 0.2}
    ev = Evaluated.from_dict(old_eval)
    assert (ev.reward, ev.ref_reward, ev.n) == (-1.2, -1.5, 20)
    assert read_step("select", {"pairs": 8, "from": 36, "checkpoint": "c", "seconds": 0.5}) == Selected(
        pairs=8, candidates=36, checkpoint="c", seconds=0.5
    )
    # a key this version does not know (a newer file, or one since dropped) is left out, not an error
    assert read_step("train", {"labels": 4, "checkpoint": "c", "later_field": 1}) == Trained(labels=4, checkpoint="c")
    assert EvalReport.from_dict({"mean": 0.1, "se": 0.0, "n": 1}).reward == 0.1
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"round": 1, "labels": 4, "reward": 0.3}) + "\n" + '{"round"')
    (m,) = read_metrics(tmp_path)  # the torn last line of a crash is dropped; the round is rewritten on resume
    assert (m.round, m.labels, m.reward, m.pref_acc) == (1, 4, 0.3, None)


def test_a_steps_line_puts_its_wall_time_last_and_leaves_out_what_it_has_not():
    line = Selected(pairs=8, candidates=36, checkpoint="c", seconds=0.5).summary()
    assert line == "pairs 8, candidates 36, checkpoint c, seconds 0.5"
    assert Trained(labels=4, checkpoint="c").summary() == "labels 4, checkpoint c, seconds 0.0"


def test_a_judge_is_parsed_once_with_its_reward_models_path(tmp_path):
    assert Judge.parse("reward-model:org/rm") == Judge("reward-model", "org/rm")
    assert (str(Judge.parse("reward-model:org/rm")), Judge.parse("reward-model:org/rm").name) == (
        "reward-model:org/rm", "reward-model:rm")  # fmt: skip
    assert Judge.parse("oracle").needs_oracle and not Judge.parse("file").needs_oracle
    with pytest.raises(ValueError, match="unknown evaluator 'file'; use oracle, none or reward-model:PATH"):
        Judge.parse("file", "evaluator")
    with pytest.raises(ValueError, match="unknown annotator 'reward-model:'"):
        Judge.parse("reward-model:")
    rm = tmp_path / "rm"
    rm.mkdir()
    config = RoundConfig(annotator=f"reward-model:{rm}", evaluate="none")
    assert config.annotator_spec == Judge("reward-model", str(rm.resolve()))
    assert config.evaluate_spec.kind == "none"
