"""Issue 15's defects, each against the real server in a subprocess: a request the caller sees fail
changes nothing; ids are scoped; paths are confined; a full database is RESOURCE_EXHAUSTED."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest
from test_server import WORDS, ServerProcess, groups, select

from activedpo.v1 import selector_pb2 as pb


def status(stub, md, project=""):
    return stub.GetStatus(pb.GetStatusRequest(project=project), metadata=md, timeout=10)


@pytest.fixture
def plain(tmp_path, tiny_world):
    """A server with no checkpoint roots: remote callers cannot make it open paths."""
    s = ServerProcess(tmp_path / "state", tiny_world.sft_dir).start()
    yield s
    s.kill(signal.SIGTERM)


def _held_open(world, release: threading.Event, n=10):
    """10 groups, then a stream that stays open (no half-close) until ``release``."""
    yield from groups(world, n)
    release.wait(30)


CLIENT_KILLED_MID_STREAM = """
import sys, time, grpc
from activedpo.v1 import selector_pb2 as pb, selector_pb2_grpc as pbg
stub = pbg.SelectorStub(grpc.insecure_channel(sys.argv[1]))
def items():
    for i in range(10):
        yield pb.AddCandidatesRequest(group=pb.PromptGroup(prompt=f"prompt {i}", responses=[
            pb.CandidateResponse(text=" a"), pb.CandidateResponse(text=" b"), pb.CandidateResponse(text=" c")]))
    print("sent", flush=True)
    time.sleep(60)
stub.AddCandidates(items(), metadata=(("authorization", "Bearer " + sys.argv[2]),))
"""


def test_an_add_stream_that_never_half_closes_commits_nothing(plain, tiny_world):
    """Defect 1: cancel, deadline and a killed client each used to commit what was sent so far."""
    stub, md, _ = plain.stub()
    # the client cancels
    release = threading.Event()
    call = stub.AddCandidates.future(_held_open(tiny_world, release), metadata=md)
    time.sleep(1.0)
    call.cancel()
    release.set()
    # its deadline expires
    release2 = threading.Event()
    with pytest.raises(grpc.RpcError) as e:
        stub.AddCandidates(_held_open(tiny_world, release2), metadata=md, timeout=1.0)
    release2.set()
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the client process is killed mid-stream
    client = subprocess.Popen([sys.executable, "-c", CLIENT_KILLED_MID_STREAM, f"127.0.0.1:{plain.port}", plain.token],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert client.stdout.readline().strip() == "sent"
    time.sleep(0.5)
    client.kill()
    client.wait()
    time.sleep(1.0)
    s = status(stub, md)
    assert (s.pool_size, s.prompts, s.responses) == (0, 0, 0)
    # a stream that half-closes commits all of it
    assert stub.AddCandidates(groups(tiny_world, 10), metadata=md).pairs_added == 30


def _slow_pool(stub, md, world, pool: str, n: int = 300) -> int:
    """``n`` prompts × 3 responses no other pool has: selecting from it must featurize them first (seconds)."""
    items = (pb.AddCandidatesRequest(pool=pool, group=pb.PromptGroup(prompt=p, responses=[
        pb.CandidateResponse(text=f" {WORDS[(i + k) % 5]} {pool} {i} {k}") for k in range(3)]))
        for i, p in enumerate(world.task.train_prompts()[:n]))  # fmt: skip
    return stub.AddCandidates(items, metadata=md).responses_added


def test_a_selection_whose_caller_goes_away_leases_nothing(tmp_path, tiny_world):
    """Defect 2: a cancelled or expired SelectBatch kept its pairs leased under an id nobody received."""
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=["--proj-dim", "8192"], verbose=True).start()
    try:
        stub, md, _ = server.stub()
        total = _slow_pool(stub, md, tiny_world, "first")
        calls = stub.SelectBatch(pb.SelectBatchRequest(budget=20, client="gone", pool="first"), metadata=md)
        first = next(calls)
        assert first.WhichOneof("event") == "progress"  # the work has started
        calls.cancel()
        total += _slow_pool(stub, md, tiny_world, "second")  # fresh responses: this selection must featurize
        with pytest.raises(grpc.RpcError) as e:
            list(stub.SelectBatch(pb.SelectBatchRequest(budget=20, client="late", pool="second"), metadata=md,
                                  timeout=0.3))  # fmt: skip
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.time() + 180  # both selections finish in the background, then give their leases back
        while time.time() < deadline and server.log.read_text().count("SelectBatch caller went away") < 2:
            time.sleep(0.2)
        assert server.log.read_text().count("SelectBatch caller went away: lease") == 2
        assert status(stub, md).featurized == total == 1800
        assert status(stub, md).leased == 0
        batch, _ = select(stub, md, 20)  # and the pairs are there for the next caller
        assert len(batch.pairs) == 20 and status(stub, md).leased == 20
    finally:
        server.kill(signal.SIGTERM)


def test_request_ids_are_scoped_and_a_changed_retry_is_refused(plain, tiny_world):
    """Defect 7: a retry with another strategy returned the original pairs; ids were global."""
    stub, md, _ = plain.stub()
    stub.AddCandidates(groups(tiny_world, 10), metadata=md)
    a, _ = select(stub, md, 4, client="labeler-1", request_id="r1")
    again, _ = select(stub, md, 4, client="labeler-1", request_id="r1")
    assert [p.pair_id for p in again.pairs] == [p.pair_id for p in a.pairs] and again.lease_id == a.lease_id
    other, _ = select(stub, md, 4, client="labeler-2", request_id="r1")  # another client's r1
    assert not {p.pair_id for p in other.pairs} & {p.pair_id for p in a.pairs}
    for changed in (dict(strategy="random"), dict(budget=5), dict(pool="x"), dict(seed=3)):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.SelectBatch(pb.SelectBatchRequest(**{"budget": 4, **changed}, client="labeler-1",
                                                        request_id="r1"), metadata=md))  # fmt: skip
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "other parameters" in e.value.details()
    assert status(stub, md).leased == 8  # the refused retries leased nothing
    # ReleaseLease gives a batch back (idempotent), and the id may then choose afresh
    released = stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=a.lease_id), metadata=md)
    assert released.released == 4 and status(stub, md).leased == 4
    assert stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=a.lease_id), metadata=md).released == 0
    with pytest.raises(grpc.RpcError) as e:
        stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id="lease-nobody"), metadata=md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=a.lease_id, project="elsewhere"), metadata=md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # another project's lease is invisible


def test_projects_keep_pools_labels_and_exports_apart(plain, tiny_world):
    stub, md, _ = plain.stub()
    stub.AddCandidates(groups(tiny_world, 4), metadata=md)
    added = stub.AddCandidates(
        (pb.AddCandidatesRequest(group=g.group, project="team-b") for g in groups(tiny_world, 4)), metadata=md
    )
    assert added.pairs_added == 12  # the same content is new in another project
    batch, _ = select(stub, md, 3, project="team-b")
    labels = [pb.Label(pair_id=p.pair_id, preference=pb.PREFERENCE_A, annotator="b", idempotency_key=p.pair_id)
              for p in batch.pairs]  # fmt: skip
    res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels, project="team-b"), metadata=md)
    assert res.accepted == 3
    assert (status(stub, md, "team-b").labeled, status(stub, md).labeled) == (3, 0)
    assert len(list(stub.ExportLabels(pb.ExportLabelsRequest(project="team-b"), metadata=md))) == 3
    assert list(stub.ExportLabels(pb.ExportLabelsRequest(), metadata=md)) == []
    # the same keys in the default project are new labels there, not replays of team-b's
    res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md)
    assert res.accepted == 3 and not any(r.replayed for r in res.results)
    default, _ = select(stub, md, 20)
    assert len(default.pairs) == 9 and default.candidates == 9  # team-b's lease does not touch it
    two = list(groups(tiny_world, 2))
    mixed = [pb.AddCandidatesRequest(group=two[0].group, project="a"), pb.AddCandidatesRequest(group=two[1].group)]
    with pytest.raises(grpc.RpcError) as e:
        stub.AddCandidates(iter(mixed), metadata=md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "project differs" in e.value.details()


def test_path_loads_are_confined_and_hub_ids_stay_offline(tmp_path, tiny_world, random_adapter):
    """Defect 9: LoadCheckpoint opened any path, told existing from missing ones, and tried the hub."""
    root = tmp_path / "root"
    root.mkdir()
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=["--checkpoint-root", str(root)]).start()
    try:
        stub, md, _ = server.stub()
        answers = set()
        for path in (random_adapter.adapter, "/etc/passwd", str(tmp_path / "missing"), str(root / ".." / "state")):
            with pytest.raises(grpc.RpcError) as e:
                stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest=path), metadata=md)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            answers.add(e.value.details().replace(repr(path[:80]), "PATH"))
        assert answers == {"manifest: PATH is not under a checkpoint root of this server"}  # existing or not
        (root / "link").symlink_to(tmp_path)  # a symlink out of the root is outside it
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest=str(root / "link" / "state")), metadata=md)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest=str(root / "nothing")), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # inside the root, a missing path is named
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadCheckpoint(pb.LoadCheckpointRequest(base="some-org/some-model"), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "downloads are off" in e.value.details()
        assert time.perf_counter() - t0 < 5  # answered from the cache, no network attempt
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest="x" * 5000), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details()) < 100
    finally:
        server.kill(signal.SIGTERM)


def _header(cid, files, base):
    return pb.UploadCheckpointRequest(header=pb.UploadHeader(checkpoint_id=cid, base=base, files=[
        pb.CheckpointFile(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest()) for p, d in files]))  # fmt: skip


def _chunks(files, size=1000, sent=None):
    """Chunks of ``files``, named by their digests; ``sent`` replaces the bytes actually sent."""
    for n, (_, d) in enumerate(files):
        digest = hashlib.sha256(d).hexdigest()
        d = sent[n][1] if sent else d
        for off in range(0, len(d), size):
            yield pb.UploadCheckpointRequest(chunk=pb.FileChunk(sha256=digest, offset=off, data=d[off : off + size]))


def test_upload_verifies_every_byte_and_is_idempotent(tmp_path, tiny_world, random_adapter):
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir,
                           extra=["--checkpoint-root", str(tiny_world.sft_dir)]).start()  # fmt: skip
    try:
        stub, md, _ = server.stub()
        from pathlib import Path

        adapter = Path(random_adapter.adapter)
        files = [(p.name, p.read_bytes()) for p in sorted(adapter.iterdir())]
        base = str(tiny_world.sft_dir)
        asked = stub.UploadCheckpoint(iter([_header("up-1", files, base)]), metadata=md)
        assert not asked.complete and len(asked.missing) == len(files)
        with pytest.raises(grpc.RpcError) as e:  # not loadable before its files arrive
            stub.LoadCheckpoint(pb.LoadCheckpointRequest(checkpoint_id="up-1"), metadata=md)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        corrupt = [(n, d if n != "adapter_config.json" else d[:-1] + b" ") for n, d in files]
        with pytest.raises(grpc.RpcError) as e:  # bytes that do not match the header's digest
            stub.UploadCheckpoint(iter([_header("up-1", files, base), *_chunks(files, sent=corrupt)]), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "do not match its SHA-256" in e.value.details()
        bad_cases = [
            ([_header("up-1", [("../x", b"1"), *files], base)], "must be relative"),
            ([*_chunks(files)], "first message of an upload must be its header"),
            ([_header("up-1", files, base), _header("up-1", files, base)], "exactly one header"),
            ([_header("up-1", files, base), *list(_chunks(files))[1:]], "offset"),
            ([_header("x" * 300, files, base)], "checkpoint_id must be 1 to 256"),
            ([_header("up-2", [("weights.bin", b"123")], base)], "adapter_config.json is missing"),
        ]
        for messages, why in bad_cases:
            with pytest.raises(grpc.RpcError) as e:
                stub.UploadCheckpoint(iter(messages), metadata=md)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details(), why
        done = stub.UploadCheckpoint(iter([_header("up-1", files, base), *_chunks(files)]), metadata=md)
        assert done.complete and not done.missing and done.bytes_received == sum(len(d) for _, d in files)
        again = stub.UploadCheckpoint(iter([_header("up-1", files, base)]), metadata=md)
        assert again.complete and again.bytes_received == 0  # known content: nothing to send
        with pytest.raises(grpc.RpcError) as e:  # the id is taken by other content
            stub.UploadCheckpoint(iter([_header("up-1", files[1:], base)]), metadata=md)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        shared = stub.UploadCheckpoint(iter([_header("up-3", files, base)]), metadata=md)
        assert shared.complete and shared.bytes_received == 0  # same files under a new id: stored once
        loaded = stub.LoadCheckpoint(pb.LoadCheckpointRequest(checkpoint_id="up-1"), metadata=md)
        assert loaded.loaded and status(stub, md).checkpoint_id == "up-1"
    finally:
        server.kill(signal.SIGTERM)


def test_base_model_uploads_and_fresh_adapter_specs_are_checked(plain, tiny_world):
    """A base model travels like an adapter (UploadHeader.base_model) and is named upload:<id>; what is wrong with
    such an upload, or with the LoRA spec of LoadCheckpoint, is a precise code that changes nothing."""
    from pathlib import Path

    stub, md, _ = plain.stub()
    model = [(p.name, p.read_bytes()) for p in sorted(Path(tiny_world.sft_dir).iterdir()) if p.is_file()]

    def base_header(cid, files, base=""):
        header = _header(cid, files, base)
        header.header.base_model = True
        return header

    def refused(call, request):
        with pytest.raises(grpc.RpcError) as e:
            call(request, metadata=md)
        return e.value.code(), e.value.details()

    up = stub.UploadCheckpoint
    assert refused(up, iter([base_header("b", model, base="x")])) == (
        grpc.StatusCode.INVALID_ARGUMENT, "a base model upload names no base (leave `base` empty)")  # fmt: skip
    code, why = refused(up, iter([base_header("b", [f for f in model if f[0] != "config.json"])]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a Hugging Face model directory: config.json" in why
    code, why = refused(up, iter([_header("a", [("adapter_config.json", b"{}")], "upload:nope")]))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "upload it first" in why
    load = stub.LoadCheckpoint
    code, why = refused(load, pb.LoadCheckpointRequest(base="upload:nope", id="x"))
    assert code == grpc.StatusCode.NOT_FOUND and "no uploaded base model 'nope'" in why
    done = up(iter([base_header("b", model), *_chunks(model, size=1 << 20)]), metadata=md)
    assert done.complete and done.bytes_received == sum(len(d) for _, d in model)
    zero = pb.LoraSpec(r=0, alpha=8, target_modules="auto")
    code, why = refused(load, pb.LoadCheckpointRequest(base="upload:b", id="x", lora=zero))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and why.startswith("lora: LoRA rank and alpha must be positive")
    assert status(stub, md).checkpoint_id == tiny_world.sft_checkpoint.id  # nothing changed
    spec = pb.LoraSpec(r=4, alpha=8, target_modules="q_proj,v_proj")
    assert load(pb.LoadCheckpointRequest(base="upload:b", id="x", lora=spec), metadata=md).loaded
    now = status(stub, md)
    assert now.checkpoint_id == "x" and now.fresh_adapter
    assert (now.lora.r, now.lora.alpha, now.lora.target_modules) == (4, 8, "q_proj,v_proj")
    assert not load(pb.LoadCheckpointRequest(base="upload:b", id="x", lora=spec), metadata=md).loaded  # the same


def test_a_full_database_is_resource_exhausted_in_one_line(tmp_path, tiny_world):
    """Defect 5: a full disk answered INTERNAL with a traceback-sized message."""
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=["--max-state-mb", "1"]).start()
    try:
        stub, md, _ = server.stub()
        big = "long " * 30_000  # 150 kB a response
        code, sent = None, 0
        for i in range(40):
            item = pb.AddCandidatesRequest(group=pb.PromptGroup(prompt=f"p{i}", responses=[
                pb.CandidateResponse(text=big + str(i)), pb.CandidateResponse(text=big + "x" + str(i))]))  # fmt: skip
            try:
                stub.AddCandidates(iter([item]), metadata=md)
                sent += 1
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                break
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "full" in details and "\n" not in details
        assert len(details) < 200 and status(stub, md).prompts == sent  # the refused request wrote nothing
    finally:
        server.kill(signal.SIGTERM)
    # a start that cannot write its database says so in one line, no traceback
    import resource

    def tiny_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    cmd = [sys.executable, "-m", "activedpo_server.cli", "serve", "--state-dir", str(tmp_path / "new"), "--port", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=tiny_files, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot open the state database" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_start_that_cannot_write_its_features_says_so_in_one_line(tmp_path, tiny_world):
    """Issue 24: a server on a full disk that must featurize its labeled pairs at start ended in a traceback."""
    import resource
    import shutil

    state = tmp_path / "state"
    server = ServerProcess(state, tiny_world.sft_dir, extra=["--proj-dim", "8192"]).start()
    try:
        stub, md, _ = server.stub()
        stub.AddCandidates(groups(tiny_world, 10), metadata=md)
        batch, _ = select(stub, md, 5)
        labels = [pb.Label(pair_id=p.pair_id, preference=pb.PREFERENCE_A, annotator="a") for p in batch.pairs]
        assert stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md).accepted == 5
    finally:
        server.kill(signal.SIGTERM)
    shutil.rmtree(state / "features")  # derived data: a start recomputes the labeled pairs' features
    index_bytes = 10 * 8192 * 4  # ten labeled responses at d = 8192
    limit = max(index_bytes // 2, *(p.stat().st_size for p in state.iterdir() if p.is_file())) + 4096
    assert limit < index_bytes  # the database fits, the feature index does not

    def full_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # a write past it fails with EFBIG

    cmd = [sys.executable, "-m", "activedpo_server.cli", "serve", "--state-dir", str(state), "--port", "0",
           "--proj-dim", "8192", "--lora-r", "8", "--lora-alpha", "16", "--checkpoint", str(tiny_world.sft_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=full_disk, timeout=300)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "the disk of the feature store" in out.stderr and "is full" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_oversized_input_is_refused_without_amplification(plain, tiny_world):
    """Defects 3, 4 and 6 over gRPC: a 17 MB unknown id, K = 400, a 100 KB pool tag, long keys."""
    stub, md, _ = plain.stub()
    stub.AddCandidates(groups(tiny_world, 2), metadata=md)
    batch, _ = select(stub, md, 1)
    labels = [pb.Label(pair_id=batch.pairs[0].pair_id, preference=pb.PREFERENCE_A, annotator="a"),
              pb.Label(pair_id="x" * 17_000_000, preference=pb.PREFERENCE_A, annotator="a")]  # fmt: skip
    res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md)
    assert [r.accepted for r in res.results] == [True, False] and res.ByteSize() < 2000
    assert len(res.results[1].pair_id) == 256 and "17,000,000 characters" in res.results[1].reason
    many = pb.PromptGroup(prompt="p", responses=[pb.CandidateResponse(text=f" r{i}") for i in range(400)])
    for request, why in (
        (pb.AddCandidatesRequest(group=many), "400 responses to one prompt; the limit is 64"),
        (pb.AddCandidatesRequest(group=next(groups(tiny_world, 1)).group, pool="t" * 100_000), "pool tag"),
        (pb.AddCandidatesRequest(group=next(groups(tiny_world, 1)).group, project="p" * 300), "project"),
    ):
        with pytest.raises(grpc.RpcError) as e:
            stub.AddCandidates(iter([request]), metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details(), why
        assert len(e.value.details()) < 200
    for request, why in (
        (pb.LoadCheckpointRequest(checkpoint_id="c" * 300), "checkpoint_id is longer than 256"),
        (pb.LoadCheckpointRequest(base="b" * 300), "base is longer than 256"),
    ):
        with pytest.raises(grpc.RpcError) as e:
            stub.LoadCheckpoint(request, metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in e.value.details(), why
    with pytest.raises(grpc.RpcError) as e:
        stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id="l" * 300), metadata=md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    s = status(stub, md)
    assert (s.annotations, s.pool_size) == (1, 6)  # nothing of the refused requests landed
