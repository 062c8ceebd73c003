"""Where the server's checkpoints come from: uploads stored by content, and confined path loads.

A selection host does not share a disk with the trainers. A client pushes the adapter files of a
checkpoint with ``UploadCheckpoint``; each file is stored once under ``blobs/sha256/`` by its
SHA-256, verified before it is kept, and a checkpoint becomes loadable only when every file it
names is present. ``checkpoints/<key>/`` then holds its ``manifest.json`` and an ``adapter/``
directory of hard links to the blobs, so loading an uploaded checkpoint is loading a directory.

Path loads (``LoadCheckpoint`` with a manifest, base or adapter path) from remote callers are
confined to the ``--checkpoint-root`` directories; with none they are off. A path outside the roots
gets the same answer whether it exists or not. A base model named by Hugging Face id resolves from
the server's own cache; downloads only with ``--allow-downloads``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from activedpo_server.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from activedpo_server.store import MAX_ID_CHARS
from activedpo_trainer.atomic import fsync_tree, write_json
from activedpo_trainer.checkpoint import CheckpointManifest, resolve_checkpoint

MAX_FILES = 1_000
MAX_CHECKPOINT_BYTES = 64 << 30
MAX_CHUNK_BYTES = 4 << 20
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


class Upload:
    """One UploadCheckpoint stream: validated header, then chunks written to temp files and verified."""

    def __init__(self, registry: CheckpointRegistry, checkpoint_id: str, base: str, files: list[FileSpec],
                 parent_id: str = ""):  # fmt: skip
        self.registry, self.checkpoint_id, self.base, self.files, self.parent_id = (
            registry, checkpoint_id, base, files, parent_id,
        )  # fmt: skip
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
            if self.registry.has_blob(sha256) and offset == 0:
                part = self._open[sha256] = _Partial(self.registry.tmp_path(sha256), skip=True)
            elif offset != 0:
                raise InvalidArgument(f"file {spec.path[:60]!r}: the first chunk must start at offset 0, got {offset}")
            else:
                part = self._open[sha256] = _Partial(self.registry.tmp_path(sha256))
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
        for digest, part in self._open.items():
            if not part.done:
                spec = self.by_digest[digest]
                raise InvalidArgument(f"file {spec.path[:60]!r}: got {part.size:,} of {spec.size:,} bytes")
        for f in self.files:  # empty files need no chunk
            if f.size == 0 and not self.registry.has_blob(f.sha256):
                _Partial(self.registry.tmp_path(f.sha256)).finish(self.registry, f)
        missing = [f.sha256 for f in self.files if not self.registry.has_blob(f.sha256)]
        if not missing:
            self.registry.record(self)
        return UploadResult(self.checkpoint_id, not missing, list(dict.fromkeys(missing)), self.received)

    def abort(self) -> None:
        for part in self._open.values():
            part.discard()


@dataclass
class _Partial:
    """A file being received: appended to a temp file while its digest is computed."""

    path: Path
    skip: bool = False  # already stored: the bytes are checked, not kept
    size: int = 0
    done: bool = False
    _hash: object = field(default_factory=hashlib.sha256)
    _fh: object = None

    def append(self, data: bytes) -> None:
        if not self.skip:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in finish/discard
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
        if self._fh is None:  # an empty file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "wb")  # noqa: SIM115
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        registry.keep_blob(self.path, spec.sha256)
        self.done = True

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if not self.skip:
            self.path.unlink(missing_ok=True)


class CheckpointRegistry:
    """Uploaded checkpoints in ``state_dir``, and the rules for path loads."""

    def __init__(self, state_dir: Path, roots: tuple[Path, ...] = (), allow_downloads: bool = False):
        self.state_dir = Path(state_dir)
        self.blobs = self.state_dir / "blobs" / "sha256"
        self.tmp = self.state_dir / "blobs" / "tmp"
        self.dir = self.state_dir / "checkpoints"
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self.allow_downloads = allow_downloads
        if self.tmp.exists():  # partial files of uploads cut off by a restart
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- blobs ----------------------------------------------------------------------------

    def blob(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob(digest).is_file()

    def tmp_path(self, digest: str) -> Path:
        return self.tmp / f"{digest}.{uuid.uuid4().hex[:8]}"

    def keep_blob(self, tmp: Path, digest: str) -> None:
        dest = self.blob(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_tree(dest.parent)

    # ---- uploads --------------------------------------------------------------------------

    def begin(self, checkpoint_id: str, base: str, files: list[FileSpec], parent_id: str = "") -> Upload:
        if not checkpoint_id or len(checkpoint_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"checkpoint_id must be 1 to {MAX_ID_CHARS} characters")
        if not base or len(base) > MAX_ID_CHARS or len(parent_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"base must be 1 to {MAX_ID_CHARS} characters (parent_id at most {MAX_ID_CHARS})")
        if not files or len(files) > MAX_FILES:
            raise InvalidArgument(f"an upload names 1 to {MAX_FILES:,} files, got {len(files):,}")
        for n, f in enumerate(files):
            _check_file(n, f)
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise InvalidArgument("two files have the same path")
        if "adapter_config.json" not in paths:
            raise InvalidArgument("the files are not a PEFT adapter: adapter_config.json is missing")
        total = sum(f.size for f in files)
        if total > MAX_CHECKPOINT_BYTES:
            raise InvalidArgument(f"{total:,} bytes in all; the limit is {MAX_CHECKPOINT_BYTES:,}")
        previous = self._record(checkpoint_id)
        files = sorted(files, key=lambda f: f.path)
        if previous is not None and (previous["files"] != [vars(f) for f in files] or previous["base"] != base):
            raise FailedPrecondition(f"checkpoint {checkpoint_id[:60]!r} was already uploaded with other "
                                     f"files or another base; upload under a new id")  # fmt: skip
        return Upload(self, checkpoint_id, base, files, parent_id)

    def _key(self, checkpoint_id: str) -> Path:
        return self.dir / hashlib.sha256(checkpoint_id.encode()).hexdigest()[:32]

    def _record(self, checkpoint_id: str) -> dict | None:
        path = self._key(checkpoint_id) / "upload.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def record(self, upload: Upload) -> None:
        """Link the verified blobs into ``checkpoints/<key>/adapter`` and write its manifest (once)."""
        if self._record(upload.checkpoint_id) is not None:
            return
        final = self._key(upload.checkpoint_id)
        work = final.with_name(final.name + f".tmp-{uuid.uuid4().hex[:8]}")
        adapter = work / "adapter"
        for f in upload.files:
            dest = adapter / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.blob(f.sha256), dest)
            except OSError:
                shutil.copyfile(self.blob(f.sha256), dest)
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
            raise PermissionDenied(f"{what}: path loads are off on this server; upload the checkpoint "
                                   f"(UploadCheckpoint) or start it with --checkpoint-root DIR")  # fmt: skip
        real = Path(os.path.realpath(os.path.expanduser(path)))
        if not any(real == r or r in real.parents for r in self.roots):
            raise PermissionDenied(f"{what}: {path[:80]!r} is not under a checkpoint root of this server")
        return str(real)

    def base(self, base: str, remote: bool) -> str:
        """A base model the server can open: a (confined) directory, or a Hugging Face id in its cache."""
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
