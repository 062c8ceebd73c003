"""A round killed with `kill -9` at every step boundary ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from test_round import round_args

from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient


def start_round(world, run_dir) -> subprocess.Popen:
    args = [str(a) for a in round_args(world, run_dir, 1)]
    log = open(run_dir.parent / f"{run_dir.name}.log", "a")  # noqa: SIM115 - the child writes to it
    return subprocess.Popen([sys.executable, "-m", "activedpo_client.cli", *args], stdout=log, stderr=log)


def steps_done(run_dir) -> int:
    state = run_dir / "rounds" / "001" / "state.json"
    try:
        return len(json.loads(state.read_text())["steps"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def outcome(run_dir) -> dict:
    r = run_dir / "rounds" / "001"
    with EmbeddedServer(run_dir / "server", args=["--proj-dim", "128", "--lora-r", "8"]) as server:
        project = json.loads((run_dir / "run.json").read_text())["project"]
        client = SelectorClient(Connection(server.target), project=project)
        exported = [(x.pair_id, x.chosen) for x in client.export_labels()]
        client.close()
    return {
        "batch": [p["pair_id"] for p in json.loads((r / "batch.json").read_text())["pairs"]],
        "labels": (r / "labels.jsonl").read_text(),
        "exported": exported,
        "reward": json.loads((r / "eval.json").read_text())["reward"],
    }


def test_kill_9_at_every_step_boundary_then_resume(tiny_world, tmp_path):
    reference = tmp_path / "reference"
    proc = start_round(tiny_world, reference)
    assert proc.wait(timeout=300) == 0

    run_dir = tmp_path / "killed"
    kills = 0
    partial = run_dir / "rounds" / "001" / "checkpoint.partial"
    for boundary in range(1, 8):  # after generate, add, select, annotate, submit, (mid-)train, load
        proc = start_round(tiny_world, run_dir)
        deadline = time.time() + 120

        def reached(boundary=boundary):
            if boundary == 6:  # in the middle of training: its output directory is being written
                return partial.exists() or steps_done(run_dir) >= 6
            return steps_done(run_dir) >= boundary

        while not reached() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        time.sleep(1.0)  # the orphaned embedded server notices and exits
    assert kills >= 5
    proc = start_round(tiny_world, run_dir)
    assert proc.wait(timeout=300) == 0

    got, want = outcome(run_dir), outcome(reference)
    assert got["batch"] == want["batch"]  # the same pairs were selected
    assert got["labels"].count("\n") == 8
    assert len(got["exported"]) == 8 == len({p for p, _ in got["exported"]})  # no label twice
    assert got["exported"] == want["exported"]
    assert got["reward"] == want["reward"]  # the same model came out
