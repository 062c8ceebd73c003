"""Live Label Studio: start time, SelectBatch to tasks visible, labels pulled back per second, and
how soon ``labelstudio sync`` brings a new label to the server, polling or woken by a webhook.

    .venv/bin/python benchmarks/labelstudio.py [--budget 50] [--annotations 500] [--repeats 3] [--labels 7]

Starts a real Label Studio (``.venv-labelstudio``, as the test fixture does) and an embedded
selection server on the tiny toy world, then measures: Label Studio's start (process start to
``/health`` 200); for each repeat, ``SelectBatch(--budget)`` plus ``LabelStudioProject.push`` until
the tasks are listed in the project; and :meth:`LabelStudioProject.pull` over ``--annotations``
finished annotations (created through the REST API, as the web UI does), in labels per second;
Label Studio's restart on its data. Then two ``activedpo-client labelstudio sync`` processes in
turn, one polling every ``--poll`` seconds and one with ``--ls-webhook-port`` (and a 600 s poll):
for ``--labels`` annotations made one at a time, the seconds from the annotation's creation to
the selection server counting it.
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
    ap.add_argument("--labels", type=int, default=7, help="annotations timed per sync mode")
    ap.add_argument("--poll", type=float, default=5.0, help="the polling loop's --every")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "labelstudio.md")
    args = ap.parse_args()

    from activedpo_client.labelstudio import LabelStudioProject
    from activedpo_client.lslocal import start_local
    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_core.progress import quiet_libraries
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
        with (
            EmbeddedServer(tmp / "state", world.sft_dir, args=args_) as server,
            SelectorClient(Connection(server.target)) as client,
        ):
            client.wait_ready()
            prompts = world.task.train_prompts()
            words = [" wave tide", " calm", " bright moss", " tree", " sand dull"]
            n_prompts = max(60, (args.budget * args.repeats + args.annotations) // 3 + 10 + 2 * (args.labels + 3))
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
            restart_s = local.restart()
            print(f"Label Studio restarted in {restart_s:.1f} s", flush=True)
            pickup = {mode: sync_pickup(server.target, client, local, tmp, mode, args.labels, args.poll)
                      for mode in ("poll", "webhook")}  # fmt: skip
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
        f"| Label Studio restart on its data (stop, start, /health 200) | {restart_s:.1f} s |",
        f"| `labelstudio sync --every {args.poll:g}`: annotation to the server, median of {args.labels} | "
        f"{statistics.median(pickup['poll']):.2f} s |",
        f"| `labelstudio sync --every 600 --ls-webhook-port 0`: the same | "
        f"{statistics.median(pickup['webhook']):.2f} s |",
        "",
        "Sync pickup per label: polling " + ", ".join(f"{x:.2f}" for x in pickup["poll"]) + " s; webhook " +
        ", ".join(f"{x:.2f}" for x in pickup["webhook"]) + " s",
        "Per repeat: visible " + ", ".join(f"{x:.2f}" for x in visible) + " s; pull " +
        ", ".join(f"{x:.2f}" for x in pulls) + " s",
    ]  # fmt: skip
    print("\n".join(lines))
    write(args.out, lines)


def sync_pickup(target, client, local, tmp, mode: str, labels: int, poll: float) -> list[float]:
    """Seconds from each annotation's creation to the server counting it, with a sync process running."""
    import os
    import signal
    import subprocess
    import sys

    from activedpo_client.labelstudio import LabelStudioProject

    title = f"activedpo sync {mode}"
    project = LabelStudioProject(title, local.url, local.token)
    cmd = [sys.executable, "-m", "activedpo_client.cli", "labelstudio", "sync", "--server", target, "--ls-project",
           title, "--budget", "3", "--state-file", str(tmp / f"sync-{mode}.json"), "--ls-url", local.url]  # fmt: skip
    cmd += ["--every", str(poll)] if mode == "poll" else ["--every", "600", "--ls-webhook-port", "0"]
    env = dict(os.environ, LABEL_STUDIO_API_KEY=local.token)
    log = open(tmp / f"sync-{mode}.log", "w")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    pair = [{"from_name": "preference", "to_name": "response_a,response_b", "type": "pairwise",
             "value": {"selected": "right"}}]  # fmt: skip
    took = []
    try:
        until(lambda: "pushed 3 tasks" in (tmp / f"sync-{mode}.log").read_text(), 120)
        for _ in range(labels):
            time.sleep(1.3)  # out of phase with the poll
            task = next(t for t in project.client.tasks.list(project=project.id, fields="all") if not t.annotations)
            before = client.status().annotations
            t0 = time.perf_counter()
            project.client.annotations.create(id=task.id, result=pair)
            until(lambda b=before: client.status().annotations > b, 120, every=0.02)
            took.append(time.perf_counter() - t0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return took


def until(check, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s")
        time.sleep(every)


if __name__ == "__main__":
    main()
