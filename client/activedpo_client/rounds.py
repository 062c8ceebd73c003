"""Rounds of the ActiveDPO loop over a workload, resumable from a run directory.

A round is eight steps: generate → add → select → annotate → submit → train → load → evaluate.
Each step writes its output atomically into ``run_dir/rounds/NNN/`` and then records itself in
that round's ``state.json``; a re-run skips recorded steps, so a crash or Ctrl-C at any point
repeats at most the step it interrupted. Paid work is never repeated or duplicated: selected
pairs and labels are files before they are used, and labels go to the server with idempotency
keys derived from the run, the pair and the annotator.

What is aligned comes from a :class:`~activedpo_trainer.workload.Workload`: a user's model and
prompt file, or the embedded toy world. Annotators: ``file`` (people: the batch is handed out
as files and the round waits), ``reward-model:PATH`` (a sequence-classification reward model)
and ``oracle`` (the toy world's hidden reward). Evaluators: ``reward-model:PATH``, ``oracle``
or ``none``.

Layout::

    run_dir/run.json                 workload, config, run id, rounds done, current checkpoint
    run_dir/rounds/001/state.json    steps done, with their summaries and wall times
    run_dir/rounds/001/candidates.jsonl, batch.json, labels.jsonl, checkpoint/, eval.json
    run_dir/metrics.jsonl            one line per finished round
    run_dir/reward.png               held-out reward (or agreement) against labels, redrawn each round
    run_dir/server/                  the embedded server's state (when --server embedded)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from activedpo_client.messages import Batch, CandidateGroup, Label
from activedpo_client.remote import ClientError, SelectorClient
from activedpo_client.settings import LabelStudioSpec, RoundConfig, ServerSpec
from activedpo_core.atomic import replace_dir, write_json, write_jsonl
from activedpo_core.lora import LoraSpec


class AwaitingLabels(ClientError):
    """The round waits for people: the batch is written out for labeling (not an error of the run)."""


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class LabelsHeld:
    """Where a round's hand-off to people stands after ``labels import``."""

    round: int
    labels: int  # labels held for the round
    pairs: int  # pairs in its batch
    unlabeled: int  # of which no label is held yet
    errors: tuple[str, ...] = ()  # one line per rejected row
    done: bool = False  # the round trains on what is held, the unlabeled pairs go back to the pool


def import_labels(run: Run, path: Path | None, done: bool = False) -> LabelsHeld:
    """Validate a finished labels file against the current round's batch and keep its valid rows; ``done``
    marks the batch finished with what is held (else the round waits for every pair's label).

    Importing again adds to what is there; a (pair, annotator) label already held is not duplicated.
    """
    from activedpo_client.labelfiles import read_labels

    r = run.rounds_done + 1
    directory = run.round_dir(r)
    batch_file = directory / "batch.json"
    if not batch_file.exists():
        raise ClientError(f"round {r} of {run.dir} has no selected batch yet; run `activedpo-client round` first")
    batch = Batch.from_dict(json.loads(batch_file.read_text()))
    out = directory / "labels.jsonl"
    held = _read_jsonl(out) if out.exists() else []
    errors: list[str] = []
    if path is not None:
        good, errors, _ = read_labels(path, batch, _renderer(run))
        have = {(x["pair_id"], x["annotator"]) for x in held}
        for g in good:
            if (g["pair_id"], g["annotator"]) not in have:
                held.append(g | {"idempotency_key": f"{run.run_id}:{g['pair_id']}:{g['annotator']}"})
        if held:
            write_jsonl(out, held)
    if done:
        if not held:
            raise ClientError(f"round {r} holds no label yet: nothing to train on; import labels first")
        write_json(directory / "labels_done.json", {"labels": len(held)})
    unlabeled = len({p.pair_id for p in batch.pairs} - {x["pair_id"] for x in held})
    return LabelsHeld(r, len(held), len(batch.pairs), unlabeled, tuple(errors),
                      done or (directory / "labels_done.json").exists())  # fmt: skip


def _renderer(run: Run):
    """The prompt renderer of a run's own model (None for the toy world, whose prompts are plain text)."""
    if run.workload.get("kind") != "model":
        return None
    from activedpo_trainer.workload import open_workload

    return open_workload(run.workload).renderer


STEPS = ("generate", "add", "select", "annotate", "submit", "train", "load", "evaluate")
JUDGE_SETTINGS = {"annotator", "evaluate", "ls_project"}  # may change while a run holds no label yet
ROUND_SIZE = {"budget", "prompts", "responses"}  # may change between rounds: the next round not yet done uses them
NEEDS_ORACLE = "the toy world's hidden reward"
__all__ = ["LabelStudioSpec", "RoundConfig", "Run", "ServerSpec", "run_rounds"]  # the settings live in settings.py


@dataclass
class Run:
    """A run directory: its workload, its config and where it stands."""

    dir: Path
    workload: dict  # the workload's description (activedpo_trainer.workload.open_workload reopens it)
    config: RoundConfig
    run_id: str = field(default_factory=lambda: f"run-{uuid.uuid4().hex[:10]}")
    rounds_done: int = 0
    checkpoint: str = ""  # the current policy's checkpoint directory ("" = the workload's base model)
    project: str = ""  # the server-side project of its pools and labels (its run id; "" for runs before projects)
    server: str = ""  # the selection server it last ran against: "embedded" or host:port (not a setting)

    @classmethod
    def open(cls, run_dir: Path, workload: dict | None = None, config: RoundConfig | None = None,
             given: frozenset[str] | None = None) -> Run:  # fmt: skip
        """Open ``run_dir``, starting it with ``workload`` and ``config`` when it holds no run.

        Resuming, ``config`` may change only what may still change (the next round's size; who labels and
        evaluates while no label is held); anything else differs: refused. ``given`` names the settings the
        caller chose (on the command line or in a config file): once the run has done any work the others keep
        its recorded values, so resuming needs no option again and a newer default never reads as a change
        (before, a mistake is fixed by leaving its option out). None: all are given.
        """
        path = Path(run_dir) / "run.json"
        if not path.exists():
            if workload is None or config is None:
                raise ClientError(f"no run in {run_dir}; start one with `activedpo-client round`")
            run = cls(Path(run_dir), workload, config)
            run.project = run.run_id
            run.save()
            return run
        try:
            data = json.loads(path.read_text())
            stored = data.get("workload") or {
                "kind": "toy",
                "world": str(Path(data["world"]).resolve()),
            }  # pre-workload
            checkpoint = data["checkpoint"]
            if checkpoint and not Path(checkpoint).is_absolute():  # relative to the run dir (before: to the cwd)
                inside = Path(run_dir) / checkpoint
                checkpoint = str((inside if inside.exists() or not Path(checkpoint).exists() else
                                  Path(checkpoint)).resolve())  # fmt: skip
            run = cls(Path(run_dir), stored, RoundConfig(**data["config"]), data["run_id"], data["rounds_done"],
                      checkpoint, data.get("project", ""), data.get("server", ""))  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ClientError(f"{path} is damaged ({e}); restore it or start a new --run-dir") from None
        fresh = not run.started()  # nothing done yet (a mistake found at start): any setting may still change
        if workload is not None:
            changed = [k for k, v in run.workload.items() if workload.get(k) != v]
            if changed and fresh:
                run.workload = dict(workload)
                run.save()
            elif changed:
                what = ", ".join(f"{k}: {run.workload[k]!r} → {workload.get(k)!r}" for k in changed)
                hint = ("; evaluation holds out prompts of --prompt-file when a run starts, so this run (started "
                        "without --evaluate) has none: start a new --run-dir with --evaluate (or --heldout-file)"
                        if changed == ["heldout"] else "; use a new --run-dir or the same model, prompts and settings")
                raise ClientError(f"run dir {run_dir} was started on another workload ({what}){hint}")  # fmt: skip
            run.workload = {**workload, **run.workload}  # a run from before a setting was recorded adopts it
        if config is not None:
            if not run.config.device:  # recorded since the device became part of the run
                run.config = replace(run.config, device=config.device)
            if given is not None and not fresh:  # what the caller did not choose is the run's own
                config = replace(run.config, **{k: getattr(config, k) for k in given if hasattr(run.config, k)})
            if config != run.config:
                old, new = asdict(run.config), asdict(config)
                changed = [k for k, v in new.items() if old[k] != v]
                free = ROUND_SIZE | (JUDGE_SETTINGS if not run.holds_labels() else set())
                if fresh or set(changed) <= free:
                    run.config = config  # takes effect from the next step not yet done
                    run.save()
                else:
                    why = " (labels are already held)" if set(changed) <= ROUND_SIZE | JUDGE_SETTINGS else ""
                    raise ClientError(
                        f"run dir {run_dir} was started with other settings ({', '.join(changed)}){why}; "
                        f"use a new --run-dir or the same settings"
                    )
        return run

    def started(self) -> bool:
        """Whether this run has done any work: a finished round, or a step of the current one."""
        if self.rounds_done:
            return True
        state = self.round_dir(1) / "state.json"
        return state.exists() and bool(json.loads(state.read_text()).get("steps"))

    def holds_labels(self) -> bool:
        """Whether any label of this run is durable (a finished round, or a round's labels file)."""
        return self.rounds_done > 0 or any(self.dir.glob("rounds/*/labels.jsonl"))

    def save(self) -> None:
        checkpoint = self.checkpoint
        if checkpoint and Path(checkpoint).resolve().is_relative_to(self.dir.resolve()):
            checkpoint = str(Path(checkpoint).resolve().relative_to(self.dir.resolve()))  # the run dir may move
        data = dict(workload=self.workload, config=asdict(self.config), run_id=self.run_id,
                    rounds_done=self.rounds_done, checkpoint=checkpoint, project=self.project,
                    server=self.server)  # fmt: skip
        write_json(self.dir / "run.json", data)

    def round_dir(self, r: int) -> Path:
        return self.dir / "rounds" / f"{r:03d}"


class RoundRunner:
    """Runs round ``run.rounds_done + 1`` of ``workload`` against a selection server, step by step."""

    def __init__(self, run: Run, workload, client: SelectorClient,
                 progress: Callable[[str, int, int], None] | None = None,
                 say: Callable[[str], None] = print, label_studio: LabelStudioSpec | None = None):  # fmt: skip
        self.run, self.workload, self.client, self.progress, self.say = run, workload, client, progress, say
        self.label_studio = label_studio
        self.device = run.config.device or None
        self.r = run.rounds_done + 1
        self.dir = run.round_dir(self.r)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"steps": {}}
        self.pool = f"{run.run_id}-round-{self.r}"

    @property
    def checkpoint(self) -> str:
        """The current policy's checkpoint as a path or hub id (the workload's base before round one)."""
        return self.run.checkpoint or self.workload.base.base

    def _load_policy(self, checkpoint=None):
        from activedpo_core.checkpoint import load_model

        return load_model(checkpoint or self._checkpoint_ref(), dtype=self.workload.dtype, device=self.device)

    def _checkpoint_ref(self):
        return self.run.checkpoint or self.workload.base

    def run_round(self) -> dict:
        for step in STEPS:
            if step in self.state["steps"]:
                continue
            t0 = time.perf_counter()
            summary = getattr(self, f"_{step}")()
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            self.state["steps"][step] = summary
            write_json(self.state_path, self.state)
            self.say(f"round {self.r} {step}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        from activedpo_client.report import plot_rewards, read_metrics

        metrics = self._metrics()
        if all(m["round"] != self.r for m in read_metrics(self.run.dir)):  # a crash may have written it already
            with open(self.run.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.run.rounds_done = self.r
        self.run.checkpoint = str((self.dir / "checkpoint").resolve())
        self.run.save()
        plot_rewards({self.run.config.strategy: read_metrics(self.run.dir)}, self.run.dir / "reward.png")
        return metrics

    # ---- steps ----------------------------------------------------------------------------

    def _generate(self) -> dict:
        from activedpo_trainer.generation import generate

        cfg = self.run.config
        pool = self.workload.train_prompts()
        rng = np.random.default_rng([cfg.seed, self.r])
        prompts = [pool[i] for i in rng.choice(len(pool), size=min(cfg.prompts, len(pool)), replace=False)]
        loaded = self._load_policy()
        report = (lambda d, t: self.progress("generate", d, t)) if self.progress else None
        seed = cfg.seed * 1000 + self.r
        sampled = generate(loaded.model, loaded.tokenizer, prompts, cfg.responses, self.workload.generation,
                           seed=seed, progress=report)  # fmt: skip
        groups = []
        for p, rs in zip(prompts, sampled, strict=True):
            kept = list(dict.fromkeys(r for r in rs if r.strip()))  # non-empty, distinct
            if len(kept) >= 2:
                groups.append({"prompt": p, "responses": kept})
        write_jsonl(self.dir / "candidates.jsonl", groups)
        return {"prompts": len(prompts), "with_pairs": len(groups)}

    def _server_has_current_checkpoint(self) -> None:
        """A server that holds another checkpoint (a fresh remote one, or one another run moved) gets ours.

        An embedded server reads it from the run dir; a remote one is sent what it lacks, the base model
        included (see :meth:`SelectorClient.push_checkpoint`), so no disk is shared. Before round one's DPO
        the policy has no adapter: it is featurized with the adapter DPO will train (the run's LoRA).
        """
        ensure_server_checkpoint(self.client, self.checkpoint, self.run.config.lora, self.progress,
                                 say=lambda m: self.say(f"round {self.r}: {m}"))  # fmt: skip

    def _add(self) -> dict:
        from activedpo_client.pool import display_messages

        groups = (CandidateGroup(g["prompt"], g["responses"],
                                 messages=display_messages(self.workload.raw_prompt(g["prompt"]), g["prompt"]))
                  for g in _read_jsonl(self.dir / "candidates.jsonl"))  # fmt: skip
        return {"pairs": self.client.add_candidates(groups, pool=self.pool).pairs}

    def _select(self) -> dict:
        cfg = self.run.config
        self._server_has_current_checkpoint()
        batch = self.client.select(cfg.budget, cfg.strategy, self.pool, cfg.lease_seconds, cfg.seed, self.run.run_id,
                                   progress=self.progress, request_id=f"{self.pool}-select")  # fmt: skip
        write_json(self.dir / "batch.json", batch.to_dict())
        return {"pairs": len(batch.pairs), "from": batch.candidates, "checkpoint": batch.checkpoint_id}

    def _batch(self) -> Batch:
        return Batch.from_dict(json.loads((self.dir / "batch.json").read_text()))

    def _annotate(self) -> dict:
        annotator = self.run.config.annotator
        if annotator == "file":
            return self._annotate_by_people()
        if annotator == "label-studio":
            return self._annotate_in_label_studio()
        batch = self._batch()
        extra = {}
        if annotator.startswith("reward-model:"):
            path = annotator.split(":", 1)[1]
            rm = self._reward_model(path)
            prompts = [self.workload.raw_prompt(p.prompt) for p in batch.pairs]  # the RM renders its own template
            a = rm.score(prompts, [p.response_a for p in batch.pairs])
            b = rm.score(prompts, [p.response_b for p in batch.pairs])
            name = f"reward-model:{Path(path).name}"
            prefs = ["A" if x > y else "B" if y > x else "TIE" for x, y in zip(a, b, strict=True)]
            extra = {"truncated": rm.truncated}
        elif annotator == "oracle-deterministic":  # no label noise: the higher hidden reward wins
            oracle, name = self.workload.oracle, "oracle-deterministic"
            r = [(oracle.reward(p.prompt, p.response_a), oracle.reward(p.prompt, p.response_b)) for p in batch.pairs]
            prefs = ["A" if x > y else "B" if y > x else "TIE" for x, y in r]
        else:
            from activedpo_trainer.tasks import bradley_terry_preference

            rng = np.random.default_rng([self.run.config.seed, self.r, 7])
            oracle = self.workload.oracle
            name = "oracle"
            prefs = ["AB"[bradley_terry_preference(oracle, p.prompt, p.response_a, p.response_b, rng).chosen]
                     for p in batch.pairs]  # fmt: skip
        labels = [Label(p.pair_id, pref, name, f"{self.run.run_id}:{p.pair_id}:{name}")
                  for p, pref in zip(batch.pairs, prefs, strict=True)]  # fmt: skip
        write_jsonl(self.dir / "labels.jsonl", (x.to_dict() for x in labels))
        return {"labels": len(labels), "A": prefs.count("A"), **extra}

    def _reward_model(self, path: str):
        """A reward model fed as it was trained: the raw conversation on its own chat template (or text pair),
        truncated to its context keeping the response."""
        from activedpo_trainer.rewardmodel import RewardModel

        return RewardModel(path, device=self.device)

    def _annotate_by_people(self) -> dict:
        from activedpo_client.labelfiles import write_label_files

        labels = self.dir / "labels.jsonl"
        batch = self._batch()
        if labels.exists():  # written by `activedpo-client labels import`
            rows = _read_jsonl(labels)
            missing = [p.pair_id for p in batch.pairs if p.pair_id not in {x["pair_id"] for x in rows}]
            if missing and not (self.dir / "labels_done.json").exists():
                raise AwaitingLabels(
                    f"round {self.r}: {len(rows)} labels held, {len(missing)} of the batch's {len(batch.pairs)} pairs "
                    f"not labeled yet ({self.dir / 'to_label.jsonl'}); import their labels with `activedpo-client "
                    f"labels import FILE --run-dir {self.run.dir}`, or add --done to train on what is held"
                )
            released = self.client.release_lease(batch.lease_id, missing) if missing else 0
            return {"labels": len(rows), "A": sum(x["preference"] == "A" for x in rows), "unlabeled": len(missing),
                    "released": released}  # fmt: skip
        files = write_label_files(batch, self.dir)
        raise AwaitingLabels(
            f"round {self.r}: {len(batch.pairs)} pairs to label in {files[0]} (Label Studio: {files[1].name} "
            f"with {files[2].name}); import the finished labels with `activedpo-client labels import FILE "
            f"--run-dir {self.run.dir}`, then run `activedpo-client round` again"
        )

    def _annotate_in_label_studio(self) -> dict:
        """Push the batch to Label Studio (once: the tasks are found again by their batch tag) and poll its
        annotations until every task is done or ``--ls-wait`` passes (then the round waits, resumable)."""
        from contextlib import nullcontext

        from activedpo_client.labelstudio import LabelStudioProject, WebhookReceiver, wait_for_labels

        spec = self.label_studio or LabelStudioSpec()
        project = LabelStudioProject(self.run.config.ls_project, spec.url, spec.api_key, spec.project)
        self._revise_earlier_rounds(project)
        batch = self._batch()
        record = self.dir / "label_studio.json"
        if record.exists():
            tasks = json.loads(record.read_text())["task_ids"]
        else:
            tasks = project.push(batch, tag=self.pool)
            write_json(record, {"url": project.url, "project": project.id, "task_ids": tasks})
        progress = (lambda done, total: self.progress("label-studio", done, total)) if self.progress else None
        hooks = (
            WebhookReceiver(project, spec.webhook_port, spec.webhook_url)
            if spec.webhook_port is not None
            else nullcontext()
        )
        with hooks as receiver:
            pulled, finished = wait_for_labels(project, tasks, spec.wait, spec.poll, progress,
                                               wake=receiver.wake if receiver else None)  # fmt: skip
        if not finished:
            raise AwaitingLabels(
                f"round {self.r}: {pulled.done} of {pulled.total} tasks done in Label Studio project "
                f"{project.id} ({project.url}); run `activedpo-client round` again to keep waiting"
            )
        write_jsonl(self.dir / "labels.jsonl", (x.to_dict() for x in pulled.labels))
        c = pulled.counts()
        return {"labels": len(pulled.labels), "A": c["A"], "tie": c["TIE"], "both_bad": c["BOTH_BAD"],
                "skipped": pulled.skipped, "tasks": pulled.total}  # fmt: skip

    def _revise_earlier_rounds(self, project) -> None:
        """Answers given, edited or deleted in Label Studio on earlier rounds' tasks since those rounds ended
        reach the server (later DPO trains on what it holds now)."""
        records = [self.run.round_dir(r) / "label_studio.json" for r in range(1, self.r)]
        earlier = [t for f in records if f.exists() for t in json.loads(f.read_text())["task_ids"]]
        if not earlier:
            return
        send = project.changes(earlier, project.pull(earlier), project.held(self.client))
        if send:
            results = self.client.submit_labels(send)
            done = sum(r.accepted and not r.replayed for r in results)
            self.say(f"round {self.r}: {done} answers on earlier rounds' tasks changed in Label Studio since "
                     f"(new, edited or withdrawn); the server now holds them")  # fmt: skip

    def _submit(self) -> dict:
        labels = [Label.from_dict(x) for x in _read_jsonl(self.dir / "labels.jsonl")]
        results = self.client.submit_labels(labels)
        rejected = [r for r in results if not r.accepted]
        if rejected:
            raise ClientError(f"the server rejected {len(rejected)} labels, e.g. {rejected[0].pair_id}: "
                              f"{rejected[0].reason}")  # fmt: skip
        return {"accepted": len(results), "replayed": sum(r.replayed for r in results)}

    def _agreement(self) -> float | None:
        """Share of this round's A/B labels whose preferred response the current policy already ranked
        higher by its implicit reward log π_θ/π_ref (before training on them); None while the policy is π_ref."""
        from activedpo_core.sequences import sequence_logprobs

        if not self.run.checkpoint:
            return None
        pairs = {p.pair_id: p for p in self._batch().pairs}
        labels = [x for x in _read_jsonl(self.dir / "labels.jsonl") if x["preference"] in ("A", "B")]
        if not labels:
            return None
        policy = self._load_policy()
        model, tok = policy.model, policy.tokenizer
        prompts = [pairs[x["pair_id"]].prompt for x in labels]
        chosen = [getattr(pairs[x["pair_id"]], "response_a" if x["preference"] == "A" else "response_b")
                  for x in labels]  # fmt: skip
        rejected = [getattr(pairs[x["pair_id"]], "response_b" if x["preference"] == "A" else "response_a")
                    for x in labels]  # fmt: skip
        margin = sequence_logprobs(model, tok, prompts, chosen) - sequence_logprobs(model, tok, prompts, rejected)
        with model.disable_adapter():
            margin -= sequence_logprobs(model, tok, prompts, chosen) - sequence_logprobs(model, tok, prompts, rejected)
        return round(float(np.mean(margin > 0)), 4)

    def _train(self) -> dict:
        import shutil

        from activedpo_core.checkpoint import CheckpointManifest
        from activedpo_trainer.dpo import DPOSettings, train_dpo

        cfg = self.run.config
        agreement = self._agreement()
        rows = [x.dpo_row() for x in self.client.export_labels()]
        out = self.dir / "checkpoint"
        if out.exists():  # an interrupted earlier attempt: train again from scratch
            shutil.rmtree(out)
        parent = CheckpointManifest.load(self.run.checkpoint) if self.run.checkpoint else None
        settings = DPOSettings(epochs=cfg.dpo_epochs, lr=cfg.dpo_lr, beta=cfg.dpo_beta, seed=cfg.seed + self.r,
                               device=self.device, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                               target_modules=cfg.targets, dtype=self.workload.dtype)  # fmt: skip
        work = self.dir / "checkpoint.partial"
        if work.exists():
            shutil.rmtree(work)
        report = (lambda d, t: self.progress("dpo", d, t)) if self.progress else None
        manifest = train_dpo(self.workload.base, rows, work, settings, parent=parent, mode=cfg.dpo_mode,
                             checkpoint_id=f"{self.run.run_id}-r{self.r:03d}", progress=report)  # fmt: skip
        # the adapter path becomes relative to the manifest, so the finished directory can be renamed into place
        CheckpointManifest(manifest.id, manifest.base, "adapter", manifest.parent_id, manifest.created).save(work)
        replace_dir(work, out)
        return {"labels": len(rows), "checkpoint": manifest.id, "agreement": agreement}

    def _load(self) -> dict:
        res = self.client.push_checkpoint(self.dir / "checkpoint")
        return {"server_checkpoint": res.checkpoint_id}

    def _evaluate(self) -> dict:
        from activedpo_trainer.evaluate import evaluate_policy, task_scorer

        cfg = self.run.config
        if cfg.evaluate == "none":
            write_json(self.dir / "eval.json", {"evaluate": "none"})
            return {"evaluate": "none"}
        policy = self._load_policy(self.dir / "checkpoint")
        rm = None
        if cfg.evaluate == "oracle":
            scorer = task_scorer(self.workload.oracle)
        else:
            rm = self._reward_model(cfg.evaluate.split(":", 1)[1])

            def scorer(prompts, responses):
                return rm.score([self.workload.raw_prompt(p) for p in prompts], responses)

        gen = self.workload.generation
        held = self.workload.heldout_prompts()[: cfg.eval_prompts]
        report = evaluate_policy(
            policy.model, policy.tokenizer, scorer, held, seed=cfg.seed, max_new_tokens=gen.max_new_tokens,
            temperature=gen.temperature, top_p=gen.top_p, with_reference=True, samples=cfg.eval_samples,
            progress=(lambda d, t: self.progress("evaluate", d, t)) if self.progress else None,
        )  # fmt: skip
        accuracy = self._preference_accuracy(policy, scorer, held) if cfg.eval_pair_samples else {}
        truncated = {"truncated": rm.truncated} if rm is not None else {}  # responses cut to fit the RM's context
        write_json(self.dir / "eval.json", {"evaluate": cfg.evaluate, **report.to_dict(), **accuracy, **truncated})
        return {"reward": round(report.mean, 4), "se": round(report.se, 4), "win_rate": report.win_rate, **accuracy,
                **truncated}  # fmt: skip

    def _preference_accuracy(self, policy, scorer, held: list[str]) -> dict:
        """Preference accuracy of the policy's implicit reward on judged held-out pairs: pairs sampled once
        per run from π_ref (the same for every run with this seed, kept in the run dir with π_ref's
        log-probabilities), and pairs sampled now from the policy itself."""
        from activedpo_trainer.evaluate import (
            JudgedPairs,
            judged_pairs,
            preference_accuracy,
            with_reference_logprobs,
        )

        cfg, gen = self.run.config, self.workload.generation
        model, tok = policy.model, policy.tokenizer
        path = self.run.dir / "heldout_pairs.json"
        seed = cfg.seed + 7919  # other draws than the reward's samples
        if path.exists():
            ref_pairs = JudgedPairs.from_dict(json.loads(path.read_text()))
        else:
            with model.disable_adapter():
                ref_pairs = judged_pairs(model, tok, scorer, held, cfg.eval_pair_samples, seed, gen)
                ref_pairs = with_reference_logprobs(model, tok, ref_pairs)
            write_json(path, ref_pairs.to_dict(), indent=None)
        out: dict = {"pref_pairs": len(ref_pairs)}
        if len(ref_pairs):
            acc, se = preference_accuracy(model, tok, ref_pairs)
            out.update(pref_acc=round(acc, 4), pref_acc_se=round(se, 4))
        own = judged_pairs(model, tok, scorer, held, cfg.eval_pair_samples, seed, gen)
        if len(own):
            acc, se = preference_accuracy(model, tok, own)
            out.update(pref_acc_policy=round(acc, 4), pref_acc_policy_se=round(se, 4), pref_pairs_policy=len(own))
        return out

    def _metrics(self) -> dict:
        steps = self.state["steps"]
        ev = json.loads((self.dir / "eval.json").read_text())
        return {
            "round": self.r,
            "labels": steps["train"]["labels"],
            "reward": ev.get("mean"),  # None without an evaluator
            "se": ev.get("se"),
            "win_rate": ev.get("win_rate"),
            "ref_reward": ev.get("ref_mean"),
            "pref_acc": ev.get("pref_acc"),  # implicit reward vs the judge on π_ref's held-out pairs (π_ref: 0.5)
            "pref_acc_se": ev.get("pref_acc_se"),
            "pref_pairs": ev.get("pref_pairs"),
            "pref_acc_policy": ev.get("pref_acc_policy"),  # the same on pairs sampled from this round's policy
            "agreement": steps["train"].get("agreement"),
            "evaluate": self.run.config.evaluate,
            "checkpoint": steps["train"]["checkpoint"],
            "seconds": {s: steps[s]["seconds"] for s in STEPS},
        }


def ensure_server_checkpoint(client: SelectorClient, ref: str, lora: LoraSpec, progress=None,
                             say: Callable[[str], None] = print) -> None:  # fmt: skip
    """Make the server serve checkpoint ``ref`` (a path or hub id), featurizing a checkpoint without an adapter
    with ``lora``; says so when it had to."""
    from activedpo_core.checkpoint import resolve_checkpoint

    ref = str(Path(ref).resolve()) if Path(ref).exists() else ref
    if client.serves(ref, lora):
        return
    manifest = resolve_checkpoint(ref)
    what = f"{manifest.id}" + ("" if manifest.adapter else f" with a fresh LoRA {lora.describe()}")
    say(f"loading checkpoint {what} into the server")
    client.push_checkpoint(ref, lora, progress)


def check_workload(workload, config: RoundConfig) -> None:
    """Refuse, before any work, what this workload cannot do with this config."""
    from activedpo_trainer.rewardmodel import check_reward_model

    for judge in (config.annotator, config.evaluate):  # a wrong model found now, not after a round's work
        if judge.startswith("reward-model:"):
            check_reward_model(judge.split(":", 1)[1])
    if workload.oracle is None:
        if config.annotator in ("oracle", "oracle-deterministic"):
            raise ClientError(f"--annotator {config.annotator} needs {NEEDS_ORACLE} (--task or --world); with "
                              f"--model use --annotator file (people) or reward-model:PATH")  # fmt: skip
        if config.evaluate == "oracle":
            raise ClientError(f"--evaluate oracle needs {NEEDS_ORACLE} (--task or --world); with --model use "
                              f"--evaluate reward-model:PATH or none")  # fmt: skip
    has_file = bool(getattr(getattr(workload, "spec", None), "heldout_file", None))
    if config.evaluate != "none" and not has_file:  # a --heldout-file is evaluated whole (up to --eval-prompts)
        held = len(workload.heldout_prompts())
        if config.eval_prompts > held:  # found now, not after a round of generation and training
            raise ClientError(f"{config.eval_prompts} held-out prompts asked for, but {workload.label()} holds out "
                              f"{held}; pass --eval-prompts {held} or fewer")  # fmt: skip
    if not workload.train_prompts():
        raise ClientError(f"{workload.label()} has no prompts to train on")


def run_rounds(
    run_dir: Path,
    workload,
    config: RoundConfig,
    rounds: int,
    spec: ServerSpec,
    bars=None,
    say: Callable[[str], None] = print,
    report: Callable[[dict], None] | None = None,
    label_studio: LabelStudioSpec | None = None,
    given: frozenset[str] | None = None,
    record: Callable[[Run], None] | None = None,
) -> list[dict]:
    """Run (or resume) ``run_dir`` up to ``rounds`` rounds; the metrics of every round done.

    ``given`` names the fields of ``config`` the caller chose; resuming, the others are the run's (see
    :meth:`Run.open`). ``record`` is called with the opened run (the CLI writes its resolved options there).

    ``workload`` is a :class:`~activedpo_trainer.workload.Workload` (a built toy world is wrapped
    as one). ``bars`` is a context manager factory yielding a progress callback (the CLI's rich bars).
    """
    from contextlib import nullcontext

    from activedpo_client.remote import Connection, EmbeddedServer
    from activedpo_client.report import read_metrics
    from activedpo_core.checkpoint import resolve_device
    from activedpo_trainer.workload import ToyWorkload, Workload

    if not isinstance(workload, Workload):
        workload = ToyWorkload(workload)
    run_dir = Path(run_dir)
    config = replace(config, device=resolve_device(config.device or None))
    check_workload(workload, config)
    run = Run.open(run_dir, workload.describe(), config, given)
    config = run.config
    if record is not None:
        record(run)
    if run.rounds_done >= rounds:  # nothing to do: no server needed
        done = run.rounds_done
        asked = f"{done} of {rounds}" if done == rounds else f"{done} (--rounds {rounds})"
        say(f"run {run_dir} has {asked} rounds; pass --rounds {run.rounds_done + 1} to go on")
        return read_metrics(run_dir)
    for note in workload.notes():
        say(note)
    if config.prompts > len(workload.train_prompts()):
        say(f"--prompts {config.prompts}: {workload.label()} has {len(workload.train_prompts())} prompts to train on; "
            f"each round samples all of them")  # fmt: skip
    if run.server != spec.server:  # `status` and `export` find the run's server again
        run.server = spec.server
        run.save()
    embedded = None
    server = spec.server
    if server == "embedded":
        args = spec.serve_args(config, workload.dtype)
        write_json(run_dir / "server" / "args.json", args, indent=None)  # status/export reuse them
        # what it may load by path; the user's own process, so a hub id may download (unless HF_HUB_OFFLINE)
        roots = [run_dir, *(p for p in [Path(workload.base.base)] if p.exists())]
        args = [*args, *(a for r in roots for a in ("--checkpoint-root", str(Path(r).resolve()))), "--allow-downloads"]
        embedded = EmbeddedServer(run_dir / "server", run.checkpoint or workload.base.base, args=args).start()
        server = embedded.target
    try:
        connection = Connection(server, token=spec.token, tls_ca=spec.tls_ca, shares_disk=embedded is not None,
                                server_base=spec.server_base)  # fmt: skip
        with SelectorClient(connection, project=run.project) as client:
            client.wait_ready(say=say)
            # settled before any generation: the server has the policy (uploading what it lacks) with the run's LoRA
            with bars(transient=True) if bars else nullcontext(None) as bar:
                ensure_server_checkpoint(client, run.checkpoint or workload.base.base, config.lora, bar, say=say)
            while run.rounds_done < rounds:
                with bars(transient=True) if bars else nullcontext(None) as bar:
                    metrics = RoundRunner(run, workload, client, bar, say=say, label_studio=label_studio).run_round()
                if report:
                    report(metrics)
    finally:
        if embedded is not None:
            embedded.stop()
    return read_metrics(run_dir)
