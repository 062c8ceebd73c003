"""Rounds of the ActiveDPO loop, resumable from a run directory.

A round is eight steps: generate → add → select → annotate → submit → train → load → evaluate.
Each step writes its output atomically into ``run_dir/rounds/NNN/`` and then records itself in
that round's ``state.json``; a re-run skips recorded steps, so a crash or Ctrl-C at any point
repeats at most the step it interrupted. Paid work is never repeated or duplicated: selected
pairs and labels are files before they are used, and labels go to the server with idempotency
keys derived from the run, the pair and the annotator.

Layout::

    run_dir/run.json                 config, run id, rounds done, current checkpoint
    run_dir/rounds/001/state.json    steps done, with their summaries and wall times
    run_dir/rounds/001/candidates.jsonl, batch.json, labels.jsonl, checkpoint/, eval.json
    run_dir/metrics.jsonl            one line per finished round
    run_dir/reward.png               held-out reward against labels used, redrawn after each round
    run_dir/server/                  the embedded server's state (when --server embedded)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from activedpo_client.remote import ClientError, SelectorClient


class AwaitingLabels(ClientError):
    """The round waits for people: the batch is written out for labeling (not an error of the run)."""


def import_labels(run: Run, path: Path) -> tuple[int, list[str]]:
    """Validate a finished labels file against the current round's batch and keep its valid rows.

    Returns (labels now held for the round, one error line per rejected row). Importing again
    adds to what is there; a (pair, annotator) label already held is not duplicated.
    """
    from activedpo_client.labelfiles import read_labels

    r = run.rounds_done + 1
    directory = run.round_dir(r)
    batch_file = directory / "batch.json"
    if not batch_file.exists():
        raise ClientError(f"round {r} of {run.dir} has no selected batch yet; run `activedpo-client round` first")
    good, errors = read_labels(path, json.loads(batch_file.read_text()))
    out = directory / "labels.jsonl"
    held = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    have = {(x["pair_id"], x["annotator"]) for x in held}
    for g in good:
        if (g["pair_id"], g["annotator"]) not in have:
            held.append(g | {"idempotency_key": f"{run.run_id}:{g['pair_id']}:{g['annotator']}"})
    if held:
        tmp = out.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(x) + "\n" for x in held))
        os.replace(tmp, out)
    return len(held), errors


STEPS = ("generate", "add", "select", "annotate", "submit", "train", "load", "evaluate")


@dataclass(frozen=True)
class RoundConfig:
    """One round's settings; the defaults are the paper's."""

    budget: int = 50  # labels per round
    prompts: int = 1000  # prompts sampled per round
    responses: int = 3  # responses generated per prompt (3 → 3 pairs)
    strategy: str = "activedpo"
    annotator: str = "oracle"
    dpo_mode: str = "continue"  # or "retrain": a fresh adapter from the base on all labels so far
    dpo_epochs: float = 4.0
    dpo_lr: float = 1e-4
    seed: int = 0
    eval_prompts: int = 100
    lease_seconds: int = 3600

    def __post_init__(self) -> None:
        if self.budget < 1 or self.prompts < 1 or self.responses < 2:
            raise ValueError("budget and prompts must be positive and responses at least 2")
        if self.dpo_mode not in ("continue", "retrain"):
            raise ValueError(f"dpo mode must be continue or retrain, got {self.dpo_mode!r}")
        if self.annotator not in ("oracle", "file") and not self.annotator.startswith("reward-model:"):
            raise ValueError(f"unknown annotator {self.annotator!r}; use oracle, file or reward-model:PATH")


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Run:
    """A run directory: its config and where it stands."""

    dir: Path
    world: str  # toy world directory
    config: RoundConfig
    run_id: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:10]}")
    rounds_done: int = 0
    checkpoint: str = ""  # the current policy's checkpoint directory ("" = the world's SFT model)

    @classmethod
    def open(cls, run_dir: Path, world: str | None = None, config: RoundConfig | None = None) -> Run:
        path = Path(run_dir) / "run.json"
        if path.exists():
            try:
                data = json.loads(path.read_text())
                run = cls(Path(run_dir), data["world"], RoundConfig(**data["config"]), data["run_id"],
                          data["rounds_done"], data["checkpoint"])  # fmt: skip
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ClientError(f"{path} is damaged ({e}); restore it or start a new --run-dir") from None
            if world is not None and Path(world).resolve() != Path(run.world).resolve():
                raise ClientError(
                    f"run dir {run_dir} was started on the toy world {run.world}, not {world} (another --task, "
                    f"--preset or seed?); use a new --run-dir or the same world"
                )
            if config is not None and config != run.config:
                changed = [k for k, v in asdict(config).items() if asdict(run.config)[k] != v]
                raise ClientError(
                    f"run dir {run_dir} was started with other settings ({', '.join(changed)}); "
                    f"use a new --run-dir or the same settings"
                )
            return run
        if world is None or config is None:
            raise ClientError(f"no run in {run_dir}; start one with `activedpo-client round`")
        run = cls(Path(run_dir), world, config)
        run.save()
        return run

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = dict(world=self.world, config=asdict(self.config), run_id=self.run_id,
                    rounds_done=self.rounds_done, checkpoint=self.checkpoint)  # fmt: skip
        _atomic_json(self.dir / "run.json", data)

    def round_dir(self, r: int) -> Path:
        return self.dir / "rounds" / f"{r:03d}"


class RoundRunner:
    """Runs round ``run.rounds_done + 1`` against a selection server, step by step."""

    def __init__(self, run: Run, client: SelectorClient, progress: Callable[[str, int, int], None] | None = None,
                 say: Callable[[str], None] = print, device: str | None = None):  # fmt: skip
        from activedpo_trainer.toyworld import load_toyworld

        self.run, self.client, self.progress, self.say = run, client, progress, say
        self.device = device  # generation, DPO and evaluation; None: cuda when present (not part of the run's identity)
        self.world = load_toyworld(run.world)
        self.r = run.rounds_done + 1
        self.dir = run.round_dir(self.r)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"steps": {}}
        self.pool = f"{run.run_id}-round-{self.r}"

    @property
    def checkpoint(self) -> str:
        return self.run.checkpoint or str(self.world.sft_dir)

    def run_round(self) -> dict:
        for step in STEPS:
            if step in self.state["steps"]:
                continue
            t0 = time.perf_counter()
            summary = getattr(self, f"_{step}")()
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            self.state["steps"][step] = summary
            _atomic_json(self.state_path, self.state)
            self.say(f"round {self.r} {step}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        from activedpo_client.report import read_metrics

        metrics = self._metrics()
        if all(m["round"] != self.r for m in read_metrics(self.run.dir)):  # a crash may have written it already
            with open(self.run.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.run.rounds_done = self.r
        self.run.checkpoint = str(self.dir / "checkpoint")
        self.run.save()
        from activedpo_client.report import plot_rewards

        plot_rewards({self.run.config.strategy: read_metrics(self.run.dir)}, self.run.dir / "reward.png")
        return metrics

    # ---- steps ----------------------------------------------------------------------------

    def _generate(self) -> dict:
        from activedpo_trainer.checkpoint import load_model
        from activedpo_trainer.generation import GenerationSettings, generate

        cfg = self.run.config
        pool = self.world.task.train_prompts()
        rng = np.random.default_rng([cfg.seed, self.r])
        prompts = [pool[i] for i in rng.choice(len(pool), size=min(cfg.prompts, len(pool)), replace=False)]
        loaded = load_model(self.checkpoint, device=self.device)
        settings = GenerationSettings(max_new_tokens=self.world.config.max_new_tokens)
        report = (lambda d, t: self.progress("generate", d, t)) if self.progress else None
        seed = cfg.seed * 1000 + self.r
        sampled = generate(loaded.model, loaded.tokenizer, prompts, cfg.responses, settings, seed=seed, progress=report)
        groups = []
        for p, rs in zip(prompts, sampled, strict=True):
            kept = list(dict.fromkeys(r for r in rs if r.strip()))  # non-empty, distinct
            if len(kept) >= 2:
                groups.append({"prompt": p, "responses": kept})
        tmp = self.dir / "candidates.jsonl.tmp"
        tmp.write_text("".join(json.dumps(g) + "\n" for g in groups))
        os.replace(tmp, self.dir / "candidates.jsonl")
        return {"prompts": len(prompts), "with_pairs": len(groups)}

    def _groups(self) -> list[dict]:
        return [json.loads(line) for line in (self.dir / "candidates.jsonl").read_text().splitlines()]

    def _server_has_current_checkpoint(self) -> None:
        """A server that holds another checkpoint (a fresh remote one, or one another run moved) gets ours.

        The path is the client's: a remote server must see the run dir and the world at the same
        paths (shared volumes in deploy/compose.yaml and deploy/k8s/).
        """
        from activedpo_trainer.checkpoint import CheckpointManifest

        want = CheckpointManifest.load(self.checkpoint).id
        if self.client.status()["checkpoint_id"] != want:
            self.say(f"round {self.r}: loading checkpoint {want} into the server")
            self.client.load_checkpoint(Path(self.checkpoint).resolve())

    def _add(self) -> dict:
        res = self.client.add_candidates(((g["prompt"], g["responses"]) for g in self._groups()), pool=self.pool)
        return {"pairs": res["pairs_added"] + res["pairs_deduplicated"]}

    def _select(self) -> dict:
        cfg = self.run.config
        self._server_has_current_checkpoint()
        batch = self.client.select(cfg.budget, cfg.strategy, self.pool, cfg.lease_seconds, cfg.seed, self.run.run_id,
                                   progress=self.progress, request_id=f"{self.pool}-select")  # fmt: skip
        _atomic_json(self.dir / "batch.json", batch)
        return {"pairs": len(batch["pairs"]), "from": batch["candidates"], "checkpoint": batch["checkpoint_id"]}

    def _annotate(self) -> dict:
        if self.run.config.annotator == "file":
            return self._annotate_by_people()
        if self.run.config.annotator.startswith("reward-model:"):
            return self._annotate_by_reward_model(self.run.config.annotator.split(":", 1)[1])
        from activedpo_trainer.tasks import bradley_terry_preference

        batch = json.loads((self.dir / "batch.json").read_text())
        rng = np.random.default_rng([self.run.config.seed, self.r, 7])
        labels = []
        for p in batch["pairs"]:
            pref = bradley_terry_preference(self.world.task, p["prompt"], p["response_a"], p["response_b"], rng)
            key = f"{self.run.run_id}:{p['pair_id']}:oracle"
            labels.append(
                {
                    "pair_id": p["pair_id"],
                    "preference": "AB"[pref.chosen],
                    "annotator": "oracle",
                    "idempotency_key": key,
                }
            )
        tmp = self.dir / "labels.jsonl.tmp"
        tmp.write_text("".join(json.dumps(x) + "\n" for x in labels))
        os.replace(tmp, self.dir / "labels.jsonl")
        return {"labels": len(labels), "A": sum(x["preference"] == "A" for x in labels)}

    def _annotate_by_reward_model(self, path: str) -> dict:
        """Label with a Hugging Face sequence-classification reward model: the higher score wins."""
        from activedpo_client.rewardmodel import RewardModel

        batch = json.loads((self.dir / "batch.json").read_text())
        rm = RewardModel(path)
        texts = [(p["prompt"], p["response_a"]) for p in batch["pairs"]] + [
            (p["prompt"], p["response_b"]) for p in batch["pairs"]
        ]
        scores = rm.score(texts)
        n = len(batch["pairs"])
        name = f"reward-model:{Path(path).name}"
        labels = []
        for p, a, b in zip(batch["pairs"], scores[:n], scores[n:], strict=True):
            pref = "A" if a > b else "B" if b > a else "TIE"
            key = f"{self.run.run_id}:{p['pair_id']}:{name}"
            labels.append({"pair_id": p["pair_id"], "preference": pref, "annotator": name, "idempotency_key": key})
        tmp = self.dir / "labels.jsonl.tmp"
        tmp.write_text("".join(json.dumps(x) + "\n" for x in labels))
        os.replace(tmp, self.dir / "labels.jsonl")
        return {"labels": len(labels), "A": sum(x["preference"] == "A" for x in labels)}

    def _annotate_by_people(self) -> dict:
        from activedpo_client.labelfiles import write_label_files

        labels = self.dir / "labels.jsonl"
        if labels.exists():  # written by `activedpo-client labels import`
            rows = [json.loads(line) for line in labels.read_text().splitlines()]
            return {"labels": len(rows), "A": sum(x["preference"] == "A" for x in rows)}
        batch = json.loads((self.dir / "batch.json").read_text())
        files = write_label_files(batch, self.dir)
        raise AwaitingLabels(
            f"round {self.r}: {len(batch['pairs'])} pairs to label in {files[0]} (Label Studio: {files[1].name} "
            f"with {files[2].name}); import the finished labels with `activedpo-client labels import FILE "
            f"--run-dir {self.run.dir}`, then run `activedpo-client round` again"
        )

    def _submit(self) -> dict:
        labels = [json.loads(line) for line in (self.dir / "labels.jsonl").read_text().splitlines()]
        results = self.client.submit_labels(labels)
        rejected = [r for r in results if not r["accepted"]]
        if rejected:
            raise ClientError(f"the server rejected {len(rejected)} labels, e.g. {rejected[0]['pair_id']}: "
                              f"{rejected[0]['reason']}")  # fmt: skip
        return {"accepted": len(results), "replayed": sum(r["replayed"] for r in results)}

    def _train(self) -> dict:
        import shutil

        from activedpo_trainer.checkpoint import CheckpointManifest
        from activedpo_trainer.dpo import DPOSettings, train_dpo

        cfg = self.run.config
        rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                for r in self.client.export_labels()]  # fmt: skip
        out = self.dir / "checkpoint"
        if out.exists():  # an interrupted earlier attempt: train again from scratch
            shutil.rmtree(out)
        parent = CheckpointManifest.load(self.run.checkpoint) if self.run.checkpoint else None
        settings = DPOSettings(epochs=cfg.dpo_epochs, lr=cfg.dpo_lr, seed=cfg.seed + self.r, device=self.device)
        work = self.dir / "checkpoint.partial"
        if work.exists():
            shutil.rmtree(work)
        manifest = train_dpo(self.world.sft_checkpoint, rows, work, settings, parent=parent, mode=cfg.dpo_mode,
                             checkpoint_id=f"{self.run.run_id}-r{self.r:03d}")  # fmt: skip
        # the adapter path becomes relative to the manifest, so the finished directory can be renamed into place
        CheckpointManifest(manifest.id, manifest.base, "adapter", manifest.parent_id, manifest.created).save(work)
        os.replace(work, out)
        return {"labels": len(rows), "checkpoint": manifest.id}

    def _load(self) -> dict:
        res = self.client.load_checkpoint(self.dir / "checkpoint")
        return {"server_checkpoint": res["checkpoint_id"]}

    def _evaluate(self) -> dict:
        from activedpo_trainer.checkpoint import load_model
        from activedpo_trainer.toyworld import heldout_eval

        cfg = self.run.config
        policy = load_model(self.dir / "checkpoint", device=self.device)
        report = heldout_eval(policy, self.world.config, cfg.eval_prompts, cfg.seed, with_reference=True,
                              progress=self.progress)  # fmt: skip
        _atomic_json(self.dir / "eval.json", report.to_dict())
        return {"reward": round(report.mean, 4), "se": round(report.se, 4), "win_rate": report.win_rate}

    def _metrics(self) -> dict:
        steps = self.state["steps"]
        ev = json.loads((self.dir / "eval.json").read_text())
        return {
            "round": self.r,
            "labels": steps["train"]["labels"],
            "reward": ev["mean"],
            "se": ev["se"],
            "win_rate": ev["win_rate"],
            "ref_reward": ev["ref_mean"],
            "checkpoint": steps["train"]["checkpoint"],
            "seconds": {s: steps[s]["seconds"] for s in STEPS},
        }


@dataclass(frozen=True)
class ServerSpec:
    """Which selection server a run talks to; ``embedded`` starts the run's own."""

    server: str = "embedded"  # or host:port
    token: str | None = None
    tls_ca: Path | None = None
    proj_dim: int = 8192  # embedded server only
    lora_r: int = 128  # embedded server only: rank of round one's fresh adapter (α = 4r)
    extra: tuple[str, ...] = ()  # further `activedpo-server serve` options (embedded only)

    def serve_args(self) -> list[str]:
        return ["--proj-dim", str(self.proj_dim), "--lora-r", str(self.lora_r), "--lora-alpha", str(4 * self.lora_r),
                *self.extra]  # fmt: skip


def run_rounds(
    run_dir: Path,
    world,
    config: RoundConfig,
    rounds: int,
    spec: ServerSpec,
    bars=None,
    say: Callable[[str], None] = print,
    report: Callable[[dict], None] | None = None,
    device: str | None = None,
) -> list[dict]:
    """Run (or resume) ``run_dir`` up to ``rounds`` rounds; the metrics of every round done.

    ``bars`` is a context manager factory yielding a progress callback (the CLI's rich bars).
    """
    from contextlib import nullcontext

    from activedpo_client.remote import Connection, EmbeddedServer
    from activedpo_client.report import read_metrics

    run_dir = Path(run_dir)
    held = len(world.task.heldout_prompts())
    if config.eval_prompts > held:  # found now, not after a round of generation and training
        raise ClientError(f"{config.eval_prompts} held-out prompts asked for, but this world's task holds out "
                          f"{held}; pass --eval-prompts {held} or fewer")  # fmt: skip
    run = Run.open(run_dir, str(world.root), config)
    if run.rounds_done >= rounds:  # nothing to do: no server needed
        return read_metrics(run_dir)
    embedded = None
    server = spec.server
    if server == "embedded":
        (run_dir / "server").mkdir(parents=True, exist_ok=True)
        (run_dir / "server" / "args.json").write_text(json.dumps(spec.serve_args()))  # status/export reuse them
        embedded = EmbeddedServer(run_dir / "server", run.checkpoint or world.sft_dir, args=spec.serve_args()).start()
        server = embedded.target
    try:
        with SelectorClient(Connection(server, token=spec.token, tls_ca=spec.tls_ca)) as client:
            client.wait_ready()
            while run.rounds_done < rounds:
                with bars(transient=True) if bars else nullcontext(None) as bar:
                    metrics = RoundRunner(run, client, bar, say=say, device=device).run_round()
                if report:
                    report(metrics)
    finally:
        if embedded is not None:
            embedded.stop()
    return read_metrics(run_dir)
