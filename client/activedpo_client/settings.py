"""The client's settings, one dataclass per concern, each field with the one default every command reads:
a round (:class:`RoundConfig`), where its Label Studio is (:class:`LabelStudioSpec`) and which selection server
it talks to (:class:`ServerSpec`). Settings both programs share (LoRA, projection, selection) are in
:mod:`activedpo_core.settings`; DPO's and generation's beside their code in :mod:`activedpo_trainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from activedpo_client.labelstudio import ProjectSettings
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import ProjectionSpec, SelectionSettings
from activedpo_trainer.dpo import DPOSettings


def _check_judge(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed and not (value.startswith("reward-model:") and len(value) > len("reward-model:")):
        raise ValueError(f"unknown {kind} {value!r}; use {', '.join(allowed)} or reward-model:PATH")


@dataclass(frozen=True)
class RoundConfig:
    """One round's settings; the defaults are the paper's."""

    budget: int = 50  # labels per round
    prompts: int = 1000  # prompts sampled per round
    responses: int = 3  # responses generated per prompt (3 → 3 pairs)
    strategy: str = SelectionSettings.strategy
    # oracle (toy world, Bradley–Terry draws) | oracle-deterministic (the higher reward; equal: TIE) | file (people)
    # | label-studio (people, live) | reward-model:PATH
    annotator: str = "oracle"
    dpo_mode: str = DPOSettings.mode  # or "retrain": a fresh adapter from the base on all labels so far
    dpo_epochs: float = DPOSettings.epochs
    dpo_lr: float = DPOSettings.lr
    dpo_beta: float = DPOSettings.beta
    seed: int = 0
    eval_prompts: int = 100
    eval_samples: int = 1  # responses sampled per held-out prompt for the reward (the SE is over prompts)
    eval_pair_samples: int = 4  # π_ref samples per held-out prompt for the judged pairs of preference accuracy (0: off)
    lease_seconds: int = SelectionSettings.lease_seconds
    evaluate: str = "oracle"  # oracle (toy world) | reward-model:PATH | none
    lora_r: int = LoraSpec.r  # the paper's LoRA: DPO's adapter and the server's fresh round-one adapter
    lora_alpha: int = LoraSpec.alpha
    target_modules: str = LoraSpec.target_modules  # "auto": PEFT's defaults for the architecture; or "q_proj,v_proj"
    device: str = ""  # generation, DPO, evaluation, embedded server; "" until the run resolves it
    ls_project: str = ""  # --annotator label-studio: the Label Studio project (id or title)

    def __post_init__(self) -> None:
        for name in ("annotator", "evaluate"):  # a reward model's path, absolute: the run resumes from anywhere
            value = getattr(self, name)
            if value.startswith("reward-model:") and Path(value.split(":", 1)[1]).expanduser().exists():
                path = Path(value.split(":", 1)[1]).expanduser().resolve()
                object.__setattr__(self, name, f"reward-model:{path}")
        for name, value, least in (("budget", self.budget, 1), ("prompts", self.prompts, 1),
                                   ("responses", self.responses, 2)):  # fmt: skip
            if value < least:
                raise ValueError(f"--{name} must be at least {least}, got {value}")
        if self.dpo_mode not in ("continue", "retrain"):
            raise ValueError(f"dpo mode must be continue or retrain, got {self.dpo_mode!r}")
        _check_judge("annotator", self.annotator, ("oracle", "oracle-deterministic", "file", "label-studio"))
        if self.annotator == "label-studio" and not self.ls_project:
            raise ValueError("--annotator label-studio needs --ls-project (a project id, or a title to create)")
        _check_judge("evaluator", self.evaluate, ("oracle", "none"))
        if self.eval_samples < 1 or self.eval_pair_samples < 0 or self.eval_pair_samples == 1:
            raise ValueError(f"--eval-samples must be at least 1 and --eval-pair-samples 0 (off) or at least 2, got "
                             f"{self.eval_samples} and {self.eval_pair_samples}")  # fmt: skip
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"LoRA rank and alpha must be positive, got r={self.lora_r}, alpha={self.lora_alpha}")
        if not self.target_modules.strip() or any(not t.strip() for t in self.target_modules.split(",")):
            raise ValueError(f"--target-modules must be auto, all-linear or a comma list, got {self.target_modules!r}")

    @property
    def lora(self) -> LoraSpec:
        """The adapter DPO trains, and the fresh one round one's features are the gradient of."""
        return LoraSpec(self.lora_r, self.lora_alpha, self.target_modules)

    @property
    def targets(self) -> str | tuple[str, ...] | None:
        """LoRA targets as PEFT takes them: None (its per-architecture defaults), "all-linear" or names."""
        t = self.target_modules
        return None if t == "auto" else t if t == "all-linear" else tuple(s.strip() for s in t.split(","))


@dataclass(frozen=True)
class LabelStudioSpec:
    """Where the round's Label Studio is (``--annotator label-studio``); kept out of run.json (the key)."""

    url: str | None = None  # default: $LABEL_STUDIO_URL
    api_key: str | None = None  # default: $LABEL_STUDIO_API_KEY
    wait: float = 0.0  # seconds to wait for the batch to be labeled before the round waits (exit 3); 0: push, return
    poll: float = 5.0  # seconds between polls
    webhook_port: int | None = None  # --ls-webhook-port: a receiver that wakes the poller on each annotation
    webhook_url: str | None = None  # what Label Studio posts to (default http://127.0.0.1:PORT/)
    project: ProjectSettings = field(default_factory=ProjectSettings)  # a project created here: instructions, overlap


@dataclass(frozen=True)
class ServerSpec:
    """Which selection server a run talks to; ``embedded`` starts the run's own."""

    server: str = "embedded"  # or host:port
    token: str | None = None
    tls_ca: Path | None = None
    proj_dim: int = ProjectionSpec.dim  # embedded server only
    extra: tuple[str, ...] = ()  # further `activedpo-server serve` options (embedded only)
    server_base: str | None = None  # the base model as a remote server names it (default: as here)

    def serve_args(self, config: RoundConfig, dtype: str = "float32") -> list[str]:
        """The embedded server's options: its fresh round-one adapter is the run's LoRA."""
        args = ["--proj-dim", str(self.proj_dim), "--lora-r", str(config.lora_r), "--lora-alpha",
                str(config.lora_alpha), "--target-modules", config.target_modules, "--dtype", dtype]  # fmt: skip
        if config.device:
            args += ["--device", config.device]
        return [*args, *self.extra]
