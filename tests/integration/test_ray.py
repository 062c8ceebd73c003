"""Featurization on a real local Ray instance (2 CPUs): the same rows as the local path, and the batch job.

Ray is an optional extra (``activedpo[ray]``); `make test` installs it and CI sets
``ACTIVEDPO_REQUIRE_RAY=1`` so that a missing Ray fails instead of skipping.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network: Ray's usage report stays off
if os.environ.get("ACTIVEDPO_REQUIRE_RAY"):
    import ray
else:
    ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install "activedpo[ray]"')

from activedpo_server.cli import app as server_app
from activedpo_server.distributed import RaySettings, featurize_on_ray
from activedpo_server.engine import Engine, EngineConfig
from activedpo_server.features import FeaturizerConfig, LoraSpec
from activedpo_server.records import Candidates

WORDS = ["wave tide", "bright moss", "calm", "tree tree", "a", "reef coral shell"]
LORA = LoraSpec(r=8, alpha=16)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def texts(world, n):
    prompts = world.task.train_prompts()[:n]
    return prompts, [f" {WORDS[i % 6]} {WORDS[(3 * i + 1) % 6]}" for i in range(n)]


def test_ray_actors_give_the_local_features(random_adapter, tiny_world):
    prompts, responses = texts(tiny_world, 30)
    ids = np.arange(1000, 1030)[::-1]  # arbitrary ids: rows come back in input order
    seen = []
    settings = FeaturizerConfig(256, seed=3, lora=LORA, batch_size=4)
    on_ray = featurize_on_ray(
        random_adapter, prompts, responses, ids, config=settings,
        ray_settings=RaySettings(actors=2, num_cpus=0.5, batch_size=8), progress=lambda s, d, t: seen.append((d, t)),
    )  # fmt: skip
    local = settings.build(random_adapter).featurize(prompts, responses)
    assert on_ray.shape == (30, 256) and np.abs(local).max() > 0
    np.testing.assert_allclose(on_ray, local, rtol=1e-5, atol=1e-6)
    assert seen[-1] == (30, 30) and len(seen) >= 2  # progress as batches came back
    with pytest.raises(ValueError, match="ids must be unique"):
        featurize_on_ray(random_adapter, prompts[:2], responses[:2], [1, 1], config=settings)


def test_the_featurize_job_fills_the_store_a_server_then_uses(tiny_world, tmp_path):
    state = tmp_path / "state"
    config = EngineConfig(state_dir=state, features=FeaturizerConfig(128, lora=LORA))
    e = Engine(config, checkpoint=tiny_world.sft_dir)
    prompts, responses = texts(tiny_world, 12)
    e.add_candidates(
        [
            Candidates(p, [(None, r), (None, r + " calm"), (None, " a" + r)])
            for p, r in zip(prompts, responses, strict=True)
        ]
    )
    e.store.close()

    out = CliRunner().invoke(server_app, ["featurize", "--state-dir", str(state), "--featurize-backend", "ray",
                                          "--ray-actors", "1", "--proj-dim", "128", "--lora-r", "8", "--lora-alpha",
                                          "16"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "36 of 36 responses featurized" in out.output and "(ray)" in out.output

    served = Engine(config)  # a server started on the state: every feature is there already
    assert served.status().featurized == 36
    batch = served.select(6)
    assert len(batch.pairs) == 6 and len(served._active.features) == 36  # nothing computed on the way
    rows = np.array(sorted(served._active.features._ids))
    texts_of = served.store.response_texts(rows)
    local = config.features.build(tiny_world.sft_dir).featurize(
        [texts_of[int(r)][1] for r in rows], [texts_of[int(r)][2] for r in rows]
    )
    np.testing.assert_allclose(served._active.features.get(rows), local, rtol=1e-5, atol=1e-6)
    served.store.close()
    again = CliRunner().invoke(server_app, ["featurize", "--state-dir", str(state), "--proj-dim", "128",
                                            "--lora-r", "8", "--lora-alpha", "16"])  # fmt: skip
    assert again.exit_code == 0 and "0 of 36 responses featurized" in again.output


def test_backend_options_are_checked(tmp_path):
    out = CliRunner().invoke(server_app, ["featurize", "--state-dir", str(tmp_path), "--ray-address", "x:1"])
    assert out.exit_code == 2 and "--ray-address needs --featurize-backend ray" in out.output
    out = CliRunner().invoke(server_app, ["featurize", "--state-dir", str(tmp_path), "--featurize-backend", "spark"])
    line = " ".join(out.output.replace("│", " ").split())  # Typer's error box, unwrapped
    assert out.exit_code == 2 and "'spark' is not one of 'local', 'ray'" in line
