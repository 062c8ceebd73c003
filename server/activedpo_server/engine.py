"""The selection engine: state, checkpoint, features and strategies behind plain method calls.

The gRPC servicer only translates messages to these calls and errors to status codes; tests
drive the engine directly too. Methods block (model and database work): the servicer runs them
off the event loop. Selections are serialized, so two callers never lease the same pair; a
checkpoint loads beside the serving one and replaces it in one assignment once the labeled
set's features are ready under it.

Why one module of this length: :class:`Engine` is one class over one state (the store, the active checkpoint
and its feature stores, the selection lock); select, describe and the checkpoint swap all read that state, and
the strategies, audit pairs and features it calls live in modules of their own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from activedpo_core.checkpoint import CheckpointManifest, resolve_checkpoint, resolve_device
from activedpo_core.labels import LabelResult
from activedpo_core.lora import LoraSpec
from activedpo_core.progress import StageProgress
from activedpo_core.settings import SelectionSettings
from activedpo_server import __version__
from activedpo_server.audit import pair_margins, with_audit
from activedpo_server.checkpoints import CheckpointRegistry
from activedpo_server.distributed import RaySettings
from activedpo_server.errors import FailedPrecondition
from activedpo_server.features import EmbeddingFeaturizer, FeaturizerConfig, GradientFeaturizer
from activedpo_server.featurestore import FeatureStore
from activedpo_server.records import AddResult, Candidates, ExportRow, LabelIn, PairText, Request, check_id
from activedpo_server.store import Store
from activedpo_server.strategies import LAM_STRATEGIES, Pool, get_strategy, strategy_class

log = logging.getLogger(__name__)


class NotReady(FailedPrecondition):
    """The engine cannot do this yet (no checkpoint loaded); the message says what to do."""


@dataclass(frozen=True)
class EngineConfig:
    """How the selection server featurizes and selects. Frozen: it describes a running server."""

    state_dir: Path
    features: FeaturizerConfig = field(default_factory=FeaturizerConfig)  # what a gradient feature is
    lam: float = SelectionSettings.lam  # ridge λ of V
    strategy: str = SelectionSettings.strategy
    research_strategies: bool = False  # also answer the benchmark's research strategies (activedpo-fisher, -topb)
    lease_seconds: int = SelectionSettings.lease_seconds  # how long selected pairs are withheld from other callers
    # ablation: featurize with this fixed checkpoint instead of the current one (log-probs stay current)
    feature_checkpoint: str | None = None
    feature_dtype: str = "float32"  # how the FAISS store holds features: float32 or float16 (half the memory)
    ray: RaySettings | None = None  # featurize new responses on a Ray cluster instead of in this process
    checkpoint_roots: tuple[Path, ...] = ()  # where remote callers may load checkpoints by path (none: off)
    allow_downloads: bool = False  # base models by Hugging Face id may be downloaded, not only read from cache
    max_state_bytes: int | None = None  # cap of the state database; past it writes are RESOURCE_EXHAUSTED
    selection: str = "torch"  # the greedy V⁻¹ math: torch on the server's device, or numpy (the reference)

    def __post_init__(self) -> None:
        strategy_class(self.strategy, self.research_strategies)  # raises, naming the choices
        if self.feature_dtype not in ("float32", "float16"):
            raise ValueError(f"feature dtype must be float32 or float16, got {self.feature_dtype!r}")
        if self.selection not in ("torch", "numpy"):
            raise ValueError(f"selection must be torch or numpy, got {self.selection!r}")
        if self.lam <= 0 or self.lease_seconds < 1:
            raise ValueError("lam and lease_seconds must be positive")


@dataclass
class _Active:
    """Everything tied to one checkpoint."""

    manifest: CheckpointManifest
    gradient: GradientFeaturizer  # gradient features (the current checkpoint's, or the fixed feature checkpoint's)
    features: FeatureStore
    policy: GradientFeaturizer  # log-probs of the current checkpoint (the same object unless features are fixed)
    embedding: EmbeddingFeaturizer | None = None
    embeddings: FeatureStore | None = None


@dataclass(frozen=True)
class ScoredPair:
    """A selected pair: its texts, what chose it, and its place in the batch (0 = picked first)."""

    text: PairText
    score: float
    rank: int
    audit: bool = False  # drawn uniformly at random from the pool to audit the policy, not by the strategy
    margin: float = 0.0  # the selecting policy's log π_θ/π_ref of response A minus that of B


@dataclass(frozen=True)
class PoolDescription:
    """What :meth:`Engine.describe` says of a pool."""

    pairs: int  # unleased, unlabeled pairs in the pool
    pair_ids: list[str]  # the pairs described: all, or a uniform sample
    margins: list[float]  # log π_θ/π_ref of response A minus that of B, per pair
    scores: list[float]  # φᵀV⁻¹φ against the labeled pairs, per pair
    checkpoint_id: str


DESCRIBE_PAIRS = SelectionSettings.describe_pairs  # pairs a pool description covers by default
MAX_DESCRIBE_PAIRS = 20_000  # its answer stays well under gRPC's 4 MB message limit


@dataclass
class Batch:
    pairs: list[ScoredPair]
    checkpoint_id: str
    strategy: str
    lease_id: str
    lease_expires: float
    candidates: int


@dataclass(frozen=True)
class LoadReport:
    checkpoint_id: str
    loaded: bool  # False: it was already current
    previous_checkpoint_id: str
    refeaturized: int
    seconds: float


@dataclass(frozen=True)
class Status:
    checkpoint_id: str
    strategy: str
    pool_size: int
    featurized: int
    labeled: int
    leased: int
    feature_dim: int
    lam: float
    version: str
    prompts: int
    responses: int
    annotations: int
    loading_checkpoint_id: str
    lora: LoraSpec | None = None  # the adapter whose gradients are the features
    fresh_adapter: bool = False  # True: ``lora`` is a fresh adapter (a checkpoint without one), not its own
    ties: int = 0  # current answers that are ties
    both_bad: int = 0  # current answers that say both responses are unacceptable


class _StoreSource:
    """A strategies.FeatureSource over local response indices, backed by the FAISS feature stores."""

    def __init__(self, engine: Engine, active: _Active, rows: np.ndarray, progress: StageProgress | None):
        self.engine, self.active, self.rows, self.progress = engine, active, rows, progress

    def _texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        texts = self.engine.store.response_texts(rows)
        return [texts[int(r)][1] for r in rows], [texts[int(r)][2] for r in rows]

    def _cached(self, store: FeatureStore, featurizer, idx: np.ndarray, ray: RaySettings | None = None) -> np.ndarray:
        rows = self.rows[idx]
        missing = store.missing(rows)
        if missing.size:
            prompts, responses = self._texts(missing)
            if ray is not None:  # the same rows, computed by Ray actors (activedpo_server.distributed)
                from activedpo_server.distributed import featurize_on_ray

                feats = featurize_on_ray(featurizer.loaded.manifest, prompts, responses, missing,
                                         config=self.engine.config.features, ray_settings=ray,
                                         progress=self.progress)  # fmt: skip
            else:
                feats = featurizer.featurize(prompts, responses, progress=self.progress)
            store.add(missing, feats)
            store.save()
        return store.view(rows)  # read in place: the features are not copied out of the index

    def gradient_features(self, idx):
        return self._cached(self.active.features, self.active.gradient, idx, self.engine.config.ray)

    def embedding_features(self, idx):
        a = self.engine._embedding(self.active)
        return self._cached(a.embeddings, a.embedding, idx)

    def logprobs(self, idx):
        return self.active.policy.logprobs(*self._texts(self.rows[idx]))


class Engine:
    def __init__(self, config: EngineConfig, checkpoint: str | Path | CheckpointManifest | None = None):
        self.config = config
        self.store = Store(config.state_dir, config.max_state_bytes)
        self.checkpoints = CheckpointRegistry(config.state_dir, config.checkpoint_roots, config.allow_downloads)
        self.features_dir = Path(config.state_dir) / "features"
        self._select_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.loading: str = ""
        self._active: _Active | None = None
        self._fixed: GradientFeaturizer | None = None
        if checkpoint is None:
            current = self.store.current_checkpoint()
            if current:
                ckpt_id, base, adapter, lora = current
                checkpoint = CheckpointManifest(ckpt_id, base, adapter, None, "", lora)
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    # ---- checkpoints ----------------------------------------------------------------------

    @property
    def checkpoint_id(self) -> str:
        return self._active.manifest.id if self._active else ""

    def checkpoint_ref(self, **request) -> CheckpointManifest:
        """The checkpoint a LoadCheckpoint request names (see :meth:`CheckpointRegistry.resolve`)."""
        return self.checkpoints.resolve(**request)

    def _featurizer(self, manifest: CheckpointManifest) -> GradientFeaturizer:
        return self.config.features.build(manifest)

    def _build(self, manifest: CheckpointManifest) -> _Active:
        policy = self._featurizer(manifest)
        grad = policy
        if self.config.feature_checkpoint:  # the ablation: one fixed featurizer for the server's lifetime
            if self._fixed is None:
                self._fixed = self._featurizer(resolve_checkpoint(self.config.feature_checkpoint))
            grad = self._fixed
        store = FeatureStore(self.features_dir, grad.feature_key, self.config.features.proj_dim,
                             self.config.feature_dtype)  # fmt: skip
        return _Active(manifest, grad, store, policy)

    def _embedding(self, active: _Active) -> _Active:
        if active.embedding is None:
            f = self.config.features
            emb = EmbeddingFeaturizer(active.manifest, device=f.device, dtype=f.dtype)
            active.embeddings = FeatureStore(self.features_dir, emb.feature_key, emb.dim)
            active.embedding = emb
        return active

    def load_checkpoint(
        self, ref: str | Path | CheckpointManifest, progress: StageProgress | None = None
    ) -> LoadReport:
        """Load ``ref``, featurize the labeled responses under it, then switch. Raises CheckpointError.

        A checkpoint without an adapter is featurized with the fresh adapter its manifest names, else with
        the server's (``serve --lora-r/--lora-alpha/--target-modules``)."""
        t0 = time.perf_counter()
        manifest = resolve_checkpoint(ref)
        manifest = manifest.with_lora(manifest.lora or self.config.features.lora)
        previous = self.checkpoint_id
        if self._active is not None and manifest == self._active.manifest:
            return LoadReport(previous, False, previous, 0, time.perf_counter() - t0)
        with self._load_lock:
            self.loading = manifest.id
            try:
                active = self._build(manifest)
                labeled = self.store.all_responses(labeled_only=True)  # every project's
                src = _StoreSource(self, active, labeled, progress)
                before = len(active.features)
                if labeled.size:
                    src.gradient_features(np.arange(len(labeled)))
                refeaturized = len(active.features) - before
            finally:
                self.loading = ""
            self.store.record_checkpoint(manifest.id, manifest.base, manifest.adapter, manifest.lora)
            self._active = active  # one assignment: requests see the old checkpoint or the new one
        log.info("checkpoint %s loaded (was %s)", manifest.id, previous or "none")
        return LoadReport(manifest.id, True, previous, refeaturized, time.perf_counter() - t0)

    # ---- candidates, selection, labels ----------------------------------------------------

    def add_candidates(self, items: Iterable[Candidates], project: str = "", confirm=None) -> AddResult:
        """All or nothing; ``confirm()`` runs just before the commit and may still back out."""
        return self.store.add_candidates(items, project, confirm)

    def select(
        self,
        budget: int,
        strategy: str = "",
        pool: str = "",
        lease_seconds: int = 0,
        seed: int = 0,
        client: str = "",
        progress: StageProgress | None = None,
        request_id: str = "",
        project: str = "",
        now: float | None = None,
        audit: int = 0,
    ) -> Batch:
        """Choose ``budget`` of ``project``'s candidates and lease them.

        ``audit`` of them are audit pairs (:mod:`activedpo_server.audit`), beside the strategy's ``budget −
        audit`` picks; every pair carries the selecting policy's implicit-reward margin over β.

        A ``request_id`` is scoped to (project, client): a retry while its lease lasts returns the same
        batch; the same id with other parameters is refused (FailedPrecondition).
        """
        if not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"budget must be a positive integer, got {budget!r}")
        if not isinstance(audit, int) or not 0 <= audit <= budget:
            raise ValueError(f"audit must be an integer between 0 and the budget ({budget}), got {audit!r}")
        for what, value in (("project", project), ("pool", pool), ("client", client), ("request_id", request_id),
                            ("strategy", strategy)):  # fmt: skip
            check_id(what, value)
        name = strategy or self.config.strategy
        lam = {"lam": self.config.lam} if name in LAM_STRATEGIES else {}
        chooser = get_strategy(name, self.config.research_strategies, **lam)
        active = self._active
        if active is None:
            raise NotReady("no checkpoint is loaded; call LoadCheckpoint first")
        params = dict(budget=budget, strategy=name, pool=pool, seed=seed, lease_seconds=lease_seconds)
        params = json.dumps(params | ({"audit": audit} if audit else {}), sort_keys=True)  # as before when none
        request = Request(project, client, request_id, params) if request_id else None
        with self._select_lock:  # one selection at a time: leases never overlap
            now = time.time() if now is None else now
            if request is not None:  # a retried request gets the batch already leased for it
                held = self._held(request, now)
                if held is not None:
                    return Batch(held[0], active.manifest.id, name, held[1], held[2], len(held[0]))
            view = self.store.pool_view(pool, now=now, project=project)
            lease_id = f"lease-{uuid.uuid4().hex}"
            expires = now + (lease_seconds or self.config.lease_seconds)
            if len(view.pair_rows) == 0:
                return Batch([], active.manifest.id, name, lease_id, expires, 0)
            pool_ = self._pool(view, active, progress)
            picks = chooser.select(pool_, budget - audit, np.random.default_rng(seed)) if budget > audit else []
            index, scores, flags = with_audit(picks, len(pool_.pairs), audit, seed)
            margins = pair_margins(pool_, index)
            chosen = [int(view.pair_rows[i]) for i in index]
            self.store.lease(chosen, lease_id, client, expires, now=now, scores=scores, request=request,
                             audit=flags, margins=margins)  # fmt: skip
            details = self.store.pair_details(chosen)
        pairs = [ScoredPair(d, s, rank, a, m)
                 for rank, (d, s, a, m) in enumerate(zip(details, scores, flags, margins, strict=True))]  # fmt: skip
        return Batch(pairs, active.manifest.id, name, lease_id, expires, len(view.pair_rows))

    def _pool(self, view, active: _Active, progress: StageProgress | None) -> Pool:
        """The strategies' view of a pool: its candidate and labeled pairs over local response indices."""
        rows, local = np.unique(np.concatenate([view.pairs.ravel(), view.labeled.ravel()]), return_inverse=True)
        pairs_local, labeled_local = local[: view.pairs.size].reshape(-1, 2), local[view.pairs.size :].reshape(-1, 2)
        response_prompt = np.empty(len(rows), dtype=np.int64)  # from the pool itself: no text is read
        response_prompt[pairs_local] = view.pair_prompt[:, None]
        response_prompt[labeled_local] = view.labeled_prompt[:, None]
        source = _StoreSource(self, active, rows, progress)
        device = resolve_device(self.config.features.device) if self.config.selection == "torch" else None
        return Pool(pairs_local, response_prompt, source, labeled_local, device=device)

    def describe(self, pool: str = "", project: str = "", max_pairs: int = DESCRIBE_PAIRS, seed: int = 0,
                 progress: StageProgress | None = None) -> PoolDescription:  # fmt: skip
        """How the current policy sees ``pool``'s unleased, unlabeled pairs (at most ``max_pairs`` of them, drawn
        uniformly at random): each one's implicit-reward margin and its ActiveDPO score ``φᵀV⁻¹φ`` against the
        labeled pairs (before any pick). Leases nothing."""
        for what, value in (("project", project), ("pool", pool)):
            check_id(what, value)
        if not isinstance(max_pairs, int) or not 0 < max_pairs <= MAX_DESCRIBE_PAIRS:
            raise ValueError(f"max_pairs must be between 1 and {MAX_DESCRIBE_PAIRS:,}, got {max_pairs!r}")
        active = self._active
        if active is None:
            raise NotReady("no checkpoint is loaded; call LoadCheckpoint first")
        view = self.store.pool_view(pool, project=project)
        total = len(view.pair_rows)
        if total == 0:
            return PoolDescription(0, [], [], [], active.manifest.id)
        keep = np.sort(np.random.default_rng([seed, 0xD35C]).choice(total, size=min(max_pairs, total), replace=False))
        view = replace(view, pairs=view.pairs[keep], pair_prompt=view.pair_prompt[keep], pair_rows=view.pair_rows[keep])
        pool_ = self._pool(view, active, progress)
        scorer = get_strategy("activedpo-topb", research=True, lam=self.config.lam)
        scores = np.empty(len(keep))
        for pick in scorer.select(pool_, len(keep), np.random.default_rng(seed)):
            scores[pick.index] = pick.score
        margins = pair_margins(pool_, list(range(len(keep))))
        ids = [d.pair_id for d in self.store.pair_details([int(r) for r in view.pair_rows])]
        return PoolDescription(total, ids, margins, [float(x) for x in scores], active.manifest.id)

    def _held(self, request: Request, now: float) -> tuple[list[ScoredPair], str, float] | None:
        """The batch still leased for ``request``, or None; refuses a reuse with other parameters."""
        prev = self.store.request(request.project, request.client, request.request_id)
        if prev is None:
            return None
        params, lease_id = prev
        held = self.store.leased_batch(lease_id, now=now)
        if held is None:  # expired or released: the id may choose again
            return None
        if params != request.params:
            raise FailedPrecondition(
                f"request_id {request.request_id[:60]!r} was already used by this client with other parameters "
                f"({params}); retry with the same parameters or use a new request_id"
            )
        details = self.store.pair_details(held.rows)
        pairs = [ScoredPair(d, s, r, a, m)
                 for r, (d, s, a, m) in enumerate(zip(details, held.scores, held.audit, held.margins, strict=True))]
        return pairs, lease_id, held.expires

    def release(self, lease_id: str, pair_ids: list[str] | tuple = (), project: str = "") -> int:
        """Give leased pairs back to the pool; returns how many were still held."""
        return self.store.release(lease_id, list(pair_ids), project)

    def featurize_all(self, progress: StageProgress | None = None) -> dict:
        """Gradient features for every response in the store (candidates, leased and labeled) not yet featurized."""
        active = self._active
        if active is None:
            raise NotReady("no checkpoint is loaded: pass --checkpoint (the state dir has never served one)")
        rows = self.store.all_responses()  # every project's candidates, leased and labeled
        before = len(active.features)
        if rows.size:
            with self._select_lock:
                _StoreSource(self, active, rows, progress).gradient_features(np.arange(len(rows)))
        return dict(responses=int(rows.size), computed=len(active.features) - before,
                    checkpoint_id=active.manifest.id, feature_key=active.gradient.feature_key)  # fmt: skip

    def submit_labels(self, labels: list[LabelIn], project: str = "") -> list[LabelResult]:
        """Durably record labels (V grows with them at the next selection)."""
        return self.store.submit_labels(labels, self.checkpoint_id, project=project)

    def export_labels(self, after_id: int = 0, include_ties: bool = False, project: str = "") -> Iterator[ExportRow]:
        check_id("project", project)
        return self.store.export_labels(after_id, include_ties, project)

    def status(self, project: str = "") -> Status:
        check_id("project", project)
        counts = self.store.counts(project=project)
        active = self._active
        return Status(
            checkpoint_id=self.checkpoint_id,
            strategy=self.config.strategy,
            pool_size=counts["pairs"],
            featurized=len(active.features) if active else 0,
            labeled=counts["labeled"],
            leased=counts["leased"],
            feature_dim=self.config.features.proj_dim,
            lam=self.config.lam,
            version=__version__,
            prompts=counts["prompts"],
            responses=counts["responses"],
            annotations=counts["annotations"],
            loading_checkpoint_id=self.loading,
            lora=active.gradient.adapter_spec if active else None,
            fresh_adapter=bool(active and active.gradient.fresh_adapter),
            ties=counts["ties"],
            both_bad=counts["both_bad"],
        )
