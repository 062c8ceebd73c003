"""The CLIs as a user runs them: help, toy world, generation, a DPO round, evaluation, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from activedpo_client.cli import app as client
from activedpo_server.cli import app as server

runner = CliRunner()


def run(app, *args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_help_lists_the_command_groups():
    out = run(client, "--help")
    for group in ("round", "select", "toyworld", "eval", "generate", "train"):
        assert group in out
    round_help = run(client, "round", "--help")
    for option in ("--model", "--prompt-file", "--heldout-file", "--chat-template", "--annotator", "--evaluate",
                   "--target-modules", "--dtype"):  # fmt: skip
        assert option in round_help, option
    select_help = run(client, "select", "--help")
    assert all(o in select_help for o in ("--candidates", "--labeled", "--budget", "--out", "--server"))
    assert "build" in run(client, "toyworld", "--help")
    assert "dpo" in run(client, "train", "--help")
    assert "checkpoint" in run(server, "--help")
    assert "0.1.0" in run(client, "--version") and "0.1.0" in run(server, "--version")


def test_toyworld_build_reports_pi_ref_and_reuses_the_cache(tiny_world, cache_dir):
    out = run(client, "toyworld", "build", "--preset", "tiny", "--cache-dir", cache_dir)
    assert "reused from cache" in out and str(tiny_world.root) in out
    sft = tiny_world.info["sft_eval"]
    assert f"{sft['reward']:.3f} ± {sft['se']:.3f}" in out
    info = run(client, "toyworld", "info", "--world", tiny_world.root)
    assert "1480 train, 200 held out" in info


def test_toyworld_check_reports_lift_and_preference_accuracy(tiny_world, tmp_path):
    args = ["toyworld", "check", "--world", tiny_world.root, "--out", tmp_path / "dpo", "--pairs", 16,
            "--eval-prompts", 8, "--dpo-epochs", 1, "--dpo-lr", 3e-4, "--eval-samples", 2,
            "--eval-pair-samples", 3]  # fmt: skip
    result = json.loads(run(client, *args, "--json"))
    assert result["pairs"] == 16 and result["n"] == 8 and result["samples"] == 2
    right = result["pref_acc"] * result["pref_pairs"]  # a share (to 4 decimals) of the judged held-out pairs
    assert 0 < result["pref_pairs"] <= 8 * 3 and abs(right - round(right)) <= 5e-5 * result["pref_pairs"]
    assert 0 <= round(right) <= result["pref_pairs"]
    assert "--eval-pair-samples must be 0 (off) or at least 2" in run(client, *args[:-1], 1, code=2)


def test_eval_defaults_to_pi_ref(tiny_world, cache_dir):
    out = run(client, "eval", "--preset", "tiny", "--cache-dir", cache_dir, "--eval-prompts", 20, "--json")
    report = json.loads(out)
    sft = tiny_world.info["sft_eval"]  # the build evaluated the same 20 prompts with the same seed
    assert report["checkpoint"] == tiny_world.sft_checkpoint.id
    assert (report["reward"], report["se"], report["n"]) == (sft["reward"], sft["se"], 20)


def test_generate_train_and_evaluate_a_round(tiny_world, cache_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(tiny_world.task.train_prompts()[:12]) + "\n")
    out = tmp_path / "gen.jsonl"
    run(
        client,
        "generate",
        "--checkpoint",
        tiny_world.sft_dir,
        "--prompt-file",
        prompts,
        "--out",
        out,
        "-k",
        2,
        "--max-new-tokens",
        12,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["responses"]) == 2 for r in rows)

    labels = tmp_path / "labels.jsonl"
    with labels.open("w") as f:
        for r in rows:
            a, b = r["responses"]
            good, bad = (
                (a, b) if tiny_world.task.reward(r["prompt"], a) >= tiny_world.task.reward(r["prompt"], b) else (b, a)
            )
            f.write(json.dumps({"prompt": r["prompt"], "chosen": good, "rejected": bad}) + "\n")
    ckpt = tmp_path / "round1"
    args = ["train", "dpo", "--labels", labels, "--model", tiny_world.sft_dir, "--out", ckpt]
    out_text = run(client, *args, "--dpo-epochs", 1, "--dpo-batch-size", 4, "--lora-r", 4, "--lora-alpha", 8)
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["id"] in out_text and manifest["parent_id"] == tiny_world.sft_checkpoint.id

    report = json.loads(
        run(client, "eval", "--checkpoint", ckpt, "--world", tiny_world.root, "--eval-prompts", 10, "--json")
    )
    assert report["checkpoint"] == manifest["id"] and report["n"] == 10
    from activedpo_core.checkpoint import load_model
    from activedpo_trainer.heldout import heldout_eval

    same = heldout_eval(load_model(ckpt), tiny_world.config, 10, 0, with_reference=True)  # what eval must print
    assert (report["win_rate"], report["reward"]) == (round(same.win_rate, 4), round(same.reward, 4))

    checked = json.loads(run(server, "checkpoint", "check", ckpt))
    assert checked["id"] == manifest["id"] and checked["lora_parameters"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--checkpoint", "{tmp}/missing"], "base model path does not exist: {tmp}/missing"),
        (["toyworld", "info", "--world", "{tmp}/nowhere"], "no toy world at {tmp}/nowhere"),
        (["toyworld", "build", "--preset", "tiny", "--task", "nope_module:make"], "cannot import module 'nope_module'"),
        (["toyworld", "build", "--preset", "tiny", "--task", "best"], "unknown task 'best'"),
        (
            ["generate", "--checkpoint", "{tmp}", "--prompt-file", "{tmp}/p.txt", "--out", "{tmp}/o"],
            "prompts file not found",
        ),
        (
            ["train", "dpo", "--labels", "{tmp}/bad.jsonl", "--model", "{tmp}", "--out", "{tmp}/o"],
            "bad.jsonl line 2: not valid JSON",
        ),
    ],
)
def test_user_errors_are_one_clear_line(args, message, tmp_path, tiny_world, cache_dir):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n')
    args = [a.format(tmp=tmp_path) for a in args]
    if args[0] == "eval":
        args += ["--world", str(tiny_world.root)]
    result = runner.invoke(client, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message.format(tmp=tmp_path) in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_server_checkpoint_check_rejects_a_bad_path(tmp_path):
    result = runner.invoke(server, ["checkpoint", "check", str(tmp_path / "gone")])
    assert result.exit_code == 2 and "does not exist" in result.output
