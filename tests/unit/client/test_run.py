"""A run directory: started once, resumed with its own settings, refusing changes that would mix two runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from activedpo_client.remote import ClientError
from activedpo_client.rundir import Run
from activedpo_client.settings import RoundConfig

WORKLOAD = {"kind": "model", "model": "/models/qwen2", "prompt_file": "/data/prompts.jsonl"}


def _start(tmp_path, **settings) -> Run:
    return Run.open(tmp_path, WORKLOAD, RoundConfig(annotator="file", evaluate="none", **settings))


def _begin_round(run: Run, labels: bool = False) -> None:
    d = run.round_dir(1)
    d.mkdir(parents=True, exist_ok=True)
    (d / "state.json").write_text(json.dumps({"steps": {"generate": {"seconds": 1.0}}}))
    if labels:
        (d / "labels.jsonl").write_text('{"pair_id": "p", "preference": "A"}\n')


def test_a_new_run_records_its_workload_and_settings_and_reopens_them(tmp_path):
    run = _start(tmp_path, budget=7, lora_r=8)
    again = Run.open(tmp_path)
    assert (again.run_id, again.config, again.workload) == (run.run_id, run.config, WORKLOAD)
    assert again.project == run.run_id and again.rounds_done == 0


def test_resuming_keeps_the_runs_own_settings_where_none_are_given(tmp_path):
    run = _start(tmp_path, lora_r=8, dpo_lr=3e-4)
    _begin_round(run)
    # a newer default (or a command line that does not repeat the run's options) reads as no change
    resumed = Run.open(tmp_path, WORKLOAD, RoundConfig(annotator="file", evaluate="none"), given=frozenset())
    assert (resumed.config.lora_r, resumed.config.dpo_lr) == (8, 3e-4)


def test_before_any_work_a_setting_left_out_takes_its_default_again(tmp_path):
    _start(tmp_path, target_modules="nope_proj")  # refused by the server before any work was done
    fixed = Run.open(tmp_path, WORKLOAD, RoundConfig(annotator="file", evaluate="none"), given=frozenset())
    assert fixed.config.target_modules == RoundConfig.target_modules


def test_a_given_setting_that_would_mix_two_runs_is_refused_once_started(tmp_path):
    run = _start(tmp_path, lora_r=8)
    changed = replace(run.config, lora_r=16, dpo_beta=0.2)
    assert Run.open(tmp_path, WORKLOAD, changed, given=frozenset({"lora_r"})).config.lora_r == 16  # not started yet
    _begin_round(Run.open(tmp_path))
    with pytest.raises(ClientError, match=r"started with other settings \(dpo_beta\)"):
        Run.open(tmp_path, WORKLOAD, replace(changed, dpo_beta=0.3), given=frozenset({"lora_r", "dpo_beta"}))
    assert Run.open(tmp_path).config == replace(run.config, lora_r=16, dpo_beta=0.2)  # the refusal changed nothing


def test_the_next_rounds_size_may_change_and_who_labels_only_until_a_label_is_held(tmp_path):
    run = _start(tmp_path)
    _begin_round(run)
    bigger = Run.open(tmp_path, WORKLOAD, replace(run.config, budget=80, annotator="label-studio", ls_project="p"))
    assert (bigger.config.budget, bigger.config.annotator) == (80, "label-studio")
    _begin_round(bigger, labels=True)
    with pytest.raises(ClientError, match=r"\(annotator, ls_project\) \(labels are already held\)"):
        Run.open(tmp_path, WORKLOAD, replace(bigger.config, annotator="file", ls_project=""))
    assert Run.open(tmp_path, WORKLOAD, replace(bigger.config, budget=20)).config.budget == 20


def test_another_workload_is_refused_once_started_and_adopted_before(tmp_path):
    run = _start(tmp_path)
    other = WORKLOAD | {"model": "/models/llama"}
    assert Run.open(tmp_path, other, run.config).workload["model"] == "/models/llama"  # a mistake found at start
    _begin_round(Run.open(tmp_path))
    with pytest.raises(ClientError, match=r"was started on another workload .model: '/models/llama' → '/models/qwen2'"):
        Run.open(tmp_path, WORKLOAD, run.config)


@pytest.mark.parametrize("damage", ["{not json", '{"workload": {}}', '{"config": {"budget": "x"}}'])
def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, damage):
    _start(tmp_path)
    (tmp_path / "run.json").write_text(damage)
    with pytest.raises(ClientError, match=r"run\.json is damaged .*; restore it or start a new --run-dir"):
        Run.open(tmp_path)


def test_no_run_and_nothing_to_start_it_with(tmp_path):
    with pytest.raises(ClientError, match=r"no run in .*; start one with `activedpo-client round`"):
        Run.open(tmp_path / "nowhere")
