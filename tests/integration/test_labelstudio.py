"""A real Label Studio and a real selection server: a batch becomes tasks, labelers annotate through
Label Studio's API (as its web UI does), and their labels reach the server once each."""

from __future__ import annotations

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
