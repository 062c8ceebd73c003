"""A real Label Studio and a real selection server: a batch becomes tasks, labelers annotate through
Label Studio's API (as its web UI does), and their labels reach the server once each."""

from __future__ import annotations

import json

import pytest

from activedpo_client.labelstudio import LabelStudioError, LabelStudioProject
from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

SMALL = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "16"]


def pairwise(side: str) -> list[dict]:
    return [{"from_name": "preference", "to_name": "response_a,response_b", "type": "pairwise",
             "value": {"selected": side}}]  # fmt: skip


def test_a_batch_round_trips_through_label_studio(tmp_path, tiny_world, label_studio):
    prompts = tiny_world.task.train_prompts()[:6]
    with EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, args=SMALL) as server, SelectorClient(
        Connection(server.target), project="ls-run"
    ) as client:
        client.wait_ready()
        client.add_candidates([(p, [" wave tide", " calm", " bright moss"]) for p in prompts])
        batch = client.select(4)
        project = LabelStudioProject("activedpo round trip", label_studio.url, label_studio.token)
        tasks = project.push(batch, tag="ls-run-r1")
        assert len(set(tasks)) == 4
        assert project.push(batch, tag="ls-run-r1") == tasks  # a resumed round finds its tasks: no second import
        assert LabelStudioProject(str(project.id), label_studio.url, label_studio.token).id == project.id
        assert LabelStudioProject("activedpo round trip", label_studio.url, label_studio.token).id == project.id
        ls = project.client
        data = {int(t.id): t.data for t in ls.tasks.list(project=project.id, fields="all")}
        assert len(data) == 4 and [data[t]["pair_id"] for t in tasks] == [p.pair_id for p in batch.pairs]
        assert project.pull(tasks).done == 0

        # the labelers: task 0 twice (A, then B by a second annotation), task 1 skipped,
        # task 2 answered A then changed to B, task 3 not yet
        ls.annotations.create(id=tasks[0], result=pairwise("left"))
        ls.annotations.create(id=tasks[0], result=pairwise("right"))
        ls.annotations.create(id=tasks[1], result=[], was_cancelled=True)
        changed = ls.annotations.create(id=tasks[2], result=pairwise("left"))
        ls.annotations.update(id=changed.id, result=pairwise("right"))
        pulled = project.pull(tasks)
        assert (pulled.done, pulled.total, pulled.skipped) == (3, 4, 1)
        got = sorted((lab.pair_id, lab.preference) for lab in pulled.labels)
        want = sorted([(batch.pairs[0].pair_id, "A"), (batch.pairs[0].pair_id, "B"), (batch.pairs[2].pair_id, "B")])
        assert got == want
        assert len({lab.idempotency_key for lab in pulled.labels}) == 3

        results = client.submit_labels(pulled.labels)
        assert all(r.accepted and not r.replayed for r in results)
        again = client.submit_labels(project.pull(tasks).labels)  # pulled again: nothing new is written
        assert all(r.replayed for r in again) and client.status().annotations == 3
        assert sorted((x.pair_id, x.chosen) for x in client.export_labels()) == sorted(
            (b.pair_id, b.response_a if pref == "A" else b.response_b)
            for b, pref in ((batch.pairs[0], "A"), (batch.pairs[0], "B"), (batch.pairs[2], "B"))
        )


def test_label_studio_errors_are_one_line(label_studio, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="set --ls-url and --ls-api-key"):
        LabelStudioProject("x-project")
    with pytest.raises(LabelStudioError, match=r"Label Studio at .* failed"):
        LabelStudioProject("x-project", label_studio.url, "0" * 40)  # a wrong token
    with pytest.raises(LabelStudioError, match="at least 3 characters"):
        LabelStudioProject("ab", label_studio.url, label_studio.token)


def test_a_round_labeled_in_label_studio_waits_then_resumes_without_duplicates(tiny_world, tmp_path, label_studio):
    from typer.testing import CliRunner

    from activedpo_client.cli import app

    run_dir = tmp_path / "run"
    args = ["round", "--world", tiny_world.root, "--run-dir", run_dir, "--budget", 6, "--prompts", 12,
            "--responses", 3, "--eval-prompts", 8, "--dpo-epochs", 1, "--proj-dim", 128, "--lora-r", 8,
            "--device", "cpu", "--annotator", "label-studio", "--ls-project", "activedpo round", "--ls-url",
            label_studio.url, "--ls-api-key", label_studio.token]  # fmt: skip
    first = CliRunner().invoke(app, [str(a) for a in [*args, "--ls-wait", 1]])
    assert first.exit_code == 3, first.output
    assert "0 of 6 tasks done in Label Studio project" in " ".join(first.output.split())
    record = json.loads((run_dir / "rounds" / "001" / "label_studio.json").read_text())
    project = LabelStudioProject(str(record["project"]), label_studio.url, label_studio.token)
    ls = project.client
    for n, task in enumerate(record["task_ids"]):  # the labelers: one skip, the rest A or B
        if n == 0:
            ls.annotations.create(id=task, result=[], was_cancelled=True)
        else:
            ls.annotations.create(id=task, result=pairwise("left" if n % 2 else "right"))
    second = CliRunner().invoke(app, [str(a) for a in [*args, "--ls-wait", 60]])
    assert second.exit_code == 0, second.output
    assert "round 1: 5 labels" in second.output
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == 6  # the resumed round found its tasks: nothing imported twice
    labels = [json.loads(line) for line in (run_dir / "rounds" / "001" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 5 and len({x["idempotency_key"] for x in labels}) == 5


def test_sync_keeps_the_project_supplied_and_survives_kill_9(tiny_world, tmp_path, label_studio):
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from activedpo_client.cli import app

    prompts = tiny_world.task.train_prompts()[:12]
    server = EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, args=SMALL)
    with server, SelectorClient(Connection(server.target)) as client:
        client.wait_ready()
        client.add_candidates([(p, [" wave tide", " calm", " bright moss"]) for p in prompts])  # 36 pairs
        state = tmp_path / "sync.json"
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
        args = ["labelstudio", "sync", "--server", server.target, "--ls-project", "activedpo sync", "--budget", "5",
                "--state", str(state)]  # fmt: skip

        def once() -> str:
            out = CliRunner().invoke(app, [*args, "--once"], env=env)
            assert out.exit_code == 0, out.output
            return " ".join(out.output.split())

        assert "submitted 0 labels, pushed 5 tasks, 5 open" in once()
        assert "submitted 0 labels, pushed 0 tasks, 5 open" in once()  # enough open tasks: nothing selected
        project = LabelStudioProject("activedpo sync", label_studio.url, label_studio.token)
        ls = project.client

        def tasks():
            return list(ls.tasks.list(project=project.id, fields="all"))

        open_ids = [int(t.id) for t in tasks() if not t.annotations]
        ls.annotations.create(id=open_ids[0], result=pairwise("left"))
        ls.annotations.create(id=open_ids[1], result=pairwise("right"))
        ls.annotations.create(id=open_ids[2], result=[], was_cancelled=True)
        assert "submitted 2 labels, pushed 3 tasks, 5 open" in once()
        assert client.status().annotations == 2

        # a loop killed with -9 again and again while people label: no task and no label twice
        cmd = [sys.executable, "-m", "activedpo_client.cli", *args, "--every", "0.2"]
        for round_ in range(4):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for t in [int(t.id) for t in tasks() if not t.annotations][:2]:
                ls.annotations.create(id=t, result=pairwise("left" if round_ % 2 else "right"))
            time.sleep(2.0 + 0.7 * round_)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert "5 open" in once()  # a last clean pass catches up
        final = tasks()
        pair_ids = [t.data["pair_id"] for t in final]
        assert len(pair_ids) == len(set(pair_ids))  # no pair pushed twice
        answered = sum(1 for t in final for a in t.annotations if not a.get("was_cancelled"))
        assert answered == 10 and client.status().annotations == answered  # every label once, none lost
        assert sum(1 for t in final if not t.annotations) == 5
