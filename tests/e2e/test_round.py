"""`activedpo-client round` end to end: tiny rounds through a real embedded selection server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from activedpo_client.cli import app
from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

runner = CliRunner()


def round_args(world, run_dir, rounds):
    return [
        "round", "--world", world.root, "--run-dir", run_dir, "--rounds", rounds, "--budget", 8, "--prompts", 12,
        "--responses", 3, "--eval-prompts", 8, "--dpo-epochs", 1, "--proj-dim", 128, "--lora-r", 8, "--device", "cpu",
    ]  # fmt: skip


def invoke(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_two_rounds_advance_labels_checkpoints_metrics_and_the_server(tiny_world, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    out = invoke(*round_args(tiny_world, "run", 1))  # a run dir named relative to where round 1 ran
    assert "round 1: 8 labels" in out
    assert "audit 0.50 ± 0.00 (n 1)" in out  # π_ref has no preference: a coin flip, exactly
    assert json.loads((run_dir / "run.json").read_text())["checkpoint"] == "rounds/001/checkpoint"  # the dir may move
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    out = invoke(*round_args(tiny_world, run_dir, 2))  # resumes the run from another directory: one more round
    assert "round 2: 16 labels" in out and "round 1" not in out
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["labels"] for m in metrics] == [8, 16] and metrics[0]["checkpoint"] != metrics[1]["checkpoint"]
    assert all(set(m["seconds"]) >= {"generate", "select", "train", "evaluate"} for m in metrics)
    # audit pairs: one of each batch's 8 (--audit-fraction 0.1), scored with the selecting policy's margins
    batches = [json.loads((run_dir / "rounds" / f"00{r}" / "batch.json").read_text()) for r in (1, 2)]
    assert [sum(p["audit"] for p in b["pairs"]) for b in batches] == [1, 1]
    assert {p["margin"] for p in batches[0]["pairs"]} == {0.0} and all(p["margin"] for p in batches[1]["pairs"])
    assert (metrics[0]["audit_acc"], metrics[0]["audit_se"], metrics[1]["labels_before"]) == (0.5, 0.0, 8)
    labels = {x["pair_id"]: x["preference"] for x in map(json.loads, (run_dir / "rounds" / "002" / "labels.jsonl")
                                                         .read_text().splitlines())}  # fmt: skip
    credits = {p["audit"]: [] for p in batches[1]["pairs"]}
    for p in batches[1]["pairs"]:
        credits[p["audit"]].append(float((p["margin"] > 0) == (labels[p["pair_id"]] == "A")))
    w = 7 / batches[1]["candidates"]  # the picks are the census of their stratum, the audit pair samples the rest
    expected = w * np.mean(credits[False]) + (1 - w) * credits[True][0]
    assert metrics[1]["audit_acc"] == pytest.approx(expected, abs=1e-4)
    assert metrics[1]["picks_acc"] == pytest.approx(np.mean(credits[False]), abs=1e-4)
    assert metrics[1]["gain"] == pytest.approx((metrics[1]["audit_acc"] - 0.5) / 8 * 100, abs=1e-3)
    # what the audit estimates, known in the toy world: the selecting policy's expected accuracy on the whole pool
    assert metrics[0]["pool_acc_oracle"] == 0.5 and metrics[1]["pool_acc_oracle"] != 0.5
    # drift from π_ref, on the held-out prompts from the policy's own samples, in eval.json and the metrics
    evals = [json.loads((run_dir / "rounds" / f"00{r}" / "eval.json").read_text()) for r in (1, 2)]
    assert [(e["drift_on"], e["drift_prompts"]) for e in evals] == [("held-out", 8)] * 2
    assert [m["kl_seq"] for m in metrics] == [e["kl_seq"] for e in evals] and "KL(π_θ‖π_ref)" in out
    run = json.loads((run_dir / "run.json").read_text())
    assert run["rounds_done"] == 2 and run["checkpoint"].endswith("rounds/002/checkpoint")
    # the embedded server kept its state: the round-2 checkpoint, 16 labels, each pair labeled once
    with EmbeddedServer(run_dir / "server", args=["--proj-dim", "128", "--lora-r", "8"]) as server:
        client = SelectorClient(Connection(server.target), project=run["project"])
        status, labels = client.status(), list(client.export_labels())
        client.project = ""  # the run's labels live in its own project, not the server's default one
        assert client.status().annotations == 0 and not list(client.export_labels())
        client.close()
    assert run["project"] == run["run_id"]
    assert status.checkpoint_id == metrics[1]["checkpoint"] and status.annotations == 16
    assert len({x.pair_id for x in labels}) == 16
    assert (run_dir / "reward.png").stat().st_size > 1000  # the plot, redrawn each round
    status = " ".join(invoke("status", "--run-dir", run_dir).split())  # the table wraps at 80 columns
    assert "2 rounds of activedpo" in status and "16 labeled" in status
    invoke("export", "--run-dir", run_dir, "--out", tmp_path / "labels.jsonl")
    from datasets import load_dataset

    data = load_dataset("json", data_files=str(tmp_path / "labels.jsonl"), split="train")
    assert len(data) == 16 and set(data.column_names) == {"prompt", "chosen", "rejected"}
    # a run dir remembers its settings
    err = invoke(*round_args(tiny_world, run_dir, 3), "--seed", 5, code=2)
    assert "started with other settings (seed)" in err
    # and the options it resolved, as a file that reruns it: here, a finished run that says how to go on
    from activedpo_core.options import read_config

    resolved = read_config(run_dir / "config.toml")
    assert (resolved["budget"], resolved["proj_dim"], resolved["lora_r"], resolved["dpo_epochs"]) == (8, 128, 8, 1.0)
    assert (resolved["annotator"], resolved["evaluate"], resolved["run_dir"]) == ("oracle", "oracle", str(run_dir))
    assert "has 2 of 2 rounds; pass --rounds 3 to go on" in invoke("round", "--config", run_dir / "config.toml")
    # resuming with no option repeated takes the run's own settings, not the defaults (budget 50, lora_r 128, …)
    out = invoke("round", "--world", tiny_world.root, "--run-dir", run_dir, "--rounds", 2)
    assert "has 2 of 2 rounds" in out and "other settings" not in out


def test_a_round_against_a_remote_server_that_starts_without_a_checkpoint(tiny_world, tmp_path):
    # the deployment case: a long-running server (compose, Kubernetes) that no checkpoint was given, with no
    # --checkpoint-root and no disk shared with the client: the base model and the round's adapter are uploaded,
    # and round one is featurized with the client's LoRA (r=128 here), not the server's own default (r=8)
    own = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "32"]
    with EmbeddedServer(tmp_path / "remote", args=own) as server:
        args = round_args(tiny_world, tmp_path / "run", 1)
        out = invoke(*args[: args.index("--proj-dim")], "--server", server.target)
        assert f"loading checkpoint {tiny_world.sft_checkpoint.id} with a fresh LoRA r=128, α=512, targets " in out
        assert "round 1: 8 labels" in out and "audit 0.50 ± 0.00 (n 1)" in out
        client = SelectorClient(Connection(server.target), project=json.loads((tmp_path / "run" / "run.json")
                                                                           .read_text())["project"])  # fmt: skip
        run = json.loads((tmp_path / "run" / "run.json").read_text())
        assert client.status().checkpoint_id == f"{run['run_id']}-r001"  # the round's own checkpoint now
        exported = list(client.export_labels())  # the remote server recorded which answer was the audit pair's
        assert sum(x.audit for x in exported) == 1 and {x.margin for x in exported} == {0.0}
        client.close()
    uploaded = list((tmp_path / "remote" / "checkpoints").glob("*/adapter/adapter_config.json"))
    assert len(uploaded) == 1  # it came by upload, into the server's own state dir
    assert len(list((tmp_path / "remote" / "bases").glob("*/model/config.json"))) == 1  # and so did the base model


def test_a_third_party_task_by_import_path_runs_a_round_with_its_own_oracle(tmp_path, monkeypatch):
    from pathlib import Path

    from activedpo_trainer.toyworld import load_toyworld

    monkeypatch.chdir(Path(__file__).resolve().parents[2] / "examples")  # echo_task.py is importable from here
    run_dir = tmp_path / "run"
    args = ["round", "--preset", "tiny", "--task", "echo_task:make_task", "--cache-dir", tmp_path / "cache",
            "--run-dir", run_dir, "--rounds", 1, "--budget", 4, "--prompts", 8, "--eval-prompts", 8,
            "--dpo-epochs", 1, "--proj-dim", 128, "--lora-r", 8]  # fmt: skip
    out = invoke(*args)
    assert "round 1: 4 labels" in out
    world = load_toyworld(json.loads((run_dir / "run.json").read_text())["workload"]["world"])
    assert world.config.task == "echo_task:make_task" and world.task.name == "echo"
    batch = json.loads((run_dir / "rounds" / "001" / "batch.json").read_text())
    assert all(p["prompt"].startswith("say ") for p in batch["pairs"])  # the task's own prompts
    labels = [json.loads(x) for x in (run_dir / "rounds" / "001" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 4
    # the same run dir on another task's world is refused, not silently mixed
    err = invoke(*[a if a != "echo_task:make_task" else "toy" for a in args], code=2)
    assert "was started on another workload (world:" in err


def test_the_deterministic_oracle_labels_without_noise(tiny_world, tmp_path):
    run_dir = tmp_path / "run"
    invoke(*round_args(tiny_world, run_dir, 1), "--annotator", "oracle-deterministic", "--eval-pair-samples", 0)
    r = run_dir / "rounds" / "001"
    pairs = {p["pair_id"]: p for p in json.loads((r / "batch.json").read_text())["pairs"]}
    labels = [json.loads(line) for line in (r / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 8 and {x["annotator"] for x in labels} == {"oracle-deterministic"}
    for x in labels:
        p = pairs[x["pair_id"]]
        a, b = (tiny_world.task.reward(p["prompt"], p[k]) for k in ("response_a", "response_b"))
        assert x["preference"] == ("A" if a > b else "B" if b > a else "TIE")


def test_quickstart_compares_strategies_from_the_same_start(tiny_world, tmp_path):
    out = invoke(
        "quickstart", "--world", tiny_world.root, "--run-dir", tmp_path / "qs", "--rounds", 1, "--budget", 4,
        "--prompts", 8, "--eval-prompts", 8, "--dpo-epochs", 1, "--proj-dim", 128, "--lora-r", 8,
    )  # fmt: skip
    assert "activedpo" in out and "random" in out and "reward.png" in "".join(out.split())  # a long path wraps
    runs = {s: json.loads((tmp_path / "qs" / s / "metrics.jsonl").read_text()) for s in ("activedpo", "random")}
    assert runs["activedpo"]["ref_reward"] == runs["random"]["ref_reward"]  # the same π_ref and held-out prompts
    assert runs["activedpo"]["labels"] == runs["random"]["labels"] == 4
    # preference accuracy on judged held-out pairs drawn once from π_ref: the same pairs in every arm
    held = {s: json.loads((tmp_path / "qs" / s / "heldout_pairs.json").read_text()) for s in runs}
    assert held["activedpo"] == held["random"] and len(held["random"]["prompts"]) == runs["random"]["pref_pairs"] > 0
    for s, m in runs.items():  # shares (to 4 decimals) of judged pairs: whole counts of them
        ev = json.loads((tmp_path / "qs" / s / "rounds" / "001" / "eval.json").read_text())
        for share, pairs in ((m["pref_acc"], m["pref_pairs"]), (m["pref_acc_policy"], ev["pref_pairs_policy"])):
            right = share * pairs
            assert pairs > 0 and abs(right - round(right)) <= 5e-5 * pairs and 0 <= round(right) <= pairs, (s, share)
    assert "preference accuracy" in out
    assert (tmp_path / "qs" / "reward.png").exists()


def test_file_annotator_round_trip_with_a_malformed_labels_file(tiny_world, tmp_path):
    run_dir = tmp_path / "run"
    args = [*round_args(tiny_world, run_dir, 1), "--annotator", "file"]
    out = invoke(*args, code=3)  # the batch is handed out; the round waits for people
    assert "waiting for labels" in out and "labels import" in out
    r = run_dir / "rounds" / "001"
    pairs = [json.loads(line) for line in (r / "to_label.jsonl").read_text().splitlines()]
    studio = json.loads((r / "label_studio.json").read_text())
    assert len(pairs) == 8 == len(studio) and '<Choices name="preference"' in (r / "label_config.xml").read_text()

    bad = tmp_path / "labels.jsonl"
    rows = [{"pair_id": p["pair_id"], "preference": "A", "annotator": "ann"} for p in pairs[:5]]
    rows += [
        {"pair_id": "nope", "preference": "A", "annotator": "ann"},
        {"pair_id": pairs[5]["pair_id"], "preference": "left", "annotator": "ann"},
        {"pair_id": pairs[0]["pair_id"], "preference": "B", "annotator": "ann"},  # duplicate
    ]
    bad.write_text("".join(json.dumps(x) + "\n" for x in rows) + "{not json\n")
    out = invoke("labels", "import", bad, "--run-dir", run_dir, code=1)
    assert "unknown pair id 'nope'" in out and "preference must be one of A, B, TIE, BOTH_BAD, got 'left'" in out
    assert "duplicate label" in out and "line 9: not a JSON object" in out and "5 labels held" in out
    assert "3 of its 8 pairs not labeled yet" in " ".join(out.split())
    out = " ".join(invoke(*args, code=3).split())  # a batch labeled in part: the round waits for the rest
    assert "5 labels held, 3 of the batch's 8 pairs not labeled yet" in out

    # the rest arrive as a Label Studio export
    export = [
        {"data": {"pair_id": p["pair_id"]}, "annotations": [{"completed_by": {"email": "b@x"},
         "result": [{"type": "pairwise", "value": {"selected": "right"}}]}]}
        for p in pairs[5:]
    ]  # fmt: skip
    (tmp_path / "studio.json").write_text(json.dumps(export))
    out = " ".join(invoke("labels", "import", tmp_path / "studio.json", "--run-dir", run_dir).split())
    assert "8 labels held for round 1; every pair of the batch is labeled" in out
    out = invoke(*args)  # the round goes on from the labels
    assert "round 1: 8 labels" in out

    # round 2: people answer half the batch, as TRL rows with the prompt as to_label.jsonl shows it, and call it done
    args[args.index("--rounds") + 1] = 2
    invoke(*args, code=3)
    pairs = [json.loads(line) for line in (run_dir / "rounds" / "002" / "to_label.jsonl").read_text().splitlines()]
    trl = [{"prompt": p["prompt"], "chosen": p["response_b"], "rejected": p["response_a"]} for p in pairs[:4]]
    (tmp_path / "half.jsonl").write_text("".join(json.dumps(x) + "\n" for x in trl))
    out = " ".join(invoke("labels", "import", tmp_path / "half.jsonl", "--run-dir", run_dir, "--done").split())
    assert "4 labels held for round 2; the batch is done: its 4 unlabeled pairs go back to the pool" in out
    held = [json.loads(x) for x in (run_dir / "rounds" / "002" / "labels.jsonl").read_text().splitlines()]
    assert [(x["pair_id"], x["preference"], x["annotator"]) for x in held] == [
        (p["pair_id"], "B", "import") for p in pairs[:4]]  # fmt: skip
    out = invoke(*args)
    assert "round 2: 12 labels" in out


def test_reward_model_annotator(tiny_world, tmp_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_world.sft_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    rm_dir = tmp_path / "rm"
    LlamaForSequenceClassification(cfg).save_pretrained(rm_dir)
    tok.save_pretrained(rm_dir)
    run_dir = tmp_path / "run"
    out = invoke(*round_args(tiny_world, run_dir, 1), "--annotator", f"reward-model:{rm_dir}")
    assert "round 1: 8 labels" in out
    labels = [json.loads(x) for x in (run_dir / "rounds" / "001" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 8 and {x["annotator"] for x in labels} == {"reward-model:rm"}
    err = invoke(*round_args(tiny_world, tmp_path / "run2", 1), "--annotator", f"reward-model:{tmp_path}", code=2)
    assert "is not a Hugging Face model directory" in err
