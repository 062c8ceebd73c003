"""Label efficiency: held-out reward against labels used, per strategy, over seeds.

    .venv/bin/python benchmarks/label_efficiency.py [--strategies activedpo random aplp apo] [--seeds 0 1 2 3 4]
        [--rounds 3] [--budget 50] [--prompts 1000] [--proj-dim 8192] [--work-dir runs/label-efficiency]

Every (strategy, seed) is one run of the real loop (`activedpo_client.rounds.run_rounds`: an
embedded selection server, oracle labels, DPO, held-out evaluation) in its own run directory
under ``--work-dir``, all from the same SFT model; the seed fixes prompt sampling, generation
and oracle draws, so strategies see the same prompts in round one. Runs resume where they
stopped (kill the benchmark and start it again), and separate processes may share the work
dir as long as they run different (strategy, seed) pairs.

Writes to ``--out`` (a directory): ``report.md`` (mean held-out reward ± 95% CI per round and
strategy, the area under the reward-against-labels curve, and the labels each strategy needs
to reach random's final mean reward), ``reward.png`` and ``runs.jsonl`` (every run's metrics).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from _report import header, write

# two-sided 95% Student-t quantiles by degrees of freedom (n − 1); normal beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (t distribution)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), _T95.get(len(v) - 1, 1.96) * float(v.std(ddof=1)) / math.sqrt(len(v))


def curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """(labels, reward) points of one run, starting from π_ref at 0 labels."""
    return [0] + [r["labels"] for r in rows], [rows[0]["ref_reward"]] + [r["reward"] for r in rows]


def auc(x: list[int], y: list[float]) -> float:
    """Area under the reward-against-labels curve, per label (the mean reward over the budget)."""
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float("nan")


def labels_to_reach(x: list[int], y: list[float], target: float) -> float | None:
    """Labels at which the (mean) curve first reaches ``target``, interpolating linearly; None if never."""
    for i in range(1, len(x)):
        if y[i] >= target:
            if y[i - 1] >= target:
                return float(x[i - 1])
            return x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1])
    return None


def summarize(results: dict[str, dict[int, list[dict]]], rounds: int) -> list[str]:
    strategies = list(results)
    lines = ["| round | labels | " + " | ".join(strategies) + " |", "|---|---|" + "---|" * len(strategies)]
    means: dict[str, list[float]] = {}
    xs: list[int] = []
    for r in range(rounds + 1):
        cells = []
        for s in strategies:
            runs = [rows for rows in results[s].values() if len(rows) >= max(r, 1)]
            vals = [curve(rows)[1][r] for rows in runs]
            m, ci = mean_ci(vals) if vals else (float("nan"), float("nan"))
            means.setdefault(s, []).append(m)
            cells.append(f"{m:.3f} ± {ci:.3f} (n={len(vals)})" if vals else "—")
            if s == strategies[0] and runs:
                xs.append(curve(runs[0])[0][r])
        lines.append(f"| {r} | {xs[-1] if len(xs) > r else '—'} | " + " | ".join(cells) + " |")
    lines += ["", "| strategy | AUC (mean reward over the budget) ± 95% CI | labels to reach random's final mean |",
              "|---|---|---|"]  # fmt: skip
    target = means["random"][-1] if "random" in means else None
    for s in strategies:
        aucs = [auc(*curve(rows)) for rows in results[s].values() if len(rows) >= rounds]
        m, ci = mean_ci(aucs) if aucs else (float("nan"), float("nan"))
        reach = labels_to_reach(xs, means[s], target) if target is not None and len(xs) == rounds + 1 else None
        reach_text = "—" if target is None else (f"{reach:.0f}" if reach is not None else "not reached")
        lines.append(f"| {s} | {m:.3f} ± {ci:.3f} (n={len(aucs)}) | {reach_text} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", nargs="+", default=["activedpo", "random", "aplp", "apo"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--responses", type=int, default=3)
    ap.add_argument("--proj-dim", type=int, default=8192)
    ap.add_argument("--lora-r", type=int, default=128)
    ap.add_argument("--dpo-epochs", type=float, default=4.0)
    ap.add_argument("--eval-prompts", type=int, default=100)
    ap.add_argument("--preset", default="default", choices=["default", "tiny"])
    ap.add_argument("--work-dir", type=Path, default=Path("runs/label-efficiency"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/label_efficiency"))
    args = ap.parse_args()

    from activedpo_client.report import plot_rewards
    from activedpo_client.rounds import RoundConfig, ServerSpec, run_rounds
    from activedpo_trainer.progress import quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    world = build_toyworld(ToyWorldConfig.preset(args.preset))
    spec = ServerSpec(proj_dim=args.proj_dim, lora_r=args.lora_r)
    results: dict[str, dict[int, list[dict]]] = {}
    for seed in args.seeds:  # seeds outermost: an interrupted benchmark has complete seeds for every strategy
        for strategy in args.strategies:
            config = RoundConfig(budget=args.budget, prompts=args.prompts, responses=args.responses, strategy=strategy,
                                 seed=seed, eval_prompts=args.eval_prompts, dpo_epochs=args.dpo_epochs)  # fmt: skip
            run_dir = args.work_dir / f"{strategy}-seed{seed}"
            rows = run_rounds(run_dir, world, config, args.rounds, spec, say=lambda _line: None)
            results.setdefault(strategy, {})[seed] = rows[: args.rounds]
            print(f"{strategy} seed {seed}: " + ", ".join(f"{r['reward']:.3f}" for r in rows), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "runs.jsonl", "w") as f:
        for s, by_seed in results.items():
            for seed, rows in by_seed.items():
                for r in rows:
                    f.write(json.dumps({"strategy": s, "seed": seed} | r) + "\n")
    mean_rows = {}
    for s, by_seed in results.items():
        runs = list(by_seed.values())
        mean_rows[s] = [
            {"labels": runs[0][i]["labels"], "reward": float(np.mean([r[i]["reward"] for r in runs])),
             "se": float(np.std([r[i]["reward"] for r in runs], ddof=1) / math.sqrt(len(runs))) if len(runs) > 1
             else 0.0, "ref_reward": runs[0][0]["ref_reward"]}
            for i in range(min(len(r) for r in runs))
        ]  # fmt: skip
    plot_rewards(mean_rows, args.out / "reward.png", title="held-out reward, mean ± SE over seeds")
    lines = [
        *header("Label efficiency: held-out reward against labels, per strategy"),
        f"World preset {args.preset}; {args.rounds} rounds × budget {args.budget}; {args.prompts} prompts × "
        f"{args.responses} responses per round; d = {args.proj_dim}, fresh-adapter rank {args.lora_r}; DPO "
        f"{args.dpo_epochs} epochs (continue); {args.eval_prompts} held-out prompts; seeds {args.seeds}.",
        "",
        "Mean held-out oracle reward ± 95% CI (t) over seeds; round 0 is π_ref.",
        "",
        *summarize(results, args.rounds),
        "",
        "Raw per-run metrics: `runs.jsonl`; plot: `reward.png`.",
    ]
    print("\n".join(lines))
    write(args.out / "report.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
