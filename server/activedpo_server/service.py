"""The gRPC servicer: activedpo.v1 messages in, engine calls, messages and status codes out.

Nothing here decides anything. Engine work (database, models, FAISS) runs in worker threads, so
the event loop keeps answering health checks and GetStatus while a batch is featurized or a
checkpoint loads. Domain errors map to precise codes (see :func:`_status_for`).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from activedpo.v1 import selector_pb2 as pb
from activedpo_server.engine import Engine, NotReady
from activedpo_server.store import MAX_ID_CHARS, Candidates, LabelIn, StoreError
from activedpo_trainer.checkpoint import CheckpointError, CheckpointManifest

log = logging.getLogger(__name__)

MAX_BUDGET = 100_000
MAX_LEASE_SECONDS = 30 * 24 * 3600
MAX_ITEMS_PER_STREAM = 1_000_000


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


async def _check(request, context) -> None:
    if isinstance(request, Malformed):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"malformed request (not valid protobuf or UTF-8): {request.error}"
        )


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


def _status_for(e: BaseException) -> grpc.StatusCode:
    if isinstance(e, CheckpointError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(e, NotReady):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(e, StoreError | ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


async def _abort(context, e: BaseException):
    code = _status_for(e)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error", exc_info=e)
        await context.abort(code, f"internal error: {type(e).__name__}: {e}")
    await context.abort(code, str(e))


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _candidates(req: pb.AddCandidatesRequest, n: int) -> Candidates:
    kind = req.WhichOneof("item")
    if kind == "group":
        g = req.group
        return Candidates(g.prompt, [(r.id or None, r.text) for r in g.responses], g.id or None, pool=req.pool)
    if kind == "pair":
        p = req.pair
        return Candidates(
            p.prompt,
            [(p.a.id or None, p.a.text), (p.b.id or None, p.b.text)],
            p.prompt_id or None,
            pair_id=p.id or None,
            pool=req.pool,
            explicit_pair=True,
        )
    raise ValueError(f"item {n}: set either `group` or `pair`")


class SelectorService:
    def __init__(self, engine: Engine):
        self.engine = engine

    async def GetStatus(self, request, context):
        await _check(request, context)
        s = await asyncio.to_thread(self.engine.status)
        return pb.GetStatusResponse(**s)

    async def LoadCheckpoint(self, request, context):
        await _check(request, context)
        try:
            if request.manifest:
                ref = request.manifest
            elif request.base:
                ref = CheckpointManifest(
                    request.id or f"{request.base}+{request.adapter or 'base'}", request.base, request.adapter or None,
                    None, "",
                )  # fmt: skip
            else:
                raise ValueError("set `manifest`, or `base` (with an optional `adapter` and `id`)")
            report = await asyncio.to_thread(self.engine.load_checkpoint, ref)
        except Exception as e:
            await _abort(context, e)
        return pb.LoadCheckpointResponse(**report)

    async def AddCandidates(self, request_iterator, context):
        try:
            items = []
            async for req in request_iterator:
                if isinstance(req, Malformed):
                    raise ValueError(f"item {len(items)}: malformed (not valid protobuf or UTF-8): {req.error}")
                if len(items) >= MAX_ITEMS_PER_STREAM:
                    raise ValueError(f"more than {MAX_ITEMS_PER_STREAM:,} items in one stream; split it")
                items.append(_candidates(req, len(items)))
            res = await asyncio.to_thread(self.engine.add_candidates, items)
        except Exception as e:
            await _abort(context, e)
        return pb.AddCandidatesResponse(**vars(res))

    async def SelectBatch(self, request, context):
        await _check(request, context)
        if not 0 < request.budget <= MAX_BUDGET:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"budget must be between 1 and {MAX_BUDGET:,}, got {request.budget}"
            )
        if not 0 <= request.lease_seconds <= MAX_LEASE_SECONDS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"lease_seconds must be between 0 (the server's default) and {MAX_LEASE_SECONDS:,} "
                                f"(30 days), got {request.lease_seconds:,}")  # fmt: skip
        for name in ("request_id", "client", "strategy", "pool"):
            if len(getattr(request, name)) > MAX_ID_CHARS:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{name} is longer than {MAX_ID_CHARS} characters")  # fmt: skip
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
            )
        )
        while not work.done() or not events.empty():
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield pb.SelectBatchResponse(progress=getter.result())
            else:
                getter.cancel()
        try:
            batch = work.result()
        except Exception as e:
            await _abort(context, e)
        yield pb.SelectBatchResponse(
            batch=pb.SelectedBatch(
                pairs=[pb.SelectedPair(**p) for p in batch.pairs],
                checkpoint_id=batch.checkpoint_id,
                strategy=batch.strategy,
                lease_id=batch.lease_id,
                lease_expires=_timestamp(batch.lease_expires),
                candidates=batch.candidates,
            )
        )

    async def SubmitLabels(self, request, context):
        await _check(request, context)
        labels = [LabelIn(x.pair_id, int(x.preference), x.annotator, x.idempotency_key or None) for x in request.labels]
        try:
            results = await asyncio.to_thread(self.engine.submit_labels, labels)
        except Exception as e:
            await _abort(context, e)
        out = [pb.LabelResult(**vars(r)) for r in results]
        accepted = sum(r.accepted for r in results)
        return pb.SubmitLabelsResponse(results=out, accepted=accepted, rejected=len(results) - accepted)

    async def ExportLabels(self, request, context):
        await _check(request, context)
        rows = self.engine.export_labels(request.after_label_id, request.include_ties)
        while True:
            chunk = await asyncio.to_thread(lambda: [r for _, r in zip(range(500), rows, strict=False)])
            if not chunk:
                return
            for r in chunk:
                yield pb.LabeledPair(
                    label_id=r["label_id"],
                    pair_id=r["pair_id"],
                    prompt=r["prompt"],
                    chosen=r["chosen"],
                    rejected=r["rejected"],
                    preference=r["preference"],
                    annotator=r["annotator"],
                    labeled_at=_timestamp(r["created"]),
                    checkpoint_id=r["checkpoint_id"],
                    late=r["late"],
                )
