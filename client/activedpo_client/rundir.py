"""A run directory: its workload, its settings, where it stands (:class:`Run`), and the hand-off of a round's
batch to people and back (:func:`import_labels`). What the rounds themselves do is :mod:`activedpo_client.rounds`.

    run_dir/run.json                 workload, config, run id, rounds done, current checkpoint
    run_dir/config.toml              the options the run resolved (``round --config`` reruns it)
    run_dir/rounds/001/state.json    steps done, with their results (:mod:`activedpo_client.artifacts`)
    run_dir/metrics.jsonl            one line per finished round (:class:`~activedpo_client.artifacts.RoundMetrics`)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from activedpo_client.messages import Batch
from activedpo_client.remote import ClientError
from activedpo_client.settings import RoundConfig
from activedpo_core.atomic import write_json, write_jsonl


class AwaitingLabels(ClientError):
    """The round waits for people: the batch is written out for labeling (not an error of the run)."""


def read_jsonl(path: Path) -> list[dict]:
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
    held = read_jsonl(out) if out.exists() else []
    errors: list[str] = []
    if path is not None:
        good, errors, _ = read_labels(path, batch, renderer(run))
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


def renderer(run: Run):
    """The prompt renderer of a run's own model (None for the toy world, whose prompts are plain text)."""
    if run.workload.get("kind") != "model":
        return None
    from activedpo_trainer.workload import open_workload

    return open_workload(run.workload).renderer


JUDGE_SETTINGS = {"annotator", "evaluate", "ls_project"}  # may change while a run holds no label yet
# may change between rounds: the next round not yet done uses them
ROUND_SIZE = {"budget", "prompts", "responses", "audit_fraction"}
BEFORE_AUDIT = {"audit_fraction": 0.0}  # a run.json from before audit pairs keeps running without them


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
            run = cls(Path(run_dir), stored, RoundConfig(**{**BEFORE_AUDIT, **data["config"]}), data["run_id"],
                      data["rounds_done"],
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
