"""Which dataclass field each setting's option takes its default from: the one home of every default.

``docs/cli.md`` lists this table, and ``tests/unit/core/test_options.py`` checks every command of both programs
against it (an option named here defaults to its home in every command that has it).
"""

from __future__ import annotations

from activedpo_client.labelstudio import ProjectSettings
from activedpo_client.settings import LabelStudioSpec, RoundConfig, ServerSpec
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import ProjectionSpec, SelectionSettings
from activedpo_trainer.dpo import DPOSettings
from activedpo_trainer.generation import GenerationSettings
from activedpo_trainer.toyworld import ToyWorldConfig
from activedpo_trainer.workload import ModelSpec

HOMES: dict[str, tuple[type, str]] = {
    "--lora-r": (LoraSpec, "r"),
    "--lora-alpha": (LoraSpec, "alpha"),
    "--target-modules": (LoraSpec, "target_modules"),
    "--proj-dim": (ProjectionSpec, "dim"),
    "--projection": (ProjectionSpec, "kind"),
    "--proj-seed": (ProjectionSpec, "seed"),
    "--normalize": (ProjectionSpec, "normalize"),
    "--strategy": (SelectionSettings, "strategy"),
    "--lam": (SelectionSettings, "lam"),
    "--lease-seconds": (SelectionSettings, "lease_seconds"),
    "--audit-fraction": (SelectionSettings, "audit_fraction"),
    "--describe-pairs": (SelectionSettings, "describe_pairs"),
    "--dpo-mode": (DPOSettings, "mode"),
    "--dpo-beta": (DPOSettings, "beta"),
    "--dpo-lr": (DPOSettings, "lr"),
    "--dpo-epochs": (DPOSettings, "epochs"),
    "--dpo-batch-size": (DPOSettings, "batch_size"),
    "--temperature": (GenerationSettings, "temperature"),
    "--top-p": (GenerationSettings, "top_p"),
    "--max-new-tokens": (GenerationSettings, "max_new_tokens"),
    "--gen-batch-size": (GenerationSettings, "batch_size"),
    "--budget": (RoundConfig, "budget"),
    "--prompts": (RoundConfig, "prompts"),
    "--responses": (RoundConfig, "responses"),
    "--eval-prompts": (RoundConfig, "eval_prompts"),
    "--eval-samples": (RoundConfig, "eval_samples"),
    "--eval-pair-samples": (RoundConfig, "eval_pair_samples"),
    "--ls-wait": (LabelStudioSpec, "wait"),
    "--ls-overlap": (ProjectSettings, "overlap"),
    "--server": (ServerSpec, "server"),
    "--prompt-field": (ModelSpec, "prompt_field"),
    "--chat-template": (ModelSpec, "chat_template"),
    "--world-seed": (ToyWorldConfig, "seed"),
    "--preset": (ToyWorldConfig, "name"),
    "--task": (ToyWorldConfig, "task"),
}


def home_default(option: str):
    cls, name = HOMES[option]
    return getattr(cls, name)
