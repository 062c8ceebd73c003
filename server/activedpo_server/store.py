"""Durable server state: SQLite for what people paid for, FAISS for what compute can redo.

SQLite (WAL, ``synchronous=FULL``) holds prompts, responses, candidate pairs, leases, labels and
checkpoints. Every write is one transaction, and a call returns only after it commits, so an
acknowledged label survives ``kill -9`` and nothing is half-applied. Feature indexes (one FAISS
``IndexIDMap2`` over a flat inner-product index per feature key, keyed by response row id) are
derived data: written atomically (temp file + rename), rebuildable from the database and the
checkpoint, and a missing or corrupt one is simply recomputed.

Ids. Callers may name prompts, responses and pairs; otherwise ids come from the content
(``x-``/``y-``/``p-`` + a SHA-256 prefix), so re-sending the same candidates deduplicates. A
pair is the unordered set of its two responses: (a, b) and (b, a) are one pair.

Why one module of this length: :class:`Store` is one class because each of its methods is one transaction on
one connection under one lock (the durability rule above); the rows it takes and gives, and the checks on them,
are :mod:`activedpo_server.records`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from activedpo_core.labels import LabelResult
from activedpo_core.lora import LoraSpec
from activedpo_server.errors import NotFound, ResourceExhausted, is_disk_full
from activedpo_server.records import (
    MAX_ID_CHARS,
    MAX_PAIRS_PER_REQUEST,
    MAX_RESPONSES_PER_GROUP,
    PREF_B,
    PREF_BOTH_BAD,
    PREF_TIE,
    WITHDRAWN,
    AddedPair,
    AddResult,
    Candidates,
    ExportRow,
    LabelIn,
    LeasedBatch,
    PairText,
    PoolView,
    Request,
    StoreError,
    check_id,
    check_messages,
    check_text,
    digest,
    label_problem,
    short,
)

SCHEMA_VERSION = 2  # 2: projects (prompts, responses, pairs and labels carry one); request ids
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    rowid INTEGER PRIMARY KEY, project TEXT NOT NULL DEFAULT '', id TEXT NOT NULL, text TEXT NOT NULL,
    created REAL NOT NULL, messages TEXT, UNIQUE (project, id));
CREATE TABLE IF NOT EXISTS responses (
    rowid INTEGER PRIMARY KEY, project TEXT NOT NULL DEFAULT '', id TEXT NOT NULL,
    prompt INTEGER NOT NULL REFERENCES prompts(rowid), text TEXT NOT NULL, UNIQUE (project, id));
CREATE TABLE IF NOT EXISTS pairs (
    rowid INTEGER PRIMARY KEY, project TEXT NOT NULL DEFAULT '', id TEXT NOT NULL, content TEXT NOT NULL,
    prompt INTEGER NOT NULL REFERENCES prompts(rowid),
    a INTEGER NOT NULL REFERENCES responses(rowid), b INTEGER NOT NULL REFERENCES responses(rowid),
    pool TEXT NOT NULL, created REAL NOT NULL, UNIQUE (project, id), UNIQUE (project, content));
CREATE INDEX IF NOT EXISTS pairs_pool ON pairs(project, pool);
CREATE TABLE IF NOT EXISTS leases (
    pair INTEGER PRIMARY KEY REFERENCES pairs(rowid), lease_id TEXT NOT NULL, client TEXT NOT NULL,
    expires REAL NOT NULL, rank INTEGER NOT NULL DEFAULT 0, score REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS leases_id ON leases(lease_id);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT NOT NULL DEFAULT '',
    pair INTEGER NOT NULL REFERENCES pairs(rowid),
    preference INTEGER NOT NULL, annotator TEXT NOT NULL, idempotency_key TEXT,
    created REAL NOT NULL, checkpoint_id TEXT NOT NULL, late INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0, UNIQUE (project, idempotency_key));
CREATE INDEX IF NOT EXISTS labels_pair ON labels(pair);
CREATE TABLE IF NOT EXISTS requests (
    project TEXT NOT NULL, client TEXT NOT NULL, request_id TEXT NOT NULL, params TEXT NOT NULL,
    lease_id TEXT NOT NULL, PRIMARY KEY (project, client, request_id));
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY, base TEXT NOT NULL, adapter TEXT, loaded REAL NOT NULL, lora TEXT);
"""

# Schema 1 → 2: the tables whose uniqueness became per project are rebuilt (row ids kept, so the
# feature indexes, keyed by response row, stay valid); every existing row joins the default project.
_MIGRATE_1_TO_2 = [
    ("prompts", "rowid, '', id, text, created, NULL"),
    ("responses", "rowid, '', id, prompt, text"),
    ("pairs", "rowid, '', id, content, prompt, a, b, pool, created"),
    ("labels", "id, '', pair, preference, annotator, idempotency_key, created, checkpoint_id, late, 0"),
]


# Columns added to schema-2 tables after they first shipped; an older database gets them on open.
_ADDED_COLUMNS = [
    ("checkpoints", "lora", "TEXT"),  # a fresh adapter's spec (JSON)
    ("prompts", "messages", "TEXT"),  # the conversation a prompt was rendered from (JSON), for people
    ("labels", "revision", "INTEGER NOT NULL DEFAULT 0"),  # an answer's revision under its key
    ("leases", "audit", "INTEGER NOT NULL DEFAULT 0"),  # drawn at random to audit the policy, not by the strategy
    ("leases", "margin", "REAL"),  # the selecting policy's log π_θ/π_ref margin (A minus B); NULL: not known
]


class Store:
    """The server's SQLite state in ``state_dir/state.sqlite``; safe to call from several threads."""

    def __init__(self, state_dir: str | Path, max_bytes: int | None = None):
        """``max_bytes`` caps the database (SQLite's max_page_count): past it, writes are refused as
        RESOURCE_EXHAUSTED, as on a full disk, instead of filling the host's disk."""
        self.dir = Path(state_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the state directory {self.dir}: {e}") from e
        self.path = self.dir / "state.sqlite"
        self._lock_file = _lock_state_dir(self.dir)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._schema_version()
            if version is not None and version not in (1, SCHEMA_VERSION):
                raise StoreError(f"state database {self.path} has schema {version}; this server reads {SCHEMA_VERSION}")
            if version == 1:
                self._migrate_1_to_2()
            self._db.execute("PRAGMA foreign_keys=ON")
            if max_bytes is not None:
                page = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count = {max(1, int(max_bytes) // page)}")
            self._db.executescript(_SCHEMA)
            for table, column, decl in _ADDED_COLUMNS:  # columns added within schema 2
                if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            if version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
        except sqlite3.Error as e:
            self._lock_file.close()
            if is_disk_full(e):
                raise ResourceExhausted(f"cannot open the state database {self.path}: the disk is full") from None
            raise StoreError(f"cannot open the state database {self.path}: {e}") from None

    def _schema_version(self) -> int | None:
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else None

    def _migrate_1_to_2(self) -> None:
        """Move a schema-1 database to projects, in one transaction (a crash leaves schema 1)."""
        db = self._db
        db.execute("PRAGMA foreign_keys=OFF")  # the tables are swapped underneath their references
        db.execute("PRAGMA legacy_alter_table=ON")  # a rename leaves other tables' references by name
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, _ in _MIGRATE_1_TO_2:
                db.execute(f"ALTER TABLE {table} RENAME TO {table}_v1")
            db.execute("DROP INDEX IF EXISTS pairs_pool")
            db.execute("DROP INDEX IF EXISTS labels_pair")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            for table, columns in _MIGRATE_1_TO_2:
                db.execute(f"INSERT INTO {table} SELECT {columns} FROM {table}_v1")
                db.execute(f"DROP TABLE {table}_v1")
            if db.execute("PRAGMA foreign_key_check").fetchall():
                raise StoreError(f"state database {self.path}: dangling references; not migrating it")
            db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA legacy_alter_table=OFF")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()  # releases the state-dir lock

    # ---- transactions ---------------------------------------------------------------------

    def _write(self, fn, confirm=None):
        """Run ``fn(cursor)`` in one IMMEDIATE transaction; return its result after COMMIT.

        ``confirm()``, when given, runs just before COMMIT; if it raises, everything rolls back.
        """
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(cur)
                    if confirm is not None:
                        confirm()  # last chance to back out (the caller went away): nothing is written
                except BaseException:
                    if self._db.in_transaction:  # SQLite already rolled back after some errors (SQLITE_FULL)
                        cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            except sqlite3.Error as e:
                if is_disk_full(e):
                    raise ResourceExhausted(
                        f"the state database's disk is full ({self.path}); nothing was written"
                    ) from None
                raise
            return result

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._write(lambda c: c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value)))

    # ---- candidates -----------------------------------------------------------------------

    def add_candidates(self, items: Iterable[Candidates], project: str = "", confirm=None) -> AddResult:
        """Add every item to ``project``, all in one transaction: either the whole request lands or none
        of it (``confirm`` runs before COMMIT, see :meth:`_write`)."""
        check_id("project", project)
        items = list(items)  # validate everything before writing anything
        for n, item in enumerate(items):
            check_text(f"item {n}: the prompt", item.prompt)
            if item.explicit_pair and len(item.responses) != 2:
                raise StoreError(f"item {n}: a pair needs exactly two responses")
            if len(item.responses) < 2:
                raise StoreError(f"item {n}: a prompt needs at least two responses to form a pair")
            if len(item.responses) > MAX_RESPONSES_PER_GROUP:
                raise StoreError(f"item {n}: {len(item.responses):,} responses to one prompt; the limit is "
                                 f"{MAX_RESPONSES_PER_GROUP}: split the group")  # fmt: skip
            texts = [check_text(f"item {n}: response {i}", t) for i, (_, t) in enumerate(item.responses)]
            if item.explicit_pair and texts[0] == texts[1]:
                raise StoreError(f"item {n}: the pair's two responses are identical")
            if len(set(texts)) < 2:
                raise StoreError(f"item {n}: all {len(texts)} responses are identical; a pair needs two different ones")
            if item.messages:
                check_messages(f"item {n}: the prompt's messages", item.messages)
            check_id(f"item {n}: pool tag", item.pool)
            check_id(f"item {n}: prompt id", item.prompt_id)
            check_id(f"item {n}: pair id", item.pair_id)
            for i, (rid, _) in enumerate(item.responses):
                check_id(f"item {n}: response {i} id", rid)
        pairs = sum(len(i.responses) * (len(i.responses) - 1) // 2 for i in items)
        if pairs > MAX_PAIRS_PER_REQUEST:
            raise StoreError(f"the request makes {pairs:,} pairs; the limit is {MAX_PAIRS_PER_REQUEST:,} per request: "
                             f"split it")  # fmt: skip
        now = time.time()
        return self._write(lambda c: self._add(c, items, now, project), confirm)

    def _add(self, c: sqlite3.Cursor, items: list[Candidates], now: float, project: str) -> AddResult:
        res = AddResult()

        def prompt_row(item: Candidates) -> int:
            pid = item.prompt_id or "x-" + digest(item.prompt)[:16]
            row = c.execute("SELECT rowid, text, messages FROM prompts WHERE project = ? AND id = ?",
                            (project, pid)).fetchone()  # fmt: skip
            if row:
                if row[1] != item.prompt:
                    raise StoreError(f"prompt id {pid!r} already names a different prompt")
                if item.messages and not row[2]:  # added before without its conversation
                    c.execute("UPDATE prompts SET messages = ? WHERE rowid = ?", (item.messages, row[0]))
                return row[0]
            res.prompts_added += 1
            return c.execute(
                "INSERT INTO prompts(project, id, text, created, messages) VALUES (?, ?, ?, ?, ?)",
                (project, pid, item.prompt, now, item.messages or None),
            ).lastrowid

        def response_row(prompt: int, prompt_id: str, rid: str | None, text: str) -> int:
            rid = rid or "y-" + digest(prompt_id, text)[:16]
            row = c.execute(
                "SELECT rowid, prompt, text FROM responses WHERE project = ? AND id = ?", (project, rid)
            ).fetchone()
            if row:
                if row[1] != prompt or row[2] != text:
                    raise StoreError(f"response id {rid!r} already names a different response")
                return row[0]
            res.responses_added += 1
            return c.execute(
                "INSERT INTO responses(project, id, prompt, text) VALUES (?, ?, ?, ?)", (project, rid, prompt, text)
            ).lastrowid

        for item in items:
            prompt = prompt_row(item)
            prompt_id = c.execute("SELECT id FROM prompts WHERE rowid = ?", (prompt,)).fetchone()[0]
            rows: list[int] = []
            for rid, text in item.responses:
                r = response_row(prompt, prompt_id, rid, text)
                if r not in rows:
                    rows.append(r)
            combos = [(rows[i], rows[j]) for i in range(len(rows)) for j in range(i + 1, len(rows))]
            for first, second in combos:
                a, b = min(first, second), max(first, second)  # a pair is stored in response-row order
                ids = sorted(c.execute("SELECT id FROM responses WHERE rowid IN (?, ?)", (a, b)).fetchall())
                content = digest(*(i[0] for i in ids))
                pair_id = item.pair_id or "p-" + content[:16]
                existing = c.execute(
                    "SELECT id, content FROM pairs WHERE project = ? AND (id = ? OR content = ?)",
                    (project, pair_id, content),
                )
                clash = existing.fetchall()
                if clash:
                    if any(cont != content for _, cont in clash):
                        raise StoreError(f"pair id {pair_id!r} already names a different pair")
                    res.pairs_deduplicated += 1
                    if item.explicit_pair:
                        res.pairs.append(AddedPair(clash[0][0], False, first != a))
                    continue
                c.execute(
                    "INSERT INTO pairs(project, id, content, prompt, a, b, pool, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (project, pair_id, content, prompt, a, b, item.pool, now),
                )
                res.pairs_added += 1
                if item.explicit_pair:
                    res.pairs.append(AddedPair(pair_id, True, first != a))
        return res

    # ---- selection ------------------------------------------------------------------------

    def pool_view(self, pool: str = "", now: float | None = None, project: str = "") -> PoolView:
        """``project``'s candidates a batch may come from (no current answer of any kind, a tie included,
        and no unexpired lease), and its labeled pairs (A or B: what enters V)."""
        now = time.time() if now is None else now
        where = "AND p.pool = ?" if pool else ""
        args: tuple = (now, project, pool) if pool else (now, project)
        cand = self._read(
            f"""SELECT p.rowid, p.a, p.b, p.prompt FROM pairs p
                WHERE NOT EXISTS (SELECT 1 FROM labels l WHERE l.pair = p.rowid AND l.preference > 0)
                  AND NOT EXISTS (SELECT 1 FROM leases s WHERE s.pair = p.rowid AND s.expires > ?)
                  AND p.project = ? {where}
                ORDER BY p.rowid""",
            args,
        )
        labeled = self._read(
            """SELECT p.a, p.b, p.prompt FROM pairs p WHERE p.project = ? AND EXISTS
               (SELECT 1 FROM labels l WHERE l.pair = p.rowid AND l.preference IN (1, 2)) ORDER BY p.rowid""",
            (project,),
        )
        arr = np.array(cand, dtype=np.int64).reshape(-1, 4)
        del cand
        lab = np.array(labeled, dtype=np.int64).reshape(-1, 3)
        return PoolView(pair_rows=arr[:, 0], pairs=arr[:, 1:3], pair_prompt=arr[:, 3], labeled=lab[:, :2],
                        labeled_prompt=lab[:, 2])  # fmt: skip

    def response_texts(self, rows: Iterable[int]) -> dict[int, tuple[int, str, str]]:
        """response row → (prompt row, prompt text, response text)."""
        rows = [int(r) for r in rows]
        out: dict[int, tuple[int, str, str]] = {}
        for s in range(0, len(rows), 900):  # SQLite's bound-parameter limit
            chunk = rows[s : s + 900]
            marks = ",".join("?" * len(chunk))
            for r, p, pt, t in self._read(
                f"SELECT r.rowid, p.rowid, p.text, r.text FROM responses r JOIN prompts p ON p.rowid = r.prompt "
                f"WHERE r.rowid IN ({marks})",
                chunk,
            ):
                out[r] = (p, pt, t)
        return out

    def pair_details(self, pair_rows: Sequence[int]) -> list[PairText]:
        """The ids and texts of each pair, in the given order."""
        out = []
        for row in pair_rows:
            out.append(
                PairText(
                    *self._read(
                        """SELECT p.id, x.id, x.text, a.id, a.text, b.id, b.text, COALESCE(x.messages, '')
                           FROM pairs p
                           JOIN prompts x ON x.rowid = p.prompt JOIN responses a ON a.rowid = p.a
                           JOIN responses b ON b.rowid = p.b WHERE p.rowid = ?""",
                        (int(row),),
                    )[0]
                )
            )
        return out

    def all_responses(self, labeled_only: bool = False) -> np.ndarray:
        """Response rows of every project's pairs (or only of A/B-labeled pairs), sorted and unique."""
        where = "WHERE EXISTS (SELECT 1 FROM labels l WHERE l.pair = p.rowid AND l.preference IN (1, 2))"
        rows = self._read(f"SELECT p.a, p.b FROM pairs p {where if labeled_only else ''}")
        return np.unique(np.array(rows, dtype=np.int64).ravel())

    def lease(
        self,
        pair_rows: Sequence[int],
        lease_id: str,
        client: str,
        expires: float,
        now: float | None = None,
        scores: Sequence[float] | None = None,
        request: Request | None = None,
        audit: Sequence[bool] | None = None,
        margins: Sequence[float | None] | None = None,
    ):
        """Lease the pairs (in rank order) with what chose them (score, audit flag, the policy's margin),
        remembering ``request`` for retries; refuses (StoreError) if any pair is leased and unexpired."""
        now = time.time() if now is None else now
        scores = list(scores) if scores is not None else [0.0] * len(pair_rows)
        audit = list(audit) if audit is not None else [False] * len(pair_rows)
        margins = list(margins) if margins is not None else [None] * len(pair_rows)

        def go(c: sqlite3.Cursor):
            for rank, (row, score, flag, margin) in enumerate(zip(pair_rows, scores, audit, margins, strict=True)):
                held = c.execute(
                    "SELECT expires FROM leases WHERE pair = ? AND expires > ?", (int(row), now)
                ).fetchone()
                if held:
                    raise StoreError(f"pair row {row} is already leased")
                c.execute(
                    "INSERT OR REPLACE INTO leases(pair, lease_id, client, expires, rank, score, audit, margin) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(row), lease_id, client, expires, rank, float(score), int(bool(flag)),
                     None if margin is None else float(margin)),
                )  # fmt: skip
            if request is not None:
                c.execute(
                    "INSERT OR REPLACE INTO requests(project, client, request_id, params, lease_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (request.project, request.client, request.request_id, request.params, lease_id),
                )

        self._write(go)

    def request(self, project: str, client: str, request_id: str) -> tuple[str, str] | None:
        """(params, lease id) recorded for a SelectBatch request id, or None."""
        rows = self._read(
            "SELECT params, lease_id FROM requests WHERE project = ? AND client = ? AND request_id = ?",
            (project, client, request_id),
        )
        return rows[0] if rows else None

    def leased_batch(self, lease_id: str, now: float | None = None) -> LeasedBatch | None:
        """The pairs still leased under ``lease_id`` (rank order) as they were chosen; None if none."""
        now = time.time() if now is None else now
        rows = self._read(
            "SELECT pair, score, expires, audit, COALESCE(margin, 0.0) FROM leases WHERE lease_id = ? AND expires > ? "
            "ORDER BY rank",
            (lease_id, now),
        )
        if not rows:
            return None
        return LeasedBatch([r[0] for r in rows], [r[1] for r in rows], rows[0][2], [bool(r[3]) for r in rows],
                           [r[4] for r in rows])  # fmt: skip

    def release(self, lease_id: str, pair_ids: Sequence[str] = (), project: str = "", now: float | None = None) -> int:
        """Return the unexpired pairs of ``lease_id`` (all, or those named) to the pool; how many were."""
        now = time.time() if now is None else now
        check_id("lease id", lease_id)
        for i, pid in enumerate(pair_ids):
            check_id(f"pair id {i}", pid)

        def go(c: sqlite3.Cursor) -> int:
            rows = c.execute(
                """SELECT s.pair, p.id, s.expires > ? FROM leases s JOIN pairs p ON p.rowid = s.pair
                   WHERE s.lease_id = ? AND p.project = ?""",
                (now, lease_id, project),
            ).fetchall()
            if not rows:
                raise NotFound(f"no lease {short(lease_id)} in this project")
            wanted = set(pair_ids)
            if wanted - {pid for _, pid, _ in rows}:
                unknown = sorted(wanted - {pid for _, pid, _ in rows})[0]
                raise StoreError(f"pair {short(unknown)} is not part of lease {short(lease_id)}")
            held = [row for row, pid, live in rows if live and (not wanted or pid in wanted)]
            # the rows stay, expired now: a retried release finds the lease and releases nothing
            c.executemany("UPDATE leases SET expires = ? WHERE pair = ?", [(now, row) for row in held])
            return len(held)

        return self._write(go)

    # ---- labels ---------------------------------------------------------------------------

    def submit_labels(
        self, labels: Sequence[LabelIn], checkpoint_id: str, now: float | None = None, project: str = ""
    ) -> list[LabelResult]:
        """Record the valid labels of ``project`` in one transaction and say, per item, what happened.

        Unknown pairs and malformed items are rejected with a reason; the others still commit. A known
        idempotency key with a larger ``revision`` replaces the answer recorded under it (a new label id,
        so an incremental export sees the revision; ``withdrawn`` leaves no answer); with the same or a
        smaller revision it returns the recorded result (``replayed``) and writes nothing, unless the
        answer differs without a larger revision, which is refused (a key names one answer).
        """
        now = time.time() if now is None else now
        check_id("project", project)

        def go(c: sqlite3.Cursor) -> list[LabelResult]:
            out = []
            for lab in labels:
                key = lab.idempotency_key or None
                reason = label_problem(lab)
                if reason and key and len(key) > MAX_ID_CHARS:
                    out.append(LabelResult(lab.pair_id[:MAX_ID_CHARS], False, reason))
                    continue
                prev = (
                    key
                    and c.execute(
                        "SELECT l.id, p.id, l.late, l.preference, l.annotator, l.revision, l.pair FROM labels l "
                        "JOIN pairs p ON p.rowid = l.pair WHERE l.project = ? AND l.idempotency_key = ?",
                        (project, key),
                    ).fetchone()
                )
                if prev:
                    label_id, pair_id, late, pref, annotator, revision, pair_row = prev
                    if pair_id != lab.pair_id:
                        out.append(LabelResult(lab.pair_id[:MAX_ID_CHARS], False,
                                            f"idempotency key {short(key)} was used for pair {pair_id}"))  # fmt: skip
                        continue
                    if reason:
                        out.append(LabelResult(lab.pair_id[:MAX_ID_CHARS], False, reason))
                        continue
                    same = (WITHDRAWN if lab.withdrawn else int(lab.preference), lab.annotator) == (pref, annotator)
                    if lab.revision <= revision or same:
                        if not same and lab.revision <= revision and not lab.revision:
                            out.append(LabelResult(lab.pair_id, False, f"idempotency key {short(key)} holds another "
                                                "answer; send a larger revision to revise it"))  # fmt: skip
                            continue
                        if same and lab.revision > revision:  # the same answer, saved again: remember its revision
                            c.execute("UPDATE labels SET revision = ? WHERE id = ?", (lab.revision, label_id))
                        out.append(LabelResult(lab.pair_id, True, label_id=label_id, late=bool(late), replayed=True))
                        continue
                    c.execute("DELETE FROM labels WHERE id = ?", (label_id,))
                    new_id = c.execute(
                        "INSERT INTO labels(project, pair, preference, annotator, idempotency_key, created, "
                        "checkpoint_id, late, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (project, pair_row, WITHDRAWN if lab.withdrawn else int(lab.preference), lab.annotator, key,
                         now, checkpoint_id, late, lab.revision),
                    ).lastrowid  # fmt: skip
                    out.append(LabelResult(lab.pair_id, True, label_id=new_id, late=bool(late), revised=True))
                    continue
                find = "SELECT rowid FROM pairs WHERE project = ? AND id = ?"
                pair = None if reason else c.execute(find, (project, lab.pair_id)).fetchone()
                if not reason and not pair:
                    reason = f"unknown pair id {short(lab.pair_id)}"
                if reason:  # the answer never echoes more than an id's worth of what was sent
                    out.append(LabelResult(lab.pair_id[:MAX_ID_CHARS], False, reason))
                    continue
                lease = c.execute("SELECT expires FROM leases WHERE pair = ?", (pair[0],)).fetchone()
                late = bool(lease and lease[0] < now)
                label_id = c.execute(
                    "INSERT INTO labels(project, pair, preference, annotator, idempotency_key, created, checkpoint_id, "
                    "late, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (project, pair[0], WITHDRAWN if lab.withdrawn else int(lab.preference), lab.annotator, key, now,
                     checkpoint_id, int(late), lab.revision),
                ).lastrowid  # fmt: skip
                out.append(LabelResult(lab.pair_id, True, label_id=label_id, late=late))
            return out

        return self._write(go)

    def export_labels(self, after_id: int = 0, include_ties: bool = False, project: str = "") -> Iterator[ExportRow]:
        """Every label of ``project`` after ``after_id``, oldest first, with the pair's texts (chosen first)."""
        prefs = "(1, 2, 3, 4)" if include_ties else "(1, 2)"
        last = after_id
        while True:
            rows = self._read(
                f"""SELECT l.id, p.id, x.text, a.text, b.text, l.preference, l.annotator, l.created,
                           l.checkpoint_id, l.late, COALESCE(l.idempotency_key, ''), l.revision,
                           COALESCE(s.audit, 0), s.margin
                    FROM labels l JOIN pairs p ON p.rowid = l.pair
                    JOIN prompts x ON x.rowid = p.prompt JOIN responses a ON a.rowid = p.a
                    JOIN responses b ON b.rowid = p.b LEFT JOIN leases s ON s.pair = l.pair
                    WHERE l.id > ? AND l.project = ? AND l.preference IN {prefs} ORDER BY l.id LIMIT 500""",
                (last, project),
            )
            if not rows:
                return
            for lid, pid, prompt, a, b, pref, annotator, created, ckpt, late, key, rev, audit, margin in rows:
                chosen, rejected = (b, a) if pref == PREF_B else (a, b)
                yield ExportRow(lid, pid, prompt, chosen, rejected, pref, annotator, created, ckpt, bool(late), key,
                                rev, bool(audit), margin)  # fmt: skip
            last = rows[-1][0]

    # ---- checkpoints and counts -----------------------------------------------------------

    def record_checkpoint(self, checkpoint_id: str, base: str, adapter: str | None,
                          lora: LoraSpec | None = None) -> None:  # fmt: skip
        """The checkpoint now served (with the fresh adapter of a checkpoint without one): a restart resumes it."""
        spec = json.dumps(lora.to_dict()) if lora is not None else None

        def go(c):
            c.execute(
                "INSERT OR REPLACE INTO checkpoints(id, base, adapter, loaded, lora) VALUES (?, ?, ?, ?, ?)",
                (checkpoint_id, base, adapter, time.time(), spec),
            )
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('checkpoint', ?)", (checkpoint_id,))

        self._write(go)

    def current_checkpoint(self) -> tuple[str, str, str | None, LoraSpec | None] | None:
        rows = self._read(
            "SELECT c.id, c.base, c.adapter, c.lora FROM checkpoints c JOIN meta m ON m.value = c.id "
            "WHERE m.key = 'checkpoint'"
        )
        if not rows:
            return None
        ckpt_id, base, adapter, spec = rows[0]
        return ckpt_id, base, adapter, LoraSpec.from_dict(json.loads(spec)) if spec else None

    def counts(self, now: float | None = None, project: str = "") -> dict[str, int]:
        now = time.time() if now is None else now
        q = {
            "prompts": "SELECT COUNT(*) FROM prompts WHERE project = ?",
            "responses": "SELECT COUNT(*) FROM responses WHERE project = ?",
            "pairs": "SELECT COUNT(*) FROM pairs WHERE project = ?",
            "annotations": "SELECT COUNT(*) FROM labels WHERE project = ? AND preference > 0",
            "ties": f"SELECT COUNT(*) FROM labels WHERE project = ? AND preference = {PREF_TIE}",
            "both_bad": f"SELECT COUNT(*) FROM labels WHERE project = ? AND preference = {PREF_BOTH_BAD}",
            "labeled": "SELECT COUNT(DISTINCT pair) FROM labels WHERE project = ? AND preference IN (1, 2)",
        }
        out = {k: self._read(sql, (project,))[0][0] for k, sql in q.items()}
        out["leased"] = self._read(
            """SELECT COUNT(*) FROM leases s JOIN pairs p ON p.rowid = s.pair WHERE p.project = ? AND s.expires > ?
               AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.pair = s.pair AND l.preference IN (1, 2))""",
            (project, now),
        )[0][0]
        return out


def _lock_state_dir(directory: Path, wait: float = 15.0):
    """Hold an exclusive lock on ``directory/lock`` for this process's lifetime (released on exit,
    even after ``kill -9``): two servers on one state dir would step on each other's files."""
    import fcntl

    f = open(directory / "lock", "a+")  # noqa: SIM115 - kept open: the lock lives as long as the file
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.seek(0)
                owner = f.read().strip() or "another process"
                f.close()
                raise StoreError(f"state dir {directory} is in use by {owner}; stop that server first") from None
            time.sleep(0.1)
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()}")
    f.flush()
    return f
