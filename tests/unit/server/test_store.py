"""The SQLite state and the FAISS feature indexes, on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from activedpo_core.lora import LoraSpec
from activedpo_server.featurestore import FeatureStore
from activedpo_server.records import PREF_A, PREF_B, PREF_BOTH_BAD, PREF_TIE, Candidates, LabelIn, PairText, StoreError
from activedpo_server.store import Store, _lock_state_dir


def group(prompt, *texts, pool="", prompt_id=None):
    return Candidates(prompt=prompt, responses=[(None, t) for t in texts], pool=pool, prompt_id=prompt_id)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state")
    yield s
    s.close()


def test_groups_become_all_pairs_and_resending_deduplicates(store):
    res = store.add_candidates([group("p1", "a", "b", "c"), group("p2", "x", "y")])
    assert (res.prompts_added, res.responses_added, res.pairs_added, res.pairs_deduplicated) == (2, 5, 4, 0)
    again = store.add_candidates([group("p1", "c", "b", "a")])  # same content, other order
    assert (again.prompts_added, again.responses_added, again.pairs_added, again.pairs_deduplicated) == (0, 0, 0, 3)
    explicit = Candidates("p1", [(None, "b"), (None, "a")], explicit_pair=True)  # (b, a) is the pair (a, b)
    assert store.add_candidates([explicit]).pairs_deduplicated == 1
    assert store.counts()["pairs"] == 4


def test_an_explicit_pair_says_where_it_landed_and_in_which_order(store):
    """A label says A or B in the server's order; a pair given (chosen, rejected) may be stored the other way."""
    store.add_candidates([group("p1", "rejected", "other")])  # "rejected" exists first: it becomes response A
    res = store.add_candidates([Candidates("p1", [(None, "chosen"), (None, "rejected")], explicit_pair=True),
                                Candidates("p1", [(None, "other"), (None, "rejected")], explicit_pair=True),
                                group("p2", "x", "y"),
                                Candidates("p2", [(None, "x"), (None, "z")], explicit_pair=True)])  # fmt: skip
    new, old, fresh = res.pairs
    assert (new.added, new.swapped, old.added, old.swapped, fresh.added, fresh.swapped) == (
        True, True, False, True, True, False)  # fmt: skip
    rows = [store._read("SELECT rowid FROM pairs WHERE id = ?", (p.pair_id,))[0][0] for p in res.pairs]
    details = {d.pair_id: d for d in store.pair_details(rows)}
    assert details[new.pair_id].response_a == "rejected" and details[new.pair_id].response_b == "chosen"
    assert details[fresh.pair_id].response_a == "x"
    # labelling "the item's first response wins" as the server's B keeps the chosen one chosen
    store.submit_labels([LabelIn(new.pair_id, PREF_B, "ann", "k")], "ckpt")
    (row,) = list(store.export_labels())
    assert (row.chosen, row.rejected) == ("chosen", "rejected")


def test_a_bad_item_rejects_the_whole_request(store):
    with pytest.raises(StoreError, match="item 1: response 1 is empty"):
        store.add_candidates([group("p1", "a", "b"), group("p2", "x", " ")])
    assert store.counts()["pairs"] == 0  # nothing half-applied
    cases = [
        ([group("", "a", "b")], "item 0: the prompt is empty"),
        ([group("p", "a")], "at least two responses"),
        ([Candidates("p", [(None, "a"), (None, "a")], explicit_pair=True)], "identical"),
        ([group("p", "a" * 200_001, "b")], "200,001 characters long"),
    ]
    for items, message in cases:
        with pytest.raises(StoreError, match=message):
            store.add_candidates(items)


def test_caller_ids_are_kept_and_clashes_are_refused(store):
    store.add_candidates(
        [Candidates("p", [("r1", "a"), ("r2", "b")], prompt_id="P", pair_id="pair-1", explicit_pair=True)]
    )
    assert store.pair_details(store.pool_view().pair_rows)[0] == PairText("pair-1", "P", "p", "r1", "a", "r2", "b")
    with pytest.raises(StoreError, match="prompt id 'P' already names a different prompt"):
        store.add_candidates([group("other", "a", "b", prompt_id="P")])
    with pytest.raises(StoreError, match="pair id 'pair-1' already names a different pair"):
        store.add_candidates(
            [Candidates("p", [("r1", "a"), (None, "c")], prompt_id="P", pair_id="pair-1", explicit_pair=True)]
        )


def test_pool_view_leases_and_labels(store):
    store.add_candidates([group("p1", "a", "b", "c", pool="r1"), group("p2", "x", "y", pool="r2")])
    view = store.pool_view(now=100.0)
    assert len(view.pair_rows) == 4 and len(store.pool_view("r2").pair_rows) == 1
    first = view.pair_rows[:2]
    store.lease(first, "L1", "tester", expires=200.0, now=100.0)
    assert set(store.pool_view(now=150.0).pair_rows) == set(view.pair_rows[2:])  # leased pairs are withheld
    with pytest.raises(StoreError, match="already leased"):
        store.lease(first[:1], "L2", "other", expires=300.0, now=150.0)
    assert store.counts(now=150.0)["leased"] == 2
    assert len(store.pool_view(now=250.0).pair_rows) == 4  # expired leases return to the pool
    pid = store.pair_details(first[:1])[0].pair_id
    out = store.submit_labels([LabelIn(pid, PREF_A, "ann")], "ckpt-1", now=250.0)
    assert out[0].accepted and out[0].late  # after its lease expired: still recorded, marked late
    view = store.pool_view(now=250.0)
    assert first[0] not in view.pair_rows and view.labeled.shape == (1, 2)


def test_a_persons_answer_is_revised_withdrawn_and_never_brought_back_by_a_retry(store):
    """One key per (pair, person): a larger revision replaces the answer (a new label id, so incremental
    exports see it), a withdrawal leaves none (the pair returns to the pool and leaves V), and retries of
    older revisions change nothing."""
    store.add_candidates([group("p1", "a", "b"), group("p2", "x", "y")])
    ids = [d.pair_id for d in store.pair_details(store.pool_view().pair_rows)]
    first = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", "ls-1-t1-u1", 100),
                                 LabelIn(ids[1], PREF_BOTH_BAD, "ann@x", "ls-1-t2-u1", 100)], "ckpt")  # fmt: skip
    assert all(o.accepted and not o.revised for o in first)
    assert store.counts()["both_bad"] == 1 and store.counts()["labeled"] == 1  # both-bad: not in V
    edit = store.submit_labels([LabelIn(ids[0], PREF_B, "ann@x", "ls-1-t1-u1", 200)], "ckpt")[0]
    assert edit.accepted and edit.revised and edit.label_id > first[1].label_id
    rows = list(store.export_labels(include_ties=True))
    assert [(r.pair_id, r.preference, r.chosen, r.revision) for r in rows] == [
        (ids[1], PREF_BOTH_BAD, "x", 100), (ids[0], PREF_B, "b", 200)]  # fmt: skip
    assert [r.pair_id for r in store.export_labels()] == [ids[0]]  # both-bad is never trained on
    assert next(store.export_labels(after_id=first[1].label_id)).label_id == edit.label_id
    stale = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", "ls-1-t1-u1", 100)], "ckpt")[0]
    assert stale.replayed and not stale.revised and stale.label_id == edit.label_id
    assert [r.preference for r in store.export_labels()] == [PREF_B]
    clash = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", "ls-1-t1-u1")], "ckpt")[0]
    assert not clash.accepted and "send a larger revision" in clash.reason
    bad = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", None, 0, withdrawn=True)], "ckpt")[0]
    assert not bad.accepted and "withdrawal needs the idempotency key" in bad.reason
    gone = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", "ls-1-t1-u1", 300, withdrawn=True)], "ckpt")[0]
    assert gone.accepted and gone.revised
    assert list(store.export_labels()) == [] and store.counts()["annotations"] == 1
    view = store.pool_view()
    assert view.labeled.shape == (0, 2) and store.pair_details(view.pair_rows)[0].pair_id == ids[0]
    again = store.submit_labels([LabelIn(ids[0], PREF_B, "ann@x", "ls-1-t1-u1", 200)], "ckpt")[0]
    assert again.replayed and list(store.export_labels()) == []  # a retry cannot resurrect it
    back = store.submit_labels([LabelIn(ids[0], PREF_A, "ann@x", "ls-1-t1-u1", 400)], "ckpt")[0]
    assert back.revised and [r.preference for r in store.export_labels()] == [PREF_A]


def test_a_prompt_keeps_the_conversation_it_was_rendered_from(store):
    msgs = json.dumps([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}])
    store.add_candidates([group("p1", "a", "b")])
    store.add_candidates([Candidates("p1", [(None, "a"), (None, "c")], messages=msgs)])  # learns it later
    details = store.pair_details(store.pool_view().pair_rows)
    assert {d.prompt_messages for d in details} == {msgs}
    with pytest.raises(StoreError, match=r"item 0: the prompt's messages must be a JSON list"):
        store.add_candidates([Candidates("p2", [(None, "a"), (None, "b")], messages='{"role": "user"}')])
    with pytest.raises(StoreError, match=r"item 0: the prompt's messages are not JSON"):
        store.add_candidates([Candidates("p2", [(None, "a"), (None, "b")], messages="[{")])


def test_labels_idempotency_rejections_and_repeat_annotations(store):
    store.add_candidates([group("p1", "a", "b"), group("p2", "x", "y")])
    ids = [d.pair_id for d in store.pair_details(store.pool_view().pair_rows)]
    out = store.submit_labels(
        [
            LabelIn(ids[0], PREF_A, "ann1", "k1"),
            LabelIn("nope", PREF_A, "ann1", "k2"),
            LabelIn(ids[1], 0, "ann1"),
            LabelIn(ids[1], PREF_B, ""),
            LabelIn(ids[1], PREF_TIE, "ann2"),
        ],
        "ckpt",
    )
    assert [o.accepted for o in out] == [True, False, False, False, True]
    assert out[1].reason == "unknown pair id 'nope'"
    assert "preference must be A, B, TIE or BOTH_BAD" in out[2].reason and "annotator is required" in out[3].reason
    replay = store.submit_labels([LabelIn(ids[0], PREF_A, "ann1", "k1")], "ckpt")[0]
    assert replay.replayed and replay.label_id == out[0].label_id
    misuse = store.submit_labels([LabelIn(ids[1], PREF_A, "ann1", "k1")], "ckpt")[0]
    assert not misuse.accepted and "was used for pair" in misuse.reason
    second = store.submit_labels([LabelIn(ids[0], PREF_B, "ann2")], "ckpt-2")[0]  # a different opinion
    assert second.accepted and second.label_id != out[0].label_id
    rows = list(store.export_labels())
    assert [(r.pair_id, r.chosen, r.annotator, r.checkpoint_id) for r in rows] == [
        (ids[0], "a", "ann1", "ckpt"),
        (ids[0], "b", "ann2", "ckpt-2"),
    ]
    assert len(list(store.export_labels(include_ties=True))) == 3
    assert [r.label_id for r in store.export_labels(after_id=rows[0].label_id)] == [rows[1].label_id]
    assert store.counts()["annotations"] == 3 and store.counts()["labeled"] == 1


def test_state_survives_reopening(tmp_path):
    s = Store(tmp_path)
    s.add_candidates([group("p", "a", "b")])
    pid = s.pair_details(s.pool_view().pair_rows)[0].pair_id
    s.submit_labels([LabelIn(pid, PREF_B, "ann")], "c")
    s.record_checkpoint("ckpt-7", "/base", "/adapter")
    s.close()
    s = Store(tmp_path)
    assert s.current_checkpoint() == ("ckpt-7", "/base", "/adapter", None)
    s.record_checkpoint("base:/b", "/b", None, LoraSpec(4, 8, "auto"))  # a base model with its fresh adapter
    s.close()
    s = Store(tmp_path)
    assert s.current_checkpoint() == ("base:/b", "/b", None, LoraSpec(4, 8, "auto"))
    assert [r.chosen for r in s.export_labels()] == ["b"]
    s.close()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "state.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open the state database"):
        Store(tmp_path / "bad")


def test_a_database_from_before_fresh_adapter_specs_gains_the_column(tmp_path):
    import sqlite3

    s = Store(tmp_path)
    s.record_checkpoint("ckpt-1", "/base", "/adapter")
    s.close()
    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.execute("ALTER TABLE checkpoints DROP COLUMN lora")  # as written before checkpoints carried a LoRA spec
    db.commit()
    db.close()
    s = Store(tmp_path)
    assert s.current_checkpoint() == ("ckpt-1", "/base", "/adapter", None)
    s.record_checkpoint("base:/b", "/b", None, LoraSpec(4, 8))
    assert s.current_checkpoint()[3] == LoraSpec(4, 8)
    s.close()


CHILD = """
import sys
from activedpo_server.records import Candidates, LabelIn
from activedpo_server.store import Store
s = Store(sys.argv[1])
s.add_candidates([Candidates("p%d" % i, [(None, "a"), (None, "b")]) for i in range(400)])
pairs = [d.pair_id for d in s.pair_details(s.pool_view().pair_rows)]
for n, pid in enumerate(pairs):
    out = s.submit_labels([LabelIn(pid, 1, "ann", "key-%d" % n)], "c")
    print(out[0].label_id, flush=True)  # acknowledged: committed
"""


def test_every_acknowledged_label_survives_kill_9(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acked = [int(proc.stdout.readline()) for _ in range(60)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = Store(tmp_path)
    ids = [r.label_id for r in s.export_labels()]
    assert set(acked) <= set(ids) and len(ids) == len(set(ids))  # all there, exactly once
    s.close()


def test_one_server_per_state_dir(tmp_path):
    first = Store(tmp_path)
    with pytest.raises(StoreError, match=r"is in use by process \d+; stop that server first"):
        _lock_state_dir(tmp_path, wait=0.3)
    first.close()
    Store(tmp_path).close()  # released on close


def test_feature_store_roundtrip_upsert_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    fs = FeatureStore(tmp_path, "ckpt-1|grad|d=8", 8)
    v = rng.normal(size=(5, 8)).astype(np.float32)
    fs.add([10, 11, 12, 13, 14], v)
    assert fs.missing([9, 10, 14, 15]).tolist() == [9, 15]
    fs.add([11], np.ones((1, 8), np.float32))  # replace, not duplicate
    assert len(fs) == 5 and fs.index.ntotal == 5
    np.testing.assert_array_equal(fs.get([14, 11]), np.stack([v[4], np.ones(8, np.float32)]))
    with pytest.raises(KeyError, match="no features for response rows"):
        fs.get([99])
    fs.save()
    again = FeatureStore(tmp_path, "ckpt-1|grad|d=8", 8)
    np.testing.assert_array_equal(again.get([10, 11]), fs.get([10, 11]))
    assert len(FeatureStore(tmp_path, "ckpt-2|grad|d=8", 8)) == 0  # another checkpoint: its own index
    again.path.write_bytes(b"garbage")
    assert len(FeatureStore(tmp_path, "ckpt-1|grad|d=8", 8)) == 0  # corrupt: recomputed, not trusted
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_float16_feature_store_halves_the_rows_and_keeps_its_own_file(tmp_path):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(300, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    full, half = FeatureStore(tmp_path, "k", 64), FeatureStore(tmp_path, "k", 64, dtype="float16")
    for fs in (full, half):
        fs.add(np.arange(300), v)
        fs.save()
    assert half.path != full.path and half.path.stat().st_size < 0.6 * full.path.stat().st_size
    back = FeatureStore(tmp_path, "k", 64, dtype="float16").get(np.arange(300))
    assert back.dtype == np.float32 and np.abs(back - v).max() < 1e-3  # half precision of unit rows
    np.testing.assert_array_equal(FeatureStore(tmp_path, "k", 64).get(np.arange(300)), v)  # float32 untouched
    half.meta_path.write_text(half.meta_path.read_text().replace("float16", "float32"))
    assert len(FeatureStore(tmp_path, "k", 64, dtype="float16")) == 0  # sidecar disagrees: recomputed
    with pytest.raises(ValueError, match="feature storage dtype must be one of float32, float16"):
        FeatureStore(tmp_path, "k", 64, dtype="int8")


def test_degenerate_and_oversized_groups_are_refused_whole(store):
    """Issue 15, defects 4 and 8: a group of identical responses used to land silently with 0 pairs, and K and
    the pool tag were unbounded (one 5 KB group with K = 400 made 79,800 pairs)."""
    from activedpo_server.records import MAX_RESPONSES_PER_GROUP

    cases = [
        ([group("p", "a", "a", "a")], "item 1: all 3 responses are identical; a pair needs two different ones"),
        ([group("p", *[f"r{i}" for i in range(400)])], f"400 responses to one prompt; the limit is "
                                                      f"{MAX_RESPONSES_PER_GROUP}: split the group"),
        ([group("p", "a", "b", pool="t" * 300)], "item 1: pool tag 'tttt"),
    ]  # fmt: skip
    for items, message in cases:
        with pytest.raises(StoreError, match=message):
            store.add_candidates([group("ok", "x", "y"), *items])
    assert store.counts()["pairs"] == 0  # the good item before the bad one did not land either
    res = store.add_candidates([group("p", *[f"r{i}" for i in range(MAX_RESPONSES_PER_GROUP)])])
    assert res.pairs_added == MAX_RESPONSES_PER_GROUP * (MAX_RESPONSES_PER_GROUP - 1) // 2


def test_rejections_never_echo_more_than_an_id(store):
    """Issue 15, defect 3: a 17 MB unknown pair id was echoed in the reason and made the answer too large."""
    store.add_candidates([group("p1", "a", "b")])
    pid = store.pair_details(store.pool_view().pair_rows)[0].pair_id
    huge = "x" * 17_000_000
    out = store.submit_labels([LabelIn(pid, PREF_A, "ann"), LabelIn(huge, PREF_A, "ann"),
                               LabelIn(pid, PREF_B, "ann2", "k" * 300)], "ckpt")  # fmt: skip
    assert [o.accepted for o in out] == [True, False, False]
    assert len(out[1].pair_id) == 256 and len(out[1].reason) < 200
    assert "pair id 'xxxx" in out[1].reason and "(17,000,000 characters) is longer than 256" in out[1].reason
    assert out[2].reason == "idempotency key is longer than 256 characters"
    assert store.counts()["annotations"] == 1


def test_a_tied_pair_leaves_the_candidates_and_stays_out_of_v(store):
    """Issue 15: a TIE-labeled pair stayed a candidate, so the greedy rule picked it again after every lease."""
    store.add_candidates([group("p1", "a", "b", "c")])
    view = store.pool_view()
    tied = store.pair_details(view.pair_rows[:1])[0].pair_id
    assert store.submit_labels([LabelIn(tied, PREF_TIE, "ann")], "ckpt")[0].accepted
    after = store.pool_view()
    assert view.pair_rows[0] not in after.pair_rows and len(after.pair_rows) == 2
    assert after.labeled.shape == (0, 2)  # a tie says nothing about which is better: not in V


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_feature_view_reads_the_index_in_place(tmp_path, dtype):
    fs = FeatureStore(tmp_path, "key", 8, dtype)
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    ids = np.arange(1000, 1050)[::-1].copy()
    fs.add(ids, x)
    fs.add([1010], x[:1] * 3)  # an upsert moves the row inside the index
    want = fs.get([1049, 1010, 1000, 1025])
    view = fs.view([1049, 1010, 1000, 1025])
    assert view.shape == (4, 8) and view.nbytes == 4 * 8 * (2 if dtype == "float16" else 4)
    np.testing.assert_array_equal(view[np.arange(4)], want)
    np.testing.assert_array_equal(view[np.array([1, 1, 3])], want[[1, 1, 3]])
    np.testing.assert_array_equal(np.asarray(view), want)
    with pytest.raises(KeyError, match="no features for response rows"):
        fs.view([1049, 7])


SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE prompts (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE responses (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,
    prompt INTEGER NOT NULL REFERENCES prompts(rowid), text TEXT NOT NULL);
CREATE TABLE pairs (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, content TEXT UNIQUE NOT NULL,
    prompt INTEGER NOT NULL REFERENCES prompts(rowid), a INTEGER NOT NULL REFERENCES responses(rowid),
    b INTEGER NOT NULL REFERENCES responses(rowid), pool TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX pairs_pool ON pairs(pool);
CREATE TABLE leases (pair INTEGER PRIMARY KEY REFERENCES pairs(rowid), lease_id TEXT NOT NULL, client TEXT NOT NULL,
    expires REAL NOT NULL, rank INTEGER NOT NULL DEFAULT 0, score REAL NOT NULL DEFAULT 0);
CREATE INDEX leases_id ON leases(lease_id);
CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, pair INTEGER NOT NULL REFERENCES pairs(rowid),
    preference INTEGER NOT NULL, annotator TEXT NOT NULL, idempotency_key TEXT UNIQUE,
    created REAL NOT NULL, checkpoint_id TEXT NOT NULL, late INTEGER NOT NULL);
CREATE INDEX labels_pair ON labels(pair);
CREATE TABLE checkpoints (id TEXT PRIMARY KEY, base TEXT NOT NULL, adapter TEXT, loaded REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO prompts VALUES (5, 'x-1', 'the prompt', 0);
INSERT INTO responses VALUES (7, 'y-a', 5, ' one'), (9, 'y-b', 5, ' two'), (11, 'y-c', 5, ' three');
INSERT INTO pairs VALUES (3, 'p-ab', 'c-ab', 5, 7, 9, 'r1', 0), (4, 'p-ac', 'c-ac', 5, 7, 11, 'r1', 0);
INSERT INTO leases VALUES (4, 'lease-1', 'someone', 1e12, 0, 0.5);
INSERT INTO labels VALUES (1, 3, 1, 'ann', 'key-1', 0, 'ckpt', 0);
"""


def test_a_schema_1_state_dir_migrates_into_the_default_project(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "state.sqlite")
    db.executescript(SCHEMA_1)
    db.close()
    s = Store(tmp_path)  # migrates: row ids kept (the feature indexes are keyed by them), nothing lost
    assert s.get_meta("schema_version") == "2"
    assert s.counts(now=0) == dict(prompts=1, responses=3, pairs=2, annotations=1, labeled=1, leased=1,
                                    ties=0, both_bad=0)
    assert s.counts(now=0, project="other")["pairs"] == 0
    view = s.pool_view(now=0)
    assert view.pair_rows.size == 0 and view.labeled.tolist() == [[7, 9]]  # p-ac leased, p-ab labeled
    assert [r.pair_id for r in s.export_labels()] == ["p-ab"]
    again = s.submit_labels([LabelIn("p-ab", PREF_A, "ann", "key-1")], "ckpt")[0]
    assert again.replayed and again.label_id == 1  # idempotency keys still work after the move
    assert s.release("lease-1") == 1 and s.pool_view().pair_rows.tolist() == [4]
    s.close()
    assert Store(tmp_path).counts()["pairs"] == 2  # opens again as schema 2


def test_the_pairs_one_request_makes_are_capped(store, monkeypatch):
    import activedpo_server.store as store_module

    monkeypatch.setattr(store_module, "MAX_PAIRS_PER_REQUEST", 10)
    with pytest.raises(StoreError, match="the request makes 12 pairs; the limit is 10 per request: split it"):
        store.add_candidates([group("p1", "a", "b", "c", "d"), group("p2", "a", "b", "c", "d")])  # 6 + 6 pairs
    assert store.counts()["pairs"] == 0
    assert store.add_candidates([group("p1", "a", "b", "c", "d")]).pairs_added == 6
