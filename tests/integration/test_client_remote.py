"""The client's view of the server: SelectorClient against an EmbeddedServer child process."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from activedpo_client.messages import Label
from activedpo_client.remote import (
    ClientError,
    Connection,
    EmbeddedServer,
    SelectorClient,
    _model_files,
    base_upload_id,
)
from activedpo_core.checkpoint import CheckpointManifest
from activedpo_core.lora import LoraSpec

SMALL = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_embedded_server_round_trip(tmp_path, tiny_world):
    prompts = tiny_world.task.train_prompts()[:6]
    with EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, token="tok", args=SMALL) as server:
        with SelectorClient(Connection(server.target, token="tok")) as client:
            client.wait_ready()
            added = client.add_candidates([(p, [" wave tide", " calm", " bright moss"]) for p in prompts])
            assert added.pairs_added == 18
            seen = []
            batch = client.select(4, progress=lambda *a: seen.append(a))
            assert len(batch.pairs) == 4 and seen and batch.checkpoint_id == tiny_world.sft_checkpoint.id
            # every id comes back: the pair's, its prompt's and its two responses'
            ids = [(p.pair_id[:2], p.prompt_id[:2], p.response_a_id[:2], p.response_b_id[:2]) for p in batch.pairs]
            assert ids == [("p-", "x-", "y-", "y-")] * 4  # content ids, as the server assigns them
            assert len({p.response_a_id for p in batch.pairs} | {p.response_b_id for p in batch.pairs}) >= 3
            assert all(p.prompt in prompts for p in batch.pairs) and [p.rank for p in batch.pairs] == [0, 1, 2, 3]
            labels = [Label(p.pair_id, "A", "t", p.pair_id) for p in batch.pairs]
            assert all(r.accepted for r in client.submit_labels(labels))
            assert all(r.replayed for r in client.submit_labels(labels))
            exported = list(client.export_labels())
            assert [r.pair_id for r in exported] == [p.pair_id for p in batch.pairs]
            assert [r.chosen for r in exported] == [p.response_a for p in batch.pairs]
            assert {r.preference for r in exported} == {"A"}
            status = client.status()
            assert status.labeled == 4 and status.pool_size == 18 and isinstance(status.pool_size, int)
            # no --checkpoint-root: a remote caller cannot make the server open paths
            with pytest.raises(ClientError, match=r"the server refused the request: .*path loads are off"):
                client.load_checkpoint(tmp_path / "missing")
            with pytest.raises(ClientError, match="preference must be one of A, B, TIE, BOTH_BAD"):
                client.submit_labels([Label("x", "left", "t")])
        wrong = SelectorClient(Connection(server.target, token="wrong"))
        with pytest.raises(ClientError, match=r"refused the token .* pass --token or set ACTIVEDPO_TOKEN"):
            wrong.status()
        wrong.close()
    assert server.proc.returncode == 0  # stopped cleanly by SIGTERM


def test_a_remote_server_gets_checkpoints_by_upload(tmp_path, tiny_world, random_adapter):
    """No shared disk and no --checkpoint-root: the base model and the adapter both travel over gRPC, once."""
    server = EmbeddedServer(tmp_path / "state", args=SMALL)  # no checkpoint, no path loads
    with server, SelectorClient(Connection(server.target), project="run-a") as client:
        client.wait_ready()
        adapter_dir = tmp_path / "client-side"  # a directory the server may not read
        shutil.copytree(random_adapter.adapter, adapter_dir / "adapter")
        CheckpointManifest(random_adapter.id, random_adapter.base, "adapter", None, "").save(adapter_dir)
        sent = []
        res = client.push_checkpoint(adapter_dir, progress=lambda what, done, total: sent.append((what, done, total)))
        assert res.loaded and res.checkpoint_id == random_adapter.id == client.status().checkpoint_id
        model_bytes = sum(p.stat().st_size for p in Path(tiny_world.sft_dir).iterdir() if p.name != "manifest.json")
        assert ("uploading the base model (bytes)", model_bytes, model_bytes) in sent  # every byte of the model
        # pushing it again sends nothing (the server has every file of both) and changes nothing
        base = client.push_base(str(tiny_world.sft_dir))
        assert base.startswith("upload:base-")
        assert client.upload_checkpoint(adapter_dir / "adapter", random_adapter.id, base) == 0
        assert not client.push_checkpoint(adapter_dir).loaded
        with pytest.raises(ClientError, match="path loads are off"):
            client.load_checkpoint(adapter_dir)
        # the base model alone (round one) gets the fresh adapter the client names, whatever the server's default
        spec = LoraSpec(4, 8, "q_proj,v_proj")
        assert client.push_checkpoint(tiny_world.sft_dir, lora=spec).loaded
        status = client.status()
        assert status.checkpoint_id == tiny_world.sft_checkpoint.id and status.fresh_adapter and status.lora == spec
        assert status.adapter_line() == "fresh LoRA r=4, α=8, targets q_proj,v_proj"
        assert client.serves(tiny_world.sft_dir, spec) and not client.serves(tiny_world.sft_dir, LoraSpec(8, 16))
    # the uploads survive a restart: the server comes back serving the base with that adapter, from its own state
    server = EmbeddedServer(tmp_path / "state", args=SMALL)
    with server, SelectorClient(Connection(server.target)) as client:
        client.wait_ready()
        status = client.status()
        assert status.checkpoint_id == tiny_world.sft_checkpoint.id and status.lora == spec
        assert client.load_checkpoint(checkpoint_id=random_adapter.id).loaded
        status = client.status()  # a checkpoint with an adapter is featurized by that adapter
        assert not status.fresh_adapter
        assert status.lora == LoraSpec(4, 8, "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj")


def test_an_upload_cut_off_mid_file_resumes_where_it_stopped(tmp_path):
    """A 3 MiB file is cut off after 2 MiB arrived; the next upload sends only the last MiB."""
    import hashlib
    import os
    import time

    from activedpo.v1 import selector_pb2 as pb

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(os.urandom(3 << 20))
    files = _model_files(model)
    big = next(f for f in files if f[0] == "model.safetensors")
    base_id = base_upload_id(files)
    with EmbeddedServer(tmp_path / "state", args=SMALL) as server, SelectorClient(Connection(server.target)) as client:
        part = tmp_path / "state" / "blobs" / "tmp" / f"{big[2]}.part"
        header = pb.UploadCheckpointRequest(header=pb.UploadHeader(
            checkpoint_id=base_id, base_model=True,
            files=[pb.CheckpointFile(path=n, size=size, sha256=d) for n, size, d, _ in files]))  # fmt: skip
        data = big[3].read_bytes()

        def cut_off():
            yield header
            for off in (0, 1 << 20):
                yield pb.UploadCheckpointRequest(chunk=pb.FileChunk(sha256=big[2], offset=off,
                                                                    data=data[off : off + (1 << 20)]))  # fmt: skip
            deadline = time.monotonic() + 30
            while (part.stat().st_size if part.exists() else 0) < 2 << 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            raise ConnectionError("the network went away")  # the client's stream breaks off

        with pytest.raises(ClientError):
            client._call(client.stub.UploadCheckpoint, cut_off())
        asked = client._call(client.stub.UploadCheckpoint, iter([header]))
        assert not asked.complete and {(p.sha256, p.offset) for p in asked.partial} == {(big[2], 2 << 20)}
        assert client._upload(files, base_id, "", "", None, base_model=True) == (1 << 20) + files[0][1]
        blob = tmp_path / "state" / "blobs" / "sha256" / big[2][:2] / big[2]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == big[2] and not part.exists()
        assert client.push_base(str(model)) == f"upload:{base_id}"  # complete: nothing left to send


def test_errors_name_the_cause(tmp_path, tiny_world):
    with pytest.raises(ClientError, match=r"--server 'localhost': give host:port .* localhost:50051\), or embedded"):
        Connection("localhost")
    unreachable = SelectorClient(Connection(f"127.0.0.1:{free_port()}", timeout=5))
    with pytest.raises(
        ClientError, match=r"cannot reach the selection server at 127\.0\.0\.1:.*activedpo-server serve"
    ):
        unreachable.status()
    unreachable.close()
    bad = EmbeddedServer(tmp_path / "state", tmp_path / "no-such-checkpoint", args=SMALL)
    with pytest.raises(ClientError, match=r"did not start: .*does not exist"):
        bad.start()
