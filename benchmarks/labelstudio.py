"""Live Label Studio: start time, SelectBatch to tasks visible, and labels pulled back per second.

    .venv/bin/python benchmarks/labelstudio.py [--budget 50] [--annotations 500] [--repeats 3]

Starts a real Label Studio (``.venv-labelstudio``, as the test fixture does) and an embedded
selection server on the tiny toy world, then measures: Label Studio's start (process start to
``/health`` 200); for each repeat, ``SelectBatch(--budget)`` plus ``LabelStudioProject.push`` until
the tasks are listed in the project; and :meth:`LabelStudioProject.pull` over ``--annotations``
finished annotations (created through the REST API, as the web UI does), in labels per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _report import header, write

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--annotations", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "labelstudio.md")
    args = ap.parse_args()

    from activedpo_client.labelstudio import LabelStudioProject, start_local
    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_trainer.progress import quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    tmp = Path(tempfile.mkdtemp(prefix="ls-bench-"))
    world = build_toyworld(ToyWorldConfig.preset("tiny"), cache_dir=tmp / "cache")
    local = start_local(ROOT / ".venv-labelstudio" / "bin" / "label-studio", tmp / "ls")
    url, token, start_s = local.url, local.token, local.start_seconds
    print(f"Label Studio answered /health after {start_s:.1f} s", flush=True)
    pair = [{"from_name": "preference", "to_name": "response_a,response_b", "type": "pairwise",
             "value": {"selected": "left"}}]  # fmt: skip
    try:
        args_ = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "16"]
        with EmbeddedServer(tmp / "state", world.sft_dir, args=args_) as server, SelectorClient(
            Connection(server.target)
        ) as client:
            client.wait_ready()
            prompts = world.task.train_prompts()
            words = [" wave tide", " calm", " bright moss", " tree", " sand dull"]
            n_prompts = max(60, (args.budget * args.repeats + args.annotations) // 3 + 10)
            groups = [(prompts[i % len(prompts)] + f" #{i}", [words[(i + k) % 5] + f" {i}" for k in range(3)])
                      for i in range(n_prompts)]  # fmt: skip
            client.add_candidates(groups)
            client.select(3)  # featurizes under the checkpoint: later calls measure selection, not featurization
            project = LabelStudioProject("activedpo bench", url, token)
            visible = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                batch = client.select(args.budget)
                ids = project.push(batch, tag=f"bench-{r}")
                listed = {int(t.id) for t in project.client.tasks.list(project=project.id, fields="all")}
                assert set(ids) <= listed
                visible.append(time.perf_counter() - t0)
            # annotations to pull back: a batch of --annotations tasks, each answered once
            batch = client.select(args.annotations)
            ids = project.push(batch, tag="bench-pull")
            for t in ids:
                project.client.annotations.create(id=t, result=pair)
            pulls = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                pulled = project.pull(ids)
                pulls.append(time.perf_counter() - t0)
                assert len(pulled.labels) == len(ids) and pulled.done == len(ids)
    finally:
        local.stop()
    vis, pull = statistics.median(visible), statistics.median(pulls)
    lines = [
        *header("Live Label Studio: start, SelectBatch to tasks visible, labels pulled back"),
        f"Label Studio 1.23.2 (SQLite, its own venv) and label-studio-sdk 2.1.2 on 127.0.0.1; an embedded selection "
        f"server on the tiny toy world (d = 128). Medians of {args.repeats}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Label Studio start (process start to /health 200) | {start_s:.1f} s |",
        f"| SelectBatch({args.budget}) + push + tasks listed | {vis:.2f} s |",
        f"| pull of {len(ids)} finished annotations | {pull:.2f} s ({len(ids) / pull:,.0f} labels/s) |",
        "",
        "Per repeat: visible " + ", ".join(f"{x:.2f}" for x in visible) + " s; pull " +
        ", ".join(f"{x:.2f}" for x in pulls) + " s",
    ]  # fmt: skip
    print("\n".join(lines))
    write(args.out, lines)


if __name__ == "__main__":
    main()
