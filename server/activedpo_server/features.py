"""Features of (prompt, response) pairs: projected LoRA gradients, and the APO embedding.

ActiveDPO (Lin et al., ICLR 2026, §3) scores a candidate triplet by ``φ = ĝ(x,y1) − ĝ(x,y2)``
where ``g(x,y) = ∇_θ log π_θ(y|x)`` is the gradient of the policy's log-likelihood of the
response (the implicit reward's gradient up to the constant β) with respect to the LoRA
parameters only, and ``ĝ`` is its random projection, normalised to unit length.

Batched per-example gradients. For a LoRA layer ``y = W0·x + s·B·A·x`` and ``δ'_t`` the
gradient arriving at ``lora_B``'s output at token ``t`` (it already carries ``s``):

    ∂L/∂B = Σ_t δ'_t (A x_t)ᵀ              # [out, r]
    ∂L/∂A = Σ_t (Bᵀ δ'_t) x_tᵀ             # [r, in]

Forward hooks capture ``x_t`` (``lora_A``'s input) and ``u_t = A x_t`` (``lora_B``'s input); one
backward of the batch's summed log-likelihoods to the ``lora_B`` outputs gives every ``δ'``,
and one batched matmul per layer gives every example's gradient. Examples do not interact
(causal attention under a padding mask), so this equals one autograd call per example;
:meth:`GradientFeaturizer.reference_gradients` is that slow path, kept for tests and benchmarks.

Round one. A checkpoint without an adapter (the SFT model) gets a fresh adapter from
:class:`LoraSpec`, initialised from a fixed seed on the CPU. Its ``B`` is zero, so every
``∂L/∂A`` is exactly zero and the features come from the B-gradients alone:
``∂L/∂B = s Σ_t δ_t (A x_t)ᵀ`` is the full-weight gradient ``Σ_t δ_t x_tᵀ`` seen through the
random ``A`` — still a faithful sketch of how the response moves the model, so distinct
responses get distinct features (tested). The zero A-blocks are skipped by the projection.

Why one module of this length: :class:`GradientFeaturizer` is one class around the hooks and the batched
backward, and its fast path and the one-example reference it is tested against share that layer bookkeeping;
the projection is :mod:`activedpo_server.projection`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from activedpo_core.checkpoint import CheckpointManifest, LoadedModel, load_model, resolve_checkpoint
from activedpo_core.lora import LoraSpec
from activedpo_core.progress import StageProgress
from activedpo_core.sequences import encode_pairs, sequence_logprobs, token_logprobs
from activedpo_core.settings import ProjectionSpec
from activedpo_server.projection import PROJECTION_FORMAT, LoraMatrix, make_projection


class FeaturizerError(ValueError):
    """The checkpoint's adapter cannot be featurized (an unsupported LoRA variant, for instance)."""


@dataclass(frozen=True)
class FeaturizerConfig:
    """Every setting of the gradient featurizer, in one place: the server, the ``featurize`` job and
    Ray actors build their featurizers from it (:meth:`build`), so the same settings give the same rows."""

    proj_dim: int = ProjectionSpec.dim  # the paper's projection dimension d
    projection: str = ProjectionSpec.kind  # sjlt (factored sparse sketch), kron (LoGra) or dense (the reference)
    seed: int = ProjectionSpec.seed  # projection seed: features are reproducible across devices and restarts
    normalize: bool = ProjectionSpec.normalize  # unit-normalise response features (the paper's ablation: it matters)
    batch_size: int = 16
    device: str | None = None  # cuda when present, else cpu
    dtype: str = "float32"  # model weights: float32, bfloat16 or float16
    lora: LoraSpec = field(default_factory=LoraSpec)  # the fresh adapter of a checkpoint without one

    def __post_init__(self) -> None:
        from activedpo_server.projection import PROJECTIONS

        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; choose one of {', '.join(PROJECTIONS)}")
        if self.proj_dim < 1 or self.batch_size < 1:
            raise ValueError(f"proj_dim and batch_size must be positive, got {self.proj_dim} and {self.batch_size}")

    def build(self, checkpoint, device: str | None = None) -> GradientFeaturizer:
        """A featurizer of ``checkpoint`` with these settings (on ``device`` when given); a base-only checkpoint
        that carries its own LoRA spec gets that fresh adapter, else :attr:`lora`."""
        lora = getattr(checkpoint, "lora", None) or self.lora
        return GradientFeaturizer(
            checkpoint, proj_dim=self.proj_dim, seed=self.seed, normalize=self.normalize,
            batch_size=self.batch_size, device=device or self.device, dtype=self.dtype, lora=lora,
            projection=self.projection,
        )  # fmt: skip


@dataclass
class FeaturizerTimings:
    """Seconds spent per stage since the last reset (benchmarks read it)."""

    gradients_s: float = 0.0  # forward, backward and per-example extraction (with a factored projection: all of it)
    extract_s: float = 0.0  # of which: forming each example's gradient, or its factored projection
    projection_s: float = 0.0  # the random projection, block generation included
    responses: int = 0


@dataclass
class _LoraLayer:
    name: str
    lora_A: object  # nn.Linear [r, in]
    lora_B: object  # nn.Linear [out, r]
    offset_A: int  # where A's gradient starts in the flat gradient vector
    offset_B: int
    captured: list = field(default_factory=list)  # per forward call: [x, u, lora_B output]


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


class GradientFeaturizer:
    """Projected, normalised LoRA gradients of ``log π_θ(y|x)``, one row per (prompt, response).

    ``checkpoint`` is a checkpoint directory, manifest or bare base model (see
    :func:`activedpo_core.checkpoint.load_model`), or an already loaded model.
    ``batch_size`` rows go through one forward/backward; gradients are gathered into chunks of
    about ``chunk_bytes`` and projected chunk by chunk, so the projection's matmuls are large.
    Gradients and features are float32 whatever the model's ``dtype``.
    """

    def __init__(
        self,
        checkpoint: str | Path | CheckpointManifest | LoadedModel,
        proj_dim: int = ProjectionSpec.dim,
        seed: int = 0,
        normalize: bool = True,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "float32",
        lora: LoraSpec | None = None,
        chunk_bytes: int = 512 << 20,
        cache_bytes: int | None = None,
        projection: str = ProjectionSpec.kind,
    ):
        import torch

        from activedpo_core.checkpoint import resolve_device

        if proj_dim < 1 or batch_size < 1:
            raise ValueError(f"proj_dim and batch_size must be positive, got {proj_dim} and {batch_size}")
        self.proj_dim, self.seed, self.normalize, self.batch_size = int(proj_dim), int(seed), normalize, batch_size
        self.lora = lora or LoraSpec()
        if isinstance(checkpoint, LoadedModel):  # used where it is
            loaded = checkpoint
            device = str(next(loaded.model.parameters()).device)
        else:
            loaded = load_model(checkpoint, dtype=dtype, device="cpu")  # a fresh adapter is drawn on the CPU
            device = resolve_device(device)
        self.fresh_adapter = loaded.manifest.adapter is None and not hasattr(loaded.model, "peft_config")
        if self.fresh_adapter:
            loaded = LoadedModel(self._attach_adapter(loaded.model), loaded.tokenizer, loaded.manifest)
        self.loaded = loaded
        self.model = loaded.model.to(device)
        self.model.eval()  # dropout off: features are deterministic
        self.device = torch.device(device)
        self.tokenizer = loaded.tokenizer
        self.checkpoint_id = loaded.manifest.id
        self.adapter_name = self.model.active_adapter
        self.layers, self.params = self._find_layers()
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = dtype
        self.chunk_rows = max(batch_size, (chunk_bytes // (4 * self.dim)) // batch_size * batch_size)
        self.projection = make_projection(projection, self.lora_matrices(), self.proj_dim, self.seed, self.device,
                                          cache_bytes)  # fmt: skip
        self.projector = getattr(self.projection, "projector", None)  # the dense kind's block generator (benchmarks)
        self.timings = FeaturizerTimings()

    @property
    def adapter_spec(self) -> LoraSpec:
        """The adapter whose gradients the features are: the fresh one, or the checkpoint's own (from its config)."""
        if self.fresh_adapter:
            return self.lora
        cfg = self.model.peft_config[self.adapter_name]
        t = cfg.target_modules
        targets = t if isinstance(t, str) else ",".join(sorted({name.rsplit(".", 1)[-1] for name in t}))
        return LoraSpec(r=int(cfg.r), alpha=int(cfg.lora_alpha), target_modules=targets)

    @property
    def feature_key(self) -> str:
        """Everything the features depend on; features with different keys never mix."""
        fresh = f"+{self.lora.key()}" if self.fresh_adapter else ""
        return (
            f"{self.checkpoint_id}{fresh}|grad|proj={self.projection.key()}|d={self.proj_dim}|seed={self.seed}"
            f"|norm={int(self.normalize)}|dtype={self.dtype}|fmt={PROJECTION_FORMAT}"
        )

    def lora_matrices(self) -> list[LoraMatrix]:
        """Every LoRA weight in flat-gradient order: layer i's A ([r, in]) is matrix 2i, its B ([out, r]) 2i + 1."""
        out = []
        for layer in self.layers:
            r, n_in = layer.lora_A.weight.shape
            n_out = layer.lora_B.weight.shape[0]
            out += [LoraMatrix(layer.offset_A, r, n_in, 0), LoraMatrix(layer.offset_B, n_out, r, 1)]
        return out

    def _attach_adapter(self, model):
        import torch
        from peft import LoraConfig, get_peft_model

        from activedpo_core.lora import fan_in_fan_out, resolve_targets

        spec = self.lora
        targets = resolve_targets(spec.target_modules, model)
        config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=0.0, target_modules=targets,
                            fan_in_fan_out=fan_in_fan_out(model, targets), task_type="CAUSAL_LM")  # fmt: skip
        device = next(model.parameters()).device
        with torch.random.fork_rng(devices=[]):  # A is drawn on the CPU: the same on every device
            torch.manual_seed(spec.init_seed)
            return get_peft_model(model.to("cpu"), config).to(device)

    def _find_layers(self):
        import torch
        from peft.tuners.lora import LoraLayer

        name = self.adapter_name
        layers: list[_LoraLayer] = []
        params = []
        offset = 0
        for module_name, module in self.model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            wrapped = type(module.get_base_layer()).__name__
            if name in getattr(module, "lora_embedding_A", {}) or (
                name in getattr(module, "lora_A", {}) and not isinstance(module.lora_A[name], torch.nn.Linear)
            ):
                raise FeaturizerError(
                    f"LoRA layer {module_name} wraps a {wrapped}; per-example gradients are implemented for linear "
                    f"layers only (nn.Linear, GPT-2's Conv1D): leave it out of the LoRA target modules"
                )
            if name not in getattr(module, "lora_A", {}):
                continue
            if name in getattr(module, "lora_variant", {}):
                raise FeaturizerError(
                    f"LoRA layer {module_name} uses a LoRA variant (DoRA or similar); only plain LoRA is supported"
                )
            a, b = module.lora_A[name], module.lora_B[name]
            if getattr(b, "bias", None) is not None:
                raise FeaturizerError(f"LoRA layer {module_name} has a bias on B (lora_bias); it is not supported")
            layers.append(_LoraLayer(module_name, a, b, offset, offset + a.weight.numel()))
            offset += a.weight.numel() + b.weight.numel()
            params += [a.weight, b.weight]
        if not layers:
            raise FeaturizerError(f"checkpoint {self.checkpoint_id} has no LoRA layers to take gradients of")
        covered = {id(p) for p in params}
        for pname, p in self.model.named_parameters():
            is_lora = f".{name}." in pname and "lora_" in pname
            if is_lora and id(p) not in covered:
                raise FeaturizerError(f"LoRA parameter {pname} is not a plain linear LoRA weight; cannot featurize it")
            p.requires_grad_(is_lora)
        return layers, params

    # ---- gradients ------------------------------------------------------------------------

    def _batch_gradients(self, prompts: Sequence[str], responses: Sequence[str], out) -> None:
        """Write each example's flat LoRA gradient into the rows of ``out`` (``[b, D]``, float32)."""
        self._per_example(prompts, responses, lambda grads, wants_a: self._extract(grads, wants_a, out))

    def _batch_sketch(self, prompts: Sequence[str], responses: Sequence[str], acc) -> None:
        """Add each example's projected gradient to the rows of ``acc`` (``[b, d]``) from the captured
        factors, never forming the gradient (a factored projection)."""
        self._per_example(prompts, responses, lambda grads, wants_a: self._sketch(grads, wants_a, acc))

    def _per_example(self, prompts: Sequence[str], responses: Sequence[str], use) -> None:
        """One forward/backward over the batch; ``use(grads, wants_a)`` consumes the captured factors."""
        import torch

        ids, att, lab = (t.to(self.device) for t in encode_pairs(self.tokenizer, prompts, responses))
        handles = []
        for layer in self.layers:
            layer.captured = []

            def a_hook(_mod, inputs, _output, layer=layer):
                layer.captured.append([inputs[0]])

            def b_hook(_mod, inputs, output, layer=layer):
                layer.captured[-1] += [inputs[0], output]

            handles += [layer.lora_A.register_forward_hook(a_hook), layer.lora_B.register_forward_hook(b_hook)]
        # with B = 0, ∂L/∂A is exactly zero: ask autograd only for what is needed
        wants_a = [bool(layer.lora_B.weight.any()) for layer in self.layers]
        try:
            logp = token_logprobs(self.model, ids, att, lab)  # [b]
            targets = []  # δ' at every lora_B output; Bᵀδ' at its input (= lora_A's output) where B ≠ 0
            for layer, want in zip(self.layers, wants_a, strict=True):
                for _x, u, y in layer.captured:
                    targets += [y, u] if want else [y]
            grads = torch.autograd.grad(logp.sum(), targets)
        finally:
            for h in handles:
                h.remove()
        _sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            use(grads, wants_a)
        _sync(self.device)
        self.timings.extract_s += time.perf_counter() - t0

    def _sketch(self, grads, wants_a: list[bool], acc) -> None:
        """The factored projection of ``∂L/∂B = Σ_t δ'_t u_tᵀ`` and ``∂L/∂A = Σ_t (Bᵀδ'_t) x_tᵀ``, into ``acc``."""
        k = 0
        for i, (layer, want) in enumerate(zip(self.layers, wants_a, strict=True)):
            for x, u, _y in layer.captured:  # a layer called twice in one forward: both calls add up
                self.projection.add(acc, 2 * i + 1, grads[k], u)  # B: [out, r]
                if want:
                    self.projection.add(acc, 2 * i, grads[k + 1], x)  # A: [r, in]
                k += 2 if want else 1
            layer.captured = []

    def _extract(self, grads, wants_a: list[bool], out) -> None:
        """Per-example ``∂L/∂B = Σ_t δ'_t u_tᵀ`` and ``∂L/∂A = Σ_t (Bᵀδ'_t) x_tᵀ``, written into ``out``."""
        import torch

        b = out.shape[0]
        k = 0
        for layer, want in zip(self.layers, wants_a, strict=True):
            n_a, n_b = layer.lora_A.weight.numel(), layer.lora_B.weight.numel()
            r = layer.lora_A.weight.shape[0]
            dst_a = out[:, layer.offset_A : layer.offset_A + n_a].view(b, r, -1)  # [b, r, in]
            dst_b = out[:, layer.offset_B : layer.offset_B + n_b].view(b, -1, r)  # [b, out, r]
            if not layer.captured:  # a layer this forward never reached has zero gradient
                dst_a.zero_()
                dst_b.zero_()
            elif not want:
                dst_a.zero_()
            for call, (x, u, _y) in enumerate(layer.captured):
                delta = grads[k].float()  # [b, T, out]
                gu = grads[k + 1].float() if want else None  # [b, T, r]
                k += 2 if want else 1
                pairs = [(delta, u, dst_b)] + ([(gu, x, dst_a)] if want else [])
                for g, inp, dst in pairs:
                    grad = torch.bmm(g.transpose(1, 2), inp.float())  # contiguous, then one copy: faster than out=
                    if call == 0:  # the usual case: one call per layer
                        dst.copy_(grad)
                    else:  # a layer called twice in one forward: gradients add up
                        dst += grad
            layer.captured = []

    def per_example_gradients(self, prompts: Sequence[str], responses: Sequence[str]):
        """Unprojected per-example LoRA gradients, batched: a ``[n, D]`` float32 tensor."""
        import torch

        _check_inputs(prompts, responses)
        out = torch.empty((len(prompts), self.dim), dtype=torch.float32, device=self.device)
        for s in range(0, len(prompts), self.batch_size):
            e = min(s + self.batch_size, len(prompts))
            self._batch_gradients(prompts[s:e], responses[s:e], out[s:e])
        return out

    def reference_gradients(self, prompts: Sequence[str], responses: Sequence[str]):
        """The same gradients, one example at a time with plain autograd (slow; for tests and benchmarks)."""
        import torch

        _check_inputs(prompts, responses)
        out = torch.empty((len(prompts), self.dim), dtype=torch.float32, device=self.device)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            ids, att, lab = (t.to(self.device) for t in encode_pairs(self.tokenizer, [p], [r]))
            logp = token_logprobs(self.model, ids, att, lab)
            grads = torch.autograd.grad(logp.sum(), self.params)
            with torch.no_grad():
                out[i] = torch.cat([g.reshape(-1).float() for g in grads])
        return out

    # ---- features -------------------------------------------------------------------------

    def project(self, gradients):
        """Project ``[n, D]`` gradients and normalise each row (when ``normalize``): ``[n, proj_dim]``."""
        return self._normalized(self.projection.project(gradients))

    def _normalized(self, feats):
        if self.normalize:
            norms = feats.norm(dim=1, keepdim=True)
            feats = feats / norms.clamp_min(1e-30)
        return feats

    def featurize(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        progress: StageProgress | None = None,
        reference: bool = False,
    ) -> np.ndarray:
        """Features of each (prompt, response): ``[n, proj_dim]`` float32, computed under :attr:`checkpoint_id`.

        ``reference`` computes the gradients one example at a time instead (slow; benchmarks).
        """
        import torch

        _check_inputs(prompts, responses)
        n = len(prompts)
        result = np.empty((n, self.proj_dim), dtype=np.float32)
        if n == 0:
            return result
        if self.projection.factored and not reference:  # batch by batch, from the factors: no [n, D] buffer
            if progress:
                progress("featurize", 0, n)
            for s in range(0, n, self.batch_size):
                e = min(s + self.batch_size, n)
                _sync(self.device)
                t0 = time.perf_counter()
                acc = self.projection.new(e - s)
                self._batch_sketch(prompts[s:e], responses[s:e], acc)
                result[s:e] = self._normalized(acc).cpu().numpy()
                _sync(self.device)
                self.timings.gradients_s += time.perf_counter() - t0
                self.timings.responses += e - s
                if progress:
                    progress("featurize", e, n)
            return result
        # the dense reference, on full gradients in equal chunks: every chunk regenerates the blocks of S
        # that are not cached, so no small tail chunk
        n_chunks = -(-n // self.chunk_rows)
        rows = -(-n // n_chunks)
        grads = torch.empty((rows, self.dim), dtype=torch.float32, device=self.device)
        if progress:
            progress("featurize", 0, n)
        for start in range(0, n, rows):
            end = min(start + rows, n)
            _sync(self.device)
            t0 = time.perf_counter()
            for s in range(start, end, self.batch_size):
                e = min(s + self.batch_size, end)
                if reference:
                    grads[s - start : e - start] = self.reference_gradients(prompts[s:e], responses[s:e])
                else:
                    self._batch_gradients(prompts[s:e], responses[s:e], grads[s - start : e - start])
            _sync(self.device)
            t1 = time.perf_counter()
            feats = self.project(grads[: end - start])
            result[start:end] = feats.cpu().numpy()
            t2 = time.perf_counter()
            self.timings.gradients_s += t1 - t0
            self.timings.projection_s += t2 - t1
            self.timings.responses += end - start
            if progress:
                progress("featurize", end, n)
        return result

    def logprobs(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(log π_θ(y|x), log π_ref(y|x))`` per pair; π_ref is the base with the adapter disabled."""
        import torch

        _check_inputs(prompts, responses)
        with torch.no_grad():
            policy = sequence_logprobs(self.model, self.tokenizer, prompts, responses, batch_size=4 * self.batch_size)
            with self.model.disable_adapter():
                ref = sequence_logprobs(self.model, self.tokenizer, prompts, responses, batch_size=4 * self.batch_size)
        return policy, ref


class EmbeddingFeaturizer:
    """APO's policy-independent feature (Das et al. 2024): the mean-pooled last hidden state of
    π_ref over the prompt and response tokens, unit-normalised. Ignores any adapter."""

    def __init__(
        self,
        checkpoint: str | Path | CheckpointManifest,
        batch_size: int = 64,
        device: str | None = None,
        dtype: str = "float32",
        normalize: bool = True,
    ):

        manifest = resolve_checkpoint(checkpoint)
        reference = CheckpointManifest(f"ref:{manifest.base}", manifest.base, None, None, "")
        self.loaded = load_model(reference, dtype=dtype, device=device)
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.device = next(self.model.parameters()).device
        self.batch_size, self.normalize = batch_size, normalize
        self.checkpoint_id = reference.id
        self.dim = int(self.model.config.hidden_size)

    @property
    def feature_key(self) -> str:
        return f"{self.checkpoint_id}|embed|norm={int(self.normalize)}"

    def featurize(
        self, prompts: Sequence[str], responses: Sequence[str], progress: StageProgress | None = None
    ) -> np.ndarray:
        import torch

        _check_inputs(prompts, responses)
        n = len(prompts)
        result = np.empty((n, self.dim), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, n, self.batch_size):
                e = min(s + self.batch_size, n)
                ids, att, _ = (t.to(self.device) for t in encode_pairs(self.tokenizer, prompts[s:e], responses[s:e]))
                hidden = self.model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states[-1]
                mask = att.unsqueeze(-1).float()  # [b, T, 1]
                pooled = (hidden.float() * mask).sum(1) / mask.sum(1)  # [b, hidden]
                if self.normalize:
                    pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-30)
                result[s:e] = pooled.cpu().numpy()
                if progress:
                    progress("embed", e, n)
        return result


def _check_inputs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")


def pair_features(response_features: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``φ = f(y1) − f(y2)`` for each row ``(i, j)`` of ``pairs`` (indices into ``response_features``)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return response_features[pairs[:, 0]] - response_features[pairs[:, 1]]
