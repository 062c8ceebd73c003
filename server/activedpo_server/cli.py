"""``activedpo-server``: the selection server's command line.

Heavy imports (torch, transformers) happen inside commands so that ``--help`` is instant.

Why one module of this length: ``serve`` alone takes some thirty options; each command maps its options onto
the engine's and featurizer's settings and does no work of its own.
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from activedpo_core.lora import LoraSpec
from activedpo_core.options import ConfigOpt, renamed, write_config
from activedpo_core.program import run
from activedpo_core.settings import Dtype, Projection, ProjectionSpec, SelectionSettings
from activedpo_server import __version__
from activedpo_server.distributed import RaySettings
from activedpo_server.engine import EngineConfig

app = typer.Typer(
    name="activedpo-server",
    help="The ActiveDPO selection server: loads a LoRA checkpoint, featurizes candidates, selects pairs to label.",
    no_args_is_help=True,
    add_completion=False,
)
checkpoint_app = typer.Typer(help="Inspect the checkpoints the server would load.")
app.add_typer(checkpoint_app, name="checkpoint")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in errors stay on one line


def _version(value: bool) -> None:
    if value:
        console.print(f"activedpo-server {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@checkpoint_app.command("check")
def checkpoint_check(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory, manifest, or base model path.")],
    device: Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")] = None,
    dtype: Annotated[Dtype, typer.Option(help="Model weights (auto: bfloat16 on a GPU, else float32).")] = Dtype.auto,
) -> None:
    """Load a checkpoint exactly as the server will, and report what it holds."""
    from activedpo_core.checkpoint import CheckpointError, load_model
    from activedpo_core.progress import quiet_libraries
    from activedpo_core.settings import resolve_dtype

    quiet_libraries()
    dtype = resolve_dtype(dtype)
    try:
        loaded = load_model(checkpoint, dtype=dtype, device=device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    model, m = loaded.model, loaded.manifest
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    total = sum(p.numel() for p in model.parameters())
    report = {
        "id": m.id,
        "base": m.base,
        "adapter": m.adapter,
        "parent_id": m.parent_id,
        "parameters": total,
        "lora_parameters": lora,
        "device": str(next(model.parameters()).device),
        "dtype": dtype,
    }
    console.print_json(json.dumps(report))


ProjDimOpt = Annotated[int, typer.Option(help="Projection dimension d.")]
ProjectionOpt = Annotated[
    Projection,
    typer.Option(
        help="How gradients are projected: sjlt (a sparse sketch of the LoRA factors), kron (LoGra's factor "
        "projection) or dense (the Rademacher reference; slow)."
    ),
]
ProjSeedOpt = Annotated[int, typer.Option(help="Projection seed.")]
NormalizeOpt = Annotated[
    bool, typer.Option(help="Unit-normalise each response's gradient feature (--no-normalize: an ablation).")
]
class FeatureDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


class Backend(str, Enum):
    local = "local"
    ray = "ray"


class SelectionMath(str, Enum):
    torch = "torch"
    numpy = "numpy"


FeatureDtypeOpt = Annotated[
    FeatureDtype,
    typer.Option(help="Feature storage: float32, or float16 (half the memory; picks nearly always equal)."),
]
BackendOpt = Annotated[
    Backend,
    typer.Option(help="Where new responses are featurized: local (this process) or ray (a Ray cluster)."),
]
RayAddressOpt = Annotated[
    str | None, typer.Option(help="Ray cluster to join (ray://… or host:port) [default: start a local one].")
]
RayActorsOpt = Annotated[int, typer.Option(help="Featurizer actors on Ray, each loading the checkpoint once.")]
RayGpusOpt = Annotated[
    float | None, typer.Option(help="GPUs per actor [default: 1 when the cluster has GPUs, else CPUs].")
]
LoraROpt = Annotated[
    int,
    typer.Option(help="Rank of the fresh adapter of a checkpoint without one, unless its LoadCheckpoint names one."),
]
LoraAlphaOpt = Annotated[int, typer.Option(help="Its LoRA α.")]
TargetModulesOpt = Annotated[
    str,
    typer.Option(help="Its target modules: all-linear, auto (PEFT's defaults for the architecture) or a comma list."),
]
DeviceOpt = Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")]
DtypeOpt = Annotated[Dtype, typer.Option(help="Model weights (auto: bfloat16 on a GPU that has it, else float32).")]
StateDirOpt = Annotated[Path, typer.Option("--state-dir", help="Where the database and feature indexes live.")]


def _ray_settings(backend: Backend, address: str | None, actors: int, gpus: float | None):
    from activedpo_server.distributed import RaySettings

    if backend == Backend.local:
        if address is not None:
            raise ValueError("--ray-address needs --featurize-backend ray")
        return None
    if actors < 1:
        raise ValueError(f"--ray-actors must be at least 1, got {actors}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError('--featurize-backend ray needs Ray: pip install "activedpo[ray]"') from None
    return RaySettings(address=address, actors=actors, num_gpus=gpus)


# old option names, still read for one release
SERVE_RENAMED = {"--seed": "--proj-seed", "--lora-targets": "--target-modules"}
FEATURIZE_RENAMED = SERVE_RENAMED | {"--backend": "--featurize-backend"}
HEALTH_RENAMED = {"--address": "--server"}


@app.command("serve", cls=renamed(SERVE_RENAMED, "activedpo-server serve"))
def serve_command(
    ctx: typer.Context,
    state_dir: StateDirOpt,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint to load at start [default: the one the state dir last served].")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 50051,
    token: Annotated[
        str | None, typer.Option(envvar="ACTIVEDPO_TOKEN", help="Bearer token required on every RPC but health.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate (with --tls-key) for TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for TLS.")] = None,
    tls_client_ca: Annotated[Path | None, typer.Option(help="Require client certificates signed by this CA.")] = None,
    strategy: Annotated[
        str, typer.Option(help="Default strategy: activedpo, random, aplp or apo.")
    ] = SelectionSettings.strategy,
    research_strategies: Annotated[
        bool,
        typer.Option(
            "--research-strategies",
            help="Also answer the benchmark's research strategies (activedpo-fisher, -margin, -entropy, -topb).",
        ),
    ] = False,
    proj_dim: ProjDimOpt = ProjectionSpec.dim,
    projection: ProjectionOpt = ProjectionSpec.kind,
    lam: Annotated[float, typer.Option(help="Ridge λ of V.")] = SelectionSettings.lam,
    normalize: NormalizeOpt = ProjectionSpec.normalize,
    feature_checkpoint: Annotated[
        str | None,
        typer.Option(
            help="Ablation: featurize with this fixed checkpoint, never the current one (log-probs stay current)."
        ),
    ] = None,
    feature_dtype: FeatureDtypeOpt = EngineConfig.feature_dtype,
    featurize_backend: BackendOpt = Backend.local,
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = RaySettings.actors,
    ray_gpus_per_actor: RayGpusOpt = None,
    proj_seed: ProjSeedOpt = ProjectionSpec.seed,
    lease_seconds: Annotated[
        int, typer.Option(help="Default lease of a selected batch (a caller may ask for its own).", min=1)
    ] = SelectionSettings.lease_seconds,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    device: DeviceOpt = None,
    dtype: DtypeOpt = Dtype.auto,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the bound port here once serving (for --port 0).")
    ] = None,
    exit_with_parent: Annotated[
        bool, typer.Option(help="Shut down when the parent process exits (embedded servers).")
    ] = False,
    checkpoint_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="A directory remote callers may load checkpoints and base models from by path (repeatable). "
            "Without one, path loads are off: clients upload checkpoints (UploadCheckpoint)."
        ),
    ] = None,
    selection: Annotated[
        SelectionMath,
        typer.Option(help="Where the greedy V⁻¹ selection runs: torch (on --device) or numpy (the reference)."),
    ] = EngineConfig.selection,
    max_state_mb: Annotated[
        int | None,
        typer.Option(help="Cap the state database at this many MiB; past it, writes fail with RESOURCE_EXHAUSTED."),
    ] = None,
    allow_downloads: Annotated[
        bool,
        typer.Option(
            "--allow-downloads",
            help="Let base models named by Hugging Face id download (unless HF_HUB_OFFLINE is set); otherwise "
            "only the server's local cache is read.",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the selection server until SIGTERM or Ctrl-C. Its resolved options are written to STATE_DIR/config.toml
    (`serve --config STATE_DIR/config.toml` starts the same server)."""
    import asyncio
    import os

    if not allow_downloads:  # before transformers / huggingface_hub read it
        os.environ["HF_HUB_OFFLINE"] = "1"
    roots = tuple(checkpoint_root or ())
    for root in roots:
        if not root.is_dir():
            err.print(f"[bold red]error:[/] --checkpoint-root {root} is not a directory")
            raise typer.Exit(2)

    from activedpo_core.checkpoint import CheckpointError
    from activedpo_core.progress import quiet_libraries
    from activedpo_core.settings import resolve_dtype
    from activedpo_server.engine import Engine
    from activedpo_server.errors import ServerError
    from activedpo_server.features import FeaturizerConfig, LoraSpec
    from activedpo_server.server import ServerConfig, serve

    quiet_libraries()
    dtype = resolve_dtype(dtype)
    try:
        server_config = ServerConfig(host, port, token, tls_cert, tls_key, tls_client_ca)
        engine = Engine(
            EngineConfig(
                state_dir=state_dir, lam=lam, strategy=strategy, research_strategies=research_strategies,
                features=FeaturizerConfig(proj_dim, projection.value, proj_seed, normalize, device=device,
                                          dtype=dtype, lora=LoraSpec(lora_r, lora_alpha, target_modules)),
                feature_checkpoint=feature_checkpoint, feature_dtype=feature_dtype.value,
                ray=_ray_settings(featurize_backend, ray_address, ray_actors, ray_gpus_per_actor),
                lease_seconds=lease_seconds,
                checkpoint_roots=roots, allow_downloads=allow_downloads,
                max_state_bytes=None if max_state_mb is None else max_state_mb << 20, selection=selection.value,
            ),
            checkpoint=checkpoint,
        )  # fmt: skip
        write_config(state_dir / "config.toml", ctx.params | {"dtype": dtype}, "activedpo-server serve")
    except (CheckpointError, ServerError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    except OSError as e:  # the state dir unwritable: say which file, not a traceback
        err.print(f"[bold red]error:[/] cannot write the state dir {state_dir}: {e.strerror or e}: {e.filename or ''}")
        raise typer.Exit(2) from None

    def ready(bound: int) -> None:
        if port_file is not None:
            from activedpo_core.atomic import write_text

            write_text(port_file, str(bound))
        err.print(f"activedpo-server listening on {host}:{bound} (checkpoint {engine.checkpoint_id or 'none'})")

    try:
        asyncio.run(serve(server_config, engine, ready, exit_with_parent=exit_with_parent))
    except OSError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None


@app.command("health", cls=renamed(HEALTH_RENAMED, "activedpo-server health"))
def health_command(
    server: Annotated[str, typer.Option(help="host:port of the server.")] = "127.0.0.1:50051",
    service: Annotated[str, typer.Option(help="Service to ask about; '' is the whole server.")] = "",
    tls_ca: Annotated[Path | None, typer.Option(help="Use TLS, trusting this CA certificate.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3.0,
) -> None:
    """Exit 0 when the server answers gRPC health with SERVING, 1 otherwise (container health checks).

    Health needs no token: the server exempts it from authentication.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = server
    if tls_ca is not None:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
    else:
        channel = grpc.insecure_channel(address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError as e:
        err.print(f"not healthy: {address}: {e.code().name} {e.details() or ''}".rstrip())
        raise typer.Exit(1) from None
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    console.print(f"{address} {service or '(server)'}: {status}")
    raise typer.Exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)


@app.command("featurize", cls=renamed(FEATURIZE_RENAMED, "activedpo-server featurize"))
def featurize_command(
    state_dir: StateDirOpt,
    checkpoint: Annotated[
        str | None, typer.Option(help="Checkpoint to featurize under [default: the one the state dir last served].")
    ] = None,
    featurize_backend: BackendOpt = Backend.local,
    ray_address: RayAddressOpt = None,
    ray_actors: RayActorsOpt = RaySettings.actors,
    ray_gpus_per_actor: RayGpusOpt = None,
    proj_dim: ProjDimOpt = ProjectionSpec.dim,
    projection: ProjectionOpt = ProjectionSpec.kind,
    proj_seed: ProjSeedOpt = ProjectionSpec.seed,
    normalize: NormalizeOpt = ProjectionSpec.normalize,
    feature_dtype: FeatureDtypeOpt = EngineConfig.feature_dtype,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    device: DeviceOpt = None,
    dtype: DtypeOpt = Dtype.auto,
) -> None:
    """Featurize every response in a state dir ahead of serving (a batch job; Ray spreads it over a cluster).

    Features land in the state dir's store under the same key ``serve`` computes with the same
    settings, so a server started afterwards selects at once. The job holds the state dir's lock:
    stop the server first (or run ``serve --featurize-backend ray`` to featurize while serving).
    """
    import time

    from activedpo_core.checkpoint import CheckpointError
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_core.settings import resolve_dtype
    from activedpo_server.engine import Engine, NotReady
    from activedpo_server.errors import ServerError
    from activedpo_server.features import FeaturizerConfig

    quiet_libraries()
    t0 = time.perf_counter()
    backend = featurize_backend
    try:
        engine = Engine(
            EngineConfig(
                state_dir=state_dir, feature_dtype=feature_dtype.value,
                features=FeaturizerConfig(proj_dim, projection.value, proj_seed, normalize, device=device,
                                          dtype=resolve_dtype(dtype),
                                          lora=LoraSpec(lora_r, lora_alpha, target_modules)),
                ray=_ray_settings(backend, ray_address, ray_actors, ray_gpus_per_actor),
            ),
            checkpoint=checkpoint,
        )  # fmt: skip
        with progress_bars() as bar:
            report = engine.featurize_all(progress=bar)
    except (CheckpointError, ServerError, ValueError, NotReady, RuntimeError, ImportError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    engine.store.close()
    console.print(
        f"{report['computed']} of {report['responses']} responses featurized under {report['checkpoint_id']} "
        f"({backend.value}) in {time.perf_counter() - t0:.1f} s; the rest were already there"
    )


def program() -> None:
    """The ``activedpo-server`` program: the app, then an exit without the interpreter's teardown."""
    run(app)


if __name__ == "__main__":
    program()
