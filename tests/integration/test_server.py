"""The real server in a subprocess on 127.0.0.1, called through the real generated stubs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from activedpo.v1 import selector_pb2 as pb
from activedpo.v1 import selector_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"
WORDS = ["wave tide", "bright moss", "calm", "tree tree", "a"]


class ServerProcess:
    def __init__(self, state_dir: Path, checkpoint: Path | None, token: str | None = TOKEN, extra=(),
                 verbose: bool = False):  # fmt: skip
        self.state_dir, self.checkpoint, self.token, self.extra = state_dir, checkpoint, token, list(extra)
        self.verbose = verbose  # INFO lines in the log
        self.log = state_dir.parent / f"{state_dir.name}.log"
        self.proc = None
        self.port = 0

    def start(self) -> ServerProcess:
        port_file = self.state_dir.parent / f"{self.state_dir.name}.port"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "activedpo_server.cli", *(["-v"] if self.verbose else []), "serve",
               "--state-dir", str(self.state_dir),
               "--port", "0", "--port-file", str(port_file), "--proj-dim", "128", "--lora-r", "8",
               "--lora-alpha", "16", "--lease-seconds", "60"]  # fmt: skip
        if self.checkpoint is not None:
            cmd += ["--checkpoint", str(self.checkpoint)]
        cmd += self.extra
        env = dict(os.environ, ACTIVEDPO_TOKEN=self.token or "")
        if not self.token:
            env.pop("ACTIVEDPO_TOKEN")
        log = self.log
        with open(log, "a") as stderr:  # a file, not a pipe: a full pipe would block the server
            self.proc = subprocess.Popen(cmd, env=env, stderr=stderr)
        deadline = time.time() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        return self

    def stub(self, token: str | None = "default"):
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        token = self.token if token == "default" else token
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return pb_grpc.SelectorStub(channel), metadata, channel

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)


@pytest.fixture
def server(tmp_path, tiny_world, tmp_path_factory):
    # path loads allowed under this session's temporary directories (the toy world, test adapters)
    roots = ["--checkpoint-root", str(tmp_path_factory.getbasetemp())]
    s = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=roots).start()
    yield s
    s.kill(signal.SIGTERM)


def groups(world, n=10, pool=""):
    for i, p in enumerate(world.task.train_prompts()[:n]):
        responses = [pb.CandidateResponse(text=f" {WORDS[(i + k) % 5]} {WORDS[(2 * i + k) % 5]}") for k in range(3)]
        yield pb.AddCandidatesRequest(group=pb.PromptGroup(prompt=p, responses=responses), pool=pool)


def select(stub, md, budget, **kw):
    events = list(stub.SelectBatch(pb.SelectBatchRequest(budget=budget, **kw), metadata=md))
    assert events[-1].WhichOneof("event") == "batch"
    return events[-1].batch, [e.progress for e in events[:-1]]


def test_full_cycle_add_select_label_export(server, tiny_world):
    stub, md, _ = server.stub()
    added = stub.AddCandidates(groups(tiny_world), metadata=md)
    assert (added.prompts_added, added.responses_added, added.pairs_added) == (10, 30, 30)
    assert stub.AddCandidates(groups(tiny_world), metadata=md).pairs_deduplicated == 30
    batch, progress = select(stub, md, 5, client="test")
    assert len(batch.pairs) == 5 and batch.checkpoint_id == tiny_world.sft_checkpoint.id
    assert [p.rank for p in batch.pairs] == list(range(5)) and progress and progress[-1].done == progress[-1].total
    assert batch.lease_expires.seconds > time.time()
    labels = [
        pb.Label(pair_id=p.pair_id, preference=pb.PREFERENCE_A, annotator="ann", idempotency_key=p.pair_id)
        for p in batch.pairs
    ] + [pb.Label(pair_id="nope", preference=pb.PREFERENCE_B, annotator="ann")]
    res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md)
    assert (res.accepted, res.rejected) == (5, 1) and "unknown pair id" in res.results[-1].reason
    retry = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels[:5]), metadata=md)
    assert all(r.replayed for r in retry.results)
    exported = list(stub.ExportLabels(pb.ExportLabelsRequest(), metadata=md))
    assert [e.pair_id for e in exported] == [p.pair_id for p in batch.pairs]
    assert {e.chosen for e in exported} == {p.response_a for p in batch.pairs}
    status = stub.GetStatus(pb.GetStatusRequest(), metadata=md)
    assert (status.pool_size, status.labeled, status.annotations, status.feature_dim) == (30, 5, 5, 128)


def test_the_health_command_for_container_probes(server):
    from typer.testing import CliRunner

    from activedpo_server.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["health", "--server", f"127.0.0.1:{server.port}", "--service", "activedpo.v1.Selector"])
    assert ok.exit_code == 0 and "SERVING" in ok.output  # no token: health is exempt
    unknown = runner.invoke(app, ["health", "--server", f"127.0.0.1:{server.port}", "--service", "nope"])
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    down = runner.invoke(app, ["health", "--address", f"127.0.0.1:{free}", "--timeout", "1"])
    assert down.exit_code == 1 and "not healthy" in down.output


def test_concurrent_callers_get_disjoint_pairs(server, tiny_world):
    from concurrent.futures import ThreadPoolExecutor

    stub, md, _ = server.stub()
    stub.AddCandidates(groups(tiny_world), metadata=md)
    with ThreadPoolExecutor(2) as ex:
        a, b = ex.map(lambda c: select(stub, md, 10, client=c)[0], ["a", "b"])
    ids_a, ids_b = {p.pair_id for p in a.pairs}, {p.pair_id for p in b.pairs}
    assert len(ids_a) == len(ids_b) == 10 and not ids_a & ids_b
    short, _ = select(stub, md, 20, lease_seconds=1)
    assert len(short.pairs) == 10  # the rest are leased
    time.sleep(1.2)
    assert len(select(stub, md, 20)[0].pairs) == 10  # the expired lease returned them


def test_auth_health_and_bad_input(server, tiny_world, tmp_path):
    stub, md, channel = server.stub()
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="activedpo.v1.Selector")).status == 1  # no token
    for token in (None, "wrong"):
        bad_stub, bad_md, _ = server.stub(token)
        with pytest.raises(grpc.RpcError) as e:
            bad_stub.GetStatus(pb.GetStatusRequest(), metadata=bad_md)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            list(bad_stub.SelectBatch(pb.SelectBatchRequest(budget=1), metadata=bad_md))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stub.AddCandidates(groups(tiny_world, 2), metadata=md)
    cases = [
        (lambda: select(stub, md, 0), "budget must be between 1"),
        (lambda: select(stub, md, 1, strategy="best"), "unknown strategy 'best'"),
        (lambda: select(stub, md, 1, strategy="activedpo-fisher"), "start the server with --research-strategies"),
        (lambda: select(stub, md, 1, lease_seconds=-5), "lease_seconds"),
        # issue 15, defect 6: 68 years of lease, and request ids and client names without a limit
        (lambda: select(stub, md, 1, lease_seconds=2_147_483_647), "lease_seconds must be between 0"),
        (lambda: select(stub, md, 1, request_id="r" * 300), "request_id is longer than 256 characters"),
        (lambda: select(stub, md, 1, client="c" * 300), "client is longer than 256 characters"),
        (lambda: stub.AddCandidates(iter([pb.AddCandidatesRequest(group=pb.PromptGroup(prompt="p", responses=[
            pb.CandidateResponse(text="same"), pb.CandidateResponse(text="same")]))]), metadata=md),
         "responses are identical"),
        (lambda: stub.AddCandidates(iter([pb.AddCandidatesRequest(group=pb.PromptGroup(prompt=" ", responses=[
            pb.CandidateResponse(text="a"), pb.CandidateResponse(text="b")]))]), metadata=md), "prompt is empty"),
        (lambda: stub.AddCandidates(iter([pb.AddCandidatesRequest(group=pb.PromptGroup(prompt="p", responses=[
            pb.CandidateResponse(text="a")]))]), metadata=md), "at least two responses"),
        (lambda: stub.AddCandidates(iter([pb.AddCandidatesRequest()]), metadata=md), "set either `group` or `pair`"),
        (lambda: stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest=str(tmp_path / "nowhere")), metadata=md),
         "does not exist"),
        (lambda: stub.LoadCheckpoint(pb.LoadCheckpointRequest(), metadata=md), "`manifest`, or `base`"),
    ]  # fmt: skip
    raw = channel.unary_unary("/activedpo.v1.Selector/SubmitLabels")  # bytes in, bytes out
    not_utf8 = b"\x0a\x04\x0a\x02\xff\xfe"  # SubmitLabelsRequest{labels: [{pair_id: b"\xff\xfe"}]}
    cases.append((lambda: raw(not_utf8, metadata=md), "malformed request"))
    for call, message in cases:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in e.value.details()
        assert stub.GetStatus(pb.GetStatusRequest(), metadata=md).checkpoint_id  # still serving


def test_hot_swap_over_grpc(server, tiny_world, random_adapter, tmp_path):
    stub, md, _ = server.stub()
    stub.AddCandidates(groups(tiny_world), metadata=md)
    before, _ = select(stub, md, 4, lease_seconds=1)
    time.sleep(1.2)
    res = stub.LoadCheckpoint(pb.LoadCheckpointRequest(manifest=str(Path(random_adapter.adapter).parent)), metadata=md)
    assert res.loaded and res.checkpoint_id == random_adapter.id
    after, _ = select(stub, md, 4)
    assert after.checkpoint_id == random_adapter.id and [p.pair_id for p in after.pairs] != [
        p.pair_id for p in before.pairs
    ]
    # an adapter trained for another model: refused, and the current checkpoint keeps serving
    foreign = foreign_adapter(tmp_path / "foreign")
    with pytest.raises(grpc.RpcError) as e:
        stub.LoadCheckpoint(pb.LoadCheckpointRequest(base=str(tiny_world.sft_dir), adapter=str(foreign)), metadata=md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not fit base model" in e.value.details()
    assert stub.GetStatus(pb.GetStatusRequest(), metadata=md).checkpoint_id == random_adapter.id


def foreign_adapter(directory: Path) -> Path:
    """A LoRA adapter for a Llama of another width than the tiny world's."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(directory)
    return directory


def test_kill_9_during_label_stream_keeps_every_acknowledged_label(tmp_path, tiny_world):
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir).start()
    stub, md, _ = server.stub()
    stub.AddCandidates(groups(tiny_world, 40), metadata=md)
    batch, _ = select(stub, md, 120)
    acked: dict[str, int] = {}
    for kill_after in (7, 19, 33):  # three crashes at different points of the stream
        for n, p in enumerate(batch.pairs):
            if len(acked) == kill_after:
                break
            if p.pair_id in acked:
                continue
            label = pb.Label(pair_id=p.pair_id, preference=pb.PREFERENCE_B, annotator="ann", idempotency_key=f"k{n}")
            res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=[label]), metadata=md)
            acked[p.pair_id] = res.results[0].label_id
        server.kill()
        server.start()
        stub, md, _ = server.stub()
    exported = list(stub.ExportLabels(pb.ExportLabelsRequest(), metadata=md))
    assert {e.pair_id: e.label_id for e in exported} == acked  # every acknowledged label, exactly once
    # retrying an acknowledged label after the crash writes nothing new
    first = next(iter(acked))
    n = [p.pair_id for p in batch.pairs].index(first)
    retry = pb.Label(pair_id=first, preference=pb.PREFERENCE_B, annotator="ann", idempotency_key=f"k{n}")
    assert stub.SubmitLabels(pb.SubmitLabelsRequest(labels=[retry]), metadata=md).results[0].replayed
    assert stub.GetStatus(pb.GetStatusRequest(), metadata=md).annotations == len(acked)
    server.kill(signal.SIGTERM)


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "activedpo test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_tls_with_a_test_ca_and_token(tmp_path, tiny_world):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    server = ServerProcess(
        tmp_path / "state", tiny_world.sft_dir, extra=["--tls-cert", str(cert), "--tls-key", str(key)]
    ).start()
    try:
        creds = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=ca.read_bytes()), grpc.access_token_call_credentials(TOKEN)
        )
        stub = pb_grpc.SelectorStub(grpc.secure_channel(f"127.0.0.1:{server.port}", creds))
        assert stub.GetStatus(pb.GetStatusRequest(), timeout=30).checkpoint_id == tiny_world.sft_checkpoint.id
        wrong_token = grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=ca.read_bytes()), grpc.access_token_call_credentials("no")
        )
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.SelectorStub(grpc.secure_channel(f"127.0.0.1:{server.port}", wrong_token)).GetStatus(
                pb.GetStatusRequest(), timeout=30
            )
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:  # a plaintext client cannot talk to a TLS server
            pb_grpc.SelectorStub(grpc.insecure_channel(f"127.0.0.1:{server.port}")).GetStatus(
                pb.GetStatusRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.kill(signal.SIGTERM)


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    class Token(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        """Adds the bearer token to every call, as `grpcurl -H "authorization: Bearer …"` does."""

        def _with_token(self, details):
            return details._replace(metadata=[*(details.metadata or ()), ("authorization", f"Bearer {TOKEN}")])

        def intercept_unary_unary(self, continuation, details, request):
            return continuation(self._with_token(details), request)

        def intercept_stream_stream(self, continuation, details, requests):
            return continuation(self._with_token(details), requests)

    _, _, plain = server.stub()
    with pytest.raises(grpc.RpcError):  # reflection is not exempt from auth
        ProtoReflectionDescriptorDatabase(plain).get_services()
    channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{server.port}"), Token())
    names = set(ProtoReflectionDescriptorDatabase(channel).get_services())  # what grpcurl list shows
    assert {"activedpo.v1.Selector", "grpc.health.v1.Health"} <= names


def test_status_and_health_answer_while_a_batch_is_featurized(tmp_path, tiny_world):
    import threading

    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=["--proj-dim", "8192"]).start()
    try:
        stub, md, channel = server.stub()
        stub.AddCandidates(groups(tiny_world, 300), metadata=md)  # 900 responses to featurize
        done = threading.Event()
        result = {}

        def run():
            result["batch"], result["progress"] = select(stub, md, 20)
            done.set()

        worker = threading.Thread(target=run)
        worker.start()
        health = health_pb2_grpc.HealthStub(channel)
        latencies = []
        while not done.is_set():
            t0 = time.perf_counter()
            stub.GetStatus(pb.GetStatusRequest(), metadata=md, timeout=10)
            health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.05)
        worker.join()
        assert len(result["batch"].pairs) == 20 and len(result["progress"]) >= 2
        assert len(latencies) >= 3, "the batch finished too fast to observe"
        assert max(latencies) < 1.0  # the event loop is never blocked by the featurization
    finally:
        server.kill(signal.SIGTERM)


def test_sigterm_lets_an_in_flight_batch_finish(tmp_path, tiny_world):
    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir, extra=["--proj-dim", "8192"]).start()
    stub, md, _ = server.stub()
    stub.AddCandidates(groups(tiny_world, 100), metadata=md)  # featurizing takes seconds, well within the grace
    stream = stub.SelectBatch(pb.SelectBatchRequest(budget=10), metadata=md)
    first = next(stream)
    assert first.WhichOneof("event") == "progress"  # featurization is under way
    server.proc.send_signal(signal.SIGTERM)
    rest = list(stream)
    assert rest[-1].WhichOneof("event") == "batch" and len(rest[-1].batch.pairs) == 10
    assert server.proc.wait(timeout=30) == 0
    with pytest.raises(grpc.RpcError) as e:  # and then it is gone
        stub.GetStatus(pb.GetStatusRequest(), metadata=md, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_kill_9_in_the_middle_of_a_large_request_then_retry_never_duplicates(tmp_path, tiny_world):
    import threading

    server = ServerProcess(tmp_path / "state", tiny_world.sft_dir).start()
    stub, md, _ = server.stub()
    stub.AddCandidates(groups(tiny_world, 40), metadata=md)
    pairs = [p.pair_id for p in select(stub, md, 120)[0].pairs]
    labels = [
        pb.Label(pair_id=pairs[i % len(pairs)], preference=pb.PREFERENCE_A, annotator=f"a{i}", idempotency_key=f"k{i}")
        for i in range(20_000)
    ]
    outcome = {}

    def submit():
        try:
            outcome["res"] = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md, timeout=60)
        except grpc.RpcError as e:
            outcome["error"] = e.code()

    worker = threading.Thread(target=submit)
    worker.start()
    time.sleep(0.3)  # the request is being written
    server.kill()
    worker.join()
    server.start()
    stub, md, _ = server.stub()
    committed = stub.GetStatus(pb.GetStatusRequest(), metadata=md).annotations
    assert committed in (0, 20_000)  # one transaction: all or nothing, never half
    retry = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels), metadata=md, timeout=60)
    assert retry.accepted == 20_000 and sum(r.replayed for r in retry.results) == committed
    assert stub.GetStatus(pb.GetStatusRequest(), metadata=md).annotations == 20_000  # exactly once
    server.kill(signal.SIGTERM)
