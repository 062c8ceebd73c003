"""An arm of the benchmark: a strategy and the server settings it runs under, ``strategy[@setting,...]``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_ARMS = ["activedpo", "random", "aplp", "apo", "activedpo-fisher"]
ABLATION_ARMS = [
    "activedpo", "random", "activedpo@raw", "activedpo@d=512", "activedpo@d=8192", "activedpo@d=16384",
    "activedpo-topb", "activedpo@lam=0.1", "activedpo@lam=10", "activedpo@frozen", "activedpo@proj=dense",
    "activedpo@proj=kron",
]  # fmt: skip


@dataclass(frozen=True)
class Arm:
    """A strategy and the server settings it runs under."""

    spec: str
    strategy: str
    proj_dim: int | None = None
    lam: float | None = None
    normalize: bool = True
    frozen: bool = False
    projection: str | None = None  # sjlt, kron or dense (the server's default when None)
    rounds: int | None = None  # a schedule of its own (rounds=10,budget=15): compared at its final round
    budget: int | None = None
    seeds: int | None = None  # run on the first N of --seeds only (a costly arm beside a many-seed comparison)
    audit: float = 0.0  # audit=F: that share of each batch drawn at random (audit pairs); the benchmark's arms: none

    @property
    def scheduled(self) -> bool:
        return self.rounds is not None or self.budget is not None

    @classmethod
    def parse(cls, spec: str) -> Arm:
        from activedpo_server.strategies import strategy_class

        strategy, _, settings = spec.partition("@")
        try:
            strategy_class(strategy, research=True)
        except ValueError as e:
            raise ValueError(f"arm {spec!r}: {e}") from None
        kw: dict = {}
        for s in filter(None, settings.split(",")):
            key, _, value = s.partition("=")
            try:
                if key == "d" and value:
                    kw["proj_dim"] = int(value)
                elif key == "lam" and value:
                    kw["lam"] = float(value)
                elif key in ("rounds", "budget", "seeds") and value:
                    kw[key] = int(value)
                    if kw[key] < 1:
                        raise ValueError
                elif key == "audit" and value:
                    kw["audit"] = float(value)
                    if not 0.0 <= kw["audit"] < 1.0:
                        raise ValueError
                elif key == "proj" and value in ("sjlt", "kron", "dense"):
                    kw["projection"] = value
                elif s == "raw":
                    kw["normalize"] = False
                elif s == "frozen":
                    kw["frozen"] = True
                else:
                    raise ValueError
            except ValueError:
                choices = "d=N, lam=X, proj=sjlt|kron|dense, raw, frozen, rounds=N, budget=N, audit=F or seeds=N"
                raise ValueError(f"arm {spec!r}: unknown setting {s!r}; use {choices}") from None
        return cls(spec, strategy, **kw)

    @property
    def slug(self) -> str:
        """The run directory's name: the spec without ``seeds=N``, which says how many runs, not how each runs."""
        strategy, _, settings = self.spec.partition("@")
        kept = ",".join(s for s in settings.split(",") if s and not s.startswith("seeds="))
        spec = f"{strategy}@{kept}" if kept else strategy
        return "".join(c if c.isalnum() or c in "-.=" else "_" for c in spec)

    def serve_extra(self, sft_dir: Path) -> tuple[str, ...]:
        from activedpo_server.strategies import RESEARCH_STRATEGIES

        extra: list[str] = ["--research-strategies"] if self.strategy in RESEARCH_STRATEGIES else []
        if self.lam is not None:
            extra += ["--lam", str(self.lam)]
        if not self.normalize:
            extra += ["--no-normalize"]
        if self.frozen:
            extra += ["--feature-checkpoint", str(sft_dir)]
        if self.projection is not None:
            extra += ["--projection", self.projection]
        return tuple(extra)
