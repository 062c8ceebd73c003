"""The client's settings, one dataclass per concern, each field with the one default every command reads:
a round (:class:`RoundConfig`), where its Label Studio is (:class:`LabelStudioSpec`) and which selection server
it talks to (:class:`ServerSpec`). Settings both programs share (LoRA, projection, selection) are in
:mod:`activedpo_core.settings`; DPO's and generation's beside their code in :mod:`activedpo_trainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from activedpo_client.labelstudio import ProjectSettings
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import ProjectionSpec, SelectionSettings
from activedpo_trainer.dpo import DPOSettings


@dataclass(frozen=True)
class Judge:
    """Who labels a round's pairs (``--annotator``) or judges its held-out samples (``--evaluate``), parsed once
    from the option's value: ``kind``, and for ``reward-model:PATH`` the model's path or hub id."""

    kind: str  # oracle | oracle-deterministic | file | label-studio | reward-model | none
    path: str = ""  # reward-model only

    ANNOTATORS: ClassVar[tuple[str, ...]] = ("oracle", "oracle-deterministic", "file", "label-studio")
    EVALUATORS: ClassVar[tuple[str, ...]] = ("oracle", "none")
    PREFIX: ClassVar[str] = "reward-model:"

    @classmethod
    def parse(cls, value: str, role: str = "annotator") -> Judge:
        """``role`` is ``annotator`` or ``evaluator``; an unknown value is a ValueError naming the choices."""
        allowed = cls.ANNOTATORS if role == "annotator" else cls.EVALUATORS
        if value.startswith(cls.PREFIX) and len(value) > len(cls.PREFIX):
            return cls("reward-model", value[len(cls.PREFIX) :])
        if value not in allowed:
            raise ValueError(f"unknown {role} {value!r}; use {', '.join(allowed)} or {cls.PREFIX}PATH")
        return cls(value)

    def __str__(self) -> str:
        return f"{self.PREFIX}{self.path}" if self.kind == "reward-model" else self.kind

    @property
    def needs_oracle(self) -> bool:
        """Whether it reads the toy world's hidden reward (no user's model has one)."""
        return self.kind in ("oracle", "oracle-deterministic")

    @property
    def name(self) -> str:
        """What its labels are signed with: a reward model by its directory's name, not the full path."""
        return f"{self.PREFIX}{Path(self.path).name}" if self.kind == "reward-model" else self.kind

    def absolute(self) -> Judge:
        """A reward model found on this disk, by its absolute path (the run then resumes from anywhere)."""
        if self.kind == "reward-model" and Path(self.path).expanduser().exists():
            return Judge(self.kind, str(Path(self.path).expanduser().resolve()))
        return self


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
    audit_fraction: float = SelectionSettings.audit_fraction  # of the budget: audit pairs, drawn at random
    evaluate: str = "oracle"  # oracle (toy world) | reward-model:PATH | none
    lora_r: int = LoraSpec.r  # the paper's LoRA: DPO's adapter and the server's fresh round-one adapter
    lora_alpha: int = LoraSpec.alpha
    target_modules: str = LoraSpec.target_modules  # "auto": PEFT's defaults for the architecture; or "q_proj,v_proj"
    device: str = ""  # generation, DPO, evaluation, embedded server; "" until the run resolves it
    ls_project: str = ""  # --annotator label-studio: the Label Studio project (id or title)

    def __post_init__(self) -> None:
        for name, role in (("annotator", "annotator"), ("evaluate", "evaluator")):  # unknown: a ValueError
            object.__setattr__(self, name, str(Judge.parse(getattr(self, name), role).absolute()))
        for name, value, least in (("budget", self.budget, 1), ("prompts", self.prompts, 1),
                                   ("responses", self.responses, 2)):  # fmt: skip
            if value < least:
                raise ValueError(f"--{name} must be at least {least}, got {value}")
        if not 0.0 <= self.audit_fraction < 1.0:
            raise ValueError(f"--audit-fraction must be in [0, 1), got {self.audit_fraction}")
        if self.dpo_mode not in ("continue", "retrain"):
            raise ValueError(f"dpo mode must be continue or retrain, got {self.dpo_mode!r}")
        if self.annotator == "label-studio" and not self.ls_project:
            raise ValueError("--annotator label-studio needs --ls-project (a project id, or a title to create)")
        if self.eval_samples < 1 or self.eval_pair_samples < 0 or self.eval_pair_samples == 1:
            raise ValueError(f"--eval-samples must be at least 1 and --eval-pair-samples 0 (off) or at least 2, got "
                             f"{self.eval_samples} and {self.eval_pair_samples}")  # fmt: skip
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise ValueError(f"LoRA rank and alpha must be positive, got r={self.lora_r}, alpha={self.lora_alpha}")
        if not self.target_modules.strip() or any(not t.strip() for t in self.target_modules.split(",")):
            raise ValueError(f"--target-modules must be auto, all-linear or a comma list, got {self.target_modules!r}")

    @property
    def annotator_spec(self) -> Judge:
        return Judge.parse(self.annotator, "annotator")

    @property
    def evaluate_spec(self) -> Judge:
        return Judge.parse(self.evaluate, "evaluator")

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

    def serve_args(self, lora: LoraSpec, dtype: str = "float32", device: str | None = None) -> list[str]:
        """The embedded server's options: its fresh round-one adapter is ``lora`` (the adapter DPO trains)."""
        args = ["--proj-dim", str(self.proj_dim), "--lora-r", str(lora.r), "--lora-alpha", str(lora.alpha),
                "--target-modules", lora.target_modules, "--dtype", dtype]  # fmt: skip
        if device:
            args += ["--device", device]
        return [*args, *self.extra]

    def embedded_args(self, lora: LoraSpec, dtype: str, device: str | None, roots) -> list[str]:
        """:meth:`serve_args` with what the server may load by path (``roots``) and leave to download: the user's
        own process, so a hub id may download (unless HF_HUB_OFFLINE)."""
        paths = dict.fromkeys(str(Path(r).resolve()) for r in roots)
        return [*self.serve_args(lora, dtype, device), *(a for r in paths for a in ("--checkpoint-root", r)),
                "--allow-downloads"]  # fmt: skip
