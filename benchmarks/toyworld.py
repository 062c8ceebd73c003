"""Toy-world figures: build time, pi_ref's held-out reward, and the lift from one DPO round.

    .venv/bin/python benchmarks/toyworld.py [--seeds 0 1 2] [--pairs 200] [--out benchmarks/results/toyworld.md]

Builds the default world from scratch in a fresh cache (timed), then for each label seed:
samples two responses from pi_ref for 200 train prompts, labels them with the hidden oracle
(Bradley-Terry draws), trains one DPO round with the paper's defaults (LoRA r=128, α=512,
4 epochs, lr 1e-4, β=0.1), and evaluates on 100 held-out prompts against pi_ref.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import header, write


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=None, help="DPO learning rate [default: the paper's 1e-4]")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/toyworld.md"))
    args = ap.parse_args()

    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.dpo import DPOSettings
    from activedpo_trainer.heldout import dpo_check
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    rows = []
    settings = DPOSettings(lr=args.lr) if args.lr else None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        world = build_toyworld(ToyWorldConfig.preset("default", seed=args.world_seed), cache_dir=Path(tmp))
        wall = time.perf_counter() - t0
        for s in args.seeds:
            check = dpo_check(world, Path(tmp) / f"dpo-{s}", args.pairs, s, args.prompts, settings)
            rows.append(check.to_dict() | {"seed": s})
            print(json.dumps(rows[-1]), flush=True)

    sft = world.info["sft_eval"]
    lines = [
        *header("Toy world: build and one DPO round"),
        f"- Default world build (tokenizer, SFT, pi_ref evaluation): {wall:.1f} s wall, "
        f"{world.info['build_seconds']:.1f} s to a saved SFT model",
        f"- pi_ref (SFT) mean held-out oracle reward: {sft['reward']:.3f} ± {sft['se']:.3f} (n={sft['n']})",
        f"- DPO: {settings or DPOSettings()}",
        "",
        "| label seed | pairs | mean pair gap | pi_ref reward ± SE | after DPO ± SE | lift | win-rate | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['pairs']} | {r['pair_reward_gap']:.2f} | {r['ref_reward']:.3f} ± {r['ref_se']:.3f} "
            f"| {r['reward']:.3f} ± {r['se']:.3f} | {r['reward'] - r['ref_reward']:+.3f} | {r['win_rate']:.1%} "
            f"| {r['train_seconds']:.1f} |"
        )
    lifts = [r["reward"] - r["ref_reward"] for r in rows]
    lines += ["", f"Mean lift over {len(rows)} label seeds: {np.mean(lifts):+.3f} (min {min(lifts):+.3f})", ""]
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
