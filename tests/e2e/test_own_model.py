"""A user's own model, outside any toy world: rounds with a reward-model annotator and evaluator, the
file annotator's hand-off and resume, and offline `select` from a pool file with past labels.

The models are tiny GPT-2 (Conv1D) and GPT-NeoX models from fresh transformers configs, with a
word-level tokenizer trained by `tokenizers` that has a chat template and no pad token (conftest).
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from activedpo_client.cli import app
from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

runner = CliRunner()
SMALL = ["--proj-dim", 64, "--lora-r", 4, "--lora-alpha", 8, "--device", "cpu"]


def invoke(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())  # rich wraps long lines


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def server_state(state_dir, args, project=""):
    """(exported labels, status) of a stopped server's state dir, through a server started on it."""
    with EmbeddedServer(state_dir, args=args) as s, SelectorClient(Connection(s.target), project=project) as client:
        return list(client.export_labels()), client.status()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prompt_files(tmp_path_factory):
    """String and conversational prompts in one JSONL file, and a held-out Parquet file."""
    import datasets

    d = tmp_path_factory.mktemp("prompts")
    topics = ["sea", "sky", "cats", "dogs", "rain", "sun"]
    rows = [{"prompt": f"tell me about the {t}"} for t in topics]
    rows += [{"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": f"write a poem {t}"}]}
             for t in topics]  # fmt: skip
    train = write_jsonl(d / "prompts.jsonl", rows)
    held = d / "heldout.parquet"
    datasets.Dataset.from_list([{"prompt": f"write a short story {t}"} for t in topics[:4]]).to_parquet(held)
    return train, held


def round_args(model_dir, prompts, run_dir, rounds, *extra):
    return ["round", "--model", model_dir, "--prompt-file", prompts, "--run-dir", run_dir, "--rounds", rounds,
            "--budget", 4, "--prompts", 6, "--responses", 3, "--max-new-tokens", 8, "--dpo-epochs", 1, *SMALL,
            *extra]  # fmt: skip


def agreement(run_dir, r: int) -> float:
    """Recomputed here: the share of round ``r``'s A/B labels whose preferred response the policy of round ``r - 1``
    already ranked higher by its implicit reward, log π_θ/π_ref of the chosen minus that of the rejected."""
    import numpy as np

    from activedpo_core.checkpoint import load_model
    from activedpo_core.sequences import sequence_logprobs

    pairs = {p["pair_id"]: p for p in json.loads((run_dir / "rounds" / f"{r:03d}" / "batch.json").read_text())["pairs"]}
    ab = [x for x in jsonl(run_dir / "rounds" / f"{r:03d}" / "labels.jsonl") if x["preference"] in ("A", "B")]
    prompts = [pairs[x["pair_id"]]["prompt"] for x in ab]
    side = {"A": ("response_a", "response_b"), "B": ("response_b", "response_a")}
    chosen = [pairs[x["pair_id"]][side[x["preference"]][0]] for x in ab]
    rejected = [pairs[x["pair_id"]][side[x["preference"]][1]] for x in ab]
    policy = load_model(run_dir / "rounds" / f"{r - 1:03d}" / "checkpoint", dtype="float32", device="cpu")
    model, tok = policy.model, policy.tokenizer
    margin = sequence_logprobs(model, tok, prompts, chosen) - sequence_logprobs(model, tok, prompts, rejected)
    with model.disable_adapter():
        margin -= sequence_logprobs(model, tok, prompts, chosen) - sequence_logprobs(model, tok, prompts, rejected)
    return round(float(np.mean(margin > 0)), 4)


def test_two_rounds_on_gpt2_with_a_reward_model_annotator_and_evaluator(gpt2_dir, reward_dir, prompt_files, tmp_path):
    train, held = prompt_files
    run_dir = tmp_path / "run"
    judge = [f"reward-model:{reward_dir}"]
    args = round_args(gpt2_dir, train, run_dir, 1, "--heldout-file", held, "--eval-prompts", 4,
                      "--annotator", *judge, "--evaluate", *judge)  # fmt: skip
    out = invoke(*args)
    assert "activedpo round 1: 4 labels, reward" in out and "win-rate" in out
    args[args.index("--rounds") + 1] = 2
    out = invoke(*args)
    assert "activedpo round 2: 8 labels, reward" in out and "agreement with the new labels" in out

    metrics = jsonl(run_dir / "metrics.jsonl")
    assert [m["labels"] for m in metrics] == [4, 8] and metrics[0]["checkpoint"] != metrics[1]["checkpoint"]
    assert all(isinstance(m["reward"], float) and m["evaluate"] == f"reward-model:{reward_dir}" for m in metrics)
    assert metrics[0]["agreement"] is None  # round one's policy is π_ref: no implicit reward yet
    assert metrics[1]["agreement"] == agreement(run_dir, 2)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["workload"]["kind"] == "model" and run["workload"]["model"] == str(gpt2_dir.resolve())
    assert run["config"]["target_modules"] == "all-linear" and run["config"]["device"] == "cpu"
    # prompts were rendered with the tokenizer's chat template, the conversational ones with their system turn
    groups = jsonl(run_dir / "rounds" / "001" / "candidates.jsonl")
    assert groups and all(g["prompt"].startswith("<|") and g["prompt"].endswith("<|assistant|>") for g in groups)
    batch = json.loads((run_dir / "rounds" / "002" / "batch.json").read_text())
    assert len(batch["pairs"]) == 4 and all(p["prompt_id"] and p["response_a_id"] for p in batch["pairs"])
    labels = jsonl(run_dir / "rounds" / "001" / "labels.jsonl")
    assert {x["annotator"] for x in labels} == {f"reward-model:{reward_dir.name}"}
    # the adapter DPO trained wraps every linear layer (all-linear), GPT-2's Conv1D included, as the server's does
    cfg = json.loads((run_dir / "rounds" / "002" / "checkpoint" / "adapter" / "adapter_config.json").read_text())
    assert {t.rsplit(".", 1)[-1] for t in cfg["target_modules"]} == {"c_attn", "c_proj", "c_fc"}  # all-linear
    assert cfg["fan_in_fan_out"] is True and cfg["r"] == 4
    ev = json.loads((run_dir / "rounds" / "002" / "eval.json").read_text())
    assert ev["n"] == 4 and ev["ref_reward"] == metrics[0]["ref_reward"]  # π_ref on the same held-out prompts
    status = invoke("status", "--run-dir", run_dir)
    assert "2 rounds of activedpo" in status and "8 labeled" in status
    assert "(LoRA r=4, α=8, targets c_attn,c_fc,c_proj)" in status  # round 2's own adapter, as DPO trained it

    # a run dir remembers its workload and its generation settings
    err = invoke(*[a if a != 8 else 9 for a in args], code=2)
    assert "was started on another workload (generation:" in err


def test_a_toy_world_only_judge_or_a_mixed_workload_is_refused_clearly(gpt2_dir, reward_dir, prompt_files, tmp_path):
    train, _ = prompt_files
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r", 1, "--annotator", "oracle"), code=2)
    assert "--annotator oracle needs the toy world's hidden reward" in err and "reward-model:PATH" in err
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r", 1, "--evaluate", "oracle"), code=2)
    assert "--evaluate oracle needs the toy world's hidden reward" in err
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r", 1, "--task", "toy"), code=2)
    assert "--task and --world name a toy world" in err
    err = invoke("round", "--model", gpt2_dir, "--run-dir", tmp_path / "r", code=2)
    assert "--model needs --prompt-file" in err
    err = invoke(*round_args(gpt2_dir, tmp_path / "missing.jsonl", tmp_path / "r", 1), code=2)
    assert "--prompt-file not found" in err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "tell me"}])
    err = invoke(*round_args(gpt2_dir, bad, tmp_path / "r2", 1), code=2)
    assert "line 1: no 'prompt' field (columns: text); pass --prompt-field" in err
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r3", 1, "--evaluate", f"reward-model:{tmp_path}"), code=2)
    assert "is not a Hugging Face model directory" in err
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r3", 1, "--evaluate", f"reward-model:{reward_dir}"), code=2)
    assert "has 12 prompts; holding out 100 for evaluation leaves none to train on" in err
    assert not (tmp_path / "r3" / "rounds").exists()  # refused before any work
    # every model and file named is checked before any work, each in one line naming it
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r4", 1, "--annotator", f"reward-model:{gpt2_dir}"), code=2)
    assert f"reward model {gpt2_dir} is a GPT2LMHeadModel, not a reward model" in err
    no_tok = tmp_path / "no-tokenizer"  # weights and config, but the tokenizer was never saved beside them
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(gpt2_dir / f, no_tok / f)
    err = invoke(*round_args(no_tok, train, tmp_path / "r4", 1), code=2)
    assert f"base model directory {no_tok} has no tokenizer (tokenizer.json, vocab.json, vocab.txt, …)" in err
    err = invoke(*round_args(gpt2_dir, train, tmp_path / "r4", 1, "--budget", 0), code=2)
    line = " ".join(err.replace("│", " ").split())  # Typer's error box, unwrapped
    assert "Invalid value for '--budget': Input should be greater than or equal to 1" in line
    assert not (tmp_path / "r4").exists()  # nothing was started


def test_a_run_with_no_label_yet_may_change_its_annotator(gpt2_dir, reward_dir, prompt_files, tmp_path):
    """The wrong annotator found after a round's generation and selection: the work is kept, the judge changes."""
    train, _ = prompt_files
    run_dir = tmp_path / "run"
    err = invoke(*round_args(gpt2_dir, train, run_dir, 1, "--target-modules", "nope_proj"), code=2)
    assert "nope_proj" in err  # found when the server loads the model, before any work: the run takes a fix
    invoke(*round_args(gpt2_dir, train, run_dir, 1), code=3)  # file: the batch waits for people
    batch = json.loads((run_dir / "rounds" / "001" / "batch.json").read_text())
    out = invoke(*round_args(gpt2_dir, train, run_dir, 1, "--annotator", f"reward-model:{reward_dir}"))
    assert "activedpo round 1: 4 labels" in out
    r1 = run_dir / "rounds" / "001"
    assert json.loads((r1 / "state.json").read_text())["steps"]["select"]["pairs"] == 4
    assert json.loads((r1 / "batch.json").read_text()) == batch  # the batch selected before is the one labeled
    assert {x["annotator"] for x in jsonl(r1 / "labels.jsonl")} == {f"reward-model:{reward_dir.name}"}
    # once labels are held, the annotator is part of the run: another one given is refused
    err = invoke(*round_args(gpt2_dir, train, run_dir, 2, "--annotator", "file"), code=2)
    assert "was started with other settings (annotator) (labels are already held)" in err
    err = invoke(*round_args(gpt2_dir, train, run_dir, 2, "--annotator", f"reward-model:{reward_dir}", "--evaluate",
                             f"reward-model:{reward_dir}", "--eval-prompts", 2), code=2)  # fmt: skip
    assert "(heldout: 0 → 2); evaluation holds out prompts of --prompt-file when a run starts" in err
    assert "start a new --run-dir with --evaluate (or --heldout-file)" in err
    out = invoke(*round_args(gpt2_dir, train, run_dir, 2, "--budget", 2))  # the annotator not given: the run's own
    assert "activedpo round 2: 6 labels" in out  # the label budget may change between rounds
    r2 = jsonl(run_dir / "rounds" / "002" / "labels.jsonl")
    assert {x["annotator"] for x in r2} == {f"reward-model:{reward_dir.name}"}


def test_file_annotator_hand_off_and_resume_on_gpt_neox(neox_dir, prompt_files, tmp_path):
    train, _ = prompt_files
    run_dir = tmp_path / "run"
    args = round_args(neox_dir, train, run_dir, 1)  # annotator file and evaluation none: the defaults with --model
    out = invoke(*args, code=3)
    assert "waiting for labels" in out and "labels import" in out
    r = run_dir / "rounds" / "001"
    rows = jsonl(r / "to_label.jsonl")
    assert len(rows) == 4 and [x["rank"] for x in rows] == [0, 1, 2, 3]
    assert set(rows[0]) >= {"pair_id", "prompt", "response_a", "response_b", "score", "rank"}
    assert len(json.loads((r / "label_studio.json").read_text())) == 4
    invoke(*args, code=3)  # asking again hands out the same batch, selecting nothing new
    assert jsonl(r / "to_label.jsonl") == rows

    labels = write_jsonl(tmp_path / "done.jsonl",
                         [{"pair_id": x["pair_id"], "preference": "AB"[i % 2], "annotator": "ann"}
                          for i, x in enumerate(rows)])  # fmt: skip
    assert "4 labels held" in invoke("labels", "import", labels, "--run-dir", run_dir)
    out = invoke(*args)
    assert "activedpo round 1: 4 labels; evaluation: none" in out
    m = jsonl(run_dir / "metrics.jsonl")[0]
    assert m["reward"] is None and m["labels"] == 4 and m["evaluate"] == "none"
    # no evaluator, no held-out prompts: the drift from π_ref is measured on the round's own prompts
    drifted = json.loads((r / "eval.json").read_text())
    assert (drifted["drift_on"], drifted["drift_prompts"]) == ("round", len(jsonl(r / "candidates.jsonl")))
    assert m["kl_seq"] == drifted["kl_seq"] and "KL(π_θ‖π_ref)" in out
    args = json.loads((run_dir / "server" / "args.json").read_text())
    project = json.loads((run_dir / "run.json").read_text())["project"]
    exported, status = server_state(run_dir / "server", args, project)
    assert sorted(x.pair_id for x in exported) == sorted(x["pair_id"] for x in rows)  # each label once
    assert status.checkpoint_id == m["checkpoint"]
    assert (run_dir / "reward.png").stat().st_size > 1000  # labels and agreement, no reward
    # resuming needs no option again: the run's own model, prompts and generation length (8, not the default 256)
    assert "has 1 of 1 rounds" in " ".join(invoke("round", "--run-dir", run_dir).split())
    again = invoke("round", "--model", neox_dir, "--prompt-file", train, "--run-dir", run_dir)
    assert "has 1 of 1 rounds" in " ".join(again.split()) and "another workload" not in again


def test_select_from_a_pool_file_conditioned_on_past_labels(gpt2_dir, tmp_path):
    sys_turn = {"role": "system", "content": "be kind"}
    pool = [
        {"prompt": "tell me about the sea", "responses": [" good nice", " bad", " very big red"]},
        {"prompt": "tell me about the sky", "chosen": " blue and warm", "rejected": " cold"},
        {"prompt": "tell me about the rain", "response_a": " sad", "response_b": " happy song"},
        {"prompt": [sys_turn, {"role": "user", "content": "write a poem"}],
         "responses": [[{"role": "assistant", "content": "a song"}], [{"role": "assistant", "content": "no"}]]},
        {"prompt": "tell me about the cats", "responses": [" kind", " kind"]},  # one distinct response: skipped
        {"prompt": "tell me about the dogs", "responses": [" big", " small", " yes", " no"]},
    ]  # fmt: skip
    candidates = write_jsonl(tmp_path / "pool.jsonl", pool)
    labeled = write_jsonl(tmp_path / "labels.jsonl", [
        {"prompt": "tell me about the sea", "chosen": " good nice", "rejected": " bad", "annotator": "ann"},
        {"prompt": "tell me about the sun", "chosen": " warm", "rejected": " cold"},
    ])  # fmt: skip
    out_file = tmp_path / "batch.jsonl"
    args = ["select", "--model", gpt2_dir, "--candidates", candidates, "--budget", 5, "--out", out_file,
            "--labeled", labeled, *SMALL]  # fmt: skip
    out = invoke(*args)
    assert "5 of 12 pairs selected by activedpo" in out and "1 rows skipped" in out
    rows = jsonl(out_file)
    assert [r["rank"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(set(r) >= {"pair_id", "prompt", "response_a", "response_b", "score", "rank"} for r in rows)
    scores = [r["score"] for r in rows if not r["audit"]]  # one audit pair of five, drawn at random, at score 0
    assert sum(r["audit"] for r in rows) == 1 and all(r["score"] == 0.0 for r in rows if r["audit"])
    assert scores == sorted(scores, reverse=True)  # greedy: each pick had the largest remaining uncertainty
    sea_pair = {"<|user|> tell me about the sea <|assistant|>", " good nice", " bad"}
    assert not any({r["prompt"], r["response_a"], r["response_b"]} == sea_pair for r in rows)  # labeled: not offered
    assert all(r["prompt"].endswith("<|assistant|>") for r in rows)  # rendered with the chat template
    assert (tmp_path / "batch.label_studio.json").exists() and (tmp_path / "batch.label_config.xml").exists()

    again = invoke(*args)  # a re-run returns the same leased batch and records no label twice
    assert "5 of 12 pairs selected" in again and jsonl(out_file) == rows
    _, status = server_state(tmp_path / "batch.server", [str(a) for a in SMALL])
    assert status.annotations == 2 and status.labeled == 2 and status.leased == 5

    # the batch answered and sent back with the next selection: its audit answer is scored
    answered = write_jsonl(tmp_path / "answered.jsonl", [{"pair_id": r["pair_id"], "preference": "A",
                                                           "annotator": "ann"} for r in rows])  # fmt: skip
    nxt = invoke("select", "--model", gpt2_dir, "--candidates", candidates, "--budget", 2, "--out",
                 tmp_path / "next.jsonl", "--labeled", answered, "--state-dir", tmp_path / "batch.server", *SMALL)
    assert ("audit accuracy 0.50 ± 0.00 on 1 audit answers, 0.50 on the strategy's 4 picks (the policies that "
            "selected them, before training on them)") in " ".join(nxt.split())  # π_ref's: no preference

    random_out = tmp_path / "random.jsonl"
    invoke("select", "--model", gpt2_dir, "--candidates", candidates, "--budget", 3, "--out", random_out,
           "--strategy", "random", "--state-dir", tmp_path / "other", *SMALL)  # fmt: skip
    assert len(jsonl(random_out)) == 3

    err = invoke("select", "--model", gpt2_dir, "--candidates", write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a"}]),
                 "--budget", 1, "--out", tmp_path / "o.jsonl", *SMALL, code=2)  # fmt: skip
    assert "line 1: expected 'responses' (a list), 'chosen' and 'rejected', or 'response_a' and 'response_b'" in err
    err = invoke("select", "--model", gpt2_dir, "--candidates", tmp_path / "pool.txt", "--budget", 1,
                 "--out", tmp_path / "o.jsonl", *SMALL, code=2)  # fmt: skip
    assert "--candidates not found" in err
    wrong = tmp_path / "wrong.csv"  # a CSV with other columns: refused before a server starts, nothing left behind
    wrong.write_text("question,answer_1,answer_2\ntell me,good,bad\n")
    err = invoke("select", "--model", gpt2_dir, "--candidates", wrong, "--budget", 1, "--out", tmp_path / "w.jsonl",
                 *SMALL, code=2)  # fmt: skip
    assert "wrong.csv row 1: no 'prompt' field (columns: question, answer_1, answer_2)" in err
    assert not (tmp_path / "w.server").exists()
    bad_labels = write_jsonl(tmp_path / "bad-labels.jsonl", [{"pair_id": "p-1", "preference": "A"}, {"chosen": "x"}])
    err = invoke("select", "--model", gpt2_dir, "--candidates", candidates, "--budget", 1, "--out",
                 tmp_path / "w.jsonl", "--labeled", bad_labels, *SMALL, code=2)  # fmt: skip
    assert "bad-labels.jsonl line 2: a label needs 'pair_id' and 'preference'" in err
    assert not (tmp_path / "w.server").exists()


def test_select_against_a_running_server_that_holds_no_checkpoint(gpt2_dir, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"prompt": f"tell me about the {w}", "responses": [" good", " bad", " very nice"]} for w in ("sea", "sky")
    ])  # fmt: skip
    # a server of its own defaults (r=8), no checkpoint root: the client's LoRA and the base model travel to it
    own = ["--proj-dim", "64", "--lora-r", "8", "--lora-alpha", "16"]
    with EmbeddedServer(tmp_path / "remote", args=own) as server:
        out = invoke("select", "--model", gpt2_dir, "--candidates", pool, "--budget", 2, "--out", tmp_path / "b.jsonl",
                     "--server", server.target, "--lora-r", 4, "--lora-alpha", 8)  # fmt: skip
        assert "2 of 6 pairs selected by activedpo under base:" in out
        with SelectorClient(Connection(server.target)) as client:
            status = client.status()
    assert status.checkpoint_id == f"base:{gpt2_dir.resolve()}" and status.leased == 2 and status.pool_size == 6
    assert status.fresh_adapter and status.adapter_line() == "fresh LoRA r=4, α=8, targets all-linear"
    assert not (tmp_path / "b.server").exists()  # no embedded server was started


def test_pool_report_against_a_remote_server_leases_nothing(gpt2_dir, tmp_path):
    from activedpo_client.remote import ClientError

    pool = write_jsonl(tmp_path / "pool.jsonl", [
        {"prompt": f"tell me about the {w}", "responses": [" good nice", " Good, nice!", " very big red"]}
        for w in ("sea", "sky", "rain")
    ] + [{"prompt": "tell me about the sun",
          "responses": [" good nice", " Good, nice!", " very big red", " good nice"]}])  # the first one twice
    own = ["--proj-dim", "64", "--lora-r", "8", "--lora-alpha", "16"]
    with EmbeddedServer(tmp_path / "remote", args=own) as server:
        out = invoke("pool", "report", "--model", gpt2_dir, "--candidates", pool, "--server", server.target,
                     "--plot", tmp_path / "pool.png", "--lora-r", 4, "--lora-alpha", 8)  # fmt: skip
        said = " ".join(out.split())
        assert "12 pairs over 4 prompts, 12 distinct responses" in said
        assert "1 responses repeated verbatim under their prompt, 4 more that repeat another but for case" in said
        assert "differ only trivially" in said and ": 4 (33.3%)" in said  # " good nice" vs " Good, nice!"
        assert "implicit-reward margin |β·Δ log π/π_ref| (β = 0.1)" in said and "100.0% of pairs below 0.1" in said
        assert "(90%/10% ratio " in said and "what it predicts: the ActiveDPO scores are " in said
        assert "the policy is π_ref (no DPO round yet), so the margins say nothing yet" in said
        assert (tmp_path / "pool.png").read_bytes()[:4] == b"\x89PNG"
        with SelectorClient(Connection(server.target)) as client:
            status = client.status()
            with pytest.raises(ClientError, match=r"max_pairs must be between 0 .* and 20,000, got 20,001"):
                client.describe_pool(max_pairs=20_001)
    assert (status.pool_size, status.leased, status.labeled) == (12, 0, 0)  # described, not leased
