"""Where the server's checkpoints come from: uploads stored by content, and confined path loads.

A selection host does not share a disk with the trainers. A client pushes the adapter files of a
checkpoint with ``UploadCheckpoint``; each file is stored once under ``blobs/sha256/`` by its
SHA-256, verified before it is kept, and a checkpoint becomes loadable only when every file it
names is present. ``checkpoints/<key>/`` then holds its ``manifest.json`` and an ``adapter/``
directory of hard links to the blobs, so loading an uploaded checkpoint is loading a directory.
A base model is uploaded the same way (``base_model``): ``bases/<key>/model/`` holds its files,
and checkpoints name it ``upload:<id>``. A file cut off mid-upload stays in ``blobs/tmp/`` as
``<sha256>.part``; the next upload resumes at its length (a header-only call reports it).

Path loads (``LoadCheckpoint`` with a manifest, base or adapter path) from remote callers are
confined to the ``--checkpoint-root`` directories; with none they are off. A path outside the roots
gets the same answer whether it exists or not. A base model named by Hugging Face id resolves from
the server's own cache; downloads only with ``--allow-downloads``.

Why one module of this length: uploads and the registry are one protocol (the registry decides what an upload
completes, and confinement applies to both).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from activedpo_core.atomic import fsync_tree, write_json
from activedpo_core.checkpoint import CheckpointManifest, resolve_checkpoint
from activedpo_server.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from activedpo_server.records import MAX_ID_CHARS

MAX_FILES = 1_000
MAX_CHECKPOINT_BYTES = 64 << 30
MAX_BASE_BYTES = 1 << 40  # a 70B model in float32 is 280 GB
MAX_CHUNK_BYTES = 4 << 20
UPLOADED_BASE = "upload:"  # how a checkpoint names a base model uploaded to this server
PARTIAL_DAYS = 7  # a cut-off upload's partial file is kept this long for a resume
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative, POSIX
    size: int
    sha256: str


@dataclass(frozen=True)
class UploadResult:
    checkpoint_id: str
    complete: bool
    missing: list[str]
    bytes_received: int
    partial: list[tuple[str, int]] = field(default_factory=list)  # (digest, bytes held) of cut-off missing files


def _check_file(n: int, f: FileSpec) -> None:
    p = PurePosixPath(f.path)
    if not f.path or len(f.path) > MAX_ID_CHARS or "\0" in f.path or "\\" in f.path:
        raise InvalidArgument(f"file {n}: path must be 1 to {MAX_ID_CHARS} characters, without NUL or backslash")
    if p.is_absolute() or any(part in ("", ".", "..") for part in f.path.split("/")):
        raise InvalidArgument(f"file {n}: path {f.path[:60]!r} must be relative, without '.' or '..' parts")
    if not _HEX64.match(f.sha256):
        raise InvalidArgument(f"file {n}: sha256 must be 64 lowercase hex digits")
    if f.size < 0:
        raise InvalidArgument(f"file {n}: size must not be negative")


def _check_files(files: list[FileSpec], required: str, what: str, limit: int) -> list[FileSpec]:
    """An upload header's files, checked (count, paths, ``required`` among them, total size) and sorted by path."""
    if not files or len(files) > MAX_FILES:
        raise InvalidArgument(f"an upload names 1 to {MAX_FILES:,} files, got {len(files):,}")
    for n, f in enumerate(files):
        _check_file(n, f)
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise InvalidArgument("two files have the same path")
    if required not in paths:
        raise InvalidArgument(f"the files are not {what}: {required} is missing")
    total = sum(f.size for f in files)
    if total > limit:
        raise InvalidArgument(f"{total:,} bytes in all; the limit is {limit:,}")
    return sorted(files, key=lambda f: f.path)


class Upload:
    """One UploadCheckpoint stream: validated header, then chunks written to temp files and verified."""

    def __init__(self, registry: CheckpointRegistry, checkpoint_id: str, base: str, files: list[FileSpec],
                 parent_id: str = "", base_model: bool = False):  # fmt: skip
        self.registry, self.checkpoint_id, self.base, self.files, self.parent_id = (
            registry, checkpoint_id, base, files, parent_id,
        )  # fmt: skip
        self.base_model = base_model
        self.by_digest = {f.sha256: f for f in files}
        self.received = 0
        self._open: dict[str, _Partial] = {}

    def write(self, sha256: str, offset: int, data: bytes) -> None:
        spec = self.by_digest.get(sha256)
        if spec is None:
            raise InvalidArgument(f"chunk for {sha256[:16]}…: no such file in the header")
        if len(data) > MAX_CHUNK_BYTES:
            raise InvalidArgument(f"chunk of {len(data):,} bytes; the limit is {MAX_CHUNK_BYTES:,}")
        part = self._open.get(sha256)
        if part is None:
            if self.registry.has_blob(sha256):  # known content: its bytes are checked, not kept
                if offset != 0:
                    raise InvalidArgument(f"file {spec.path[:60]!r}: the server has it; send it from offset 0 or "
                                          f"not at all")  # fmt: skip
                part = self._open[sha256] = _Partial(self.registry.tmp_path(sha256), skip=True)
            else:
                part = self._open[sha256] = self.registry.open_partial(spec, offset)
        if part.done:
            raise InvalidArgument(f"file {spec.path[:60]!r}: more chunks after its last byte")
        if offset != part.size:
            raise InvalidArgument(f"file {spec.path[:60]!r}: chunk at offset {offset:,}, expected {part.size:,}")
        if part.size + len(data) > spec.size:
            raise InvalidArgument(f"file {spec.path[:60]!r}: more than its {spec.size:,} bytes")
        part.append(data)
        self.received += len(data)
        if part.size == spec.size:
            part.finish(self.registry, spec)

    def finish(self) -> UploadResult:
        """Check every started file is complete; record the checkpoint once every file is present."""
        for f in self.files:  # a cut-off upload that had sent every byte: verify what was kept, and keep it
            if (
                f.size
                and f.sha256 not in self._open
                and not self.registry.has_blob(f.sha256)
                and (self.registry.partial_size(f.sha256) == f.size)
            ):
                self._open[f.sha256] = part = self.registry.open_partial(f, f.size)
                part.finish(self.registry, f)
        for digest, part in self._open.items():
            if not part.done:
                spec = self.by_digest[digest]
                raise InvalidArgument(f"file {spec.path[:60]!r}: got {part.size:,} of {spec.size:,} bytes")
        for f in self.files:  # empty files need no chunk
            if f.size == 0 and not self.registry.has_blob(f.sha256):
                _Partial(self.registry.tmp_path(f.sha256)).finish(self.registry, f)
        missing = list(dict.fromkeys(f.sha256 for f in self.files if not self.registry.has_blob(f.sha256)))
        if not missing:
            self.registry.record(self)
        partial = [(d, n) for d in missing if (n := self.registry.partial_size(d))]
        return UploadResult(self.checkpoint_id, not missing, missing, self.received, partial)

    def abort(self) -> None:
        for part in self._open.values():
            part.discard(keep=True)  # what arrived stays as a partial file: the next upload resumes there


@dataclass
class _Partial:
    """A file being received: appended to a temp file while its digest is computed."""

    path: Path
    skip: bool = False  # already stored: the bytes are checked, not kept
    size: int = 0  # bytes so far (a resumed file starts at the length of what was kept)
    done: bool = False
    _hash: object = field(default_factory=hashlib.sha256)
    _fh: object = None
    release: object = None  # called once when this file is finished or discarded (the registry's busy mark)

    def append(self, data: bytes) -> None:
        if not self.skip:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab" if self.size else "wb")  # noqa: SIM115 - closed in finish/discard
            self._fh.write(data)
        self._hash.update(data)
        self.size += len(data)

    def finish(self, registry: CheckpointRegistry, spec: FileSpec) -> None:
        if self._hash.hexdigest() != spec.sha256:
            self.discard()
            raise InvalidArgument(f"file {spec.path[:60]!r}: its bytes do not match its SHA-256; nothing kept")
        if self.skip:
            self.done = True
            return
        if self._fh is None:  # an empty file, or a resumed one whose last byte had already arrived
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        registry.keep_blob(self.path, spec.sha256)
        self.done = True
        self._release()

    def discard(self, keep: bool = False) -> None:
        """Stop receiving; ``keep``: leave what arrived for a resume (else delete it)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if not self.skip and not self.done and not keep:
            self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self.release is not None:
            self.release()
            self.release = None


class CheckpointRegistry:
    """Uploaded checkpoints in ``state_dir``, and the rules for path loads."""

    def __init__(self, state_dir: Path, roots: tuple[Path, ...] = (), allow_downloads: bool = False):
        self.state_dir = Path(state_dir)
        self.blobs = self.state_dir / "blobs" / "sha256"
        self.tmp = self.state_dir / "blobs" / "tmp"
        self.dir = self.state_dir / "checkpoints"
        self.bases = self.state_dir / "bases"
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self.allow_downloads = allow_downloads
        self._busy: set[str] = set()  # digests some upload is writing right now
        self._busy_lock = threading.Lock()
        if self.tmp.is_dir():  # keep recent partial files of cut-off uploads (resumable); drop the rest
            stale = time.time() - PARTIAL_DAYS * 86400
            for p in self.tmp.iterdir():
                if p.suffix != ".part" or p.stat().st_mtime < stale:
                    p.unlink(missing_ok=True)

    # ---- blobs ----------------------------------------------------------------------------

    def blob(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob(digest).is_file()

    def tmp_path(self, digest: str) -> Path:
        return self.tmp / f"{digest}.{uuid.uuid4().hex[:8]}"

    def partial_path(self, digest: str) -> Path:
        return self.tmp / f"{digest}.part"

    def partial_size(self, digest: str) -> int:
        """Bytes of ``digest`` kept from a cut-off upload (0: none)."""
        try:
            return self.partial_path(digest).stat().st_size
        except OSError:
            return 0

    def open_partial(self, spec: FileSpec, offset: int) -> _Partial:
        """Receive ``spec`` from ``offset``: 0 starts over; the length of its partial file resumes there."""
        with self._busy_lock:
            if spec.sha256 in self._busy:
                raise FailedPrecondition(f"file {spec.path[:60]!r} is being uploaded by another call right now; "
                                         f"retry when that one ends")  # fmt: skip
            self._busy.add(spec.sha256)
        try:
            path, held = self.partial_path(spec.sha256), self.partial_size(spec.sha256)
            part = _Partial(path, release=lambda: self._done_with(spec.sha256))
            if offset == 0:
                return part
            if offset != held or held > spec.size:
                raise InvalidArgument(f"file {spec.path[:60]!r}: the server holds {held:,} bytes of it; resume at "
                                      f"offset {held:,} or start at 0, not at {offset:,}")  # fmt: skip
            with open(path, "rb") as f:  # the digest covers the kept bytes too
                while block := f.read(1 << 22):
                    part._hash.update(block)
            part.size = held
            return part
        except BaseException:
            self._done_with(spec.sha256)
            raise

    def _done_with(self, digest: str) -> None:
        with self._busy_lock:
            self._busy.discard(digest)

    def keep_blob(self, tmp: Path, digest: str) -> None:
        dest = self.blob(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_tree(dest.parent)

    # ---- uploads --------------------------------------------------------------------------

    def begin(self, checkpoint_id: str, base: str, files: list[FileSpec], parent_id: str = "",
              base_model: bool = False) -> Upload:  # fmt: skip
        if not checkpoint_id or len(checkpoint_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"checkpoint_id must be 1 to {MAX_ID_CHARS} characters")
        if base_model:
            return self._begin_base(checkpoint_id, base, files)
        if not base or len(base) > MAX_ID_CHARS or len(parent_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"base must be 1 to {MAX_ID_CHARS} characters (parent_id at most {MAX_ID_CHARS})")
        if base.startswith(UPLOADED_BASE) and self._base_record(base[len(UPLOADED_BASE) :]) is None:
            raise FailedPrecondition(f"base model {base[:80]!r} is not on this server; upload it first "
                                     f"(UploadCheckpoint with base_model)")  # fmt: skip
        files = _check_files(files, "adapter_config.json", "a PEFT adapter", MAX_CHECKPOINT_BYTES)
        previous = self._record(checkpoint_id)
        if previous is not None and (previous["files"] != [vars(f) for f in files] or previous["base"] != base):
            raise FailedPrecondition(f"checkpoint {checkpoint_id[:60]!r} was already uploaded with other "
                                     f"files or another base; upload under a new id")  # fmt: skip
        return Upload(self, checkpoint_id, base, files, parent_id)

    def _begin_base(self, base_id: str, base: str, files: list[FileSpec]) -> Upload:
        if base:
            raise InvalidArgument("a base model upload names no base (leave `base` empty)")
        files = _check_files(files, "config.json", "a Hugging Face model directory", MAX_BASE_BYTES)
        previous = self._base_record(base_id)
        if previous is not None and previous["files"] != [vars(f) for f in files]:
            raise FailedPrecondition(f"base model {base_id[:60]!r} was already uploaded with other files; upload "
                                     f"under a new id")  # fmt: skip
        return Upload(self, base_id, "", files, base_model=True)

    def _base_key(self, base_id: str) -> Path:
        return self.bases / hashlib.sha256(base_id.encode()).hexdigest()[:32]

    def _base_record(self, base_id: str) -> dict | None:
        path = self._base_key(base_id) / "upload.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def uploaded_base(self, base_id: str) -> str:
        """The directory of base model ``base_id`` uploaded to this server."""
        if self._base_record(base_id) is None:
            raise NotFound(f"no uploaded base model {base_id[:60]!r} (or its upload is incomplete); upload it "
                           f"(UploadCheckpoint with base_model)")  # fmt: skip
        return str(self._base_key(base_id) / "model")

    def _key(self, checkpoint_id: str) -> Path:
        return self.dir / hashlib.sha256(checkpoint_id.encode()).hexdigest()[:32]

    def _record(self, checkpoint_id: str) -> dict | None:
        path = self._key(checkpoint_id) / "upload.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def record(self, upload: Upload) -> None:
        """Link the verified blobs into ``checkpoints/<key>/adapter`` (a base model: ``bases/<key>/model``) and
        write its manifest (once)."""
        if upload.base_model:
            if self._base_record(upload.checkpoint_id) is not None:
                return
            final = self._base_key(upload.checkpoint_id)
        else:
            if self._record(upload.checkpoint_id) is not None:
                return
            final = self._key(upload.checkpoint_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        work = final.with_name(final.name + f".tmp-{uuid.uuid4().hex[:8]}")
        adapter = work / ("model" if upload.base_model else "adapter")
        for f in upload.files:
            dest = adapter / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.blob(f.sha256), dest)
            except OSError:
                shutil.copyfile(self.blob(f.sha256), dest)
        if not upload.base_model:
            CheckpointManifest(upload.checkpoint_id, upload.base, "adapter", upload.parent_id or None, "").save(work)
        write_json(work / "upload.json", dict(id=upload.checkpoint_id, base=upload.base,
                                               files=[vars(f) for f in upload.files]))  # fmt: skip
        fsync_tree(work)
        try:
            os.replace(work, final)
        except OSError:  # another upload of the same checkpoint finished first
            shutil.rmtree(work, ignore_errors=True)

    # ---- what LoadCheckpoint may open ------------------------------------------------------

    def uploaded(self, checkpoint_id: str) -> CheckpointManifest:
        directory = self._key(checkpoint_id)
        if self._record(checkpoint_id) is None:
            raise NotFound(f"no uploaded checkpoint {checkpoint_id[:60]!r} (or its upload is incomplete)")
        m = resolve_checkpoint(directory)
        return CheckpointManifest(m.id, self.base(m.base, remote=True), m.adapter, m.parent_id, m.created)

    def confine(self, path: str, what: str) -> str:
        """``path`` if it lies under a checkpoint root (symlinks resolved), else PermissionDenied."""
        if not self.roots:
            raise PermissionDenied(f"{what} {path[:80]!r}: path loads are off on this server (it has no "
                                   f"--checkpoint-root); send the files instead (activedpo-client uploads them "
                                   f"unless --server-base names a path)")  # fmt: skip
        real = Path(os.path.realpath(os.path.expanduser(path)))
        if not any(real == r or r in real.parents for r in self.roots):
            raise PermissionDenied(f"{what}: {path[:80]!r} is not under a checkpoint root of this server")
        return str(real)

    def base(self, base: str, remote: bool) -> str:
        """A base model the server can open: one uploaded to it, a (confined) directory, or a Hugging Face id
        in its cache."""
        if base.startswith(UPLOADED_BASE):
            return self.uploaded_base(base[len(UPLOADED_BASE) :])
        if _HF_ID.match(base) and not Path(base).exists():
            if self.allow_downloads:
                return base
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(base, "config.json"), str):
                return base
            raise NotFound(f"base model {base[:80]!r} is not in this server's Hugging Face cache and downloads "
                           f"are off (serve --allow-downloads, or put it under a --checkpoint-root)")  # fmt: skip
        return self.confine(base, "base model") if remote else base

    def resolve(self, checkpoint_id: str = "", manifest: str = "", base: str = "", adapter: str = "", id: str = "",
                remote: bool = True) -> CheckpointManifest:  # fmt: skip
        """The manifest a LoadCheckpoint request names, with every path checked."""
        if checkpoint_id:
            return self.uploaded(checkpoint_id)
        if manifest:
            path = self.confine(manifest, "manifest") if remote else manifest
            m = resolve_checkpoint(path)
            adapter_path = m.adapter and (self.confine(m.adapter, "adapter") if remote else m.adapter)
            return CheckpointManifest(m.id, self.base(m.base, remote), adapter_path, m.parent_id, m.created)
        if base:
            adapter_path = (self.confine(adapter, "adapter") if remote else adapter) if adapter else None
            return CheckpointManifest(id or f"{base}+{adapter or 'base'}", self.base(base, remote), adapter_path,
                                      None, "")  # fmt: skip
        raise InvalidArgument("set `checkpoint_id`, `manifest`, or `base` (with an optional `adapter` and `id`)")
