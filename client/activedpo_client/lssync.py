"""``activedpo-client labelstudio sync``: a loop that keeps a Label Studio project stocked with selected pairs and
the selection server in step with people's answers, restartable at any point (:class:`SyncState`).

Each pass pulls the answers of the tasks it pushed (new, edited, deleted or skipped since: see
:meth:`~activedpo_client.labelstudio.LabelStudioProject.changes`), sends them to the server, and, when fewer
than a batch of tasks is left open, selects the next batch and pushes it as tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from activedpo_client.labelstudio import (
    Held,
    LabelStudioError,
    LabelStudioProject,
    Pulled,
    settle_after_webhook,
)
from activedpo_client.remote import ClientError
from activedpo_core.settings import MAX_LEASE_SECONDS

SYNC_CLIENT = "labelstudio-sync"


@dataclass
class SyncState:
    """What a sync loop has done, kept in a small JSON file so a restarted loop (even after ``kill -9``)
    neither pushes a batch twice nor loses track: ``next_request`` names the next SelectBatch, and
    ``pending`` the size asked of it, saved before the call. A retry (after an error, a crash or a
    restart) asks the server the same question under the same request id, which returns the same
    batch while its lease lasts, and its tasks are found in Label Studio by that tag. ``submitted``
    holds, per answer key the server acknowledged, ``[revision, pair id, annotator, preference]``
    (preference "": withdrawn): an answer changed since is sent again, one deleted or skipped since is
    withdrawn (see :meth:`LabelStudioProject.changes`)."""

    next_request: int = 0
    submitted: dict[str, list] | None = None
    pending: int = 0  # the budget of request ``next_request`` once asked (0: not asked yet)

    @classmethod
    def load(cls, path) -> SyncState:
        import json
        from pathlib import Path

        p = Path(path)
        if not p.exists():
            return cls(0, {})
        try:
            data = json.loads(p.read_text())
            submitted = data["submitted"]
            if isinstance(submitted, list):  # before answers were keyed by (task, person): sent again once
                submitted = {}
            submitted = {str(k): [int(v[0]), str(v[1]), str(v[2]), str(v[3])] for k, v in submitted.items()}
            return cls(int(data["next_request"]), submitted, int(data.get("pending", 0)))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise LabelStudioError(
                f"{p} is not a sync progress file ({e}); restore it or pass another --state"
            ) from None

    def save(self, path) -> None:
        from activedpo_core.atomic import write_json

        write_json(path, {"next_request": self.next_request, "pending": self.pending,
                          "submitted": dict(sorted((self.submitted or {}).items()))})  # fmt: skip


def sync_once(project: LabelStudioProject, client, state: SyncState, state_path, budget: int, strategy: str = "",
              pool: str = "", lease_seconds: int = MAX_LEASE_SECONDS, say=print) -> dict:  # fmt: skip
    """One pass of ``labelstudio sync``: submit new, edited and withdrawn answers, then top the project up to
    ``budget`` tasks nobody has finished with a batch from the selection server. Returns what it did."""
    tasks = [t for t in project._tasks() if str((t.data or {}).get("activedpo_batch", "")).startswith("sync-")]
    submitted = dict(state.submitted or {})
    pulled = project.pull([int(t.id) for t in tasks], listed=tasks) if tasks else Pulled([], 0, 0, 0)
    held = {k: Held(v[1], v[2], v[3], v[0]) for k, v in submitted.items()}
    send = project.changes([int(t.id) for t in tasks], pulled, held)
    if send:
        results = client.submit_labels(send)
        refused = [r for r in results if not r.accepted]
        if refused:
            say(f"the server refused {len(refused)} labels, e.g. {refused[0].pair_id}: {refused[0].reason}")
        for lab, r in zip(send, results, strict=True):
            if r.accepted:
                submitted[lab.idempotency_key] = [lab.revision, lab.pair_id, lab.annotator,
                                                  "" if lab.withdrawn else lab.preference]  # fmt: skip
        state.submitted = submitted
        state.save(state_path)
    open_tasks = len(pulled.pending)
    pushed = 0
    if not state.pending and budget > open_tasks:
        state.pending = budget - open_tasks
        state.save(state_path)  # before the call: a retry must ask the same question under the same id
    if state.pending:
        request = f"sync-{state.next_request}"
        batch = client.select(state.pending, strategy, pool, lease_seconds, 0, SYNC_CLIENT, request_id=request)
        if batch.pairs:
            known = {int(t.id) for t in tasks}
            pushed = sum(t not in known for t in project.push(batch, tag=request))  # a replayed batch: none
        else:
            say("the selection server has no more pairs to offer (add candidates to its pool)")
        state.next_request, state.pending = state.next_request + 1, 0
        state.save(state_path)
    withdrawn = sum(x.withdrawn for x in send)
    return {"submitted": len(send) - withdrawn, "withdrawn": withdrawn, "pushed": pushed, "open": open_tasks + pushed,
            "empty": pulled.empty}  # fmt: skip


def say_flushed(message: str) -> None:
    """``print`` that flushes: a log redirected to a file is readable while the loop runs."""
    print(message, flush=True)


def sync_loop(project: LabelStudioProject, client, state_path, budget: int, every: float, once: bool = False,
              say=say_flushed, wake=None, max_backoff: float = 300.0, reconnect=None, **select) -> None:  # fmt: skip
    """``sync_once`` every ``every`` seconds until interrupted; ``say`` gets one line per pass.

    Errors are one line each and retried after 1 s, then 2, 4, … up to ``max_backoff`` seconds (reset by
    the next pass that succeeds), so a restart of Label Studio or of the server is waited out and a
    pass that failed is retried soon after both are back, whatever ``every`` is. ``wake`` (a
    :class:`threading.Event` a :class:`WebhookReceiver` sets) starts the next pass early, a retry
    included (at least 1 s after the error: a new annotation is worth a try). ``reconnect()`` returns a
    new client to the same server, used after an error: gRPC's own reconnect backoff on a channel grows
    to two minutes while the server is down, and a fresh channel connects as soon as it is back. Clients
    made here are closed here; ``client`` is the caller's."""
    import time

    state = SyncState.load(state_path)
    backoff = 0.0  # 0: the last pass succeeded
    own = None  # a client made by ``reconnect``
    try:
        while True:
            try:
                did = sync_once(project, client, state, state_path, budget, say=say, **select)
                more = f", withdrew {did['withdrawn']}" if did["withdrawn"] else ""
                empty = f" ({did['empty']} saved empty: not answers)" if did["empty"] else ""
                say(f"submitted {did['submitted']} labels{more}, pushed {did['pushed']} tasks, "
                    f"{did['open']} open{empty}")
                backoff = 0.0
            except ClientError as e:
                if once:
                    raise
                backoff = min(max(2 * backoff, 1.0), max(max_backoff, 1.0))
                say(f"error (retrying in {backoff:.0f} s): {e}")
                if reconnect is not None and not isinstance(e, LabelStudioError):
                    if own is not None:
                        own.close()
                    client = own = reconnect()
            if once:
                return
            pause = backoff or every
            if backoff:  # no busier than one try a second, however many webhooks arrive
                time.sleep(min(1.0, pause))
                pause -= min(1.0, pause)
            if wake is None:
                time.sleep(pause)
            elif wake.wait(pause):
                settle_after_webhook(wake)
    finally:
        if own is not None:
            own.close()
