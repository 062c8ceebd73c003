"""The audit-label evidence: is the audit estimate unbiased, how much does it say per label, what does it cost,
and does the stall hint fire where the labels stopped paying? Read from a benchmark's ``runs.jsonl``.

    .venv/bin/activedpo-client bench --tasks toy signoff mixed --seeds 0 1 2 3 4 5 6 7 8 9 \\
        --arms activedpo activedpo@audit=0.1 activedpo@audit=0.2 random@audit=0.1 random@audit=0.2 \\
        --jobs 2 --work-dir runs/audit --out benchmarks/results/label_efficiency_audit
    .venv/bin/python benchmarks/audit.py [--runs benchmarks/results/label_efficiency_audit/runs.jsonl]
        [--out benchmarks/results/label_efficiency_audit/audit.md] [--work-dir runs/audit]

The toy world's Bradley–Terry oracle labels every pair, so each round's row carries the truth the audit estimate
estimates (``pool_acc_oracle``: the selecting policy's expected accuracy on every pair of that round's pool under
the same label model). Round one's policy is π_ref, whose margins are all 0: its estimate and its truth are ½
exactly, so the tables start at round two. The unit of every interval is the seed (a run's rounds share
its policy's history); per-round rows are pooled within a seed first. With ``--work-dir`` (the benchmark's, which
keeps each round's pool) the tables add the pool's ceiling: the accuracy a policy that knew the oracle's reward
would score on that pool under the same label model, the mean of max(p, 1 − p) over its pairs.

1. **Unbiasedness**: ``audit_acc − pool_acc_oracle`` per task and arm, mean over seeds with its 95% CI, and the
   share of per-round 90% intervals (``audit_acc ± 1.645·audit_se``) that hold the truth; beside it the truth
   and the oracle-judged held-out preference accuracy (π_ref's pairs on other prompts, no label noise).
2. **Power**: the mean per-round and pooled standard errors at each fraction against ½/√n, and what that
   means for the number of audit answers (and rounds at a given budget) a curve needs.
3. **Cost**: each ``activedpo@audit=F`` against ``activedpo``, final held-out reward and preference accuracy,
   paired by seed.
4. **The hint**: per task and arm, how many seeds said it after the last round, beside the oracle's measured
   change over the same labels (the truth the audit curve follows, and the held-out preference accuracy).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from _report import header, write

from activedpo_client.bench.stats import mean_ci

Z90 = 1.645
FOR_SE_05 = (0.5 / 0.05) ** 2  # audit answers for an SE of 0.05 near ½


def load(path: Path) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """(task, arm) → seed → the run's rows in round order."""
    runs: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for line in path.read_text().splitlines():
        row = json.loads(line)
        runs[(row["task"], row["arm"])][row["seed"]].append(row)
    for by_seed in runs.values():
        for rows in by_seed.values():
            rows.sort(key=lambda r: r["round"])
    return runs


def ceilings(work_dir: Path, runs) -> dict[tuple[str, str, int, int], float]:
    """(task, arm, seed, round) → the pool's ceiling: mean max(p, 1 − p) over its pairs of distinct responses
    (those the server keeps), p the oracle's Bradley–Terry probability."""
    from activedpo_client.bench.arms import Arm
    from activedpo_trainer.tasks import load_task, sigmoid, task_slug

    out = {}
    for (task, arm), by_seed in runs.items():
        for seed, rows in by_seed.items():
            oracle = load_task(task, seed=seed)
            for r in rows:
                path = (work_dir / task_slug(task) / f"p{rows[0].get('prompts', 1000)}" /
                        f"{Arm.parse(arm).slug}-seed{seed}" / "rounds" / f"{r['round']:03d}" / "candidates.jsonl")
                if not path.exists():
                    continue
                best = []
                for line in path.read_text().splitlines():
                    g = json.loads(line)
                    responses = list(dict.fromkeys(g["responses"]))
                    reward = [oracle.reward(g["prompt"], y) for y in responses]
                    best += [max(p, 1 - p) for i, a in enumerate(reward) for b in reward[i + 1:]
                             for p in [sigmoid(a - b)]]  # fmt: skip
                out[(task, arm, seed, r["round"])] = float(np.mean(best))
    return out


def fraction(arm: str) -> float:
    return float(arm.split("audit=")[1].split(",")[0]) if "audit=" in arm else 0.0


def fmt(mean: float, half: float, digits: int = 3) -> str:
    return f"{mean:+.{digits}f} ± {half:.{digits}f}"


def audited(rows: list[dict]) -> list[dict]:
    """A run's rounds with audit answers and a truth, from round two on."""
    return [r for r in rows if r["round"] > 1 and r.get("audit_n") and r.get("pool_acc_oracle") is not None]


def unbiasedness(runs, ceil: dict) -> list[str]:
    out = ["| task | arm | audit − truth, seeds' mean (95% CI) | 90% coverage | truth | audit | pool's ceiling | "
           "held-out pref acc |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    overall: dict[str, list[float]] = defaultdict(list)
    covered: dict[str, list[bool]] = defaultdict(list)
    for (task, arm), by_seed in runs.items():
        if not fraction(arm):
            continue
        per_seed, cover, truth, est, held, top = [], [], [], [], [], []
        for seed, rows in by_seed.items():
            got = audited(rows)
            if not got:
                continue
            diff = [r["audit_acc"] - r["pool_acc_oracle"] for r in got]
            per_seed.append(float(np.mean(diff)))
            cover += [abs(d) <= Z90 * r["audit_se"] for d, r in zip(diff, got, strict=True)]
            truth += [r["pool_acc_oracle"] for r in got]
            est += [r["audit_acc"] for r in got]
            held += [r["pref_acc"] for r in got if r.get("pref_acc") is not None]
            top += [ceil[key] for r in got if (key := (task, arm, seed, r["round"])) in ceil]
        if not per_seed:
            continue
        overall[arm] += per_seed
        covered[arm] += cover
        out.append(f"| `{task}` | {arm} | {fmt(*mean_ci(per_seed))} ({len(per_seed)} seeds) | "
                   f"{np.mean(cover):.0%} of {len(cover)} | {np.mean(truth):.3f} | {np.mean(est):.3f} | "
                   f"{f'{np.mean(top):.3f}' if top else '–'} | {np.mean(held):.3f} |")  # fmt: skip
    for arm, per_seed in overall.items():
        out.append(f"| all three | {arm} | {fmt(*mean_ci(per_seed))} ({len(per_seed)} runs) | "
                   f"{np.mean(covered[arm]):.0%} of {len(covered[arm])} | | | | |")  # fmt: skip
    return out


def rounds_for(answers: float, fraction: float, budget: int) -> int:
    """Rounds until the audit pairs of rounds of ``budget`` labels hold ``answers``."""
    return math.ceil(answers / math.ceil(fraction * budget))


def power(runs) -> list[str]:
    by_fraction: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (_task, arm), by_seed in runs.items():
        f = fraction(arm)
        if not f:
            continue
        for rows in by_seed.values():
            for r in audited(rows):
                d = by_fraction[f]
                d["n"].append(r["audit_n"])
                d["se"].append(r["audit_se"])
                d["pooled_n"].append(r["audit_pooled_n"])
                d["pooled_se"].append(r["audit_pooled_se"])
                d["truth"].append(r["pool_acc_oracle"])
    out = ["| fraction | audit answers a round | SE (round) | ½/√n | pooled answers | SE (pooled) | rounds to SE 0.05 "
           "at budget 50 | at budget 500 |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in sorted(by_fraction):
        d = by_fraction[f]
        n = float(np.mean(d["n"]))
        out.append(f"| {f:g} | {n:.1f} | {np.mean(d['se']):.3f} | {0.5 / math.sqrt(n):.3f} | "
                   f"{np.mean(d['pooled_n']):.1f} | {np.mean(d['pooled_se']):.3f} | "
                   f"{rounds_for(FOR_SE_05, f, 50)} | {rounds_for(FOR_SE_05, f, 500)} |")  # fmt: skip
    out += ["", f"An estimate near ½ needs (½ / SE)² answers: {FOR_SE_05:.0f} for an SE of 0.05. Two rounds' "
            "estimates tell a change of δ apart at 95% when each holds 2·(1.96·½/δ)² answers: "
            f"{2 * (1.96 * 0.5 / 0.1) ** 2:.0f} for δ = 0.1, {2 * (1.96 * 0.5 / 0.05) ** 2:.0f} for δ = 0.05."]
    return out


def cost(runs, tasks: list[str]) -> list[str]:
    out = ["| task | arm | final reward − activedpo (95% CI) | final pref acc − activedpo (95% CI) | seeds |",
           "|---|---|---|---|---|"]  # fmt: skip
    for task in tasks:
        base = runs.get((task, "activedpo"))
        if not base:
            continue
        for (t, arm), by_seed in runs.items():
            if t != task or not arm.startswith("activedpo@audit="):
                continue
            seeds = sorted(set(by_seed) & set(base))
            rew = [by_seed[s][-1]["reward"] - base[s][-1]["reward"] for s in seeds]
            acc = [by_seed[s][-1]["pref_acc"] - base[s][-1]["pref_acc"] for s in seeds]
            out.append(f"| `{task}` | {arm} | {fmt(*mean_ci(rew))} | {fmt(*mean_ci(acc))} | {len(seeds)} |")
    return out


def hint(runs, ceil: dict) -> list[str]:
    """Per task and arm: how many seeds said the hint after the last round, beside the oracle's change over the
    labels it speaks of. After round R it compares the estimates of the policies that selected rounds R − 2 to R;
    from π_ref (round one) that is π_ref → the policy trained on the labels of rounds 1 to R − 1, whose
    held-out evaluation is the row of round R − 1."""
    out = ["| task | arm | hint said after the last round | over the same labels: truth (π_ref at ½ → the last "
           "selecting policy) | the pool's ceiling − ½ | held-out pref acc | held-out reward |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (task, arm), by_seed in runs.items():
        if not fraction(arm):
            continue
        said, truth, acc, rew, top = 0, [], [], [], []
        for seed, rows in by_seed.items():
            if len(rows) < 3 or rows[0]["round"] != 1 or not audited(rows):
                continue
            said += bool(rows[-1].get("hint"))
            truth.append(rows[-1]["pool_acc_oracle"] - 0.5)
            acc.append(rows[-2]["pref_acc"] - 0.5)  # π_ref's preference accuracy is ½ by construction
            rew.append(rows[-2]["reward"] - rows[0]["ref_reward"])
            if (key := (task, arm, seed, rows[-1]["round"])) in ceil:
                top.append(ceil[key] - 0.5)
        if truth:
            ceiling = f"{np.mean(top):+.3f}" if top else "–"
            out.append(f"| `{task}` | {arm} | {said} of {len(truth)} | {fmt(*mean_ci(truth))} | {ceiling} | "
                       f"{fmt(*mean_ci(acc))} | {fmt(*mean_ci(rew))} |")  # fmt: skip
    return out


def drift(runs) -> list[str]:
    out = ["| task | arm | KL per response (last round) | KL per token | π_ref's samples: log-lik per token under "
           "π_θ (π_ref's own) |", "|---|---|---|---|---|"]  # fmt: skip
    for (task, arm), by_seed in runs.items():
        last = [rows[-1] for rows in by_seed.values() if rows[-1].get("kl_seq") is not None]
        if last:
            out.append(f"| `{task}` | {arm} | {np.mean([r['kl_seq'] for r in last]):.2f} | "
                       f"{np.mean([r['kl_token'] for r in last]):.3f} | {np.mean([r['ref_loglik'] for r in last]):.2f} "
                       f"({np.mean([r['ref_loglik_ref'] for r in last]):.2f}) |")  # fmt: skip
    return out


def main() -> None:
    here = Path(__file__).resolve().parent / "results" / "label_efficiency_audit"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=here / "runs.jsonl")
    p.add_argument("--out", type=Path, default=here / "audit.md")
    p.add_argument("--work-dir", type=Path, help="the benchmark's work dir (each round's pool): adds the ceiling")
    args = p.parse_args()
    runs = load(args.runs)
    ceil = ceilings(args.work_dir, runs) if args.work_dir else {}
    tasks = list(dict.fromkeys(task for task, _ in runs))
    seeds = sorted({s for by_seed in runs.values() for s in by_seed})
    lines = [*header("Audit labels: unbiasedness, power, cost and the stall hint"),
             f"From `{args.runs.name}`: tasks {', '.join(f'`{t}`' for t in tasks)}; seeds {seeds}; arms "
             f"{', '.join(dict.fromkeys(f'`{a}`' for _, a in runs))}. Rounds from two on (round one's policy is "
             "π_ref: estimate and truth are ½ exactly). Intervals are over seeds.", "",
             "## Unbiasedness: the audit estimate against the truth it estimates", "", *unbiasedness(runs, ceil), "",
             "## Power: standard errors per fraction", "", *power(runs), "",
             "## Cost: audit pairs replace picks within the budget", "", *cost(runs, tasks), "",
             "## The stall hint against the oracle's measured change", "", *hint(runs, ceil), "",
             "## Drift from π_ref", "", *drift(runs)]  # fmt: skip
    print("\n".join(lines))
    write(args.out, lines)


if __name__ == "__main__":
    main()
