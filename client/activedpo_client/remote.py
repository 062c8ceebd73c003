"""Talking to a selection server: one small client over the activedpo.v1 stubs, and the embedded server.

``SelectorClient`` turns messages into the typed dataclasses of :mod:`activedpo_client.messages`
and gRPC failures into :class:`ClientError`
with one line that names the cause and what to do. ``EmbeddedServer`` starts
``activedpo-server serve`` as a child process on a free 127.0.0.1 port (the same gRPC path as a
remote server, nothing bypassed) and stops it on exit.

Why one module of this length: :class:`SelectorClient` has one method per RPC of the service, each with its
error translation, and the file digests beside it are what ``push_checkpoint`` sends.
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
    PREFERENCES,
    AddedPair,
    AddResult,
    Batch,
    CandidateGroup,
    CandidatePair,
    ExportedLabel,
    Label,
    LoadResult,
    PoolDescription,
    ServerStatus,
)
from activedpo_core.labels import LabelResult
from activedpo_core.lora import LoraSpec

MAX_MESSAGE_BYTES = 64 << 20  # the server's limit too


UPLOAD_CHUNK_BYTES = 1 << 20
# what from_pretrained never reads in a model directory: a Trainer's own state files
NOT_MODEL_FILES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json", "manifest.json")
_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) → SHA-256: a base model is hashed once


def _digest(path: Path, read: Callable[[int], None] | None = None) -> str:
    """A file's SHA-256 (once per process for an unchanged file); ``read(n)`` hears of every ``n`` bytes read."""
    import hashlib

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _digests:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
                if read:
                    read(len(block))
        _digests[key] = h.hexdigest()
    elif read:
        read(st.st_size)
    return _digests[key]


def _adapter_files(directory: Path) -> list[tuple[str, int, str, Path]]:
    """(relative path, size, SHA-256, path) of every file in an adapter directory."""
    if not (directory / "adapter_config.json").is_file():
        raise ClientError(f"{directory} is not a PEFT adapter directory (no adapter_config.json)")
    paths = sorted(p for p in directory.rglob("*") if p.is_file())
    return [(p.relative_to(directory).as_posix(), p.stat().st_size, _digest(p), p) for p in paths]


FileEntry = tuple[str, int, str, Path]  # (name relative to the directory, size, SHA-256, path)


def _model_files(directory: Path, progress: Callable[[int, int], None] | None = None) -> list[FileEntry]:
    """(name, size, SHA-256, path) of what ``from_pretrained(directory)`` reads: its top-level files (weights,
    config, tokenizer), without hidden files, subfolders (an ``original/`` copy, Trainer checkpoints) or a
    Trainer's own state. ``progress(bytes hashed, bytes in all)`` follows the hashing (minutes for 70B)."""
    if not (directory / "config.json").is_file():
        raise ClientError(f"{directory} is not a Hugging Face model directory (no config.json)")
    paths = sorted(p for p in directory.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name not in NOT_MODEL_FILES)  # fmt: skip
    total, done = sum(p.stat().st_size for p in paths), 0

    def read(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    return [(p.name, p.stat().st_size, _digest(p, read), p) for p in paths]


def base_upload_id(files: list[tuple[str, int, str, Path]]) -> str:
    """A base model's id on a server: the hash of its files' names and contents (the same model, the same id)."""
    import hashlib

    h = hashlib.sha256("".join(f"{name}\0{digest}\0" for name, _, digest, _ in files).encode())
    return "base-" + h.hexdigest()[:24]


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
    shares_disk: bool = False  # the server reads this machine's paths (embedded): checkpoints load by path
    # the base model as a remote server names it (a path on its host or a hub id in its cache); default: a
    # local base model directory is uploaded to it (content-addressed, once), a hub id is sent as it is
    server_base: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.target:
            raise ClientError(f"--server {self.target!r}: give host:port (the server's default port is 50051, e.g. "
                              f"{self.target}:50051), or embedded")  # fmt: skip


class SelectorClient:
    """The Selector service as plain method calls."""

    def __init__(self, connection: Connection, project: str = ""):
        import grpc

        from activedpo.v1 import selector_pb2_grpc

        self.connection = connection
        self.project = project  # every call is scoped to it ("" = the server's default project)
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
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED):  # fmt: skip
            return ClientError(f"the server refused the request: {details}")
        return ClientError(f"the server at {target} failed: {code.name}: {details}")

    def _call(self, method, request, **kw):
        import grpc

        try:
            return method(request, metadata=self.metadata, timeout=self.connection.timeout, **kw)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def wait_ready(self, timeout: float | None = None, say: Callable[[str], None] | None = None) -> None:
        """Block until the server answers GetStatus, or raise ClientError: up to ``timeout`` seconds (default 60 for a
        server this process started, which may still be loading, 20 for another); ``say`` hears once that it waits."""
        import grpc

        timeout = timeout if timeout is not None else 60.0 if self.connection.shares_disk else 20.0
        start = time.monotonic()
        told = False
        while True:
            try:
                self.stub.GetStatus(self._pb.GetStatusRequest(), metadata=self.metadata, timeout=5)
                return
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > start + timeout:
                    raise self._error(e) from None
            if say and not told and time.monotonic() > start + 3:
                say(f"waiting up to {timeout:.0f} s for the selection server at {self.connection.target} …")
                told = True
            time.sleep(0.2)

    @property
    def _pb(self):
        from activedpo.v1 import selector_pb2

        return selector_pb2

    # ---- RPCs -----------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        res = self._call(self.stub.GetStatus, self._pb.GetStatusRequest(project=self.project))
        plain = {f.name: getattr(res, f.name) for f in res.DESCRIPTOR.fields if f.name != "lora"}
        lora = LoraSpec(res.lora.r, res.lora.alpha, res.lora.target_modules) if res.HasField("lora") else None
        return ServerStatus(**plain, lora=lora)

    def load_checkpoint(self, checkpoint: str | Path = "", checkpoint_id: str = "", base: str = "",
                        id: str = "", lora: LoraSpec | None = None) -> LoadResult:  # fmt: skip
        """Load a checkpoint the server can reach: a path of its own, an uploaded id, or a base model; a
        checkpoint without an adapter is featurized with the fresh adapter ``lora`` (None: the server's)."""
        pb = self._pb
        spec = pb.LoraSpec(r=lora.r, alpha=lora.alpha, target_modules=lora.targets) if lora else None
        request = pb.LoadCheckpointRequest(manifest=str(checkpoint) if checkpoint else "", lora=spec,
                                           checkpoint_id=checkpoint_id, base=base, id=id)  # fmt: skip
        res = self._call(self.stub.LoadCheckpoint, request)
        return LoadResult(res.checkpoint_id, res.loaded, res.previous_checkpoint_id, res.refeaturized, res.seconds)

    def push_checkpoint(self, ref: str | Path, lora: LoraSpec | None = None,
                        progress: Callable[[str, int, int], None] | None = None) -> LoadResult:  # fmt: skip
        """Make the server serve ``ref`` (a checkpoint directory, manifest or base model); a checkpoint without
        an adapter is featurized with the fresh adapter ``lora`` (the one DPO will train).

        A server on this machine's disk (embedded) loads it by path. A remote one is sent whatever it lacks:
        the base model directory (unless ``Connection.server_base`` names it as the server knows it, or it is a
        hub id) and the adapter, content-addressed, so nothing is sent twice and a cut-off upload resumes.
        ``progress(what, bytes sent, bytes to send)`` follows the uploads.
        """
        from activedpo_core.checkpoint import resolve_checkpoint

        if self.connection.shares_disk:
            return self.load_checkpoint(ref, lora=lora)
        manifest = resolve_checkpoint(ref)
        base = self.connection.server_base or self.push_base(manifest.base, progress)
        if manifest.adapter is None:
            return self.load_checkpoint(base=base, id=manifest.id, lora=lora or manifest.lora)
        report = (lambda done, total: progress("uploading the adapter (bytes)", done, total)) if progress else None
        self.upload_checkpoint(manifest.adapter, manifest.id, base, manifest.parent_id or "", report)
        return self.load_checkpoint(checkpoint_id=manifest.id)

    def serves(self, ref: str | Path, lora: LoraSpec | None = None) -> bool:
        """Whether the server already serves checkpoint ``ref``, featurized (when it has no adapter) with the fresh
        adapter ``lora`` (None: any)."""
        from activedpo_core.checkpoint import resolve_checkpoint

        manifest = resolve_checkpoint(ref)
        status = self.status()
        return status.checkpoint_id == manifest.id and (
            manifest.adapter is not None or lora is None or (status.fresh_adapter and status.lora == lora)
        )

    def push_base(self, base: str, progress: Callable[[str, int, int], None] | None = None) -> str:
        """The base model as this server will name it: a local directory is uploaded (only what the server
        lacks) and named ``upload:<id>``; a hub id is the server's to find in its cache."""
        if not Path(base).is_dir():
            return base
        hashed = (lambda done, total: progress("hashing the base model (bytes)", done, total)) if progress else None
        files = _model_files(Path(base), hashed)
        base_id = base_upload_id(files)
        report = (lambda done, total: progress("uploading the base model (bytes)", done, total)) if progress else None
        self._upload(files, base_id, "", "", report, base_model=True)
        return f"upload:{base_id}"

    def upload_checkpoint(self, adapter_dir: str | Path, checkpoint_id: str, base: str, parent_id: str = "",
                          progress: Callable[[int, int], None] | None = None) -> int:  # fmt: skip
        """Upload an adapter directory; returns the bytes sent (0 when the server had every file)."""
        return self._upload(_adapter_files(Path(adapter_dir)), checkpoint_id, base, parent_id, progress)

    def _upload(self, files: list[tuple[str, int, str, Path]], checkpoint_id: str, base: str, parent_id: str,
                progress: Callable[[int, int], None] | None, base_model: bool = False) -> int:  # fmt: skip
        """Send the files the server lacks, each from where a cut-off earlier upload stopped; the bytes sent."""
        pb = self._pb
        header = pb.UploadHeader(checkpoint_id=checkpoint_id, base=base, parent_id=parent_id, base_model=base_model,
                                 files=[pb.CheckpointFile(path=rel, size=size, sha256=digest)
                                        for rel, size, digest, _ in files])  # fmt: skip
        first = pb.UploadCheckpointRequest(header=header)
        res = self._call(self.stub.UploadCheckpoint, iter([first]))  # which files does it lack, and how much of each?
        if res.complete:
            return 0
        missing = set(res.missing)
        start = {p.sha256: p.offset for p in res.partial}
        total = sum(size - start.get(digest, 0) for _, size, digest, _ in {f[2]: f for f in files}.values()
                    if digest in missing)  # fmt: skip
        sent = 0

        def messages():
            nonlocal sent
            yield first
            for _, _, digest, path in files:
                if digest not in missing:
                    continue
                missing.discard(digest)  # the same content under two names goes once
                with open(path, "rb") as f:
                    offset = start.get(digest, 0)
                    f.seek(offset)
                    while chunk := f.read(UPLOAD_CHUNK_BYTES):
                        yield pb.UploadCheckpointRequest(chunk=pb.FileChunk(sha256=digest, offset=offset, data=chunk))
                        offset += len(chunk)
                        sent += len(chunk)
                        if progress:
                            progress(sent, total)

        res = self._call(self.stub.UploadCheckpoint, messages())
        if not res.complete:
            raise ClientError(f"the server still lacks {len(res.missing)} file(s) of checkpoint {checkpoint_id}")
        return sent

    def add_candidates(self, items: Iterable[CandidateGroup | CandidatePair | tuple], pool: str = "",
                       return_pairs: bool = False) -> AddResult:  # fmt: skip
        """Stream candidates in one call: groups add all pairs of their responses, pairs add themselves.

        A ``(prompt, responses)`` tuple is a group. One call is one transaction on the server
        (all or nothing); ids default to content hashes, so sending the same items again adds nothing.
        With ``return_pairs`` the result's ``added`` says where each explicit pair landed (its id, and
        whether the server holds its responses in the other order).
        """
        pb = self._pb

        def messages():
            for n, item in enumerate(items):
                if isinstance(item, tuple):
                    item = CandidateGroup(*item)
                kind = "pair" if isinstance(item, CandidatePair) else "group"
                yield pb.AddCandidatesRequest(**{kind: item.to_pb(pb)}, pool=pool, project=self.project,
                                              return_pairs=return_pairs and n == 0)  # fmt: skip

        res = self._call(self.stub.AddCandidates, messages())
        added = tuple(AddedPair(p.pair_id, p.added, p.swapped) for p in res.pairs)
        return AddResult(res.prompts_added, res.responses_added, res.pairs_added, res.pairs_deduplicated, added)

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
        audit: int = 0,
    ) -> Batch:
        """``budget`` pairs leased for labeling; ``audit`` of them drawn uniformly at random from the pool
        (:func:`activedpo_core.audit.audit_count`) to estimate the policy's accuracy without the strategy's bias."""
        import grpc

        pb = self._pb
        request = pb.SelectBatchRequest(
            audit=audit,
            budget=budget,
            strategy=strategy,
            pool=pool,
            lease_seconds=lease_seconds,
            seed=seed,
            client=client,
            request_id=request_id,
            project=self.project,
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

    def release_lease(self, lease_id: str, pair_ids: Iterable[str] = ()) -> int:
        """Give a leased batch (or some of its pairs) back to the pool; returns how many were still held."""
        request = self._pb.ReleaseLeaseRequest(lease_id=lease_id, pair_ids=list(pair_ids), project=self.project)
        return self._call(self.stub.ReleaseLease, request).released

    def submit_labels(self, labels: Iterable[Label]) -> list[LabelResult]:
        """Record labels; each result says whether it was accepted, and why not."""
        pb = self._pb
        prefs = {name: getattr(pb, f"PREFERENCE_{name}") for name in PREFERENCES}
        msgs = []
        for lab in labels:
            if lab.preference not in prefs and not lab.withdrawn:
                raise ClientError(f"preference must be one of {', '.join(PREFERENCES)}, got {lab.preference!r} "
                                  f"for {lab.pair_id}")  # fmt: skip
            msgs.append(pb.Label(pair_id=lab.pair_id, preference=prefs.get(lab.preference, 0),
                                 annotator=lab.annotator, idempotency_key=lab.idempotency_key, revision=lab.revision,
                                 withdrawn=lab.withdrawn))  # fmt: skip
        res = self._call(self.stub.SubmitLabels, pb.SubmitLabelsRequest(labels=msgs, project=self.project))
        return [LabelResult(r.pair_id, r.accepted, r.reason, r.label_id, r.late, r.replayed, r.revised)
                for r in res.results]  # fmt: skip

    def export_labels(self, include_ties: bool = False) -> Iterator[ExportedLabel]:
        import grpc

        pb = self._pb
        names = {getattr(pb, f"PREFERENCE_{name}"): name for name in PREFERENCES}
        request = pb.ExportLabelsRequest(include_ties=include_ties, project=self.project)
        try:
            for r in self.stub.ExportLabels(request, metadata=self.metadata, timeout=self.connection.timeout):
                yield ExportedLabel(r.label_id, r.pair_id, r.prompt, r.chosen, r.rejected, r.annotator,
                                    r.checkpoint_id, r.late, names.get(r.preference, ""), r.idempotency_key,
                                    r.revision, r.audit, r.margin if r.HasField("margin") else None)  # fmt: skip
        except grpc.RpcError as e:
            raise self._error(e) from None


    def describe_pool(self, pool: str = "", max_pairs: int = 0, seed: int = 0) -> PoolDescription:
        """How the current policy sees ``pool``'s unleased, unlabeled pairs (at most ``max_pairs``, a uniform
        sample; 0: the server's default): margins and ActiveDPO scores. Leases nothing."""
        pb = self._pb
        r = self._call(self.stub.DescribePool, pb.DescribePoolRequest(pool=pool, project=self.project,
                                                                      max_pairs=max_pairs, seed=seed))  # fmt: skip
        return PoolDescription(r.pairs, tuple(r.pair_ids), tuple(r.margins), tuple(r.scores), r.checkpoint_id)


class EmbeddedServer:
    """``activedpo-server serve`` in a child process on a free 127.0.0.1 port; a context manager.

    ``args`` are extra ``serve`` options (``--proj-dim``, ``--lora-r``, …). The server's log goes to
    ``log`` (default ``state_dir/../server.log``); a server that fails to start raises ClientError
    with its last lines.
    """

    def __init__(self, state_dir: Path, checkpoint: str | Path | None = None, token: str | None = None, args=(),
                 log: Path | None = None, port: int = 0):  # fmt: skip
        self.state_dir, self.checkpoint, self.token, self.args = Path(state_dir), checkpoint, token, list(args)
        self.proc: subprocess.Popen | None = None
        self.port = port  # 0: a free one, chosen at start
        self.log = Path(log) if log is not None else self.state_dir.parent / "server.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> EmbeddedServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.state_dir / "embedded.port"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "activedpo_server.cli", "serve", "--state-dir", str(self.state_dir),
               "--host", "127.0.0.1", "--port", str(self.port), "--port-file", str(port_file), "--exit-with-parent",
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
