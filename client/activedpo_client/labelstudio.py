"""A live Label Studio project: selected pairs become tasks, people's annotations come back as labels.

Through the official ``label-studio-sdk`` (the ``labelstudio`` extra). A batch's tasks carry the
pair id, the prompt, both responses and a batch tag in their data; :meth:`LabelStudioProject.push`
first looks for tasks with that tag, so pushing a batch again (a resumed round, a retried call)
never imports it twice. :meth:`LabelStudioProject.pull` reads the batch's annotations as they
stand now: ``left`` is A and ``right`` is B, a skipped (cancelled) annotation gives no label, an
updated annotation is read in its latest state, and several annotators on one task give several
labels. Each label's idempotency key comes from its Label Studio annotation id, so submitting the
same annotations to the selection server again writes nothing new.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from activedpo_client.labelfiles import LABEL_CONFIG
from activedpo_client.messages import Batch, Label
from activedpo_client.remote import ClientError

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"  # the SDK's own names


class LabelStudioError(ClientError):
    """Label Studio cannot be used as asked; the message names the cause and what to do."""


@dataclass(frozen=True)
class Pulled:
    """Where a batch stands in Label Studio."""

    labels: list[Label]  # one per A/B annotation, each with its annotation's idempotency key
    done: int  # tasks with at least one finished (submitted or skipped) annotation
    total: int
    skipped: int  # annotations skipped (cancelled): no label


class LabelStudioProject:
    """One Label Studio project, found by id or title (created with the pairwise config on first use)."""

    def __init__(self, project: str, url: str | None = None, api_key: str | None = None):
        try:
            from label_studio_sdk import LabelStudio
        except ImportError:
            raise LabelStudioError('Label Studio needs its SDK: pip install "activedpo[labelstudio]"') from None
        self.url = (url or os.environ.get(URL_ENV) or "").rstrip("/")
        key = api_key or os.environ.get(KEY_ENV)
        if not self.url or not key:
            raise LabelStudioError(f"set --ls-url and --ls-api-key (or {URL_ENV} and {KEY_ENV})")
        self.client = LabelStudio(base_url=self.url, api_key=key)
        self.id = self._project(project)

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except Exception as e:  # the SDK raises httpx and its own ApiError: one line either way
            detail = getattr(e, "body", None) or e
            raise LabelStudioError(f"Label Studio at {self.url}: {what} failed: {str(detail)[:300]}") from None

    def _project(self, project: str) -> int:
        if project.isdigit():
            p = self._call(f"project {project}", self.client.projects.get, id=int(project))
            return int(p.id)
        for p in self._call("listing projects", lambda: list(self.client.projects.list(title=project))):
            if p.title == project:
                return int(p.id)
        if len(project) < 3:
            raise LabelStudioError(f"a Label Studio project title needs at least 3 characters, got {project!r}")
        created = self._call(f"creating project {project!r}", self.client.projects.create, title=project,
                             label_config=LABEL_CONFIG)  # fmt: skip
        return int(created.id)

    def _tasks(self) -> list:
        return self._call("listing tasks", lambda: list(self.client.tasks.list(project=self.id, fields="all")))

    def push(self, batch: Batch, tag: str) -> list[int]:
        """Task ids of ``batch`` in the project, importing its pairs unless tasks tagged ``tag`` exist."""
        have = {t.data.get("pair_id"): int(t.id) for t in self._tasks() if (t.data or {}).get("activedpo_batch") == tag}
        missing = [p for p in batch.pairs if p.pair_id not in have]
        if missing:
            rows = [dict(pair_id=p.pair_id, prompt=p.prompt, response_a=p.response_a, response_b=p.response_b,
                         rank=p.rank, activedpo_batch=tag) for p in missing]  # fmt: skip
            res = self._call("importing tasks", self.client.projects.import_tasks, id=self.id, request=rows,
                             return_task_ids=True)  # fmt: skip
            have.update({p.pair_id: int(t) for p, t in zip(missing, res.task_ids, strict=True)})
        return [have[p.pair_id] for p in batch.pairs]

    def pull(self, task_ids: Sequence[int]) -> Pulled:
        """The batch's annotations as they stand now (see the module's docstring)."""
        wanted = set(int(t) for t in task_ids)
        labels, done, skipped = [], 0, 0
        for t in self._tasks():
            if int(t.id) not in wanted:
                continue
            pair_id = (t.data or {}).get("pair_id", "")
            finished = False
            for a in t.annotations or []:
                a = a if isinstance(a, dict) else a.dict()
                finished = True
                if a.get("was_cancelled"):
                    skipped += 1
                    continue
                result = a.get("result") or []
                picks = [r.get("value", {}).get("selected") for r in result if r.get("type") == "pairwise"]
                pref = {"left": "A", "right": "B"}.get(picks[0]) if len(picks) == 1 else None
                if pref is None:
                    continue
                who = a.get("completed_by")
                who = who.get("email") if isinstance(who, dict) else who
                labels.append(Label(pair_id, pref, f"label-studio:{who}", f"ls-{self.id}-{a['id']}"))
            done += finished
        return Pulled(labels, done, len(wanted), skipped)
