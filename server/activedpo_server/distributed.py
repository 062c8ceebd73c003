"""Scale-out featurization on Ray: a pool split across actors, each loading the checkpoint once.

When one device is not enough to featurize a large pool, :func:`featurize_on_ray` hands the
(prompt, response) rows to Ray Data: ``map_batches`` with a pool of actors (``ActorPoolStrategy``),
each actor building one :class:`~activedpo_server.features.GradientFeaturizer` for the checkpoint
(one model load per actor, not per batch) and featurizing the batches it is given. An actor asks
for ``num_gpus`` GPUs when GPUs exist, else ``num_cpus`` CPUs. Rows come back keyed by their id,
in any order, and are put back in input order.

The features equal the local path's: the projection is generated per block from the seed on the
CPU (:mod:`activedpo_server.projection`) and a response's gradient does not depend on which other
responses share its batch, so the same checkpoint, seed and settings give the same rows (to float
rounding) whatever the split and wherever the actor runs. Actors read the checkpoint by path, so
on a multi-node cluster it must sit on storage every node sees.

Ray is an optional extra (``pip install "activedpo[ray]"``), imported only when this backend is used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from activedpo_server.features import FeaturizerConfig, LoraSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySettings:
    """Where and how to run: ``address`` None starts (or joins) a local Ray instance."""

    address: str | None = None
    actors: int = 2  # featurizers running at once (Ray Data's actor pool size); started per call
    num_gpus: float | None = None  # per actor; None: 1 when the cluster has GPUs, else 0
    num_cpus: float = 1.0  # per actor when it runs on CPUs
    batch_size: int = 64  # rows per map_batches call (each actor featurizes them in its own sub-batches)


class _Featurize:
    """The Ray Data callable class: one GradientFeaturizer per actor, built once."""

    def __init__(self, checkpoint, settings: dict, device: str):
        from activedpo_core.progress import quiet_libraries

        quiet_libraries()
        lora = settings.pop("lora")
        lora["target_modules"] = lora["target_modules"] if isinstance(lora["target_modules"], str) else tuple(
            lora["target_modules"]
        )
        config = FeaturizerConfig(lora=LoraSpec(**lora), **settings)
        self.featurizer = config.build(checkpoint, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feats = self.featurizer.featurize([str(p) for p in batch["prompt"]], [str(r) for r in batch["response"]])
        return {"id": np.asarray(batch["id"], dtype=np.int64), "feature": feats}


def _require_ray():
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network at run time: Ray's usage report stays off
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError('the Ray featurization backend needs Ray: pip install "activedpo[ray]" (ray[data])') from None
    return ray


def connect(settings: RaySettings):
    """Start or join Ray once per process; a clear error when the address does not answer."""
    ray = _require_ray()
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own progress callback reports
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        try:
            ray.init(address=settings.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RuntimeError(f"cannot reach the Ray cluster at {settings.address or 'local'}: {e}") from None
    return ray


def featurize_on_ray(
    checkpoint,
    prompts: Sequence[str],
    responses: Sequence[str],
    ids: Sequence[int] | None = None,
    *,
    config: FeaturizerConfig | None = None,
    ray_settings: RaySettings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> np.ndarray:
    """Features of ``responses[i]`` (continuing ``prompts[i]``), ``[n, proj_dim]`` float32, computed on Ray.

    ``checkpoint`` is a path or :class:`~activedpo_core.checkpoint.CheckpointManifest` every actor
    can read. ``config`` (its device aside: each actor uses its own) gives the same rows as
    ``config.build(checkpoint)`` does locally.
    """
    from activedpo_core.checkpoint import resolve_checkpoint

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    config = config or FeaturizerConfig()
    n = len(responses)
    if n == 0:
        return np.zeros((0, config.proj_dim), dtype=np.float32)
    rs = ray_settings or RaySettings()
    ray = connect(rs)
    manifest = resolve_checkpoint(checkpoint)  # fail here, with the path, not inside an actor
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    gpus = rs.num_gpus if rs.num_gpus is not None else (1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0)
    settings = asdict(replace(config, device=None))  # plain data for the actors
    resources = {"num_gpus": gpus} if gpus > 0 else {"num_cpus": rs.num_cpus}
    position = {int(i): k for k, i in enumerate(ids.tolist())}
    if len(position) != n:
        raise ValueError("ids must be unique")
    ds = ray.data.from_items(
        [{"id": int(i), "prompt": p, "response": r} for i, p, r in zip(ids.tolist(), prompts, responses, strict=True)],
        override_num_blocks=max(1, min(n // rs.batch_size + 1, 4 * rs.actors)),
    )
    out = ds.map_batches(
        _Featurize,
        fn_constructor_kwargs=dict(checkpoint=manifest, settings=settings, device="cuda" if gpus > 0 else "cpu"),
        batch_size=rs.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=rs.actors),
        **resources,
    )
    result = np.empty((n, config.proj_dim), dtype=np.float32)
    done = 0
    for batch in out.iter_batches(batch_format="numpy", batch_size=None):
        rows = [position[int(i)] for i in batch["id"]]
        result[rows] = np.asarray(batch["feature"], dtype=np.float32)
        done += len(rows)
        if progress:
            progress("featurize (ray)", done, n)
    if done != n:
        raise RuntimeError(f"Ray returned {done} of {n} features")
    log.info("featurized %d responses on Ray (%d actors, %s per actor)", n, rs.actors, resources)
    return result
