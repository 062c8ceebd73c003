"""A real Label Studio and a real selection server: a batch becomes tasks, labelers annotate through
Label Studio's API (as its web UI does), and their labels reach the server once each."""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from labeling_page import CHOICES, Page, conversation

from activedpo_client.labelstudio import Held, LabelStudioError, LabelStudioProject
from activedpo_client.messages import CandidateGroup
from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

SMALL = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "16"]
PATIENCE = 180.0  # seconds for what takes a few on an idle machine: `make test` beside other work is slower, not wrong


@contextmanager
def serving(tmp_path, world, prompts: int, project: str = ""):
    """(server, client): an embedded selection server on the tiny world whose pool holds three responses
    (three pairs) for each of the first ``prompts`` train prompts."""
    with (
        EmbeddedServer(tmp_path / "state", world.sft_dir, args=SMALL) as server,
        SelectorClient(Connection(server.target), project=project) as client,
    ):
        client.wait_ready()
        client.add_candidates(
            [(p, [" wave tide", " calm", " bright moss"]) for p in world.task.train_prompts()[:prompts]]
        )
        yield server, client


def answer(preference: str) -> list[dict]:
    """An annotation's result as the labeling page saves a pick (``Choices`` records the choice's alias)."""
    return [{"from_name": "preference", "to_name": "response_a", "type": "choices",
             "value": {"choices": [preference]}}]  # fmt: skip


def test_a_batch_round_trips_through_label_studio(tmp_path, tiny_world, label_studio):
    with serving(tmp_path, tiny_world, 6, project="ls-run") as (_, client):
        batch = client.select(4, audit=1)
        project = LabelStudioProject("activedpo round trip", label_studio.url, label_studio.token)
        tasks = project.push(batch, tag="ls-run-r1")
        assert len(set(tasks)) == 4
        assert project.push(batch, tag="ls-run-r1") == tasks  # a resumed round finds its tasks: no second import
        assert LabelStudioProject(str(project.id), label_studio.url, label_studio.token).id == project.id
        assert LabelStudioProject("activedpo round trip", label_studio.url, label_studio.token).id == project.id
        ls = project.client
        data = {int(t.id): t.data for t in ls.tasks.list(project=project.id, fields="all")}
        assert len(data) == 4 and [data[t]["pair_id"] for t in tasks] == [p.pair_id for p in batch.pairs]
        assert [data[t]["audit"] for t in tasks] == [p.audit for p in batch.pairs]  # hidden from labelers
        assert sum(p.audit for p in batch.pairs) == 1
        assert project.pull(tasks).done == 0

        # the labelers: task 0 by two people (A, and B by a second account), task 1 skipped,
        # task 2 answered A then changed to B, task 3 not yet
        second = ls.users.create(username="second-labeler", email="second@example.com", password="labeler-pw-2")
        ls.annotations.create(id=tasks[0], result=answer("A"))
        ls.annotations.create(id=tasks[0], result=answer("B"), completed_by=second.id)
        ls.annotations.create(id=tasks[1], result=[], was_cancelled=True)
        changed = ls.annotations.create(id=tasks[2], result=answer("A"))
        ls.annotations.update(id=changed.id, result=answer("B"))
        pulled = project.pull(tasks)
        assert (pulled.done, pulled.total, pulled.skipped) == (3, 4, 1)
        got = sorted((lab.pair_id, lab.preference) for lab in pulled.labels)
        want = sorted([(batch.pairs[0].pair_id, "A"), (batch.pairs[0].pair_id, "B"), (batch.pairs[2].pair_id, "B")])
        assert got == want
        assert len({lab.idempotency_key for lab in pulled.labels}) == 3
        on_first = [lab.annotator for lab in pulled.labels if lab.pair_id == batch.pairs[0].pair_id]
        assert len(set(on_first)) == 2  # two people, two labels, each under its own name

        results = client.submit_labels(pulled.labels)
        assert all(r.accepted and not r.replayed for r in results)
        again = client.submit_labels(project.pull(tasks).labels)  # pulled again: nothing new is written
        assert all(r.replayed for r in again) and client.status().annotations == 3
        assert sorted((x.pair_id, x.chosen) for x in client.export_labels()) == sorted(
            (b.pair_id, b.response_a if pref == "A" else b.response_b)
            for b, pref in ((batch.pairs[0], "A"), (batch.pairs[0], "B"), (batch.pairs[2], "B"))
        )


@pytest.fixture(scope="module")
def defects_server(tmp_path_factory, tiny_world):
    """One selection server (12 prompts, 36 pairs) shared by the issue-25 defect tests, each in its own project."""
    with serving(tmp_path_factory.mktemp("defects"), tiny_world, 12) as (_, client):
        yield client


def labeled_batch(client, label_studio, title: str, n: int):
    """(project, its task ids, the batch): ``n`` pairs selected and pushed to a new project ``title``."""
    batch = client.select(n, lease_seconds=3600)
    project = LabelStudioProject(title, label_studio.url, label_studio.token)
    return project, project.push(batch, tag=title), batch


def server_answers(client, batch, who: bool = False) -> list:
    """Sorted (pair index, preference[, annotator]) of the server's labels on ``batch``, ties included."""
    ids = [p.pair_id for p in batch.pairs]
    return sorted((ids.index(x.pair_id), x.preference, *((x.annotator,) if who else ()))
                  for x in client.export_labels(include_ties=True) if x.pair_id in ids)  # fmt: skip


# The four defects of issue 25, each through the calls Label Studio's page makes and the connector's pull and
# submit (the same calls before and after the fix, so each test fails on the code before it).


def test_defect_1_an_empty_save_is_no_answer_and_the_task_stays_open(defects_server, label_studio):
    project, tasks, _ = labeled_batch(defects_server, label_studio, "defect 1 empty", 2)
    ls = project.client
    ls.annotations.create(id=tasks[0], result=[])  # saved with no choice (the API takes it, as the page did)
    ls.annotations.create(id=tasks[1], result=answer("A"))
    pulled = project.pull(tasks)
    assert (pulled.done, len(pulled.labels)) == (1, 1)  # before: 2 done, 1 label: the empty task vanished
    assert ls.projects.get(id=project.id).enable_empty_annotation is False  # and the page refuses an empty submit


def test_defect_2_an_edit_after_the_batch_is_done_revises_the_servers_label(defects_server, label_studio):
    project, tasks, batch = labeled_batch(defects_server, label_studio, "defect 2 edit", 2)
    ls = project.client
    first = ls.annotations.create(id=tasks[0], result=answer("A"))
    ls.annotations.create(id=tasks[1], result=answer("B"))
    assert all(r.accepted for r in defects_server.submit_labels(project.pull(tasks).labels))
    ls.annotations.update(id=first.id, result=answer("B"))  # switched after "done", then Update
    results = defects_server.submit_labels(project.pull(tasks).labels)
    assert server_answers(defects_server, batch) == [(0, "B"), (1, "B")]  # before: pair 0 stayed A
    assert [r.replayed for r in results] == [False, True]


def test_defect_3_a_second_annotation_by_the_same_person_replaces_their_first(defects_server, label_studio):
    project, tasks, batch = labeled_batch(defects_server, label_studio, "defect 3 twice", 1)
    ls = project.client
    ls.annotations.create(id=tasks[0], result=answer("A"))
    ls.annotations.create(id=tasks[0], result=answer("B"))  # the "+" tab, the other choice
    assert all(r.accepted for r in defects_server.submit_labels(project.pull(tasks).labels))
    assert server_answers(defects_server, batch) == [(0, "B")]  # before: A and B, from one person


def test_defect_4_labels_name_people_by_email(defects_server, label_studio):
    project, tasks, batch = labeled_batch(defects_server, label_studio, "defect 4 emails", 1)
    ls = project.client
    other = ls.users.create(username="defect-four", email="defect-four@example.com", password="labeler-pw-4")
    ls.annotations.create(id=tasks[0], result=answer("A"))
    ls.annotations.create(id=tasks[0], result=answer("B"), completed_by=other.id)
    assert all(r.accepted for r in defects_server.submit_labels(project.pull(tasks).labels))
    want = [(0, "A", "admin@example.com"), (0, "B", "defect-four@example.com")]  # two people, two labels
    assert server_answers(defects_server, batch, who=True) == want  # before: label-studio:1 and label-studio:2


def test_label_studio_errors_are_one_line(label_studio, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioError, match="set --ls-url and --ls-api-key"):
        LabelStudioProject("x-project")
    with pytest.raises(LabelStudioError, match=r"Label Studio at .* failed"):
        LabelStudioProject("x-project", label_studio.url, "0" * 40)  # a wrong token
    with pytest.raises(LabelStudioError, match="at least 3 characters"):
        LabelStudioProject("ab", label_studio.url, label_studio.token)


def test_a_local_label_studio_starts_from_the_migrated_database_and_stays_offline(label_studio):
    from activedpo_client.lslocal import DATABASE, migrated_database

    started = label_studio.restart_args
    log = Path(started["log"]).read_text()
    template = migrated_database(started["binary"])  # built once per install (by `make install`)
    assert ("Initializing database" in log) == (template is None)  # a copy: no migration at start
    assert template is None or (template / DATABASE).stat().st_size > 100_000  # Label Studio's tables
    assert "pypi.org" not in log  # no version check at run time
    assert LabelStudioProject("offline check", label_studio.url, label_studio.token).id > 0  # the preset token works


def ls_round_args(world, run_dir, budget: int, project: str, label_studio) -> list[str]:
    """A small toy-world round labeled in ``project`` of the test's Label Studio."""
    args = ["round", "--world", world.root, "--run-dir", run_dir, "--budget", budget, "--prompts", 2 * budget,
            "--responses", 3, "--eval-prompts", 8, "--dpo-epochs", 1, "--proj-dim", 128, "--lora-r", 8,
            "--device", "cpu", "--annotator", "label-studio", "--ls-project", project, "--ls-url",
            label_studio.url, "--ls-api-key", label_studio.token]  # fmt: skip
    return [str(a) for a in args]


def test_a_round_labeled_in_label_studio_waits_then_resumes_without_duplicates(tiny_world, tmp_path, label_studio):
    from typer.testing import CliRunner

    from activedpo_client.cli import app

    run_dir = tmp_path / "run"
    args = ls_round_args(tiny_world, run_dir, 6, "activedpo round", label_studio)
    first = CliRunner().invoke(app, [str(a) for a in [*args, "--ls-wait", 1]])
    assert first.exit_code == 3, first.output
    assert "0 of 6 tasks done in Label Studio project" in " ".join(first.output.split())
    record = json.loads((run_dir / "rounds" / "001" / "label_studio.json").read_text())
    project = LabelStudioProject(str(record["project"]), label_studio.url, label_studio.token)
    ls = project.client
    made = []
    for n, task in enumerate(record["task_ids"]):  # the labelers: one skip, the rest A or B
        if n == 0:
            ls.annotations.create(id=task, result=[], was_cancelled=True)
        else:
            made.append(ls.annotations.create(id=task, result=answer("A" if n % 2 else "B")))
    second = CliRunner().invoke(app, [str(a) for a in [*args, "--ls-wait", 60]])
    assert second.exit_code == 0, second.output
    assert "round 1: 5 labels" in second.output
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(tasks) == 6  # the resumed round found its tasks: nothing imported twice
    labels = [json.loads(line) for line in (run_dir / "rounds" / "001" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 5 and len({x["idempotency_key"] for x in labels}) == 5
    ls.annotations.update(id=made[0].id, result=answer("B"))  # round 1 is over: someone changes their mind
    ls.annotations.delete(id=made[1].id)  # and someone takes an answer back
    third = CliRunner().invoke(app, [str(a) for a in [*args, "--rounds", 2, "--ls-wait", 1]])
    assert third.exit_code == 3, third.output  # round 2 waits for its own labels, after sending round 1's changes
    assert "round 2: 2 answers on earlier rounds' tasks changed in Label Studio since" in " ".join(third.output.split())


def test_sync_keeps_the_project_supplied_and_survives_kill_9(tiny_world, tmp_path, label_studio):
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from activedpo_client.cli import app

    with serving(tmp_path, tiny_world, 12) as (server, client):  # 36 pairs
        state = tmp_path / "sync.json"
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
        args = ["labelstudio", "sync", "--server", server.target, "--ls-project", "activedpo sync", "--budget", "5",
                "--state-file", str(state)]  # fmt: skip

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

        def two_open() -> list[int] | None:
            ids = [int(t.id) for t in tasks() if not t.annotations][:2]
            return ids if len(ids) == 2 else None

        open_ids = [int(t.id) for t in tasks() if not t.annotations]
        ls.annotations.create(id=open_ids[0], result=answer("A"))
        ls.annotations.create(id=open_ids[1], result=answer("B"))
        ls.annotations.create(id=open_ids[2], result=[], was_cancelled=True)
        assert "submitted 2 labels, pushed 3 tasks, 5 open" in once()
        assert client.status().annotations == 2

        # a loop killed with -9 again and again while people label: no task and no label twice
        cmd = [sys.executable, "-m", "activedpo_client.cli", *args, "--every", "0.2"]
        for round_ in range(4):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # two labels a round, never fewer: on a loaded machine a loop may be killed before it tops the
            # project up, and the next one does it
            for t in wait_until("2 open tasks", two_open, PATIENCE):
                ls.annotations.create(id=t, result=answer("A" if round_ % 2 else "B"))
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


def wait_until(what: str, check, timeout: float = PATIENCE, every: float = 0.2, log=None):
    """Poll ``check()`` until it returns a true value (returned) or ``timeout`` passes (the test fails,
    showing the end of ``log``)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(every)


def test_select_counts_each_persons_current_answer_once(gpt2_dir, tmp_path, label_studio):
    """Issue 25's four defects as people cause them in Label Studio: an empty save is no answer (the task stays
    open), an edit or a deletion after the batch is done revises the server's label, a second annotation by
    the same person replaces their first, and labels name people by email; ties and "both unacceptable" are
    recorded (never trained on) and agreement is reported."""
    from typer.testing import CliRunner

    from activedpo_client.cli import app

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": f"tell me about the {w}", "responses": [" good", " **bad**"]})
                            + "\n" for w in ("sea", "sky", "rain", "sun", "moon")))  # fmt: skip
    out = tmp_path / "batch.jsonl"
    args = ["select", "--model", gpt2_dir, "--candidates", pool, "--budget", 5, "--out", out, "--proj-dim", 64,
            "--lora-r", 4, "--lora-alpha", 8, "--device", "cpu", "--annotator", "label-studio", "--ls-project",
            "activedpo select", "--ls-url", label_studio.url, "--ls-api-key", label_studio.token]  # fmt: skip

    def invoke(*extra, code=0) -> str:
        result = CliRunner().invoke(app, [str(a) for a in [*args, *extra]])
        assert result.exit_code == code, result.output
        return " ".join(result.output.split())

    first = invoke(code=3)  # pushed; nobody has labeled yet
    assert "5 pairs selected by activedpo" in first and "waiting for labels: 0 of 5 tasks done" in first
    project = LabelStudioProject("activedpo select", label_studio.url, label_studio.token)
    ls = project.client
    settings = ls.projects.get(id=project.id)
    assert settings.enable_empty_annotation is False and settings.show_skip_button and settings.show_instruction
    assert settings.maximum_annotations == 1 and "Both unacceptable" in settings.expert_instruction
    tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.data["rank"])
    selected = [json.loads(line) for line in out.read_text().splitlines()]
    assert [t.data["pair_id"] for t in tasks] == [r["pair_id"] for r in selected]
    # people read the prompt as written; the model's chat-template rendering stays in the (hidden) prompt field
    said = re.fullmatch(r"<\|user\|> (tell me about the \w+) <\|assistant\|>", selected[0]["prompt"]).group(1)
    assert tasks[0].data["messages"] == [{"role": "user", "content": said}]
    assert tasks[0].data["prompt"] == selected[0]["prompt"]
    assert "<strong>bad</strong>" in tasks[0].data["response_a_html"] + tasks[0].data["response_b_html"]
    assert "waiting for labels: 0 of 5 tasks done" in invoke(code=3)  # run again: the same tasks, none imported
    assert len(list(ls.tasks.list(project=project.id))) == 5

    second = ls.users.create(username="select-labeler", email="select-labeler@example.com", password="labeler-pw-3")
    t = [int(x.id) for x in tasks]
    empty = ls.annotations.create(id=t[0], result=[])  # defect 1: saved with no choice
    waiting = invoke(code=3)
    assert "0 of 5 tasks done; 1 saved with no choice (not answers: still open)" in waiting
    ls.annotations.update(id=empty.id, result=answer("A"))  # then answered
    ls.annotations.create(id=t[1], result=[], was_cancelled=True)  # one person skips, another says both bad
    ls.annotations.create(id=t[1], result=answer("BOTH_BAD"), completed_by=second.id)
    ls.annotations.create(id=t[2], result=answer("A"))
    ls.annotations.create(id=t[2], result=answer("B"))  # defect 3: the same person again, the other way
    ls.annotations.create(id=t[3], result=answer("TIE"))
    ls.annotations.create(id=t[3], result=answer("A"), completed_by=second.id)  # two people disagree
    ls.annotations.create(id=t[4], result=answer("A"))
    dropped = ls.annotations.create(id=t[4], result=answer("A"), completed_by=second.id)  # two people agree
    done = invoke("--ls-wait", 30, "--ls-webhook-port", 0)
    assert ("7 labels from 5 tasks (A 4, B 1, about the same 1, both unacceptable 1; 1 skipped)" in done
            and "7 new on the server, 0 revised, 0 it already had" in done)  # fmt: skip
    assert "agreement: 50% of answers agree on the 2 pairs answered by several people" in done
    # scored as they come back, with the margins of the policy that selected them (π_ref here: ½ each)
    answered = {0: 1, 1: 0, 2: 1, 3: 1, 4: 2}  # A/B answers per task now (task 1: both unacceptable; 3: a tie beside)
    n = answered[next(i for i, r in enumerate(selected) if r["audit"])]
    audited = f"audit accuracy 0.50 ± 0.00 on {n} audit answers, " if n else ""
    assert f"{audited}0.50 on the strategy's {5 - n} picks (the policy that selected them, " in done

    def labels_file() -> dict:
        rows = [json.loads(line) for line in (tmp_path / "batch.labels.jsonl").read_text().splitlines()]
        return {(selected.index(next(r for r in selected if r["pair_id"] == x["pair_id"])), x["annotator"]):
                (x["preference"], x.get("chosen")) for x in rows}  # fmt: skip

    me, other = "admin@example.com", "select-labeler@example.com"  # defect 4: people by email, not id
    good, bad = " good", " **bad**"
    ab = {n: (r["response_a"], r["response_b"]) for n, r in enumerate(selected)}
    assert labels_file() == {(0, me): ("A", ab[0][0]), (1, other): ("BOTH_BAD", None), (2, me): ("B", ab[2][1]),
                             (3, me): ("TIE", None), (3, other): ("A", ab[3][0]), (4, me): ("A", ab[4][0]),
                             (4, other): ("A", ab[4][0])}  # fmt: skip
    assert {good, bad} == set(ab[0])

    ls.annotations.update(id=empty.id, result=answer("B"))  # defect 2: an edit after the batch is done
    ls.annotations.delete(id=dropped.id)  # and a deletion
    again = invoke()
    assert "6 labels from 5 tasks" in again and "0 new on the server, 1 revised, 5 it already had" in again
    assert "1 withdrawn (deleted or skipped since)" in again
    assert labels_file()[(0, me)] == ("B", ab[0][1]) and (4, other) not in labels_file()
    assert len(list(ls.tasks.list(project=project.id))) == 5
    assert not list(ls.webhooks.list(project=str(project.id)))  # the receiver removed its webhook
    small = ["--proj-dim", "64", "--lora-r", "4", "--lora-alpha", "8"]
    with EmbeddedServer(tmp_path / "batch.server", args=small) as s, SelectorClient(Connection(s.target)) as client:
        status = client.status()
        assert (status.annotations, status.ties, status.both_bad, status.labeled) == (6, 1, 1, 4)
        trained = {(x.pair_id, x.annotator): x.chosen for x in client.export_labels()}  # A/B only, each once
        assert trained == {(selected[0]["pair_id"], me): ab[0][1], (selected[2]["pair_id"], me): ab[2][1],
                           (selected[3]["pair_id"], other): ab[3][0], (selected[4]["pair_id"], me): ab[4][0]}
        exported = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "dpo.jsonl"), "--server", s.target])
        said = " ".join(exported.output.split())
        assert "4 labeled pairs written to" in said and "(1 ties and 1 both unacceptable recorded, not written)" in said
        assert "agreement: 0% of answers agree on the 1 pair answered by several people" in said  # TIE vs A on t3


def test_a_round_killed_between_import_and_pull_resumes_without_a_second_import(tiny_world, tmp_path, label_studio):
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from activedpo_client.cli import app

    run_dir = tmp_path / "run"
    args = ls_round_args(tiny_world, run_dir, 5, "activedpo killed round", label_studio)
    project = LabelStudioProject("activedpo killed round", label_studio.url, label_studio.token)
    ls = project.client
    proc = subprocess.Popen([sys.executable, "-m", "activedpo_client.cli", *args, "--ls-wait", "600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until("the round's tasks in Label Studio", lambda: len(list(ls.tasks.list(project=project.id))) == 5,
                   timeout=300)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGKILL)  # the round is polling its tasks: killed between import and pull
        proc.wait()
    record = run_dir / "rounds" / "001" / "label_studio.json"
    # the window before the task ids were recorded is covered too: the tasks are found by their batch tag
    record.unlink(missing_ok=True)
    tasks = list(ls.tasks.list(project=project.id, fields="all"))
    for n, task in enumerate(tasks):
        ls.annotations.create(id=task.id, result=answer("A" if n % 2 else "B"))
    resumed = CliRunner().invoke(app, [*args, "--ls-wait", "60"])
    assert resumed.exit_code == 0, resumed.output
    assert "round 1: 5 labels" in resumed.output
    assert len(list(ls.tasks.list(project=project.id))) == 5  # no second import
    assert sorted(json.loads(record.read_text())["task_ids"]) == sorted(int(t.id) for t in tasks)
    labels = [json.loads(line) for line in (run_dir / "rounds" / "001" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 5 and len({x["idempotency_key"] for x in labels}) == 5
    assert sorted(x["pair_id"] for x in labels) == sorted(t.data["pair_id"] for t in tasks)


def test_sync_rides_out_label_studio_and_server_restarts(tiny_world, tmp_path, label_studio):
    """Labels made just before and after Label Studio restarts, and while the selection server is down, all
    reach the server once both are back, each once. Each outage starts from a settled project (every label
    in, 4 tasks open), and every wait is on what the test can see (the server's count, the open tasks, the
    loop's log, read while the loop runs), bounded by PATIENCE."""
    import os
    import signal
    import subprocess
    import sys

    prompts = tiny_world.task.train_prompts()[:12]
    state_dir, state = tmp_path / "state", tmp_path / "sync.json"
    server = EmbeddedServer(state_dir, tiny_world.sft_dir, args=SMALL).start(timeout=PATIENCE)
    port = server.port
    project = LabelStudioProject("activedpo restarts", label_studio.url, label_studio.token)
    ls = project.client
    log = tmp_path / "sync.log"
    env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    cmd = [sys.executable, "-m", "activedpo_client.cli", "labelstudio", "sync", "--server", server.target,
           "--ls-project", "activedpo restarts", "--budget", "4", "--every", "0.3", "--max-backoff", "2",
           "--state-file", str(state)]  # fmt: skip
    try:
        with SelectorClient(Connection(server.target)) as client:
            client.wait_ready()
            client.add_candidates([(p, [" wave tide", " calm", " bright moss"]) for p in prompts])
        with open(log, "w") as out:
            loop = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
        try:

            def open_tasks():
                return [t for t in ls.tasks.list(project=project.id, fields="all") if not t.annotations]

            def annotations():
                with SelectorClient(Connection(f"127.0.0.1:{port}")) as c:
                    return c.status().annotations

            def label(n: int) -> None:  # exactly n (never fewer because the loop has not topped up yet)
                todo = open_tasks()[:n]
                assert len(todo) == n, f"{len(todo)} open tasks to label, not {n}"
                for t in todo:
                    ls.annotations.create(id=t.id, result=answer("A"))

            def settled(labels: int, what: str) -> None:
                """The loop has every label on the server and 4 tasks open again."""
                wait_until(what, lambda: annotations() >= labels and len(open_tasks()) == 4, PATIENCE, log=log)
                assert annotations() == labels  # none twice

            # the log is written line by line: readable while the loop runs, not only once it exits
            wait_until("the first pass in the loop's log", lambda: "pushed 4 tasks, 4 open" in log.read_text(),
                       PATIENCE, log=log)  # fmt: skip
            assert loop.poll() is None
            settled(0, "4 open tasks")
            label(2)
            settled(2, "2 labels on the server")

            label(1)  # pulled before or after the restart, as it happens
            label_studio.stop()  # down until the loop has seen it fail (its client's own retries ride out a blip)
            wait_until("the loop failing to reach Label Studio", lambda: "error (retrying" in log.read_text(),
                       PATIENCE, log=log)  # fmt: skip
            label_studio.restart()  # the same port and data
            label(1)
            settled(4, "4 labels after Label Studio's restart")

            server.stop()
            label(2)  # labeled while the selection server is down: the loop sees them and cannot submit them
            wait_until("the loop failing to submit", lambda: "cannot reach the selection server" in log.read_text(),
                       PATIENCE, log=log)  # fmt: skip
            server = EmbeddedServer(state_dir, args=SMALL, port=port).start(timeout=PATIENCE)
            settled(6, "6 labels after the server's restart")
            assert loop.poll() is None
        finally:
            loop.send_signal(signal.SIGKILL)
            loop.wait()
        final = list(ls.tasks.list(project=project.id, fields="all"))
        pair_ids = [t.data["pair_id"] for t in final]
        assert len(pair_ids) == len(set(pair_ids))  # no pair pushed twice
        answered = sum(len(t.annotations) for t in final)
        assert answered == 6 and annotations() == 6  # every label once, none lost
    finally:
        server.stop()


def test_a_failed_sync_pass_is_retried_soon_on_a_new_connection(tiny_world, tmp_path, label_studio):
    """A pass the server fails is retried 1 s later (then 2, 4, …), however long ``every`` is (600 s here, as
    with webhooks), and on a client from ``reconnect``: the old channel may sit in gRPC's reconnect backoff
    (up to two minutes) long after the server is back, so the label waiting in Label Studio would wait too."""
    import threading

    from activedpo_client.lssync import SyncState, sync_loop, sync_once
    from activedpo_client.remote import ClientError

    class Unreachable:  # a channel in gRPC's reconnect backoff: every call fails at once
        def __getattr__(self, name):
            def call(*args, **kw):
                raise ClientError("cannot reach the selection server at 127.0.0.1:9 (in reconnect backoff)")

            return call

    class Stop(Exception):
        pass

    with serving(tmp_path, tiny_world, 6) as (server, client):
        project = LabelStudioProject("activedpo retry", label_studio.url, label_studio.token)
        ls, path = project.client, tmp_path / "sync.json"
        assert sync_once(project, client, SyncState.load(path), path, budget=3, say=lambda m: None)["pushed"] == 3
        task = next(iter(ls.tasks.list(project=project.id)))
        ls.annotations.create(id=task.id, result=answer("A"))  # made while the server is "unreachable"
        lines, wake, stop, fresh = [], threading.Event(), threading.Event(), []

        def say(line: str) -> None:
            if stop.is_set():
                raise Stop
            lines.append(line)

        def reconnect():
            fresh.append(SelectorClient(Connection(server.target)))
            return fresh[-1]

        def run():
            with suppress(Stop):
                sync_loop(project, Unreachable(), path, 3, every=600, say=say, wake=wake, reconnect=reconnect)

        loop = threading.Thread(target=run, daemon=True)
        loop.start()
        try:  # 600 s or more without the prompt retry
            wait_until("the retried pass", lambda: len(lines) >= 2, PATIENCE)
        finally:
            stop.set()
            wake.set()
            loop.join(timeout=60)
        assert not loop.is_alive()
        assert lines[0].startswith("error (retrying in 1 s): cannot reach the selection server")
        assert lines[1] == "submitted 1 labels, pushed 1 tasks, 3 open" and len(fresh) == 1
        assert client.status().annotations == 1


def test_a_webhook_wakes_the_sync_loop(tiny_world, tmp_path, label_studio):
    import os
    import signal
    import subprocess
    import sys
    import time

    with serving(tmp_path, tiny_world, 6) as (server, client):
        project = LabelStudioProject("activedpo webhooks", label_studio.url, label_studio.token)
        ls = project.client
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
        cmd = [sys.executable, "-m", "activedpo_client.cli", "labelstudio", "sync", "--server", server.target,
               "--ls-project", "activedpo webhooks", "--budget", "3", "--every", "600", "--ls-webhook-port", "0",
               "--state-file", str(tmp_path / "sync.json")]  # fmt: skip
        log = tmp_path / "sync.log"
        with open(log, "w") as out:
            loop = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
        try:
            wait_until("the first pass", lambda: "pushed 3 tasks" in log.read_text(), PATIENCE, log=log)
            hooks = list(ls.webhooks.list(project=str(project.id)))
            assert len(hooks) == 1 and "ANNOTATION_CREATED" in hooks[0].actions
            task = next(iter(ls.tasks.list(project=project.id)))
            t0 = time.monotonic()
            ls.annotations.create(id=task.id, result=answer("B"))
            # the next poll is 600 s away: only the webhook can bring the label in this soon
            wait_until("the label on the server", lambda: client.status().annotations == 1, PATIENCE, log=log)
            assert time.monotonic() - t0 < PATIENCE
        finally:
            # `kill`, as a service manager stops it (a shell's background jobs ignore SIGINT, so Ctrl-C's
            # signal would not reach a loop started from one); the receiver removes its webhook (10 s bound)
            loop.send_signal(signal.SIGTERM)
            loop.wait(timeout=60)
        assert "stopped" in log.read_text()
        assert not list(ls.webhooks.list(project=str(project.id)))


def test_a_sync_pass_cut_off_after_selecting_asks_the_same_question_again(tiny_world, tmp_path, label_studio,
                                                                          monkeypatch):  # fmt: skip
    """The server answered SelectBatch, then Label Studio failed the import; meanwhile people labeled more.
    The retry must replay that request (same id, same size), not ask a different question under its id."""
    import httpx

    from activedpo_client.lssync import SyncState, sync_once

    with serving(tmp_path, tiny_world, 6) as (server, client):
        project = LabelStudioProject("activedpo cut off", label_studio.url, label_studio.token)
        ls, path = project.client, tmp_path / "sync.json"
        state = SyncState.load(path)
        assert sync_once(project, client, state, path, budget=3, say=lambda m: None)["pushed"] == 3

        def label_one():
            task = next(t for t in ls.tasks.list(project=project.id, fields="all") if not t.annotations)
            ls.annotations.create(id=task.id, result=answer("A"))

        label_one()
        real = ls.projects.import_tasks

        def refused(*args, **kw):
            raise httpx.ConnectError("connection refused")

        monkeypatch.setattr(ls.projects, "import_tasks", refused)
        with pytest.raises(LabelStudioError, match="importing tasks failed"):
            sync_once(project, client, state, path, budget=3, say=lambda m: None)
        assert json.loads(path.read_text())["pending"] == 1  # sync-1 was asked for one pair
        monkeypatch.setattr(ls.projects, "import_tasks", real)
        label_one()  # two open now: a fresh question would ask for two
        did = sync_once(project, SelectorClient(Connection(server.target)), SyncState.load(path), path, budget=3,
                        say=lambda m: None)  # fmt: skip
        assert did == {"submitted": 1, "withdrawn": 0, "pushed": 1, "open": 2, "empty": 0}
        state = SyncState.load(path)
        assert (state.next_request, state.pending) == (2, 0)
        assert sync_once(project, client, state, path, budget=3, say=lambda m: None)["pushed"] == 1  # sync-2
        final = list(ls.tasks.list(project=project.id, fields="all"))
        assert len(final) == 5 and len({t.data["pair_id"] for t in final}) == 5
        assert client.status().annotations == 2


def test_a_person_labels_in_the_browser_and_the_server_holds_each_current_answer_once(
    tiny_world, tmp_path, label_studio, browser
):
    t0 = time.perf_counter()
    messages = json.dumps(conversation())
    responses = [" calm **wave** tide", " bright moss\n\n```python\nxs[::-1]\n```"]
    groups = [CandidateGroup(p, responses, messages=messages) for p in tiny_world.task.train_prompts()[:5]]
    with (
        EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, args=SMALL) as server,
        SelectorClient(Connection(server.target)) as client,
    ):
        client.wait_ready()
        client.add_candidates(groups)
        batch = client.select(5)
        assert {p.conversation()[0]["role"] for p in batch.pairs} == {"system"}  # the server kept the messages
        project = LabelStudioProject("activedpo in the browser", label_studio.url, label_studio.token)
        tasks = project.push(batch, tag="browser-r1")
        held: dict[str, Held] = {}

        def sync() -> list:
            """One pass as ``labelstudio sync`` does it: send what changed, remember what the server holds."""
            pulled = project.pull(tasks)
            send = project.changes(tasks, pulled, held)
            results = client.submit_labels(send) if send else []
            assert all(r.accepted for r in results), results
            for lab in send:
                held[lab.idempotency_key] = Held(lab.pair_id, lab.annotator, lab.preference, lab.revision)
            return results

        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        views = project.client.views.list(project=project.id)  # the ids that invite bias are hidden
        hidden = views[0].data["hiddenColumns"] if isinstance(views[0].data, dict) else views[0].data.hiddenColumns
        assert {"tasks:data.pair_id", "tasks:data.rank", "tasks:data.activedpo_batch",
                "tasks:data.audit"} <= set(hidden["explore"])  # fmt: skip
        page = Page(browser, label_studio.url, project.id)
        page.sign_in("admin@example.com", "activedpo-local")
        page.open(tasks[0])
        said = page.text(".adpo-prompt")
        assert all(m["content"] in said for m in conversation())  # every turn, the system message included
        assert "<|" not in said and "system" in said.lower()
        assert [e.text for e in page.css(".adpo-resp strong")] == ["wave"]  # Markdown rendered, not raw
        assert "xs[::-1]" in page.text(".adpo-resp pre code") and "**" not in page.text(".adpo-resp")
        assert [e.text for e in page.css(".lsf-choice .lsf-hint")] == [f"[{k}]" for _, _, k in CHOICES]
        assert "Ctrl+Enter submits" in page.text(".lsf-main-view, body")
        page.pick("A is better")  # the mouse
        page.submit()
        page.open(tasks[1])
        page.key("2", "B is better")  # hotkeys
        page.submit(with_keys=True)
        page.open(tasks[2])
        assert not page.css(Page.SUBMIT)[0].is_enabled()  # an empty answer cannot be submitted
        page.ctrl(Keys.ENTER)  # Ctrl+Enter with nothing picked: nothing is saved
        time.sleep(1.0)
        assert not project.client.tasks.get(id=tasks[2]).annotations
        page.key("3", "About the same")
        page.submit()
        page.open(tasks[3])
        page.key("4", "Both unacceptable")
        page.submit()
        shown = page.label_all_tasks()  # the instructions come first; the stream serves the one task left
        assert "Which response is better?" in shown and "Both unacceptable" in shown
        assert page.task_id() == tasks[4]
        page.click(By.CSS_SELECTOR, Page.SKIP)
        page.wait().until(lambda d: "No More Tasks Left" in page.text("body"))

        assert len(sync()) == 4  # the skip is no label
        me = "admin@example.com"
        ids = [p.pair_id for p in batch.pairs]

        def answers() -> dict:
            return {(ids.index(x.pair_id), x.annotator): x.preference for x in client.export_labels(include_ties=True)}

        assert answers() == {(0, me): "A", (1, me): "B", (2, me): "TIE", (3, me): "BOTH_BAD"}
        status = client.status()
        assert (status.labeled, status.ties, status.both_bad, status.annotations) == (2, 1, 1, 4)

        page.open(tasks[0])  # an edit after the batch is done
        page.pick("B is better")
        page.update()
        page.open(tasks[1])
        second = page.another_annotation("1", "A is better")  # the same person, the other way
        results = sync()
        assert sorted(r.revised for r in results) == [True, True]
        assert answers() == {(0, me): "B", (1, me): "A", (2, me): "TIE", (3, me): "BOTH_BAD"}
        page.delete_annotation(second)  # their first annotation is their answer again
        page.wait().until(lambda d: len(project.client.tasks.get(id=tasks[1]).annotations) == 1)
        assert [r.revised for r in sync()] == [True]
        assert answers() == {(0, me): "B", (1, me): "B", (2, me): "TIE", (3, me): "BOTH_BAD"}
        trained = [(ids.index(x.pair_id), x.chosen) for x in client.export_labels()]
        assert sorted(trained) == [(0, batch.pairs[0].response_b), (1, batch.pairs[1].response_b)]
        assert sync() == [] and client.status().annotations == 4  # nothing changed: nothing sent
    print(f"\nbrowser test: {time.perf_counter() - t0:.1f} s")
