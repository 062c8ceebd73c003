"""Offline selection, ``activedpo-client select``: pick the pairs to label from a pool a team already has (no
generation, no training), with the labels so far conditioning V, the batch written out for people or pushed to
Label Studio and its answers collected.

The flow, :func:`select_offline`: check every input before a server starts (a wrong column is one line with
nothing left behind), start the embedded server or reach a remote one, make it serve the policy (sending what a
remote server lacks), import the labels so far, send the pool, and select. The same command again is a retry of
the same request and gets the same batch; another ``--out`` or other labels asks for a new one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from activedpo_client.audit import audit_count, score, summary_line
from activedpo_client.messages import Batch
from activedpo_client.remote import ClientError
from activedpo_client.settings import LabelStudioSpec, ServerSpec
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import SelectionSettings
from activedpo_trainer.workload import ModelSpec

READING = "reading and sending the pool (pairs)"


@dataclass(frozen=True)
class SelectSettings:
    """One offline selection; the command's options map onto these fields, the server's onto ServerSpec's and
    Label Studio's onto LabelStudioSpec's."""

    model: str  # the policy: a base model directory or hub id, or a checkpoint directory
    candidates: Path  # the pool file
    budget: int  # pairs to select
    out: Path  # one selected pair per line; OUT.labels.jsonl, OUT.config.toml and OUT.server/ beside it
    labeled: Path | None = None  # labels so far, in any form the project reads
    strategy: str = SelectionSettings.strategy
    seed: int = SelectionSettings.seed
    lease_seconds: int = SelectionSettings.lease_seconds
    audit_fraction: float = SelectionSettings.audit_fraction  # of the budget: audit pairs, drawn at random
    pool: str | None = None  # the pool's tag on the server (default: the candidates file's name)
    chat_template: str = ModelSpec.chat_template
    lora: LoraSpec = field(default_factory=LoraSpec)  # the adapter round one's features are the gradient of
    dtype: str = "float32"  # resolved (auto → bfloat16 or float32) by the caller
    device: str | None = None
    state_dir: Path | None = None  # the embedded server's state (default: OUT's name + .server)
    annotator: str = "file"  # file (write the batch out) or label-studio (push it, collect the answers)
    ls_project: str | None = None  # --annotator label-studio: the project (an id, or a title created on first use)
    describe_pairs: int = SelectionSettings.describe_pairs  # the pool section covers a sample of this many pairs

    @property
    def tag(self) -> str:
        return self.pool or self.candidates.name

    def beside_out(self, suffix: str) -> Path:
        """A file next to OUT: ``OUT's stem + suffix``."""
        return self.out.with_name(self.out.stem + suffix)


@dataclass(frozen=True)
class Selection:
    """What :func:`select_offline` did: the batch, the pool as sent, where the batch was written."""

    batch: Batch
    request: str  # the request's id: the same inputs are a retry and get this batch again
    pairs: int  # pairs in the pool the batch was selected from
    files: tuple[Path, ...]  # to_label.jsonl, Label Studio's tasks and its labeling config
    seconds: float  # wall time so far
    pool_seconds: float  # of which reading and sending the pool
    skipped: int = 0  # pool rows with fewer than two distinct responses
    skipped_at: tuple[str, ...] = ()  # the first few of them
    pool_report: tuple[str, ...] = ()  # the pool section (activedpo_client.poolreport)

    def line(self) -> str:
        skipped = ""
        if self.skipped:
            at = ", ".join(self.skipped_at) + (", …" if self.skipped > len(self.skipped_at) else "")
            skipped = f", {self.skipped} rows skipped (fewer than two distinct responses: {at})"
        audit = sum(p.audit for p in self.batch.pairs)
        audit = f"; {audit} of them audit pairs, drawn at random" if audit else ""
        return (f"{len(self.batch.pairs)} of {self.pairs:,} pairs selected by {self.batch.strategy} under "
                f"{self.batch.checkpoint_id} in {self.seconds:.1f} s (pool sent in {self.pool_seconds:.1f} s, "
                f"{self.pairs / max(self.seconds, 1e-9):,.0f} pairs/s overall){skipped}{audit}")  # fmt: skip


def select_offline(s: SelectSettings, spec: ServerSpec, stack: ExitStack, ls: LabelStudioSpec | None = None,
                   bars: Callable | None = None, say: Callable[[str], None] = print):  # fmt: skip
    """Select ``s.budget`` pairs; (the Selection, the open client, the Label Studio project or None).

    ``stack`` owns what this opens (the embedded server, the connection): the caller collects Label Studio's
    answers through the client before closing it. ``bars`` is a context manager factory yielding a
    ``(stage, done, total)`` callback (the CLI's rich bars)."""
    from contextlib import nullcontext

    from activedpo_client.labelfiles import write_label_files
    from activedpo_client.labelstudio import LabelStudioProject

    t0 = time.perf_counter()
    project = None
    if s.annotator == "label-studio":
        if not s.ls_project:
            raise ValueError("--annotator label-studio needs --ls-project (an id, or a title created on first use)")
        ls = ls or LabelStudioSpec()
        project = LabelStudioProject(s.ls_project, ls.url, ls.api_key, ls.project)  # checked before any work
    opened = open_pool(s, spec, stack, bars, say)
    client, stats = opened.client, opened.stats
    report, _ = pool_section(s, client)  # the pool before this batch leaves it
    with bars(transient=True) if bars else nullcontext(None) as bar:
        # the same command again (same --out, same labels) is a retry and gets the batch leased for it; another
        # --out or other labels (the next step of select → label → select) asks for a new batch
        audit = audit_count(s.budget, s.audit_fraction)
        key = f"{s.tag}|{s.budget}|{s.strategy}|{s.seed}|{opened.checkpoint}|{s.out.resolve()}|{_digest(s.labeled)}"
        key += f"|audit {audit}" if audit else ""  # as before without audit pairs: a retry finds its batch
        request = "select-" + hashlib.sha256(key.encode()).hexdigest()[:16]
        batch = client.select(s.budget, s.strategy, s.tag, s.lease_seconds, s.seed, "activedpo-client select", bar,
                              request_id=request, audit=audit)  # fmt: skip
    files = write_label_files(batch, s.out.parent, name=s.out.name, prefix=s.out.stem + ".")
    selection = Selection(batch, request, opened.pairs, tuple(files), time.perf_counter() - t0,
                          opened.seconds, stats.get("skipped", 0), tuple(stats.get("skipped_at", ())),
                          tuple(report))  # fmt: skip
    return selection, client, project


def pool_section(s: SelectSettings, client, beta: float | None = None):
    """What ``pool report`` says of ``s.candidates`` (the histograms aside): (its lines, the policy's view);
    β is DPO's default unless given."""
    from activedpo_client.pool import read_pool
    from activedpo_client.poolreport import of_description, prediction, text_stats
    from activedpo_core.checkpoint import resolve_checkpoint
    from activedpo_trainer.dpo import DPOSettings
    from activedpo_trainer.prompts import PromptRenderer

    beta = DPOSettings.beta if beta is None else beta
    view = of_description(client.describe_pool(s.tag, s.describe_pairs), beta)
    ref = str(Path(s.model).resolve()) if Path(s.model).exists() else s.model
    render = PromptRenderer(_tokenizer(resolve_checkpoint(ref).base), s.chat_template)  # as the server was sent it
    read: dict = {}
    text = text_stats(read_pool(s.candidates, render, read), read)
    return [*text.lines(), *view.lines(beta), f"what it predicts: {prediction(text, view)}"], view


@dataclass(frozen=True)
class OpenPool:
    """A server serving the policy and holding the pool (and the labels so far): what select and the pool
    report start from."""

    client: object  # SelectorClient
    pairs: int  # pairs of the pool on the server
    stats: dict  # the pool file's counts (rows, skipped, …)
    checkpoint: str  # the policy's checkpoint id
    seconds: float  # to here


def open_pool(s: SelectSettings, spec: ServerSpec, stack: ExitStack, bars: Callable | None = None,
              say: Callable[[str], None] = print) -> OpenPool:  # fmt: skip
    """Check every input before a server starts, start the embedded server or reach a remote one, make it serve
    the policy (sending what a remote server lacks), import the labels so far and send the pool."""
    from contextlib import nullcontext

    from activedpo_client.pool import add_pool, import_labeled, read_labeled, read_pool
    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_client.rounds import ensure_server_checkpoint
    from activedpo_core.checkpoint import resolve_checkpoint
    from activedpo_trainer.prompts import PromptRenderer

    t0 = time.perf_counter()
    if not s.candidates.exists():
        raise FileNotFoundError(f"--candidates not found: {s.candidates}")
    if s.labeled is not None and not s.labeled.exists():
        raise FileNotFoundError(f"--labeled not found: {s.labeled}")
    ref = str(Path(s.model).resolve()) if Path(s.model).exists() else s.model
    manifest = resolve_checkpoint(ref)
    render = PromptRenderer(_tokenizer(manifest.base), s.chat_template)
    # the inputs are read before a server starts: a wrong column is one line, with nothing left behind
    if next(read_pool(s.candidates, render, {}), None) is None:
        raise ValueError(f"{s.candidates} holds no usable pair (each row needs two distinct responses)")
    answers, answer_stats = [], {}
    if s.labeled is not None:
        answers = list(read_labeled(s.labeled, render, answer_stats))

    server, state = spec.server, None
    if server != "embedded" and s.state_dir is not None:
        say(f"note: --state-dir is an embedded server's; the server at {server} keeps its own")
    if server == "embedded":
        state = s.state_dir or s.beside_out(".server")
        roots = [Path(p) for p in (ref, manifest.base, manifest.adapter) if p and Path(p).exists()]
        args = spec.embedded_args(s.lora, s.dtype, s.device, roots)  # it may load this checkpoint only
        say(f"starting the embedded selection server (state in {state}) …")
        server = stack.enter_context(EmbeddedServer(state, ref, args=args, log=state / "server.log")).target
    connection = Connection(server, token=spec.token, tls_ca=spec.tls_ca, shares_disk=state is not None,
                            server_base=spec.server_base)  # fmt: skip
    client = stack.enter_context(SelectorClient(connection))
    client.wait_ready(say=say)
    with bars(transient=True) if bars else nullcontext(None) as bar:
        ensure_server_checkpoint(client, ref, s.lora, bar, say=say)
    if s.labeled is not None:
        got = import_labeled(client, answers, s.labeled, answer_stats.get("unanswered", 0))
        unanswered = f"; {got.unanswered} rows without an answer yet" if got.unanswered else ""
        say(f"{got.labels} labels from {s.labeled} condition the selection: {got.matched} on pairs the server "
            f"holds, {got.added} added as labeled pairs, {got.replayed} already recorded{unanswered}")  # fmt: skip
        say(_audit_line(client))
    stats: dict = {}
    with bars(transient=True) if bars else nullcontext(None) as bar:
        sent = (lambda n: bar(READING, n, 0)) if bar else None
        added = add_pool(client, read_pool(s.candidates, render, stats), s.tag, progress=sent)
    if added.pairs == 0:
        raise ValueError(f"{s.candidates} holds no usable pair (each row needs two distinct responses)")
    return OpenPool(client, added.pairs, stats, manifest.id, time.perf_counter() - t0)


def _audit_line(client) -> str:
    """The selecting policies' accuracy on the answers this server holds for pairs it selected (scored with the
    margins recorded at selection, before any training on them); where none, what it takes."""
    answers = ((x.preference, x.audit, x.margin) for x in client.export_labels(include_ties=True))
    line = summary_line(*score(answers), "the policies that selected them, before training on them")
    return line or ("no answer on a pair this server selected, so no audit accuracy: label batches selected "
                    "with this --state-dir or --server to see it")  # fmt: skip


def _tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the tokenizer of {base}: {e}") from None


def _digest(path: Path | None) -> str:
    """SHA-256 of a file's bytes ("" for none)."""
    if path is None:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class LabelsPending(ClientError):
    """Label Studio has not finished the batch yet: run the same command again (not an error of the selection)."""


@dataclass(frozen=True)
class Collected:
    """The answers a finished Label Studio batch gave, as sent to the server and written to OUT.labels.jsonl."""

    labels_file: Path
    rows: int
    tasks: int
    counts: dict[str, int]
    skipped: int
    new: int  # answers the server did not hold
    revised: int  # answers it held in another revision
    withdrawn: int  # answers deleted or skipped since
    labels: tuple = ()  # the answers (for the agreement line)


def collect_from_label_studio(project, client, selection: Selection, out: Path, ls: LabelStudioSpec,
                              bars: Callable | None = None, say: Callable[[str], None] = print,
                              ) -> Collected:  # fmt: skip
    """Push the batch to Label Studio (found again by the request's tag: never twice), wait up to ``ls.wait``
    seconds for every task to be done, then submit the labels and write them to OUT.labels.jsonl. Not done:
    answers the server holds are kept in step (edited, deleted), new ones wait, and LabelsPending says how far."""
    from contextlib import nullcontext

    from activedpo_client.labelstudio import WebhookReceiver, wait_for_labels
    from activedpo_core.atomic import write_jsonl

    batch = selection.batch
    tasks = project.push(batch, selection.request)
    say(f"{len(batch.pairs)} pairs selected by {batch.strategy} in {selection.seconds:.1f} s are tasks "
        f"{min(tasks)}–{max(tasks)} in Label Studio project {project.id} "
        f"({project.url}/projects/{project.id})")  # fmt: skip
    hooks = WebhookReceiver(project, ls.webhook_port, ls.webhook_url) if ls.webhook_port is not None else None
    with bars(transient=True) if bars else nullcontext(None) as bar, hooks or nullcontext() as receiver:
        report = (lambda d, t: bar("labeled in Label Studio (tasks)", d, t)) if bar else None
        pulled, finished = wait_for_labels(project, tasks, ls.wait, ls.poll, report,
                                           wake=receiver.wake if receiver else None)  # fmt: skip
    held = project.held(client)  # answers of this project the server holds, kept in step with Label Studio
    send = project.changes(tasks, pulled, held)
    if not finished:  # answers the server holds are kept in step (edited, deleted); new ones wait for the batch
        edits = [x for x in send if x.idempotency_key in held]
        changed = sum(r.revised for r in client.submit_labels(edits)) if edits else 0
        empty = f"; {pulled.empty} saved with no choice (not answers: still open)" if pulled.empty else ""
        raise LabelsPending(f"{pulled.done} of {pulled.total} tasks done{empty}; run the same command again (with "
                            f"--ls-wait SECONDS to wait) to collect them"
                            + (f" ({changed} answers the server held were revised)" if changed else ""))  # fmt: skip
    results = dict(zip((x.idempotency_key for x in send), client.submit_labels(send), strict=True)) if send else {}
    refused = [r for r in results.values() if not r.accepted]
    if refused:
        raise ValueError(f"the server refused {len(refused)} labels, e.g. {refused[0].pair_id}: {refused[0].reason}")
    pairs = {p.pair_id: p for p in batch.pairs}
    rows = []
    for lab in pulled.labels:
        p = pairs[lab.pair_id]
        row = {"pair_id": p.pair_id, "preference": lab.preference, "annotator": lab.annotator,
               "idempotency_key": lab.idempotency_key, "revision": lab.revision} | ({"audit": True} if p.audit else {})
        if lab.preference in ("A", "B"):  # a DPO row; ties and "both unacceptable" are recorded, never trained on
            a, b = (p.response_a, p.response_b) if lab.preference == "A" else (p.response_b, p.response_a)
            row = {"prompt": p.prompt, "chosen": a, "rejected": b} | row
        rows.append(row)
    labels_file = write_jsonl(out.with_name(out.stem + ".labels.jsonl"), rows)
    answers = [results[x.idempotency_key] for x in pulled.labels if x.idempotency_key in results]
    return Collected(labels_file, len(rows), pulled.total, pulled.counts(), pulled.skipped,
                     new=sum(not r.replayed and not r.revised for r in answers),
                     revised=sum(r.revised for r in answers),
                     withdrawn=sum(r.revised for x in send if x.withdrawn for r in [results[x.idempotency_key]]),
                     labels=tuple(pulled.labels))  # fmt: skip
