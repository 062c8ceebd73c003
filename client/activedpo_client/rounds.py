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

The run directory and its resume rules are :mod:`activedpo_client.rundir`; what each step returns, and the
round's evaluation and metrics, are the types of :mod:`activedpo_client.artifacts`. Layout::

    run_dir/run.json                 workload, config, run id, rounds done, current checkpoint
    run_dir/rounds/001/state.json    steps done, with their results and wall times (StepResult)
    run_dir/rounds/001/candidates.jsonl, batch.json, labels.jsonl, checkpoint/, eval.json (Evaluated)
    run_dir/metrics.jsonl            one line per finished round (RoundMetrics)
    run_dir/reward.png               held-out reward (or agreement) against labels, redrawn each round
    run_dir/server/                  the embedded server's state (when --server embedded)

Why one module of this length: :class:`RoundRunner`'s eight steps are one class over one round's state; the run
directory is :mod:`activedpo_client.rundir`, the step results and metrics :mod:`activedpo_client.artifacts`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from activedpo_client.artifacts import (
    STEPS,
    Added,
    Annotated,
    Evaluated,
    Generated,
    Loaded,
    RoundMetrics,
    Selected,
    StepResult,
    Submitted,
    Trained,
    read_step,
)
from activedpo_client.audit import RoundAudit, audit_count, curve, score, stall_hint
from activedpo_client.messages import Batch, CandidateGroup, Label
from activedpo_client.remote import ClientError, SelectorClient
from activedpo_client.rundir import AwaitingLabels, Run, read_jsonl
from activedpo_client.settings import LabelStudioSpec, RoundConfig, ServerSpec
from activedpo_core.atomic import replace_dir, write_json, write_jsonl
from activedpo_core.lora import LoraSpec

NEEDS_ORACLE = "the toy world's hidden reward"


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

    def run_round(self) -> RoundMetrics:
        for step in STEPS:
            if step in self.state["steps"]:
                continue
            t0 = time.perf_counter()
            result: StepResult = getattr(self, f"_{step}")()
            result = replace(result, seconds=round(time.perf_counter() - t0, 2))
            self.state["steps"][step] = result.to_dict()
            write_json(self.state_path, self.state)
            self.say(f"round {self.r} {step}: {result.summary()}")
        from activedpo_client.report import plot_rewards, read_metrics

        metrics = self._metrics()
        if all(m.round != self.r for m in read_metrics(self.run.dir)):  # a crash may have written it already
            with open(self.run.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics.to_dict()) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.run.rounds_done = self.r
        self.run.checkpoint = str((self.dir / "checkpoint").resolve())
        self.run.save()
        plot_rewards({self.run.config.strategy: read_metrics(self.run.dir)}, self.run.dir / "reward.png")
        return metrics

    # ---- steps ----------------------------------------------------------------------------

    def _generate(self) -> Generated:
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
        return Generated(prompts=len(prompts), with_pairs=len(groups))

    def _server_has_current_checkpoint(self) -> None:
        """A server that holds another checkpoint (a fresh remote one, or one another run moved) gets ours.

        An embedded server reads it from the run dir; a remote one is sent what it lacks, the base model
        included (see :meth:`SelectorClient.push_checkpoint`), so no disk is shared. Before round one's DPO
        the policy has no adapter: it is featurized with the adapter DPO will train (the run's LoRA).
        """
        ensure_server_checkpoint(self.client, self.checkpoint, self.run.config.lora, self.progress,
                                 say=lambda m: self.say(f"round {self.r}: {m}"))  # fmt: skip

    def _add(self) -> Added:
        from activedpo_client.pool import display_messages

        groups = (CandidateGroup(g["prompt"], g["responses"],
                                 messages=display_messages(self.workload.raw_prompt(g["prompt"]), g["prompt"]))
                  for g in read_jsonl(self.dir / "candidates.jsonl"))  # fmt: skip
        return Added(pairs=self.client.add_candidates(groups, pool=self.pool).pairs)

    def _select(self) -> Selected:
        cfg = self.run.config
        self._server_has_current_checkpoint()
        truth = self._pool_accuracy()
        batch = self.client.select(cfg.budget, cfg.strategy, self.pool, cfg.lease_seconds, cfg.seed, self.run.run_id,
                                   progress=self.progress, request_id=f"{self.pool}-select",
                                   audit=audit_count(cfg.budget, cfg.audit_fraction))  # fmt: skip
        write_json(self.dir / "batch.json", batch.to_dict())
        return Selected(pairs=len(batch.pairs), candidates=batch.candidates, checkpoint=batch.checkpoint_id,
                        audit=sum(p.audit for p in batch.pairs), pool_acc_oracle=truth)  # fmt: skip

    def _pool_accuracy(self) -> float | None:
        """With the toy world's Bradley–Terry oracle as the annotator: the selecting policy's expected preference
        accuracy on every pair of this round's pool under that label model (½ where it has no preference), what
        the audit estimate estimates; None with any other annotator."""
        from activedpo_client.audit import expected_accuracy
        from activedpo_core.sequences import sequence_logprobs

        if self.run.config.annotator_spec.kind != "oracle":
            return None
        groups = read_jsonl(self.dir / "candidates.jsonl")
        prompts = [g["prompt"] for g in groups for _ in g["responses"]]
        responses = [r for g in groups for r in g["responses"]]
        ratio = np.zeros(len(responses))  # π_ref itself before round one's training: no preference
        if self.run.checkpoint and responses:
            policy = self._load_policy()
            ratio = sequence_logprobs(policy.model, policy.tokenizer, prompts, responses)
            with policy.model.disable_adapter():
                ratio = ratio - sequence_logprobs(policy.model, policy.tokenizer, prompts, responses)
        rows = iter(zip(responses, map(self.workload.oracle.reward, prompts, responses), ratio.tolist(), strict=True))
        truth = expected_accuracy([[next(rows) for _ in g["responses"]] for g in groups])
        return None if truth is None else round(truth, 4)

    def _batch(self) -> Batch:
        return Batch.from_dict(json.loads((self.dir / "batch.json").read_text()))

    def _annotate(self) -> Annotated:
        annotator = self.run.config.annotator_spec
        if annotator.kind == "file":
            return self._annotate_by_people()
        if annotator.kind == "label-studio":
            return self._annotate_in_label_studio()
        batch = self._batch()
        truncated = None
        if annotator.kind == "reward-model":
            rm = self._reward_model(annotator.path)
            prompts = [self.workload.raw_prompt(p.prompt) for p in batch.pairs]  # the RM renders its own template
            a = rm.score(prompts, [p.response_a for p in batch.pairs])
            b = rm.score(prompts, [p.response_b for p in batch.pairs])
            prefs = ["A" if x > y else "B" if y > x else "TIE" for x, y in zip(a, b, strict=True)]
            truncated = rm.truncated
        elif annotator.kind == "oracle-deterministic":  # no label noise: the higher hidden reward wins
            oracle = self.workload.oracle
            r = [(oracle.reward(p.prompt, p.response_a), oracle.reward(p.prompt, p.response_b)) for p in batch.pairs]
            prefs = ["A" if x > y else "B" if y > x else "TIE" for x, y in r]
        else:
            from activedpo_trainer.tasks import bradley_terry_preference

            rng = np.random.default_rng([self.run.config.seed, self.r, 7])
            oracle = self.workload.oracle
            prefs = ["AB"[bradley_terry_preference(oracle, p.prompt, p.response_a, p.response_b, rng).chosen]
                     for p in batch.pairs]  # fmt: skip
        name = annotator.name
        labels = [Label(p.pair_id, pref, name, f"{self.run.run_id}:{p.pair_id}:{name}")
                  for p, pref in zip(batch.pairs, prefs, strict=True)]  # fmt: skip
        write_jsonl(self.dir / "labels.jsonl", (x.to_dict() for x in labels))
        return Annotated(labels=len(labels), A=prefs.count("A"), truncated=truncated)

    def _reward_model(self, path: str):
        """A reward model fed as it was trained: the raw conversation on its own chat template (or text pair),
        truncated to its context keeping the response."""
        from activedpo_trainer.rewardmodel import RewardModel

        return RewardModel(path, device=self.device)

    def _annotate_by_people(self) -> Annotated:
        from activedpo_client.labelfiles import write_label_files

        labels = self.dir / "labels.jsonl"
        batch = self._batch()
        if labels.exists():  # written by `activedpo-client labels import`
            rows = read_jsonl(labels)
            missing = [p.pair_id for p in batch.pairs if p.pair_id not in {x["pair_id"] for x in rows}]
            if missing and not (self.dir / "labels_done.json").exists():
                raise AwaitingLabels(
                    f"round {self.r}: {len(rows)} labels held, {len(missing)} of the batch's {len(batch.pairs)} pairs "
                    f"not labeled yet ({self.dir / 'to_label.jsonl'}); import their labels with `activedpo-client "
                    f"labels import FILE --run-dir {self.run.dir}`, or add --done to train on what is held"
                )
            released = self.client.release_lease(batch.lease_id, missing) if missing else 0
            return Annotated(labels=len(rows), A=sum(x["preference"] == "A" for x in rows), unlabeled=len(missing),
                             released=released)  # fmt: skip
        files = write_label_files(batch, self.dir)
        raise AwaitingLabels(
            f"round {self.r}: {len(batch.pairs)} pairs to label in {files[0]} (Label Studio: {files[1].name} "
            f"with {files[2].name}); import the finished labels with `activedpo-client labels import FILE "
            f"--run-dir {self.run.dir}`, then run `activedpo-client round` again"
        )

    def _annotate_in_label_studio(self) -> Annotated:
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
        return Annotated(labels=len(pulled.labels), A=c["A"], tie=c["TIE"], both_bad=c["BOTH_BAD"],
                         skipped=pulled.skipped, tasks=pulled.total)  # fmt: skip

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

    def _submit(self) -> Submitted:
        labels = [Label.from_dict(x) for x in read_jsonl(self.dir / "labels.jsonl")]
        results = self.client.submit_labels(labels)
        rejected = [r for r in results if not r.accepted]
        if rejected:
            raise ClientError(f"the server rejected {len(rejected)} labels, e.g. {rejected[0].pair_id}: "
                              f"{rejected[0].reason}")  # fmt: skip
        return Submitted(accepted=len(results), replayed=sum(r.replayed for r in results))

    def _agreement(self) -> float | None:
        """Share of this round's A/B labels whose preferred response the current policy already ranked
        higher by its implicit reward log π_θ/π_ref (before training on them); None while the policy is π_ref.
        From the margins the server sent with the batch; a batch file without them is scored here."""
        from activedpo_core.sequences import sequence_logprobs

        if not self.run.checkpoint:
            return None
        pairs = {p.pair_id: p for p in self._batch().pairs}
        labels = [x for x in read_jsonl(self.dir / "labels.jsonl") if x["preference"] in ("A", "B")]
        if not labels:
            return None
        if all(p.margin is not None for p in pairs.values()):
            _, every = score((x["preference"], False, pairs[x["pair_id"]].margin) for x in labels)
            return round(every.mean, 4)
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

    def _train(self) -> Trained:
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
        return Trained(labels=len(rows), checkpoint=manifest.id, agreement=agreement)

    def _load(self) -> Loaded:
        res = self.client.push_checkpoint(self.dir / "checkpoint")
        return Loaded(server_checkpoint=res.checkpoint_id)

    def _evaluate(self) -> Evaluated:
        from activedpo_trainer.evaluate import evaluate_policy, task_scorer

        cfg = self.run.config
        judge = cfg.evaluate_spec
        policy = self._load_policy(self.dir / "checkpoint")
        if judge.kind == "none":
            result = Evaluated(evaluate="none", **self._drift(policy))
            write_json(self.dir / "eval.json", result.to_dict())
            return result
        rm = None
        if judge.kind == "oracle":
            scorer = task_scorer(self.workload.oracle)
        else:
            rm = self._reward_model(judge.path)

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
        truncated = rm.truncated if rm is not None else None  # responses cut to fit the RM's context
        result = Evaluated(evaluate=str(judge), **report.to_dict(), **accuracy, truncated=truncated,
                           **self._drift(policy))  # fmt: skip
        write_json(self.dir / "eval.json", result.to_dict())
        return result

    def _drift(self, policy) -> dict:
        """Drift from π_ref (:mod:`activedpo_trainer.drift`) on the held-out prompts, or on this round's own
        prompts where none are held out (``--model`` without an evaluator)."""
        from activedpo_trainer.drift import drift

        cfg = self.run.config
        prompts, on = self.workload.heldout_prompts()[: cfg.eval_prompts], "held-out"
        if not prompts:
            prompts, on = [g["prompt"] for g in read_jsonl(self.dir / "candidates.jsonl")][: cfg.eval_prompts], "round"
        if not prompts:
            return {}
        d = drift(policy.model, policy.tokenizer, prompts, self.workload.generation.max_new_tokens,
                  seed=cfg.seed + 104729, batch_size=self.workload.generation.batch_size)  # fmt: skip
        return dict(kl_seq=d.kl_seq, kl_seq_se=d.kl_seq_se, kl_token=d.kl_token, ref_loglik=d.ref_loglik,
                    ref_loglik_ref=d.ref_loglik_ref, drift_prompts=d.prompts, drift_on=on)  # fmt: skip

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

    def _audited(self) -> list[RoundAudit]:
        """Every round's audit scores so far (this one included), from its batch (the server's margins and audit
        flags) and its labels: the curve of :mod:`activedpo_client.audit`."""
        from activedpo_client.report import read_metrics

        trained = {m.round: m.labels for m in read_metrics(self.run.dir)}
        rows = []
        for r in range(1, self.r + 1):
            d = self.run.round_dir(r)
            if not (d / "batch.json").exists() or not (d / "labels.jsonl").exists():
                continue
            batch = Batch.from_dict(json.loads((d / "batch.json").read_text()))
            pairs = {p.pair_id: p for p in batch.pairs}
            answers = ((x["preference"], pairs[x["pair_id"]].audit, pairs[x["pair_id"]].margin)
                       for x in read_jsonl(d / "labels.jsonl") if x["pair_id"] in pairs)  # fmt: skip
            picked = sum(not p.audit for p in batch.pairs)
            rows.append((r, trained.get(r - 1, 0), *score(answers), batch.candidates, picked))
        return curve(rows)

    def _metrics(self) -> RoundMetrics:
        steps = {s: read_step(s, d) for s, d in self.state["steps"].items()}
        evaluated = Evaluated.from_dict(json.loads((self.dir / "eval.json").read_text()))
        history = self._audited()
        now = next((h for h in history if h.round == self.r and h.estimate is not None), None)
        return RoundMetrics.of_round(self.r, steps["train"], evaluated, {s: steps[s].seconds for s in STEPS},
                                     audited=now, hint=stall_hint(history) if now is not None else "",
                                     selected=steps["select"])  # fmt: skip


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

    for judge in (config.annotator_spec, config.evaluate_spec):  # a wrong model found now, not after a round's work
        if judge.kind == "reward-model":
            check_reward_model(judge.path)
    if workload.oracle is None:
        if config.annotator_spec.needs_oracle:
            raise ClientError(f"--annotator {config.annotator} needs {NEEDS_ORACLE} (--task or --world); with "
                              f"--model use --annotator file (people) or reward-model:PATH")  # fmt: skip
        if config.evaluate_spec.needs_oracle:
            raise ClientError(f"--evaluate oracle needs {NEEDS_ORACLE} (--task or --world); with --model use "
                              f"--evaluate reward-model:PATH or none")  # fmt: skip
    has_file = bool(getattr(getattr(workload, "spec", None), "heldout_file", None))
    if config.evaluate_spec.kind != "none" and not has_file:  # a --heldout-file is evaluated whole (to --eval-prompts)
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
    report: Callable[[RoundMetrics], None] | None = None,
    label_studio: LabelStudioSpec | None = None,
    given: frozenset[str] | None = None,
    record: Callable[[Run], None] | None = None,
) -> list[RoundMetrics]:
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
        args = spec.serve_args(config.lora, workload.dtype, config.device)
        write_json(run_dir / "server" / "args.json", args, indent=None)  # status/export reuse them
        roots = [run_dir, *(p for p in [Path(workload.base.base)] if p.exists())]  # what it may load by path
        args = spec.embedded_args(config.lora, workload.dtype, config.device, roots)
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
