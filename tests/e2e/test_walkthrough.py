"""A newcomer's first hour, end to end, on assets unlike the other tests' own.

The policy is a Qwen2 model (grouped-query attention, tied embeddings) or a Bloom model (ALiBi, fused
``query_key_value``) with a byte-level BPE tokenizer that has a ChatML chat template, an EOS and no pad
token. The annotator is a BERT reward model with its own WordPiece tokenizer and a context shorter than
the responses; the evaluator a Llama reward model with its own Llama-3 chat template and no pad token.
Prompts are TRL conversations with system turns under a ``conversation`` field. The selection server is
started on its own, with no checkpoint root and a state dir the client never names: everything it needs
travels over gRPC.
"""

from __future__ import annotations

import json
import time

import pytest
from test_own_model import SMALL, invoke, jsonl, write_jsonl

from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
from activedpo_trainer.localmodels import build_bert_reward_model, build_chat_reward_model, build_local_model

SYSTEM = {"role": "system", "content": "You are terse."}


# every linear layer of a Qwen2 block (all-linear, the default LoRA targets), as PEFT names them
QWEN2_LINEAR = "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("walkthrough")
    return {
        "qwen2": build_local_model(d / "qwen2", "qwen2", max_length=512),
        "bloom": build_local_model(d / "bloom", "bloom", max_length=512),
        "bert": build_bert_reward_model(d / "bert", max_length=32),  # shorter than the responses
        "chat_rm": build_chat_reward_model(d / "chat_rm"),
        "dir": d,
    }


def test_two_remote_rounds_on_qwen2_judged_by_reward_models_of_other_families(assets, tmp_path):
    import datasets

    topics = ["sea", "sky", "cats", "dogs", "rain", "sun", "song", "poem"]
    rows = [{"conversation": [SYSTEM, {"role": "user", "content": f"tell me about the {t}"}]} for t in topics]
    rows += [{"conversation": f"write a short poem about the {t}"} for t in topics[:4]]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", rows)
    held = tmp_path / "heldout.parquet"  # one of its prompts is also a training prompt
    datasets.Dataset.from_list([{"conversation": [SYSTEM, {"role": "user", "content": f"tell me a story {t}"}]}
                                for t in ("sea", "sky")] + [rows[0]]).to_parquet(held)  # fmt: skip
    run_dir = tmp_path / "run"
    t0 = time.perf_counter()
    with EmbeddedServer(tmp_path / "elsewhere", token="s3cret", args=["--proj-dim", "64"]) as server:  # r=128
        args = ["round", "--model", assets["qwen2"], "--prompt-file", prompts, "--prompt-field", "conversation",
                "--heldout-file", held, "--eval-pair-samples", 2, "--run-dir", run_dir,
                "--rounds", 1, "--budget", 4, "--prompts", 8, "--responses", 3, "--max-new-tokens", 64,
                "--dpo-epochs", 1, "--annotator", f"reward-model:{assets['bert']}",
                "--evaluate", f"reward-model:{assets['chat_rm']}", "--server", server.target, "--token", "s3cret",
                *SMALL]  # fmt: skip
        # a base the server does not have, named with --server-base: refused before any generation
        err = invoke(*args, "--server-base", tmp_path / "not-on-the-server", code=2)
        assert "path loads are off on this server" in err
        assert not (run_dir / "rounds" / "001" / "candidates.jsonl").exists()
        out = invoke(*args)
        assert "1 of the 3 held-out prompts" in out and "never trained on" in out
        assert "activedpo round 1: 4 labels, reward" in out
        args[args.index("--rounds") + 1] = 2
        out = invoke(*args)
        assert "activedpo round 2: 8 labels, reward" in out
        out = invoke(*args)  # a finished run says how to go on
        assert "has 2 of 2 rounds; pass --rounds 3 to go on" in out
        out = invoke("status", "--run-dir", run_dir, "--token", "s3cret")  # the run remembers its server
        assert "2 rounds of activedpo" in out and f"(LoRA r=4, α=8, targets {QWEN2_LINEAR}), " in out
        with SelectorClient(Connection(server.target, token="s3cret"), project=_project(run_dir)) as client:
            status = client.status()
    wall = time.perf_counter() - t0
    metrics = jsonl(run_dir / "metrics.jsonl")
    assert [m["labels"] for m in metrics] == [4, 8] and all(isinstance(m["reward"], float) for m in metrics)
    # the server featurized round one with the adapter DPO trains (r=4 on every linear layer), not its own r=128
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "elsewhere" / "features").glob("*.json")]
    assert any("+lora(r=4,alpha=8,targets=all-linear,seed=0)|grad" in k for k in keys)
    assert not any("lora(r=128" in k for k in keys)
    assert status.checkpoint_id == metrics[1]["checkpoint"] and status.lora.r == 4 and not status.fresh_adapter
    assert status.lora.targets == QWEN2_LINEAR and status.labeled == 8
    # the BERT annotator saw responses longer than its 32 positions: truncated, counted, no crash
    annotate = json.loads((run_dir / "rounds" / "001" / "state.json").read_text())["steps"]["annotate"]
    assert annotate["labels"] == 4 and annotate["truncated"] > 0
    # nothing of the client's disk was read by the server: the base model itself was uploaded to it
    assert any((tmp_path / "elsewhere" / "bases").iterdir())
    assert not list((tmp_path / "elsewhere").rglob("heldout.parquet"))
    print(f"walkthrough: two remote rounds in {wall:.1f} s")


def _project(run_dir):
    return json.loads((run_dir / "run.json").read_text())["project"]


def test_select_label_select_again_on_bloom_with_every_label_form(assets, tmp_path):
    user = {"role": "user", "content": "tell me about the sea"}
    pool = [
        {"prompt": [SYSTEM, user], "responses": ["It is big.", "Blue and **wide**.", "Salt.", "Waves, waves."]},
        {"prompt": "tell me about the sky", "chosen": "Blue.", "rejected": "Up."},
        {"prompt": [SYSTEM, {"role": "user", "content": "a poem"}],
         "chosen": [{"role": "assistant", "content": "Rain falls."}],
         "rejected": [{"role": "assistant", "content": "No."}]},
        {"prompt": "tell me about the cats", "responses": ["Soft.", "Soft."]},  # one distinct response
        {"prompt": "tell me about the dogs", "response_a": "Loyal.", "response_b": "Loud and `happy`."},
    ]  # fmt: skip
    candidates = write_jsonl(tmp_path / "pool.jsonl", pool)
    first = tmp_path / "batch.jsonl"
    common = ["select", "--model", assets["bloom"], "--candidates", candidates, *SMALL]
    out = invoke(*common, "--budget", 3, "--out", first)
    assert "3 of 9 pairs selected" in out and "1 rows skipped (fewer than two distinct responses: line 4)" in out
    batch = jsonl(first)
    assert all(r["prompt"].startswith("<|im_start|>system\n") and r["prompt"].endswith("<|im_start|>assistant\n")
               for r in batch)  # fmt: skip
    picked = {frozenset((r["response_a"], r["response_b"])) for r in batch}
    # a person labels: two rows by pair id (the batch's own form), one as TRL with the prompt as select wrote it
    # (rendered) and B preferred, one as TRL with the pool's raw messages for a pair not in the batch (written
    # in the other order than the pool has it), and one pair that is in no pool at all
    unpicked = next(p for p in [("Salt.", "It is big."), ("Waves, waves.", "Salt."), ("Blue and **wide**.", "Salt.")]
                    if frozenset(p) not in picked)  # fmt: skip
    labels = write_jsonl(tmp_path / "labels.jsonl", [
        {"pair_id": batch[0]["pair_id"], "preference": "A", "annotator": "ann"},
        {"pair_id": batch[1]["pair_id"], "preference": "B", "annotator": "ann"},
        {"prompt": batch[2]["prompt"], "chosen": batch[2]["response_b"], "rejected": batch[2]["response_a"],
         "annotator": "ann"},
        {"prompt": [SYSTEM, user], "chosen": [{"role": "assistant", "content": unpicked[0]}],
         "rejected": [{"role": "assistant", "content": unpicked[1]}], "annotator": "bob"},
        {"prompt": [SYSTEM, user], "chosen": "Deep.", "rejected": "Wet."},
    ])  # fmt: skip
    second = tmp_path / "next.jsonl"  # the README's loop: the same command, the labels, another --out
    again = [*common, "--budget", 3, "--out", second, "--labeled", labels, "--state-dir", tmp_path / "batch.server"]
    out = invoke(*again)
    assert "5 labels from" in out and "4 on pairs the server holds, 1 added as labeled pairs" in out
    offered = {frozenset((r["response_a"], r["response_b"])) for r in jsonl(second)}
    assert len(offered) == 3 and frozenset(unpicked) not in offered and not offered & picked  # a new batch
    with EmbeddedServer(tmp_path / "batch.server", args=[str(a) for a in SMALL]) as s, SelectorClient(
        Connection(s.target)
    ) as client:
        exported = {(r.chosen, r.rejected) for r in client.export_labels()}
    assert exported == {
        (batch[0]["response_a"], batch[0]["response_b"]), (batch[1]["response_b"], batch[1]["response_a"]),
        (batch[2]["response_b"], batch[2]["response_a"]), unpicked, ("Deep.", "Wet.")}  # fmt: skip
    # the same command again is a retry: the same batch, and nothing recorded twice
    rows = jsonl(second)
    assert "5 already recorded" in invoke(*again) and jsonl(second) == rows
    rest = invoke(*common, "--budget", 100, "--out", tmp_path / "rest.jsonl", "--state-dir", tmp_path / "batch.server")
    assert "2 of 9 pairs selected" in rest  # the pool less 3 + 3 leased and 1 labeled outside the batches
    # a pair id the server never held is named by its line, and nothing is selected
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"pair_id": batch[0]["pair_id"], "preference": "A"},
                                                  {"pair_id": "p-0000", "preference": "B"}])  # fmt: skip
    out = invoke(*common, "--budget", 1, "--out", tmp_path / "x.jsonl", "--labeled", wrong, "--state-dir",
                 tmp_path / "batch.server", code=2)  # fmt: skip
    assert "1 of 2 labels in" in out and "line 2: unknown pair id" in out and "another --state-dir" in out
    assert not (tmp_path / "x.jsonl").exists()
