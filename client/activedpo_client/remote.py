"""Talking to a selection server: one small client over the activedpo.v1 stubs, and the embedded server.

``SelectorClient`` turns messages into the typed dataclasses of :mod:`activedpo_client.messages`
and gRPC failures into :class:`ClientError`
with one line that names the cause and what to do. ``EmbeddedServer`` starts
``activedpo-server serve`` as a child process on a free 127.0.0.1 port (the same gRPC path as a
remote server, nothing bypassed) and stops it on exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.messages import (
    AddResult,
    Batch,
    CandidateGroup,
    CandidatePair,
    ExportedLabel,
    Label,
    LabelResult,
    LoadResult,
    ServerStatus,
)

MAX_MESSAGE_BYTES = 64 << 20  # the server's limit too


class ClientError(RuntimeError):
    """A failure the user can act on; the message is one line naming the cause and the fix."""


@dataclass(frozen=True)
class Connection:
    """Where the selection server is and how to authenticate."""

    target: str  # host:port
    token: str | None = None  # bearer token (the server's --token)
    tls: bool = False  # TLS with the system's root certificates
    tls_ca: Path | None = None  # TLS trusting this CA (implies tls)
    timeout: float = 3600.0  # seconds for one call; featurizing a large pool takes minutes on a CPU


class SelectorClient:
    """The Selector service as plain method calls."""

    def __init__(self, connection: Connection):
        import grpc

        from activedpo.v1 import selector_pb2_grpc

        self.connection = connection
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if connection.tls or connection.tls_ca:
            roots = Path(connection.tls_ca).read_bytes() if connection.tls_ca else None
            self.channel = grpc.secure_channel(connection.target, grpc.ssl_channel_credentials(roots), options)
        else:
            self.channel = grpc.insecure_channel(connection.target, options)
        self.stub = selector_pb2_grpc.SelectorStub(self.channel)
        self.metadata = (("authorization", f"Bearer {connection.token}"),) if connection.token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> SelectorClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, e) -> ClientError:
        import grpc

        target, code, details = self.connection.target, e.code(), e.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return ClientError(
                f"cannot reach the selection server at {target} ({details}); start one with "
                f"`activedpo-server serve` or use --server embedded"
            )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ClientError(
                f"the server at {target} refused the token ({details}); pass --token or set ACTIVEDPO_TOKEN"
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(f"the server at {target} did not answer within {self.connection.timeout:.0f} s")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
            return ClientError(f"the server refused the request: {details}")
        return ClientError(f"the server at {target} failed: {code.name}: {details}")

    def _call(self, method, request, **kw):
        import grpc

        try:
            return method(request, metadata=self.metadata, timeout=self.connection.timeout, **kw)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server answers GetStatus, or raise ClientError."""
        import grpc

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.stub.GetStatus(self._pb.GetStatusRequest(), metadata=self.metadata, timeout=5)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise self._error(e) from None
            time.sleep(0.2)

    @property
    def _pb(self):
        from activedpo.v1 import selector_pb2

        return selector_pb2

    # ---- RPCs -----------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        res = self._call(self.stub.GetStatus, self._pb.GetStatusRequest())
        return ServerStatus(**{f.name: getattr(res, f.name) for f in res.DESCRIPTOR.fields})

    def load_checkpoint(self, checkpoint: str | Path) -> LoadResult:
        res = self._call(self.stub.LoadCheckpoint, self._pb.LoadCheckpointRequest(manifest=str(checkpoint)))
        return LoadResult(res.checkpoint_id, res.loaded, res.previous_checkpoint_id, res.refeaturized, res.seconds)

    def add_candidates(self, items: Iterable[CandidateGroup | CandidatePair | tuple], pool: str = "") -> AddResult:
        """Stream candidates in one call: groups add all pairs of their responses, pairs add themselves.

        A ``(prompt, responses)`` tuple is a group. One call is one transaction on the server
        (all or nothing); ids default to content hashes, so sending the same items again adds nothing.
        """
        pb = self._pb

        def message(item) -> object:
            if isinstance(item, tuple):
                item = CandidateGroup(*item)
            if isinstance(item, CandidatePair):
                return pb.AddCandidatesRequest(pair=item.to_pb(pb), pool=pool)
            return pb.AddCandidatesRequest(group=item.to_pb(pb), pool=pool)

        res = self._call(self.stub.AddCandidates, (message(i) for i in items))
        return AddResult(res.prompts_added, res.responses_added, res.pairs_added, res.pairs_deduplicated)

    def select(
        self,
        budget: int,
        strategy: str = "",
        pool: str = "",
        lease_seconds: int = 0,
        seed: int = 0,
        client: str = "activedpo-client",
        progress: Callable[[str, int, int], None] | None = None,
        request_id: str = "",
    ) -> Batch:
        import grpc

        pb = self._pb
        request = pb.SelectBatchRequest(
            budget=budget,
            strategy=strategy,
            pool=pool,
            lease_seconds=lease_seconds,
            seed=seed,
            client=client,
            request_id=request_id,
        )
        batch = None
        try:
            for event in self.stub.SelectBatch(request, metadata=self.metadata, timeout=self.connection.timeout):
                if event.WhichOneof("event") == "progress":
                    if progress:
                        progress(event.progress.stage, event.progress.done, event.progress.total)
                else:
                    batch = event.batch
        except grpc.RpcError as e:
            raise self._error(e) from None
        if batch is None:
            raise ClientError("the server ended SelectBatch without a batch")
        return Batch.from_pb(batch)

    def submit_labels(self, labels: Iterable[Label]) -> list[LabelResult]:
        """Record labels; each result says whether it was accepted, and why not."""
        pb = self._pb
        prefs = {"A": pb.PREFERENCE_A, "B": pb.PREFERENCE_B, "TIE": pb.PREFERENCE_TIE}
        msgs = []
        for lab in labels:
            if lab.preference not in prefs:
                raise ClientError(f"preference must be A, B or TIE, got {lab.preference!r} for {lab.pair_id}")
            msgs.append(pb.Label(pair_id=lab.pair_id, preference=prefs[lab.preference], annotator=lab.annotator,
                                 idempotency_key=lab.idempotency_key))  # fmt: skip
        res = self._call(self.stub.SubmitLabels, pb.SubmitLabelsRequest(labels=msgs))
        return [LabelResult(r.pair_id, r.accepted, r.reason, r.label_id, r.late, r.replayed) for r in res.results]

    def export_labels(self, include_ties: bool = False) -> Iterator[ExportedLabel]:
        import grpc

        pb = self._pb
        names = {pb.PREFERENCE_A: "A", pb.PREFERENCE_B: "B", pb.PREFERENCE_TIE: "TIE"}
        request = pb.ExportLabelsRequest(include_ties=include_ties)
        try:
            for r in self.stub.ExportLabels(request, metadata=self.metadata, timeout=self.connection.timeout):
                yield ExportedLabel(r.label_id, r.pair_id, r.prompt, r.chosen, r.rejected, r.annotator,
                                    r.checkpoint_id, r.late, names.get(r.preference, ""))  # fmt: skip
        except grpc.RpcError as e:
            raise self._error(e) from None


class EmbeddedServer:
    """``activedpo-server serve`` in a child process on a free 127.0.0.1 port; a context manager.

    ``args`` are extra ``serve`` options (``--proj-dim``, ``--lora-r``, …). The server's log goes to
    ``log`` (default ``state_dir/../server.log``); a server that fails to start raises ClientError
    with its last lines.
    """

    def __init__(self, state_dir: Path, checkpoint: str | Path | None = None, token: str | None = None, args=(),
                 log: Path | None = None):  # fmt: skip
        self.state_dir, self.checkpoint, self.token, self.args = Path(state_dir), checkpoint, token, list(args)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = Path(log) if log is not None else self.state_dir.parent / "server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> EmbeddedServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.state_dir / "embedded.port"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "activedpo_server.cli", "serve", "--state-dir", str(self.state_dir),
               "--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), "--exit-with-parent",
               *self.args]  # fmt: skip
        if self.checkpoint is not None:
            cmd += ["--checkpoint", str(self.checkpoint)]
        env = dict(os.environ)
        env.pop("ACTIVEDPO_TOKEN", None)
        if self.token:
            env["ACTIVEDPO_TOKEN"] = self.token
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text().strip().splitlines()[-3:]
                raise ClientError(f"the embedded selection server did not start: {' | '.join(tail) or 'no output'}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stop(self, grace: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
