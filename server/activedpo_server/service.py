"""The gRPC servicer: activedpo.v1 messages in, engine calls, typed results converted to messages out.

Nothing here decides anything. Engine work (database, models, FAISS) runs in worker threads, so
the event loop keeps answering health checks and GetStatus while a batch is featurized or a
checkpoint loads. Errors are raised, never answered here: the server's ``ErrorMapping``
interceptor maps them to status codes (:func:`activedpo_server.errors.status_for`).

A request the caller sees fail changes nothing. An AddCandidates stream is committed only after
the client half-closes it, and rolls back if the caller cancels, is killed or passes its deadline
before the commit; a SelectBatch whose caller goes away gives its lease back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from activedpo.v1 import selector_pb2 as pb
from activedpo_core.labels import LabelResult
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import MAX_LEASE_SECONDS
from activedpo_server.checkpoints import FileSpec
from activedpo_server.engine import DESCRIBE_PAIRS, MAX_DESCRIBE_PAIRS, Batch, Engine, LoadReport, Status
from activedpo_server.errors import FailedPrecondition, InvalidArgument
from activedpo_server.records import MAX_ID_CHARS, AddResult, Candidates, ExportRow, LabelIn

log = logging.getLogger(__name__)

MAX_BUDGET = 100_000
MAX_ITEMS_PER_STREAM = 1_000_000
MAX_LABELS_PER_REQUEST = 100_000


class Malformed:
    """A request that did not parse (e.g. a string that is not UTF-8): answered with INVALID_ARGUMENT.

    gRPC itself would answer a failing deserializer with INTERNAL; parsing here instead lets the
    servicer say precisely what was wrong.
    """

    def __init__(self, error: str):
        self.error = error


def _lenient(parse):
    from google.protobuf.message import DecodeError

    def deserialize(data: bytes):
        try:
            return parse(data)
        except DecodeError as e:
            return Malformed(str(e) or "cannot parse the message")

    return deserialize


def _check(request) -> None:
    if isinstance(request, Malformed):
        raise InvalidArgument(f"malformed request (not valid protobuf or UTF-8): {request.error}")


def _check_ids(request, *names: str) -> None:
    for name in names:
        if len(getattr(request, name)) > MAX_ID_CHARS:
            raise InvalidArgument(f"{name} is longer than {MAX_ID_CHARS} characters")


def add_to_server(servicer: SelectorService, server) -> None:
    """Register ``servicer`` like the generated ``add_SelectorServicer_to_server``, with lenient parsing."""
    desc = pb.DESCRIPTOR.services_by_name["Selector"]
    factories = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for m in desc.methods:
        factory = factories[(m.client_streaming, m.server_streaming)]
        handlers[m.name] = factory(
            getattr(servicer, m.name),
            request_deserializer=_lenient(getattr(pb, m.input_type.name).FromString),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(desc.full_name, handlers),))


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _candidates(req: pb.AddCandidatesRequest, n: int) -> Candidates:
    kind = req.WhichOneof("item")
    if kind == "group":
        g = req.group
        return Candidates(g.prompt, [(r.id or None, r.text) for r in g.responses], g.id or None, pool=req.pool,
                          messages=g.messages)  # fmt: skip
    if kind == "pair":
        p = req.pair
        return Candidates(
            p.prompt,
            [(p.a.id or None, p.a.text), (p.b.id or None, p.b.text)],
            p.prompt_id or None,
            pair_id=p.id or None,
            pool=req.pool,
            explicit_pair=True,
            messages=p.messages,
        )
    raise InvalidArgument(f"item {n}: set either `group` or `pair`")


# ---- typed engine results → messages --------------------------------------------------------


def status_to_pb(s: Status) -> pb.GetStatusResponse:
    return pb.GetStatusResponse(
        checkpoint_id=s.checkpoint_id, strategy=s.strategy, pool_size=s.pool_size, featurized=s.featurized,
        labeled=s.labeled, leased=s.leased, feature_dim=s.feature_dim, lam=s.lam, version=s.version,
        prompts=s.prompts, responses=s.responses, annotations=s.annotations,
        loading_checkpoint_id=s.loading_checkpoint_id, fresh_adapter=s.fresh_adapter, ties=s.ties, both_bad=s.both_bad,
        lora=pb.LoraSpec(r=s.lora.r, alpha=s.lora.alpha, target_modules=s.lora.targets) if s.lora else None,
    )  # fmt: skip


def load_report_to_pb(r: LoadReport) -> pb.LoadCheckpointResponse:
    return pb.LoadCheckpointResponse(checkpoint_id=r.checkpoint_id, loaded=r.loaded,
                                     previous_checkpoint_id=r.previous_checkpoint_id, refeaturized=r.refeaturized,
                                     seconds=r.seconds)  # fmt: skip


def add_result_to_pb(r: AddResult, pairs: bool = False) -> pb.AddCandidatesResponse:
    added = [pb.AddedPair(pair_id=p.pair_id, added=p.added, swapped=p.swapped) for p in r.pairs] if pairs else []
    return pb.AddCandidatesResponse(prompts_added=r.prompts_added, responses_added=r.responses_added,
                                    pairs_added=r.pairs_added, pairs_deduplicated=r.pairs_deduplicated,
                                    pairs=added)  # fmt: skip


def batch_to_pb(b: Batch) -> pb.SelectedBatch:
    pairs = [
        pb.SelectedPair(
            pair_id=p.text.pair_id,
            prompt=p.text.prompt,
            response_a=p.text.response_a,
            response_b=p.text.response_b,
            score=p.score,
            rank=p.rank,
            prompt_id=p.text.prompt_id,
            response_a_id=p.text.response_a_id,
            response_b_id=p.text.response_b_id,
            prompt_messages=p.text.prompt_messages,
            audit=p.audit,
            margin=p.margin,
        )
        for p in b.pairs
    ]
    return pb.SelectedBatch(pairs=pairs, checkpoint_id=b.checkpoint_id, strategy=b.strategy, lease_id=b.lease_id,
                            lease_expires=_timestamp(b.lease_expires), candidates=b.candidates)  # fmt: skip


def label_result_to_pb(r: LabelResult) -> pb.LabelResult:
    return pb.LabelResult(pair_id=r.pair_id, accepted=r.accepted, reason=r.reason, label_id=r.label_id, late=r.late,
                          replayed=r.replayed, revised=r.revised)  # fmt: skip


def export_row_to_pb(r: ExportRow) -> pb.LabeledPair:
    return pb.LabeledPair(label_id=r.label_id, pair_id=r.pair_id, prompt=r.prompt, chosen=r.chosen,
                          rejected=r.rejected, preference=r.preference, annotator=r.annotator,
                          labeled_at=_timestamp(r.created), checkpoint_id=r.checkpoint_id, late=r.late,
                          idempotency_key=r.idempotency_key, revision=r.revision, audit=r.audit,
                          margin=r.margin)  # fmt: skip


class _CallerGone(FailedPrecondition):
    """Raised inside a transaction to roll it back: the caller cancelled, died or ran out of time."""


def _still_there(context) -> threading.Event:
    """An event set when the caller goes away; its deadline is checked by :func:`_confirm`."""
    gone = threading.Event()
    context.add_done_callback(lambda _: gone.set())
    return gone


def _confirm(gone: threading.Event, deadline: float | None):
    def confirm() -> None:
        if gone.is_set() or (deadline is not None and time.monotonic() >= deadline):
            raise _CallerGone("the caller went away before the commit; nothing was written")

    return confirm


class SelectorService:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._background: set[asyncio.Future] = set()  # lease releases still running

    async def GetStatus(self, request, context):
        _check(request)
        _check_ids(request, "project")
        return status_to_pb(await asyncio.to_thread(self.engine.status, request.project))

    async def LoadCheckpoint(self, request, context):
        _check(request)
        _check_ids(request, "checkpoint_id", "manifest", "base", "adapter", "id")
        lora = None
        if request.HasField("lora"):
            _check_ids(request.lora, "target_modules")
            try:
                lora = LoraSpec(request.lora.r, request.lora.alpha, request.lora.target_modules)
            except ValueError as e:
                raise InvalidArgument(f"lora: {e}") from None
        ref = self.engine.checkpoint_ref(
            checkpoint_id=request.checkpoint_id, manifest=request.manifest, base=request.base,
            adapter=request.adapter, id=request.id, remote=True,
        ).with_lora(lora)  # fmt: skip
        return load_report_to_pb(await asyncio.to_thread(self.engine.load_checkpoint, ref))

    async def AddCandidates(self, request_iterator, context):
        items, project, pairs = [], None, False
        async for req in request_iterator:
            if isinstance(req, Malformed):
                raise InvalidArgument(f"item {len(items)}: malformed (not valid protobuf or UTF-8): {req.error}")
            if len(items) >= MAX_ITEMS_PER_STREAM:
                raise InvalidArgument(f"more than {MAX_ITEMS_PER_STREAM:,} items in one stream; split it")
            if project is None:
                project, pairs = req.project, req.return_pairs
            elif req.project != project:
                raise InvalidArgument(f"item {len(items)}: project differs from the stream's first item")
            items.append(_candidates(req, len(items)))
        # The stream ended: a half-close, or a cancel/deadline/dead client, which gRPC reports the same
        # way. A cancellation surfaces at the next await; the deadline and the done-callback are checked
        # again just before COMMIT, so a caller that sees a failure finds nothing written.
        await asyncio.sleep(0.01)
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        confirm = _confirm(_still_there(context), deadline)
        confirm()
        work = asyncio.ensure_future(asyncio.to_thread(self.engine.add_candidates, items, project or "", confirm))
        try:
            res = await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait({work})  # the transaction sees the caller gone and rolls back
            raise
        return add_result_to_pb(res, pairs)

    async def SelectBatch(self, request, context):
        _check(request)
        if not 0 < request.budget <= MAX_BUDGET:
            raise InvalidArgument(f"budget must be between 1 and {MAX_BUDGET:,}, got {request.budget}")
        if not 0 <= request.audit <= request.budget:
            raise InvalidArgument(f"audit must be between 0 and the budget ({request.budget}), got {request.audit}")
        if not 0 <= request.lease_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument(f"lease_seconds must be between 0 (the server's default) and {MAX_LEASE_SECONDS:,} "
                                  f"(30 days), got {request.lease_seconds:,}")  # fmt: skip
        _check_ids(request, "request_id", "client", "strategy", "pool", "project")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def progress(stage: str, done: int, total: int) -> None:  # called from the worker thread
            loop.call_soon_threadsafe(events.put_nowait, pb.Progress(stage=stage, done=done, total=total))

        work = asyncio.ensure_future(
            asyncio.to_thread(
                self.engine.select,
                request.budget,
                request.strategy,
                request.pool,
                request.lease_seconds,
                request.seed,
                request.client,
                progress,
                request.request_id,
                request.project,
                None,
                request.audit,
            )
        )
        delivered = False
        try:
            while not work.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield pb.SelectBatchResponse(progress=getter.result())
                else:
                    getter.cancel()
            batch = work.result()
            remaining = context.time_remaining()
            if context.cancelled() or (remaining is not None and remaining <= 0):
                raise asyncio.CancelledError
            yield pb.SelectBatchResponse(batch=batch_to_pb(batch))
            delivered = True
        finally:
            if not delivered:  # cancelled, past its deadline, or the caller died: lease nothing
                work.add_done_callback(self._release_undelivered(request))

    def _release_undelivered(self, request):
        def release(work: asyncio.Future) -> None:
            if work.cancelled() or work.exception() is not None:
                return
            batch = work.result()
            if batch.pairs:  # (a retry with the same request id then chooses afresh)

                def release_now() -> None:
                    released = self.engine.release(batch.lease_id, (), request.project)
                    log.info("SelectBatch caller went away: lease %s released (%d pairs)", batch.lease_id, released)

                task = asyncio.ensure_future(asyncio.to_thread(release_now))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

        return release

    async def DescribePool(self, request, context):
        _check(request)
        _check_ids(request, "pool", "project")
        if not 0 <= request.max_pairs <= MAX_DESCRIBE_PAIRS:
            raise InvalidArgument(f"max_pairs must be between 0 (the default, {DESCRIBE_PAIRS:,}) and "
                                  f"{MAX_DESCRIBE_PAIRS:,}, got {request.max_pairs:,}")  # fmt: skip
        d = await asyncio.to_thread(self.engine.describe, request.pool, request.project,
                                    request.max_pairs or DESCRIBE_PAIRS, request.seed)  # fmt: skip
        return pb.DescribePoolResponse(pairs=d.pairs, pair_ids=d.pair_ids, margins=d.margins, scores=d.scores,
                                       checkpoint_id=d.checkpoint_id)  # fmt: skip

    async def SubmitLabels(self, request, context):
        _check(request)
        _check_ids(request, "project")
        if len(request.labels) > MAX_LABELS_PER_REQUEST:
            raise InvalidArgument(f"{len(request.labels):,} labels in one request; the limit is "
                                  f"{MAX_LABELS_PER_REQUEST:,}: split it")  # fmt: skip
        labels = [LabelIn(x.pair_id, int(x.preference), x.annotator, x.idempotency_key or None, x.revision, x.withdrawn)
                  for x in request.labels]  # fmt: skip
        results = await asyncio.to_thread(self.engine.submit_labels, labels, request.project)
        accepted = sum(r.accepted for r in results)
        return pb.SubmitLabelsResponse(
            results=[label_result_to_pb(r) for r in results], accepted=accepted, rejected=len(results) - accepted
        )

    async def ExportLabels(self, request, context):
        _check(request)
        _check_ids(request, "project")
        rows = self.engine.export_labels(request.after_label_id, request.include_ties, request.project)
        while True:
            chunk = await asyncio.to_thread(lambda: [r for _, r in zip(range(500), rows, strict=False)])
            if not chunk:
                return
            for r in chunk:
                yield export_row_to_pb(r)

    async def ReleaseLease(self, request, context):
        _check(request)
        _check_ids(request, "lease_id", "project")
        if not request.lease_id:
            raise InvalidArgument("lease_id is required")
        released = await asyncio.to_thread(
            self.engine.release, request.lease_id, list(request.pair_ids), request.project
        )
        return pb.ReleaseLeaseResponse(released=released)

    async def UploadCheckpoint(self, request_iterator, context):
        upload = None
        try:
            async for req in request_iterator:
                if isinstance(req, Malformed):
                    raise InvalidArgument(f"malformed upload message (not valid protobuf or UTF-8): {req.error}")
                kind = req.WhichOneof("item")
                if upload is None:
                    if kind != "header":
                        raise InvalidArgument("the first message of an upload must be its header")
                    h = req.header
                    files = [FileSpec(f.path, f.size, f.sha256) for f in h.files]
                    upload = await asyncio.to_thread(self.engine.checkpoints.begin, h.checkpoint_id, h.base, files,
                                                     h.parent_id, h.base_model)  # fmt: skip
                elif kind == "header":
                    raise InvalidArgument("an upload has exactly one header")
                elif kind == "chunk":
                    c = req.chunk
                    await asyncio.to_thread(upload.write, c.sha256, c.offset, c.data)
                else:
                    raise InvalidArgument("set `header` or `chunk`")
            if upload is None:
                raise InvalidArgument("an empty upload: send the header first")
            await asyncio.sleep(0.01)  # a cancelled stream also ends like a half-closed one: see AddCandidates
            res = await asyncio.to_thread(upload.finish)
        except BaseException:
            if upload is not None:
                upload.abort()  # verified files stay (content-addressed); a cut-off one stays partial, to resume
            raise
        partial = [pb.PartialFile(sha256=d, offset=n) for d, n in res.partial]
        return pb.UploadCheckpointResponse(checkpoint_id=res.checkpoint_id, complete=res.complete,
                                           missing=res.missing, bytes_received=res.bytes_received,
                                           partial=partial)  # fmt: skip
