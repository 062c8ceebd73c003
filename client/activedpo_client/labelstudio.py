"""A live Label Studio project: selected pairs become tasks, people's annotations come back as labels.

Through the official ``label-studio-sdk`` (the ``labelstudio`` extra). A batch's tasks carry what
people read (the conversation as messages, both responses as rendered Markdown), the texts the
model sees, and the pair id and a batch tag, hidden from labelers; :meth:`LabelStudioProject.push`
first looks for tasks with that tag, so pushing a batch again (a resumed round, a retried call)
never imports it twice. A project created here refuses empty submits, shows its instructions
before labeling, offers skip, and hides the ids from the Data Manager.

:meth:`LabelStudioProject.pull` reads each person's *current* answer on each task: the latest state
of their annotations (an edit, or a second annotation by the same person, replaces the first), as
A, B, TIE ("about the same") or BOTH_BAD ("both unacceptable"); a skip or an empty save is no
answer and takes back one given before. A label's idempotency key names (task, person) and its
revision is the annotation's last update, so submitting again writes nothing new, and an edit
after the batch is done revises the server's label. People are named by their email.

Polling alone is correct; a :class:`WebhookReceiver` (``--ls-webhook-port``) only wakes the poller
early when Label Studio reports an annotation, so labels are picked up in about a second instead of
at the next poll.

Why one module of this length: pushing, pulling and the webhook share the project's task layout and answer
semantics; the sync loop is :mod:`activedpo_client.lssync`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.labelfiles import LABEL_CONFIG, current_answers, instructions_html, task_data
from activedpo_client.messages import Batch, Label
from activedpo_client.remote import ClientError

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"  # the SDK's own names
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")  # what wakes the poller


class LabelStudioError(ClientError):
    """Label Studio cannot be used as asked; the message names the cause and what to do."""


# Task data people need not see (ids and ranks that invite bias, the model's texts: the page shows the
# conversation and the rendered responses instead): hidden from the Data Manager's table.
HIDDEN_COLUMNS = ("pair_id", "rank", "activedpo_batch", "audit", "prompt", "response_a", "response_b")


@dataclass(frozen=True)
class ProjectSettings:
    """How a Label Studio project created for activedpo is set up (``--ls-instructions``, ``--ls-overlap``)."""

    instructions: Path | str | None = None  # a Markdown or HTML file shown before labeling; None: the default
    overlap: int = 1  # people asked to answer each pair (Label Studio's maximum_annotations)


@dataclass(frozen=True)
class Pulled:
    """Where a batch stands in Label Studio: each person's current answer on each task."""

    labels: list[Label]  # one per current answer (A, B, TIE, BOTH_BAD), keyed by (task, person)
    done: int  # tasks with at least one finished answer (given or skipped)
    total: int
    skipped: int  # current answers that are skips: no label
    withdrawn: list[Label] = ()  # (task, person) whose latest state is a skip or an empty save: no answer now
    empty: int = 0  # current answers saved empty (no choice): not answers, the task is not done by them
    pending: tuple[int, ...] = ()  # task ids nobody has finished

    def counts(self) -> dict[str, int]:
        prefs = [x.preference for x in self.labels]
        return {k: prefs.count(k) for k in ("A", "B", "TIE", "BOTH_BAD")}


class LabelStudioProject:
    """One Label Studio project, found by id or title (created with activedpo's labeling page on first use)."""

    def __init__(self, project: str, url: str | None = None, api_key: str | None = None,
                 settings: ProjectSettings | None = None):  # fmt: skip
        try:
            from label_studio_sdk import LabelStudio
        except ImportError:
            raise LabelStudioError('Label Studio needs its SDK: pip install "activedpo[labelstudio]"') from None
        self.url = (url or os.environ.get(URL_ENV) or "").rstrip("/")
        key = api_key or os.environ.get(KEY_ENV)
        if not self.url or not key:
            raise LabelStudioError(f"set --ls-url and --ls-api-key (or {URL_ENV} and {KEY_ENV})")
        self.client = LabelStudio(base_url=self.url, api_key=key)
        self.settings = settings or ProjectSettings()
        if self.settings.overlap < 1:
            raise LabelStudioError(f"--ls-overlap must be at least 1, got {self.settings.overlap}")
        try:
            self._instructions = instructions_html(self.settings.instructions)
        except ValueError as e:
            raise LabelStudioError(str(e)) from None
        self._people: dict[str, str] = {}
        self.id = self._project(project)

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # the SDK raises httpx and its own ApiError: one line either way
            detail = getattr(e, "body", None) or e
            raise LabelStudioError(f"Label Studio at {self.url}: {what} failed: {str(detail)[:300]}") from None

    def _project(self, project: str) -> int:
        found = None
        if project.isdigit():
            found = self._call(f"project {project}", self.client.projects.get, id=int(project))
        else:
            found = next((p for p in self._call("listing projects", lambda: list(self.client.projects.list(
                title=project))) if p.title == project), None)  # fmt: skip
        if found is not None:
            # an empty submit is never an answer; the rest of an existing project is its owner's
            if getattr(found, "enable_empty_annotation", True):
                self._call(f"updating project {found.id}", self.client.projects.update, id=int(found.id),
                           enable_empty_annotation=False)  # fmt: skip
            return int(found.id)
        if len(project) < 3:
            raise LabelStudioError(f"a Label Studio project title needs at least 3 characters, got {project!r}")
        created = self._call(f"creating project {project!r}", self.client.projects.create, title=project,
                             label_config=LABEL_CONFIG, enable_empty_annotation=False, show_skip_button=True,
                             expert_instruction=self._instructions, show_instruction=True,
                             maximum_annotations=self.settings.overlap)  # fmt: skip
        return int(created.id)

    def _hide_columns(self) -> None:
        """Every Data Manager tab of the project without :data:`HIDDEN_COLUMNS` (a tab people made keeps
        its other choices). Before anyone opens the Data Manager there is no tab: the default one is
        made here, hiding what Label Studio hides by default too (``hiddenColumns`` replaces its defaults)."""
        ours = [f"tasks:data.{c}" for c in HIDDEN_COLUMNS]
        views = self._call("listing Data Manager tabs", lambda: list(self.client.views.list(project=self.id)))
        if not views:
            hidden = {m: list(dict.fromkeys([*self._default_hidden(m), *ours])) for m in ("explore", "labeling")}
            data = {"title": "Default", "type": "list", "target": "tasks", "hiddenColumns": hidden}
            self._call("hiding the Data Manager's id columns", self.client.views.create, project=self.id, data=data)
        for v in views:
            data = dict(v.data or {})
            hidden = dict(data.get("hiddenColumns") or {})
            if all(c in (hidden.get(m) or []) for m in ("explore", "labeling") for c in ours):
                continue
            data["hiddenColumns"] = {**hidden, **{m: list(dict.fromkeys([*(hidden.get(m) or []), *ours]))
                                                  for m in ("explore", "labeling")}}  # fmt: skip
            self._call("hiding the Data Manager's id columns", self.client.views.update, id=str(v.id),
                       project=self.id, data=data)  # fmt: skip

    def _default_hidden(self, mode: str) -> list[str]:
        """The columns Label Studio hides by default in ``mode`` (its ``/api/dm/columns``); none if unreadable."""
        try:  # the SDK has no call for this endpoint: its own authenticated HTTP client reads it
            r = self.client._client_wrapper.httpx_client.request("api/dm/columns/", method="GET",
                                                                 params={"project": self.id})  # fmt: skip
            columns = r.json()["columns"]
        except Exception:  # an older or newer server: only our columns are hidden
            return []
        return ["tasks:" + ("data." if c.get("parent") == "data" else "") + c["id"] for c in columns
                if (c.get("visibility_defaults") or {}).get(mode) is False]  # fmt: skip

    def person(self, user) -> str:
        """How a label names the person behind Label Studio user ``user`` (an id): their email, else their
        username, else ``label-studio:user-<id>``."""
        key = str(user)
        if key not in self._people:
            for u in self._call("listing users", lambda: list(self.client.users.list())):
                self._people[str(u.id)] = getattr(u, "email", "") or getattr(u, "username", "") or ""
            self._people.setdefault(key, "")  # not listed (a deleted account): asked once, not on every task
        return self._people[key] or f"label-studio:user-{key}"

    def register_webhook(self, url: str) -> int:
        """The id of this project's webhook to ``url`` for annotation events (created unless one exists)."""
        for hook in self._call("listing webhooks", lambda: list(self.client.webhooks.list(project=str(self.id)))):
            if hook.url == url and getattr(hook, "project", self.id) in (self.id, None):
                return int(hook.id)
        try:
            hook = self.client.webhooks.create(url=url, project=self.id, actions=list(WEBHOOK_ACTIONS),
                                               send_payload=False, is_active=True)  # fmt: skip
        except Exception as e:
            detail = str(getattr(e, "body", None) or e)[:300]
            hint = (" (Label Studio refuses local and private addresses unless it runs with "
                    "SSRF_PROTECTION_ENABLED=false)") if "url" in detail.lower() else ""  # fmt: skip
            raise LabelStudioError(f"Label Studio at {self.url}: creating a webhook to {url} failed: "
                                   f"{detail}{hint}") from None  # fmt: skip
        return int(hook.id)

    def _tasks(self) -> list:
        return self._call("listing tasks", lambda: list(self.client.tasks.list(project=self.id, fields="all")))

    def push(self, batch: Batch, tag: str) -> list[int]:
        """Task ids of ``batch`` in the project, importing its pairs unless tasks tagged ``tag`` exist."""
        have = {t.data.get("pair_id"): int(t.id) for t in self._tasks() if (t.data or {}).get("activedpo_batch") == tag}
        missing = [p for p in batch.pairs if p.pair_id not in have]
        if missing:
            rows = [task_data(p, tag) for p in missing]
            res = self._call("importing tasks", self.client.projects.import_tasks, id=self.id, request=rows,
                             return_task_ids=True)  # fmt: skip
            have.update({p.pair_id: int(t) for p, t in zip(missing, res.task_ids, strict=True)})
            self._hide_columns()
        return [have[p.pair_id] for p in batch.pairs]

    def pull(self, task_ids: Sequence[int], listed: list | None = None) -> Pulled:
        """Each person's current answer on the tasks (see the module's docstring); ``listed``: the project's
        tasks when the caller has just listed them."""
        wanted = set(int(t) for t in task_ids)
        labels, withdrawn, done, skipped, empty, pending = [], [], 0, 0, 0, []
        for t in self._tasks() if listed is None else listed:
            if int(t.id) not in wanted:
                continue
            pair_id = (t.data or {}).get("pair_id", "")
            answers = current_answers([a if isinstance(a, dict) else a.dict() for a in t.annotations or []])
            if any(x.done for x in answers):
                done += 1
            else:
                pending.append(int(t.id))
            for x in answers:
                label = Label(pair_id, x.state if x.answered else "", self.person(x.person), x.key(self.id, t.id),
                              x.revision, withdrawn=not x.answered)  # fmt: skip
                if x.answered:
                    labels.append(label)
                elif x.state in ("skip", "empty"):
                    withdrawn.append(label)
                    skipped += x.state == "skip"
                    empty += x.state == "empty"
                # "BOTH" (two choices in one annotation) cannot come from the page's single-choice question
        return Pulled(labels, done, len(wanted), skipped, withdrawn, empty, tuple(pending))

    def held(self, client) -> dict[str, Held]:
        """The answers from this project the selection server holds, by idempotency key (one export)."""
        prefix = f"ls-{self.id}-"
        return {x.idempotency_key: Held(x.pair_id, x.annotator, x.preference, x.revision)
                for x in client.export_labels(include_ties=True) if x.idempotency_key.startswith(prefix)}  # fmt: skip

    def changes(self, task_ids: Sequence[int], pulled: Pulled, held: dict[str, Held]) -> list[Label]:
        """What to send the selection server so that it holds each person's current answer on ``task_ids``,
        given what it ``held`` (idempotency key → :class:`Held`): answers it lacks, answers whose content
        changed (an edit, a second annotation, or the deletion of a newer one), and withdrawals of answers
        skipped, emptied or deleted since. A change's revision is above the held one, always on Label
        Studio's clock (an annotation's ``updated_at``, or the held revision + 1), so a later edit is later."""
        from dataclasses import replace

        out, now = [], set()
        for lab in pulled.labels:
            now.add(lab.idempotency_key)
            h = held.get(lab.idempotency_key)
            if h is None or (h.preference, h.annotator) != (lab.preference, lab.annotator):
                out.append(lab if h is None else replace(lab, revision=max(lab.revision, h.revision + 1)))
        for lab in pulled.withdrawn:
            now.add(lab.idempotency_key)
            h = held.get(lab.idempotency_key)
            if h is not None and h.preference:
                out.append(replace(lab, revision=max(lab.revision, h.revision + 1)))
        prefixes = tuple(f"ls-{self.id}-{t}-u" for t in task_ids)
        out += [Label(h.pair_id, "", h.annotator, key, h.revision + 1, withdrawn=True) for key, h in held.items()
                if h.preference and key.startswith(prefixes) and key not in now]  # fmt: skip
        return out


@dataclass(frozen=True)
class Held:
    """An answer the selection server holds under an idempotency key (``preference`` "": withdrawn)."""

    pair_id: str
    annotator: str
    preference: str
    revision: int


WEBHOOK_SETTLE = 1.0  # seconds between a webhook and the look it causes


def settle_after_webhook(wake) -> None:
    """After a webhook, wait a moment before looking: Label Studio may post it before the annotation is
    visible to a listing, and a burst of webhooks (a person labeling fast) becomes one look."""
    import time

    time.sleep(WEBHOOK_SETTLE)
    wake.clear()


def wait_for_labels(project: LabelStudioProject, tasks: Sequence[int], wait: float, poll: float = 5.0,
                    progress=None, wake=None) -> tuple[Pulled, bool]:  # fmt: skip
    """Poll ``tasks`` until every one is done or ``wait`` seconds pass; (where they stand, all done).

    ``progress(done, total)`` is called after each poll; ``wake`` (a :class:`threading.Event`, set by a
    :class:`WebhookReceiver`) cuts a pause between polls short."""
    import time

    deadline = time.monotonic() + wait
    while True:
        pulled = project.pull(tasks)
        if progress:
            progress(pulled.done, pulled.total)
        if pulled.done >= pulled.total:
            return pulled, True
        left = deadline - time.monotonic()
        if left <= 0:
            return pulled, False
        pause = min(poll, left)
        if wake is None:
            time.sleep(pause)
        elif wake.wait(pause):
            settle_after_webhook(wake)


class WebhookReceiver:
    """An HTTP endpoint for Label Studio's webhooks that sets :attr:`wake` on every POST; a context manager.

    It trusts nothing it receives (a POST only makes the poller look now), so it needs no payload and
    no secret. On entering it registers a webhook for the project (reusing one with the same URL, so
    a restarted process adds none) and on leaving removes it. ``url`` is what Label Studio posts to
    (default ``http://127.0.0.1:PORT/``, listening on 127.0.0.1 only; with a ``url`` naming this host as
    Label Studio reaches it, on every interface). Label Studio refuses webhooks to local or private
    addresses unless it runs with ``SSRF_PROTECTION_ENABLED=false``."""

    def __init__(self, project: LabelStudioProject, port: int, url: str | None = None, host: str | None = None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.project, self.wake, self.hook_id = project, threading.Event(), None
        wake = self.wake

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # the http.server name
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
                wake.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet: one POST per annotation
                pass

        host = host or ("0.0.0.0" if url else "127.0.0.1")
        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise LabelStudioError(f"--ls-webhook-port {port}: cannot listen: {e.strerror or e}") from None
        self.port = self.httpd.server_address[1]
        self.url = url or f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ls-webhooks", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        try:
            self.hook_id = self.project.register_webhook(self.url)
        except BaseException:
            self.httpd.shutdown()
            self.httpd.server_close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.hook_id is not None:
            from contextlib import suppress

            with suppress(Exception):  # Label Studio gone or slow: the webhook stays, reused by the next receiver here
                # bounded, without retries: Ctrl-C must not wait on a busy Label Studio
                self.project.client.webhooks.delete(id=self.hook_id, request_options={"timeout": 10, "max_retries": 0})
