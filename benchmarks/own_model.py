"""Your own model, outside the toy world: wall time per step of `round`, and `select` on a large pool.

    .venv/bin/python benchmarks/own_model.py round  [--hidden 384 --layers 6]   # → results/own_model_round.md
    .venv/bin/python benchmarks/own_model.py select [--pairs 10000 100000]      # → results/own_model_select.md

Both build their models locally (activedpo_trainer.localmodels: a fresh GPT-2 config, a word-level
tokenizer with a chat template and no pad token, untrained weights) and drive the real CLI as a
user would, in a subprocess, with an embedded selection server.

* round: a GPT-2 of ≥ 10 M parameters, a JSONL prompt file of string and conversational prompts,
  a GPT-2 reward model as annotator and evaluator; two rounds; the wall time of every step of
  each round from the run's state files.
* select: a pool file of prompts × 3 responses ({"prompt", "responses"} rows); wall time and
  pairs/s of `activedpo-client select --budget 500`, and the peak resident memory (VmHWM) of the
  client process and of its embedded server, for each pool size (the client streams the pool, so
  its peak should not grow with the pool).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _report import header, write

CLIENT = [sys.executable, "-m", "activedpo_client.cli"]


def vm_hwm(pid: int) -> int:
    """Peak resident set of a live process, bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_watched(cmd: list[str], log: Path) -> tuple[float, int, int]:
    """Run ``cmd``; (wall seconds, peak bytes of the process, peak bytes of its largest child)."""
    import psutil

    peaks = {"self": 0, "child": 0}
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)

    def watch() -> None:
        me = psutil.Process(proc.pid)
        while proc.poll() is None:
            peaks["self"] = max(peaks["self"], vm_hwm(proc.pid))
            try:
                for c in me.children(recursive=True):
                    peaks["child"] = max(peaks["child"], vm_hwm(c.pid))
            except psutil.Error:
                pass
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    code = proc.wait()
    t.join()
    if code != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({code}); see {log}:\n{log.read_text()[-2000:]}")
    return time.perf_counter() - t0, peaks["self"], peaks["child"]


def prompts_rows(n: int, rng: random.Random, words: list[str]) -> list[dict]:
    rows = []
    for i in range(n):
        text = "tell me about the " + " ".join(rng.sample(words, 2))
        if i % 3 == 2:  # a third are conversational, with a system turn
            rows.append({"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": text}]})
        else:
            rows.append({"prompt": text})
    return rows


def bench_round(args, tmp: Path) -> list[str]:
    from activedpo_trainer.localmodels import WORDS, build_local_model, build_local_reward_model

    model = build_local_model(tmp / "model", "gpt2", hidden=args.hidden, layers=args.layers, heads=args.heads,
                              max_length=256)  # fmt: skip
    from transformers import AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    rm = build_local_reward_model(tmp / "rm", model, hidden=64)
    rng = random.Random(0)
    prompt_file = tmp / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps(r) + "\n" for r in prompts_rows(args.prompt_rows, rng, WORDS)))
    run_dir = tmp / "run"
    cmd = [*CLIENT, "round", "--model", str(model), "--prompt-file", str(prompt_file), "--run-dir", str(run_dir),
           "--rounds", "2", "--budget", str(args.budget), "--prompts", str(args.prompts), "--responses", "3",
           "--max-new-tokens", str(args.max_new_tokens), "--annotator", f"reward-model:{rm}",
           "--evaluate", f"reward-model:{rm}", "--eval-prompts", str(args.eval_prompts), "--proj-dim",
           str(args.proj_dim), "--lora-r", str(args.lora_r), "--lora-alpha", str(4 * args.lora_r),
           "--dpo-epochs", str(args.dpo_epochs), "--device", "cpu"]  # fmt: skip
    wall, peak, server_peak = run_watched(cmd, tmp / "round.log")
    steps = [json.loads((run_dir / "rounds" / f"{r:03d}" / "state.json").read_text())["steps"] for r in (1, 2)]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    names = list(steps[0])
    lines = [
        *header("Your own model: two rounds of `round --model` on a locally built GPT-2"),
        f"- Model: GPT-2 (Conv1D), {args.layers} layers, hidden {args.hidden}, {params / 1e6:.1f} M parameters, "
        f"untrained; word-level tokenizer with a chat template and no pad token",
        f"- Prompt file: {args.prompt_rows} JSONL rows (a third conversational with a system turn), "
        f"{args.eval_prompts} held out for evaluation",
        f"- Per round: {args.prompts} prompts × 3 responses of ≤ {args.max_new_tokens} tokens, budget "
        f"{args.budget}, d = {args.proj_dim}, LoRA r = {args.lora_r} on PEFT's GPT-2 default (c_attn), "
        f"DPO {args.dpo_epochs} epochs; annotator and evaluator a GPT-2 reward model",
        f"- Command: `activedpo-client round --model … --rounds 2` in a subprocess; {wall:.0f} s wall in all "
        f"(model loads and the embedded server's start included); peak memory client "
        f"{peak / 2**30:.2f} GiB, server {server_peak / 2**30:.2f} GiB",
        "",
        "| step | " + " | ".join(f"round {r} s" for r in (1, 2)) + " |",
        "|---|---|---|",
    ]
    lines += [f"| {s} | " + " | ".join(f"{st[s]['seconds']:.1f}" for st in steps) + " |" for s in names]
    lines += ["| total | " + " | ".join(f"{sum(st[s]['seconds'] for s in names):.1f}" for st in steps) + " |", ""]
    for m in metrics:
        agree = "—" if m["agreement"] is None else f"{m['agreement']:.0%}"
        lines.append(f"- round {m['round']}: {m['labels']} labels, reward-model reward {m['reward']:.3f} ± "
                     f"{m['se']:.3f} (π_ref {m['ref_reward']:.3f}), win-rate {m['win_rate']:.1%}, agreement "
                     f"with the round's new labels {agree}")  # fmt: skip
    return lines


def bench_select(args, tmp: Path) -> list[str]:
    from activedpo_trainer.localmodels import WORDS, build_local_model

    model = build_local_model(tmp / "model", "gpt2", hidden=args.select_hidden, layers=2, heads=2)
    from transformers import AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())
    rows = []
    for pairs in args.pairs:
        rng = random.Random(pairs)
        pool = tmp / f"pool-{pairs}.jsonl"
        with open(pool, "w") as f:
            for i in range(-(-pairs // 3)):
                responses = [" " + " ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(3)]
                f.write(json.dumps({"prompt": f"tell me about the {WORDS[i % len(WORDS)]} {i}",
                                    "responses": responses}) + "\n")  # fmt: skip
        out = tmp / f"batch-{pairs}.jsonl"
        cmd = [*CLIENT, "select", "--model", str(model), "--candidates", str(pool), "--budget", str(args.budget),
               "--out", str(out), "--proj-dim", str(args.proj_dim), "--lora-r", "8", "--lora-alpha", "32",
               "--device", "cpu"]  # fmt: skip
        wall, peak, server_peak = run_watched(cmd, tmp / f"select-{pairs}.log")
        said = " ".join((tmp / f"select-{pairs}.log").read_text().split())
        n = len(out.read_text().splitlines())
        sent = re.search(r"pool sent in ([0-9.]+) s", said)
        rows.append((pairs, pool.stat().st_size, wall, float(sent.group(1)) if sent else float("nan"), peak,
                     server_peak, n))  # fmt: skip
        print(f"{pairs} pairs: {wall:.1f} s, client {peak / 2**20:.0f} MiB, server {server_peak / 2**20:.0f} MiB; "
              f"{said[said.find(' pairs selected') - 20 :][:200]}", flush=True)  # fmt: skip
    lines = [
        *header("Your own model: `select` from a pool file"),
        f"- Model: GPT-2 (Conv1D), 2 layers, hidden {args.select_hidden}, {params / 1e3:.0f} k parameters, "
        f"untrained; LoRA r = 8 on c_attn (round one's fresh adapter); d = {args.proj_dim}",
        f'- Pool: prompts × 3 responses of 4–12 words, `{{"prompt", "responses"}}` JSONL rows; '
        f"`activedpo-client select --budget {args.budget}` with an embedded server, in a subprocess",
        "- Peak = VmHWM of the client process and of its embedded server (polled every 0.2 s)",
        "",
        "- wall s: the whole command (model and server start included); pool sent: reading the file, rendering,",
        "  and AddCandidates in chunks of 5,000 (from the command's start); the rest is featurization and selection",
        "",
        "| pairs | file | wall s | pool sent by s | pairs/s | client peak | server peak | selected |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pairs, size, wall, sent, peak, speak, n in rows:
        lines.append(f"| {pairs:,} | {size / 2**20:.1f} MiB | {wall:.1f} | {sent:.1f} | {pairs / wall:,.0f} | "
                     f"{peak / 2**20:.0f} MiB | {speak / 2**20:.0f} MiB | {n} |")  # fmt: skip
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["round", "select"])
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--prompt-rows", type=int, default=300)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--eval-prompts", type=int, default=50)
    ap.add_argument("--proj-dim", type=int, default=2048)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--dpo-epochs", type=float, default=2.0)
    ap.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--select-hidden", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.budget = args.budget or (25 if args.what == "round" else 500)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from activedpo_core.progress import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        lines = bench_round(args, Path(tmp)) if args.what == "round" else bench_select(args, Path(tmp))
    print("\n".join(lines))
    write(args.out or Path(f"benchmarks/results/own_model_{args.what}.md"), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
