"""Settings that both the selection server and the client take, each with its one default.

A command's option takes its default from the field here (``--proj-dim`` from :attr:`ProjectionSpec.dim`, …)
and never writes the value again; ``tests/unit/core/test_options.py`` checks every command of both programs
against these homes. Settings of one side only live beside the code that uses them: DPO in
:class:`activedpo_trainer.dpo.DPOSettings`, generation in :class:`activedpo_trainer.generation.GenerationSettings`,
a round in :class:`activedpo_client.settings.RoundConfig`, labeling in
:class:`activedpo_client.labelstudio.ProjectSettings` and :class:`activedpo_client.settings.LabelStudioSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from activedpo_core.lora import LoraSpec

__all__ = ["Dtype", "LoraSpec", "Projection", "ProjectionSpec", "SelectionSettings", "Strategy"]


class Strategy(str, Enum):
    """What a server answers without ``--research-strategies`` (the server checks its registry against this)."""

    activedpo = "activedpo"
    random = "random"
    aplp = "aplp"
    apo = "apo"


class Projection(str, Enum):
    sjlt = "sjlt"  # a sparse sketch of the LoRA factors; meets the dense yardstick (benchmarks/results/projection.md)
    kron = "kron"  # LoGra's factor projection
    dense = "dense"  # the Rademacher reference; slow


class Dtype(str, Enum):
    """Model weights; ``auto`` is bfloat16 on a GPU that supports it, else float32 (:func:`resolve_dtype`)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def resolve_dtype(dtype: Dtype | str) -> str:
    """``auto``: bfloat16 on a GPU that supports it, else float32 (CPUs train and featurize in float32)."""
    value = dtype.value if isinstance(dtype, Dtype) else str(dtype)
    if value != Dtype.auto.value:
        return Dtype(value).value
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


@dataclass(frozen=True)
class ProjectionSpec:
    """How a LoRA gradient becomes a feature: projected to ``dim`` dimensions, seeded, unit-normalised."""

    dim: int = 8192  # the paper's projection dimension d
    kind: str = Projection.sjlt.value
    seed: int = 0  # features reproduce across devices and restarts
    normalize: bool = True  # unit-normalise each response's feature (the paper's ablation: it matters)

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ValueError(f"the projection dimension must be positive, got {self.dim}")
        Projection(self.kind)  # raises, naming the value


MAX_LEASE_SECONDS = 30 * 24 * 3600  # the longest lease a server grants (a live Label Studio project asks for it)


@dataclass(frozen=True)
class SelectionSettings:
    """How a batch is chosen and held."""

    strategy: str = Strategy.activedpo.value
    lam: float = 1.0  # ridge λ of V
    # how long selected pairs are withheld from other selections: people take days, a crashed caller's
    # retry gets the same batch back under its request id, and the server caps leases at 30 days
    lease_seconds: int = 7 * 24 * 3600
    seed: int = 0  # the random strategy's seed
    # pairs a pool description (DescribePool, `pool report`, select's pool section) covers: a uniform sample of a
    # larger pool
    describe_pairs: int = 2_000
    # the share of each batch drawn uniformly at random from the pool (audit pairs: an unbiased estimate of
    # the policy's accuracy without a reward model); 0 turns it off. See benchmarks/README.md for the choice.
    audit_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.lam <= 0 or self.lease_seconds < 1:
            raise ValueError(f"λ and the lease must be positive, got {self.lam} and {self.lease_seconds}")
        if not 0.0 <= self.audit_fraction < 1.0:
            raise ValueError(f"the audit fraction must be in [0, 1), got {self.audit_fraction}")
