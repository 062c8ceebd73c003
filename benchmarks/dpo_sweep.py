"""DPO settings per task, chosen on random labels only: does one DPO round on 200 labels lift the policy?

    .venv/bin/python benchmarks/dpo_sweep.py [--tasks toy signoff mixed] [--seeds 0 1 2 3 4]
        [--lrs 1e-4 3e-4 1e-3] [--epochs 4] [--betas 0.1] [--out benchmarks/results/dpo_sweep.md]

For each built-in task, DPO setting (lr × epochs × β) and label seed, ``toyworld check``'s
procedure (:func:`activedpo_trainer.heldout.dpo_check`): 200 random train prompts, two π_ref
samples each, Bradley–Terry oracle labels, one DPO round from a fresh LoRA adapter. Each
checkpoint is evaluated against π_ref on all held-out prompts (``--eval-samples`` samples each;
the lift is paired by prompt) and by the preference accuracy of its implicit reward on judged
pairs of π_ref's samples (``--pair-samples`` per held-out prompt; π_ref scores ½).

The rule that picks a task's setting, fixed before looking: among the settings whose mean reward
lift over the label seeds is significant (95% t interval above zero) and whose accuracy lift is
too, the largest mean reward lift; with none, the largest mean reward lift, reported as not
significant. Nothing here depends on a selection strategy: the labels are random.

Results are appended to ``--work-dir/results.jsonl`` as they come, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from _report import header, write


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["toy", "signoff", "mixed"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3])
    ap.add_argument("--epochs", type=float, nargs="+", default=[4.0])
    ap.add_argument("--betas", type=float, nargs="+", default=[0.1])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=200, help="held-out prompts (the toy worlds hold out 200)")
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--pair-samples", type=int, default=4)
    ap.add_argument("--work-dir", type=Path, default=Path("runs/dpo-sweep"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dpo_sweep.md"))
    args = ap.parse_args()

    from activedpo_client.bench.stats import mean_ci
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.dpo import DPOSettings
    from activedpo_trainer.heldout import dpo_check
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    log = args.work_dir / "results.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["task"], r["lr"], r["epochs"], r["beta"], r["seed"])] = r
    grid = list(itertools.product(args.lrs, args.epochs, args.betas))
    for task in args.tasks:
        with progress_bars(transient=True) as bar:
            world = build_toyworld(ToyWorldConfig.preset("default", task=task), progress=bar)
        for (lr, epochs, beta), seed in itertools.product(grid, args.seeds):
            key = (task, lr, epochs, beta, seed)
            if key in done:
                continue
            settings = DPOSettings(lr=lr, epochs=epochs, beta=beta)
            out = args.work_dir / f"{task}-lr{lr:g}-e{epochs:g}-b{beta:g}-s{seed}"
            check = dpo_check(world, out, args.pairs, seed, args.prompts, settings, eval_samples=args.eval_samples,
                              pair_samples=args.pair_samples)  # fmt: skip
            row = {"task": task, "lr": lr, "epochs": epochs, "beta": beta, "seed": seed, **check.to_dict()}
            done[key] = row
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            lift = row["reward"] - row["ref_reward"]
            print(f"{task} lr {lr:g} epochs {epochs:g} β {beta:g} seed {seed}: lift {lift:+.3f}, "
                  f"accuracy {row['pref_acc']:.3f}", flush=True)  # fmt: skip

    lines = [
        *header("DPO settings per task, on random labels: the lift from one round of 200 labels"),
        f"Default worlds; {args.pairs} random train prompts × 2 π_ref samples, Bradley–Terry oracle labels, one DPO "
        f"round (fresh LoRA r = 128, α = 512); evaluated on {args.prompts} held-out prompts × {args.eval_samples} "
        f"samples against π_ref, and by preference accuracy on judged pairs of {args.pair_samples} π_ref samples per "
        f"held-out prompt. Label seeds {args.seeds}; mean ± 95% CI (t) over them.",
        "",
        "Rule (fixed in advance): among settings with a significant reward lift *and* accuracy lift, the largest mean "
        "reward lift.",
    ]
    chosen = {}
    for task in args.tasks:
        lines += ["", f"## Task `{task}`", "",
                  "| lr | epochs | β | reward lift | accuracy | win-rate | per-seed reward lift | significant |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        scored = []
        for lr, epochs, beta in grid:
            rows = [done[(task, lr, epochs, beta, s)] for s in args.seeds if (task, lr, epochs, beta, s) in done]
            if not rows:
                continue
            lifts = [r["reward"] - r["ref_reward"] for r in rows]
            accs = [r["pref_acc"] for r in rows]
            (lm, lci), (am, aci) = mean_ci(lifts), mean_ci(accs)
            wm = float(np.mean([r["win_rate"] for r in rows]))
            sig = lm - lci > 0 and am - aci > 0.5
            scored.append((sig, lm, (lr, epochs, beta)))
            lines.append(f"| {lr:g} | {epochs:g} | {beta:g} | {lm:+.3f} ± {lci:.3f} | {am:.3f} ± {aci:.3f} | {wm:.1%} "
                         f"| {', '.join(f'{x:+.2f}' for x in lifts)} | {'yes' if sig else 'no'} |")  # fmt: skip
        if scored:
            best = max(scored, key=lambda t: (t[0], t[1]))
            chosen[task] = best
            lr, epochs, beta = best[2]
            verdict = "a significant lift" if best[0] else "**no significant lift under any setting tried**"
            lines += ["", f"Chosen for `{task}`: lr {lr:g}, {epochs:g} epochs, β {beta:g} ({verdict}, mean reward lift "
                      f"{best[1]:+.3f})."]  # fmt: skip
    raw = args.out.with_suffix(".jsonl")
    lines += ["", f"Raw results: `{raw.name}` (one line per task, setting and seed)."]
    print("\n".join(lines))
    write(args.out, lines)
    keys = [(t, lr, e, b, s) for t in args.tasks for lr, e, b in grid for s in args.seeds]
    raw.write_text("".join(json.dumps(done[k]) + "\n" for k in keys if k in done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
