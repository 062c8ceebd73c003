"""The engine on a real store, real featurizers and the tiny toy world (no gRPC)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from activedpo_core.checkpoint import CheckpointError
from activedpo_server.engine import Engine, EngineConfig, NotReady
from activedpo_server.errors import FailedPrecondition, NotFound
from activedpo_server.features import FeaturizerConfig, LoraSpec
from activedpo_server.records import Candidates, LabelIn

WORDS = ["wave tide", "bright moss", "calm", "tree tree", "a"]


def candidates(world, n=10):
    prompts = world.task.train_prompts()[:n]
    return [
        Candidates(p, [(None, f" {WORDS[(i + k) % 5]} {WORDS[(2 * i + k) % 5]}") for k in range(3)])
        for i, p in enumerate(prompts)
    ]


def config(tmp_path, normalize=True, **kw):
    features = FeaturizerConfig(128, normalize=normalize, lora=LoraSpec(r=8, alpha=16))
    return EngineConfig(state_dir=tmp_path / "state", features=features, **kw)


def test_cycle_leases_labels_and_restart(tiny_world, tmp_path):
    e = Engine(config(tmp_path, lease_seconds=60), checkpoint=tiny_world.sft_dir)
    assert e.add_candidates(candidates(tiny_world)).pairs_added == 30
    first = e.select(5, client="a")
    second = e.select(5, client="b")
    ids1, ids2 = {p.text.pair_id for p in first.pairs}, {p.text.pair_id for p in second.pairs}
    assert len(ids1) == len(ids2) == 5 and not ids1 & ids2  # leased pairs are never handed out twice
    assert [p.rank for p in first.pairs] == list(range(5)) and first.candidates == 30
    assert e.status().featurized == 30 and e.status().leased == 10
    out = e.submit_labels([LabelIn(p.text.pair_id, 1, "ann") for p in first.pairs])
    assert all(o.accepted for o in out) and e.status().labeled == 5
    third = e.select(30)
    assert len(third.pairs) == 20 and not {p.text.pair_id for p in third.pairs} & (ids1 | ids2)

    e.store.close()
    again = Engine(config(tmp_path))  # restart: the same checkpoint, pool, labels and leases
    s = again.status()
    assert (s.checkpoint_id, s.pool_size, s.labeled, s.leased) == (e.checkpoint_id, 30, 5, 25)
    assert s.featurized == 30  # features reloaded from the FAISS index, not recomputed
    assert len(list(again.export_labels())) == 5


def test_expired_leases_return_and_strategies_are_selectable(tiny_world, tmp_path):
    e = Engine(config(tmp_path), checkpoint=tiny_world.sft_dir)
    e.add_candidates(candidates(tiny_world, 4))
    names = (
        "random",
        "aplp",
        "apo",
        "activedpo",
        "activedpo-fisher",
        "activedpo-margin",
        "activedpo-entropy",
        "activedpo-topb",
    )
    for name in names[:4]:
        batch = e.select(3, strategy=name, lease_seconds=60)
        assert batch.strategy == name and len(batch.pairs) == 3
    assert len(e.select(12).pairs) == 0  # everything is leased
    assert len(e.store.pool_view(now=time.time() + 61).pairs) == 12  # ... until the leases run out
    with pytest.raises(ValueError, match="'activedpo-topb' is a research strategy"):
        e.select(3, strategy="activedpo-topb")  # not without research_strategies
    short = Engine(config(tmp_path / "short", research_strategies=True), checkpoint=tiny_world.sft_dir)
    short.add_candidates(candidates(tiny_world, 4))
    for name in names[4:]:
        assert len(short.select(3, strategy=name, lease_seconds=1).pairs) == 3
    time.sleep(1.1)  # however slow the machine, all four leases have expired by now
    assert len(short.select(12).pairs) == 12
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        e.select(1, strategy="best")
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        e.select(0)


def test_hot_swap_changes_features_and_a_bad_checkpoint_keeps_the_old_one(tiny_world, random_adapter, tmp_path):
    e = Engine(config(tmp_path, lease_seconds=1), checkpoint=tiny_world.sft_dir)
    e.add_candidates(candidates(tiny_world))
    before = e.select(5)
    e.submit_labels([LabelIn(p.text.pair_id, 2, "ann") for p in before.pairs[:2]])
    old_key = e._active.gradient.feature_key
    time.sleep(1.1)
    report = e.load_checkpoint(random_adapter)
    assert report.loaded and report.previous_checkpoint_id == tiny_world.sft_checkpoint.id
    assert report.refeaturized == 4  # the two labeled pairs' responses, under the new checkpoint
    assert e._active.gradient.feature_key != old_key and e.checkpoint_id == random_adapter.id
    after = e.select(5)
    assert after.checkpoint_id == random_adapter.id
    assert [p.text.pair_id for p in after.pairs] != [p.text.pair_id for p in before.pairs]
    assert not e.load_checkpoint(random_adapter).loaded  # already current: a no-op
    with pytest.raises(CheckpointError, match="does not exist"):
        e.load_checkpoint(tmp_path / "missing")
    assert e.checkpoint_id == random_adapter.id  # the old checkpoint keeps serving
    labels = list(e.export_labels())
    assert {r.checkpoint_id for r in labels} == {tiny_world.sft_checkpoint.id}


def test_without_a_checkpoint_selection_says_what_to_do(tmp_path):
    e = Engine(config(tmp_path))
    with pytest.raises(NotReady, match="call LoadCheckpoint first"):
        e.select(1)
    with pytest.raises(ValueError, match="unknown strategy"):
        EngineConfig(state_dir=tmp_path, strategy="nope")
    with pytest.raises(ValueError, match="research strategy"):
        EngineConfig(state_dir=tmp_path, strategy="activedpo-fisher")
    assert EngineConfig(state_dir=tmp_path, strategy="activedpo-fisher", research_strategies=True).strategy


def test_a_retried_selection_gets_the_batch_already_leased_for_it(tiny_world, tmp_path):
    e = Engine(config(tmp_path), checkpoint=tiny_world.sft_dir)
    e.add_candidates(candidates(tiny_world))
    first = e.select(4, request_id="req-1")
    again = e.select(4, request_id="req-1")
    assert [(p.text.pair_id, p.score, p.rank) for p in again.pairs] == [
        (p.text.pair_id, p.score, p.rank) for p in first.pairs
    ]
    assert again.lease_id == first.lease_id and again.lease_expires == first.lease_expires
    other = e.select(4, request_id="req-2")
    assert not {p.text.pair_id for p in other.pairs} & {p.text.pair_id for p in first.pairs}
    # a request id is scoped to (project, client): another client's "req-1" is another request
    theirs = e.select(4, request_id="req-1", client="someone-else")
    assert theirs.lease_id != first.lease_id and not {p.text.pair_id for p in theirs.pairs} & ids(first, other)
    # the same id with other parameters is refused, and leases nothing
    leased = e.status().leased
    with pytest.raises(FailedPrecondition, match=r"req-1.*other parameters"):
        e.select(5, request_id="req-1")
    with pytest.raises(FailedPrecondition, match="other parameters"):
        e.select(4, request_id="req-1", strategy="random")
    assert e.status().leased == leased
    # once the lease is released the id chooses afresh
    assert e.release(first.lease_id) == 4
    fresh = e.select(5, request_id="req-1")
    assert fresh.lease_id != first.lease_id and len(fresh.pairs) == 5


def ids(*batches) -> set[str]:
    return {p.text.pair_id for b in batches for p in b.pairs}


def test_release_lease_and_projects_keep_labels_apart(tiny_world, tmp_path):
    e = Engine(config(tmp_path), checkpoint=tiny_world.sft_dir)
    e.add_candidates(candidates(tiny_world))
    assert e.add_candidates(candidates(tiny_world), project="team-b").pairs_added == 30  # a project's own pool
    batch = e.select(6)
    some = [p.text.pair_id for p in batch.pairs[:2]]
    assert e.release(batch.lease_id, some) == 2 and e.status().leased == 4
    assert e.release(batch.lease_id, some) == 0  # already back: nothing to release
    with pytest.raises(NotFound, match="no lease"):
        e.release("lease-unknown")
    with pytest.raises(NotFound, match="no lease"):
        e.release(batch.lease_id, project="team-b")  # another project's lease is not visible
    # labels stay in their project: same pair ids (content ids), separate records
    out = e.submit_labels([LabelIn(p.text.pair_id, 1, "ann", f"k-{p.text.pair_id}") for p in batch.pairs[2:]])
    assert all(o.accepted and not o.replayed for o in out)
    assert e.status().labeled == 4 and e.status("team-b").labeled == 0
    assert list(e.export_labels(project="team-b")) == []
    b = e.select(30, project="team-b")  # nothing of the default project's leases or labels touches team-b
    assert len(b.pairs) == 30 and b.candidates == 30
    again = e.submit_labels([LabelIn(p.text.pair_id, 2, "ann", f"k-{p.text.pair_id}") for p in batch.pairs[2:]],
                            project="team-b")  # fmt: skip
    assert all(o.accepted and not o.replayed for o in again)  # the same keys are new in team-b
    assert [r.chosen for r in e.export_labels(project="team-b")] != [r.chosen for r in e.export_labels()]
    assert e.status("team-b").labeled == 4 and e.status().labeled == 4


def test_ablation_settings_fixed_feature_checkpoint_and_no_normalisation(tiny_world, random_adapter, tmp_path):
    # features from the initial checkpoint only: a hot-swap changes the log-probs, never the features
    e = Engine(config(tmp_path, feature_checkpoint=str(tiny_world.sft_dir), lease_seconds=1, research_strategies=True),
               checkpoint=tiny_world.sft_dir)  # fmt: skip
    e.add_candidates(candidates(tiny_world))
    before = e.select(5)
    key = e._active.gradient.feature_key
    time.sleep(1.1)
    report = e.load_checkpoint(random_adapter)
    assert report.loaded and report.refeaturized == 0 and e.checkpoint_id == random_adapter.id
    assert e._active.gradient.feature_key == key  # the same featurizer and store
    assert e._active.policy.checkpoint_id == random_adapter.id  # log-probs follow the policy
    assert [p.text.pair_id for p in e.select(5).pairs] == [p.text.pair_id for p in before.pairs]
    assert len(e.select(3, strategy="activedpo-fisher").pairs) == 3

    # without normalisation the features (and their store) differ, and rows are not unit length
    raw = Engine(config(tmp_path / "raw", normalize=False), checkpoint=tiny_world.sft_dir)
    raw.add_candidates(candidates(tiny_world))
    raw.select(2)
    rows = raw._active.features.get(sorted(raw._active.features._ids))
    assert "norm=0" in raw._active.gradient.feature_key
    assert not np.allclose(np.linalg.norm(rows, axis=1), 1.0)


def test_torch_and_numpy_selection_lease_the_same_batch(tiny_world, tmp_path):
    batches = []
    for backend in ("numpy", "torch"):
        e = Engine(config(tmp_path / backend, selection=backend), checkpoint=tiny_world.sft_dir)
        e.add_candidates(candidates(tiny_world))
        e.submit_labels([LabelIn(p.text.pair_id, 1, "ann") for p in e.select(3).pairs])  # V has labels: Woodbury
        batches.append(e.select(8))
        e.store.close()
    assert [(p.text.pair_id, p.rank) for p in batches[0].pairs] == [(p.text.pair_id, p.rank) for p in batches[1].pairs]
    np.testing.assert_allclose([p.score for p in batches[0].pairs], [p.score for p in batches[1].pairs], rtol=1e-5)
    with pytest.raises(ValueError, match="selection must be torch or numpy"):
        config(tmp_path, selection="jax")


def test_audit_pairs_are_drawn_at_random_among_the_picks_and_every_pair_carries_the_policys_margin(
    tiny_world, random_adapter, tmp_path
):
    from activedpo_server.audit import audit_slots

    e = Engine(config(tmp_path), checkpoint=random_adapter)
    e.add_candidates(candidates(tiny_world))  # 30 pairs
    batch = e.select(10, audit=3, seed=5, request_id="r")
    flags = [p.audit for p in batch.pairs]
    assert flags == audit_slots(7, 3, 5) and sum(flags) == 3 and flags != [False] * 7 + [True] * 3
    assert len(ids(batch)) == 10 and [p.rank for p in batch.pairs] == list(range(10))
    # the strategy's picks are the batch it would choose for the rest of the budget, in its order
    alone = Engine(config(tmp_path / "alone"), checkpoint=random_adapter)
    alone.add_candidates(candidates(tiny_world))
    picks = [p for p in batch.pairs if not p.audit]
    assert [p.text.pair_id for p in picks] == [p.text.pair_id for p in alone.select(7, seed=5).pairs]
    assert all(p.score == 0.0 for p in batch.pairs if p.audit) and all(p.score > 0 for p in picks)
    # each pair's margin is the selecting policy's log π_θ/π_ref of A minus that of B
    texts = [p.text for p in batch.pairs]
    prompts = [t.prompt for t in texts]
    pol_a, ref_a = e._active.policy.logprobs(prompts, [t.response_a for t in texts])
    pol_b, ref_b = e._active.policy.logprobs(prompts, [t.response_b for t in texts])
    want = (pol_a - ref_a) - (pol_b - ref_b)
    assert np.allclose([p.margin for p in batch.pairs], want, atol=1e-4) and np.abs(want).min() > 1e-6
    # a retry returns the batch as chosen; the labels' export says which answers were audit pairs, with margins
    again = e.select(10, audit=3, seed=5, request_id="r")
    assert [(p.audit, p.margin) for p in again.pairs] == [(p.audit, p.margin) for p in batch.pairs]
    with pytest.raises(FailedPrecondition, match="other parameters"):
        e.select(10, audit=2, seed=5, request_id="r")
    e.submit_labels([LabelIn(p.text.pair_id, 1 + n % 2, "ann") for n, p in enumerate(batch.pairs)])
    exported = {x.pair_id: (x.audit, x.margin) for x in e.export_labels()}
    assert exported == {p.text.pair_id: (p.audit, pytest.approx(p.margin)) for p in batch.pairs}
    with pytest.raises(ValueError, match="audit must be an integer between 0 and the budget"):
        e.select(3, audit=4)
    everything = e.select(4, audit=4)
    assert [p.audit for p in everything.pairs] == [True] * 4


def test_the_sft_policy_has_no_preference_and_pairs_never_selected_export_no_margin(tiny_world, tmp_path):
    e = Engine(config(tmp_path), checkpoint=tiny_world.sft_dir)  # round one: a fresh adapter, B = 0
    e.add_candidates(candidates(tiny_world, 4))
    batch = e.select(4, audit=1)
    assert [p.margin for p in batch.pairs] == [0.0] * 4  # π_θ = π_ref exactly
    unselected = next(p for p in e.store.pair_details(list(range(1, 13))) if p.pair_id not in ids(batch))
    e.submit_labels([LabelIn(unselected.pair_id, 1, "ann"), LabelIn(batch.pairs[0].text.pair_id, 2, "ann")])
    exported = {x.pair_id: (x.audit, x.margin) for x in e.export_labels()}
    assert exported == {unselected.pair_id: (False, None), batch.pairs[0].text.pair_id: (batch.pairs[0].audit, 0.0)}


def test_describe_gives_each_pairs_margin_and_score_and_leases_nothing(tiny_world, random_adapter, tmp_path):
    from activedpo_server.audit import pair_margins
    from activedpo_server.strategies import get_strategy

    e = Engine(config(tmp_path), checkpoint=random_adapter)
    e.add_candidates(candidates(tiny_world))  # 30 pairs
    e.submit_labels([LabelIn(p.text.pair_id, 1, "ann") for p in e.select(3).pairs])
    d = e.describe()
    assert d.pairs == 27 and len(d.pair_ids) == 27  # the 3 labeled pairs are not in it
    assert (e.status().leased, e.status().labeled) == (0, 3)  # and it leased nothing
    view = e.store.pool_view()
    pool = e._pool(view, e._active, None)
    assert d.pair_ids == [x.pair_id for x in e.store.pair_details([int(r) for r in view.pair_rows])]
    assert np.allclose(d.margins, pair_margins(pool, list(range(27))))
    topb = {p.index: p.score for p in get_strategy("activedpo-topb", research=True).select(pool, 27, None)}
    assert np.allclose(d.scores, [topb[i] for i in range(27)])  # φᵀV⁻¹φ against the labeled, before any pick
    sample = e.describe(max_pairs=10, seed=4)
    assert sample.pairs == 27 and len(sample.pair_ids) == 10 and set(sample.pair_ids) < set(d.pair_ids)
    by_id = dict(zip(d.pair_ids, d.margins, strict=True))
    assert np.allclose(sample.margins, [by_id[i] for i in sample.pair_ids])
    assert e.describe(max_pairs=10, seed=4).pair_ids == sample.pair_ids != e.describe(max_pairs=10, seed=5).pair_ids
    with pytest.raises(ValueError, match="max_pairs must be between 1 and 20,000"):
        e.describe(max_pairs=0)
