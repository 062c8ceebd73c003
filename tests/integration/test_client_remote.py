"""The client's view of the server: SelectorClient against an EmbeddedServer child process."""

from __future__ import annotations

import shutil
import socket

import pytest

from activedpo_client.messages import Label
from activedpo_client.remote import ClientError, Connection, EmbeddedServer, SelectorClient
from activedpo_trainer.checkpoint import CheckpointManifest

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
            assert all(p.prompt_id and p.response_a_id and p.response_b_id for p in batch.pairs)
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
            with pytest.raises(ClientError, match="preference must be A, B or TIE"):
                client.submit_labels([Label("x", "left", "t")])
        wrong = SelectorClient(Connection(server.target, token="wrong"))
        with pytest.raises(ClientError, match=r"refused the token .* pass --token or set ACTIVEDPO_TOKEN"):
            wrong.status()
        wrong.close()
    assert server.proc.returncode == 0  # stopped cleanly by SIGTERM


def test_a_remote_server_gets_checkpoints_by_upload(tmp_path, tiny_world, random_adapter):
    """No shared disk: the adapter travels over gRPC; the base model is one the server can open."""
    roots = ["--checkpoint-root", str(tiny_world.sft_dir)]  # the server's own copy of the base model
    server = EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, args=[*SMALL, *roots])
    with server, SelectorClient(Connection(server.target), project="run-a") as client:
        client.wait_ready()
        adapter_dir = tmp_path / "client-side"  # a directory the server may not read
        shutil.copytree(random_adapter.adapter, adapter_dir / "adapter")
        CheckpointManifest(random_adapter.id, random_adapter.base, "adapter", None, "").save(adapter_dir)
        res = client.push_checkpoint(adapter_dir)
        assert res.loaded and res.checkpoint_id == random_adapter.id == client.status().checkpoint_id
        # pushing it again sends nothing (the server has every file) and changes nothing
        sent = client.upload_checkpoint(adapter_dir / "adapter", random_adapter.id, random_adapter.base)
        assert sent == 0 and not client.push_checkpoint(adapter_dir).loaded
        with pytest.raises(ClientError, match="is not under a checkpoint root of this server"):
            client.load_checkpoint(adapter_dir)
    # the upload survives a restart: the server comes back serving it, from its own state dir
    server = EmbeddedServer(tmp_path / "state", args=[*SMALL, *roots])
    with server, SelectorClient(Connection(server.target)) as client:
        client.wait_ready()
        assert client.status().checkpoint_id == random_adapter.id
        assert not client.load_checkpoint(checkpoint_id=random_adapter.id).loaded


def test_errors_name_the_cause(tmp_path, tiny_world):
    unreachable = SelectorClient(Connection(f"127.0.0.1:{free_port()}", timeout=5))
    with pytest.raises(
        ClientError, match=r"cannot reach the selection server at 127\.0\.0\.1:.*activedpo-server serve"
    ):
        unreachable.status()
    unreachable.close()
    bad = EmbeddedServer(tmp_path / "state", tmp_path / "no-such-checkpoint", args=SMALL)
    with pytest.raises(ClientError, match=r"did not start: .*does not exist"):
        bad.start()
