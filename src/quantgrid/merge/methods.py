"""Merging LoRA adapters: pure tensor math on their factors.

An adapter is a mapping ``{module_name: LoraFactors(A, B, scaling)}`` with PEFT's
shapes: ``A`` is ``[r, d_in]``, ``B`` is ``[d_out, r]`` and the module's update is
``delta_W = scaling * B @ A`` (``[d_out, d_in]``). Merging N adapters with weights
``w_i`` targets ``delta_W = sum_i w_i * s_i * B_i @ A_i`` per module.

Methods (``METHODS``, a registry; ``merge(..., method=NAME)``):

- ``svd`` (default, exact in factor space): concatenate the factors, decompose the small
  ``R x R`` core (``R = sum r_i``; Gram matrices and a float64 eigendecomposition, or a QR of
  each side and an SVD, see ``svd_route``) and keep the top ``rank`` directions. No dense
  ``d_out x d_in`` matrix is formed while R is below the width;
  the relative Frobenius truncation error comes exactly from the core's singular
  values. This is the best rank-``rank`` approximation (Eckart-Young), so it equals
  PEFT's ``add_weighted_adapter(combination_type="svd")`` at a fraction of the cost.
- ``cat``: stack the factors, rank ``sum r_i``; exact, no truncation.
- ``ties``, ``dare_linear``, ``dare_ties``: TIES / DARE applied to each module's
  dense delta-W (they are element-wise, so they need it), then an SVD back to ``rank``.
- ``median``, ``trimmed_mean``: coordinate-wise robust aggregators on delta-W; one
  poisoned contributor (say, scaled x100) barely moves them. Then SVD to ``rank``.
  ``trimmed_mean`` drops ``floor(trim * N)`` values at each end of every coordinate, and
  at least one at each end once N >= 5 (``trim_count``).

Weights: ``None`` means equal weights summing to 1 (the release is the average
update). ``impact_weights`` turns *measured* impacts (hub-side loss improvements or
leave-one-out impacts) into weights. Self-reported sample counts are never an input:
any contributor could inflate them.

Every output module has the same rank (zero-padded if the data has less), so the
result is a plain PEFT adapter with ``r = rank`` and ``lora_alpha = rank``
(scaling 1), like PEFT's own merged adapters.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from quantgrid.errors import ConfigError, ModelError
from quantgrid.lora_files import LoraFactors

# ------------------------------------------------------------------ data types


Adapter = Mapping[str, LoraFactors]


def as_factors(adapter: Mapping[str, Any]) -> dict[str, LoraFactors]:
    """Accept ``{module: LoraFactors}`` or ``{module: (A, B, scaling)}``."""
    out = {}
    for name, f in adapter.items():
        out[name] = f if isinstance(f, LoraFactors) else LoraFactors(f[0], f[1], float(f[2]))
    return out


@dataclass
class MergeResult:
    """The merged adapter, the rank it was cut to, and per-module truncation errors.

    ``errors[module]`` is ``||delta - delta_r||_F / ||delta||_F`` where ``delta`` is the
    method's full-rank merged update (0.0 when nothing was cut, e.g. ``cat``).
    """

    factors: dict[str, LoraFactors]
    rank: int
    method: str
    weights: list[float]
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def mean_error(self) -> float:
        return sum(self.errors.values()) / len(self.errors) if self.errors else 0.0


# ------------------------------------------------------------------ PEFT state dicts


def factors_from_state_dict(state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, LoraFactors]:
    """PEFT ``adapter_model.safetensors`` tensors + ``adapter_config.json`` -> factors.

    The reading policy of :mod:`quantgrid.lora_files` (module names without PEFT's
    prefix, float32, both factors of the config's rank); the scaling follows PEFT:
    ``lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), honouring ``rank_pattern`` / ``alpha_pattern``.
    """
    from quantgrid.lora_files import factors_from_state_dict as parse

    return parse(state, config)


def state_dict_from_factors(factors: Adapter, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Factors -> PEFT tensor names. The scaling is *not* stored here: fold it into the
    config (``merge`` outputs scaling 1, i.e. ``lora_alpha = r``)."""
    out = {}
    for module, f in factors.items():
        out[f"{module}.lora_A.weight"] = f.A.to(dtype).contiguous()
        out[f"{module}.lora_B.weight"] = f.B.to(dtype).contiguous()
    return out


# ------------------------------------------------------------------ similarity (no dense d x d)


def _inner(a: LoraFactors, b: LoraFactors) -> torch.Tensor:
    # <s_a B_a A_a, s_b B_b A_b>_F = s_a s_b tr(A_a^T B_a^T B_b A_b)
    #                              = s_a s_b sum((B_a^T B_b) * (A_a A_b^T))   -- two r x r products
    a_A, a_B, b_A, b_B = (t.to(torch.float64) for t in (a.A, a.B, b.A, b.B))
    return a.scaling * b.scaling * ((a_B.T @ b_B) * (a_A @ b_A.T)).sum()


def delta_inner(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Frobenius inner product of two adapters' delta-W, summed over shared modules."""
    fa, fb = as_factors(a), as_factors(b)
    return float(sum((_inner(fa[m], fb[m]) for m in fa.keys() & fb.keys()), torch.tensor(0.0, dtype=torch.float64)))


def delta_norm(a: Mapping[str, Any]) -> float:
    """Frobenius norm of an adapter's whole delta-W (all modules), from r x r products."""
    fa = as_factors(a)
    return math.sqrt(max(0.0, float(sum((_inner(f, f) for f in fa.values()), torch.tensor(0.0, dtype=torch.float64)))))


def delta_cosine(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Cosine similarity of two adapters' delta-W over all their modules, in factor space.

    Inputs are ``{module: LoraFactors}`` or ``{module: (A, B, scaling)}``. Cost is
    O(r^2 (d_in + d_out)) per module; no dense matrix. Modules only one adapter has
    count in its norm (they lower the similarity). Returns 0.0 if either update is zero.
    """
    na, nb = delta_norm(a), delta_norm(b)
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(-1.0, min(1.0, delta_inner(a, b) / (na * nb)))


def subspace_error(merged: Mapping[str, Any], adapter: Mapping[str, Any]) -> float:
    """Share of ``adapter``'s delta-W that ``merged`` cannot represent, over all modules:
    ``||dW - P_U dW P_V||_F / ||dW||_F`` with ``P_U``, ``P_V`` the projections on the merged
    update's column and row spaces. 0 when the merge keeps every direction of the adapter
    (one adapter, ``cat``, full rank); near 1 when truncation dropped it. Factor space only.
    """
    fm, fa = as_factors(merged), as_factors(adapter)
    lost = total = 0.0
    for m, f in fa.items():
        norm2 = float(_inner(f, f))
        total += norm2
        if m not in fm:
            lost += norm2
            continue
        qu, _ = torch.linalg.qr(fm[m].B.to(torch.float64))  # [d_out, r] basis of the column space
        qv, _ = torch.linalg.qr(fm[m].A.to(torch.float64).T)  # [d_in, r] basis of the row space
        core = f.scaling * (qu.T @ f.B.to(torch.float64)) @ (f.A.to(torch.float64) @ qv)  # [r, r]
        lost += max(0.0, norm2 - float((core ** 2).sum()))
    return math.sqrt(lost / total) if total > 0 else 0.0


# ------------------------------------------------------------------ weights


def equal_weights(n: int) -> list[float]:
    return [1.0 / n] * n


def impact_weights(impacts: Sequence[float], floor: float = 0.0) -> list[float]:
    """Weights proportional to *measured* impact (loss improvement in nats/token on the
    hub's hidden benchmark, or leave-one-out impact), clipped at ``floor`` and
    normalized to sum 1. If no adapter has positive impact, equal weights."""
    clipped = [max(float(x), floor) for x in impacts]
    total = sum(clipped)
    if not impacts:
        return []
    if total <= 0 or not all(math.isfinite(x) for x in clipped):
        return equal_weights(len(impacts))
    return [x / total for x in clipped]


# ------------------------------------------------------------------ registry


ModuleMerge = Callable[[list[LoraFactors], list[float], int, dict], tuple[LoraFactors, float]]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: ModuleMerge
    help: str
    dense: bool  # builds each module's dense delta-W (memory N * d_out * d_in)
    exact: bool  # no approximation besides the final rank cut


METHODS: dict[str, MergeMethod] = {}


def register_method(name: str, help: str, *, dense: bool, exact: bool) -> Callable[[ModuleMerge], ModuleMerge]:
    def deco(fn: ModuleMerge) -> ModuleMerge:
        METHODS[name] = MergeMethod(name, fn, help, dense, exact)
        return fn

    return deco


def _pad(A: torch.Tensor, B: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad factors to ``rank`` so every module of a release has the same r."""
    k = A.shape[0]
    if k >= rank:
        return A[:rank], B[:, :rank]
    return (torch.cat([A, A.new_zeros(rank - k, A.shape[1])], 0),
            torch.cat([B, B.new_zeros(B.shape[0], rank - k)], 1))


def _from_svd(U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor, rank: int) -> tuple[LoraFactors, float]:
    """Keep the top ``rank`` triplets; split sqrt(S) over both sides so A and B have
    similar magnitudes (kinder to fp16 serving). Error from the dropped singular values."""
    total = float((S.double() ** 2).sum())
    kept = S[:rank]
    err = math.sqrt(max(0.0, 1.0 - float((kept.double() ** 2).sum()) / total)) if total > 0 else 0.0
    root = kept.clamp_min(0).sqrt()
    B = U[:, :rank] * root  # [d_out, k]
    A = root[:, None] * Vh[:rank]  # [k, d_in]
    A, B = _pad(A, B, rank)
    return LoraFactors(A.float().contiguous(), B.float().contiguous(), 1.0), err


def svd_route(combined_rank: int, d_out: int, d_in: int) -> str:
    """How ``svd`` decomposes a module's update, chosen by cost (every route is exact).

    ``gram``: the R x R Gram matrices of the two sides, a Cholesky factor of one and an
    eigendecomposition in float64 (4 d R^2 flops in matrix products, no QR). It needs
    linearly independent rows of the stacked A (R <= d_in, no duplicated adapter); when the
    Cholesky factorization finds they are not, ``qr`` runs instead: a QR of each side and an
    SVD of the small core. ``dense`` (form delta-W, SVD it) once R reaches the width, where the
    core is no smaller than delta-W itself.
    """
    return "dense" if combined_rank >= min(d_out, d_in) else "gram"


def _gram_core(Bc: torch.Tensor, Ac: torch.Tensor, rank: int) -> tuple[LoraFactors, float] | None:
    """Top-``rank`` factors of ``Bc @ Ac`` from Gram matrices; None when Ac's rows are dependent.

    With GA = Ac Ac^T = L L^T, Ac = L Q for Q with orthonormal rows, so delta = (Bc L) Q and
    (Bc L)^T (Bc L) = L^T GB L = W diag(lambda) W^T: the singular values are sqrt(lambda), the
    kept left factor is Bc L W_k and the right one W_k^T L^-1 Ac (orthonormal rows).
    """
    GA = (Ac @ Ac.T).double()
    L, info = torch.linalg.cholesky_ex(GA)
    if int(info) != 0:
        return None
    GB = (Bc.T @ Bc).double()
    lam, W = torch.linalg.eigh(L.T @ GB @ L)  # ascending
    lam, W = lam.flip(0).clamp_min(0), W.flip(1)
    k = min(rank, lam.shape[0])
    Wk = W[:, :k]
    S = lam.sqrt()
    left = Bc.double() @ (L @ Wk)  # [d_out, k], column norms S[:k]
    right = torch.linalg.solve_triangular(L.T, Wk, upper=True).T @ Ac.double()  # [k, d_in]
    inv = torch.where(S[:k] > 0, 1.0 / S[:k], torch.zeros_like(S[:k]))
    return _from_svd(left * inv, S, right, rank)  # U = left / S, Vh = right


@register_method("svd", "exact factor-space merge: the small R x R core of the stacked factors, cut to --rank",
                 dense=False, exact=True)
def _svd(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    dtype = opts.get("dtype", torch.float32)
    # delta = sum_i w_i s_i B_i A_i = Bc @ Ac with Bc [d_out, R], Ac [R, d_in], R = sum r_i
    Bc = torch.cat([f.B.to(dtype) * (w * f.scaling) for f, w in zip(fs, ws, strict=True)], 1)
    Ac = torch.cat([f.A.to(dtype) for f in fs], 0)
    route = svd_route(Ac.shape[0], Bc.shape[0], Ac.shape[1])
    if route == "dense":
        return _dense_to_factors(Bc @ Ac, rank)
    out = _gram_core(Bc, Ac, rank)
    if out is not None:
        return out
    Qb, Rb = torch.linalg.qr(Bc)  # Qb [d_out, k1], Rb [k1, R]
    Qa, Ra = torch.linalg.qr(Ac.T)  # Qa [d_in, k2], Ra [k2, R]
    core = Rb @ Ra.T  # [k1, k2], k <= R: the only matrix we decompose
    U, S, Vh = torch.linalg.svd(core, full_matrices=False)
    # delta = (Qb U) S (Qa Vh^T)^T; only the kept columns are rotated back
    k = min(rank, S.shape[0])
    return _from_svd(Qb @ U[:, :k], S, Vh[:k] @ Qa.T, rank)


@register_method("cat", "exact: stack the factors, rank = sum of input ranks (no truncation)", dense=False, exact=True)
def _cat(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    B = torch.cat([f.B.float() * (w * f.scaling) for f, w in zip(fs, ws, strict=True)], 1)
    A = torch.cat([f.A.float() for f in fs], 0)
    if A.shape[0] > rank:
        raise ConfigError(f"cat keeps every input direction and needs rank >= {A.shape[0]}, got {rank}",
                          hint="leave --rank unset for cat, or use the svd method to cut the rank")
    A, B = _pad(A, B, rank)
    return LoraFactors(A.contiguous(), B.contiguous(), 1.0), 0.0


def _dense_to_factors(delta: torch.Tensor, rank: int) -> tuple[LoraFactors, float]:
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    return _from_svd(U, S, Vh, rank)


def _stack(fs: list[LoraFactors]) -> torch.Tensor:
    return torch.stack([f.delta() for f in fs])  # [N, d_out, d_in]


def _magnitude_prune(t: torch.Tensor, density: float) -> torch.Tensor:
    if density >= 1.0:
        return t
    k = max(1, int(density * t.numel()))
    thresh = t.abs().flatten().kthvalue(t.numel() - k + 1).values
    return t * (t.abs() >= thresh)


def _dare_masks(fs: list[LoraFactors], density: float, seed: int, module: str) -> torch.Tensor:
    """Random keep-masks rescaled by 1/density. Each adapter's generator is seeded from
    its own content, so the merge does not depend on the order of the inputs."""
    out = []
    for f in fs:
        digest = hashlib.sha256(f"{seed}:{module}:{float(f.A.double().sum())}:{float(f.B.double().sum())}".encode())
        gen = torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little") & ((1 << 63) - 1))
        keep = torch.rand(f.shape, generator=gen) < density
        out.append(keep.float() / density)
    return torch.stack(out)


def _disjoint_mean(stack: torch.Tensor, ws: list[float]) -> torch.Tensor:
    """TIES sign election + weighted mean of the entries that agree with the elected sign.

    The result is scaled by ``sum(w)``; with weights summing to 1 it is the plain
    disjoint mean of TIES (lambda = 1). PEFT instead multiplies the raw weights in,
    which shrinks the merge by 1/N under averaging weights.
    """
    w = torch.tensor(ws, dtype=stack.dtype).view(-1, 1, 1)
    elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (stack.sign() == elected) & (stack != 0)
    num = (stack * w * agree).sum(0)
    den = (w * agree).sum(0)
    return sum(ws) * num / torch.where(den == 0, torch.ones_like(den), den)


@register_method("ties", "TIES on delta-W: keep the top --density by magnitude, elect signs, disjoint mean",
                 dense=True, exact=False)
def _ties(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    density = opts.get("density", 0.2)
    stack = torch.stack([_magnitude_prune(f.delta(), density) for f in fs])
    return _dense_to_factors(_disjoint_mean(stack, ws), rank)


@register_method("dare_linear", "DARE on delta-W: drop entries at random (keep --density, rescale), weighted sum",
                 dense=True, exact=False)
def _dare_linear(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    density, stack = opts.get("density", 0.5), _stack(fs)
    if density < 1.0:
        stack = stack * _dare_masks(fs, density, opts.get("seed", 0), opts["module"])
    w = torch.tensor(ws, dtype=stack.dtype).view(-1, 1, 1)
    return _dense_to_factors((stack * w).sum(0), rank)


@register_method("dare_ties", "DARE random drop on delta-W, then TIES sign election and disjoint mean",
                 dense=True, exact=False)
def _dare_ties(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    density, stack = opts.get("density", 0.5), _stack(fs)
    if density < 1.0:
        stack = stack * _dare_masks(fs, density, opts.get("seed", 0), opts["module"])
    return _dense_to_factors(_disjoint_mean(stack, ws), rank)


def _require_equal(ws: list[float], name: str) -> float:
    if max(ws) - min(ws) > 1e-9 * max(1.0, abs(max(ws))):
        raise ConfigError(f"the {name} aggregator treats contributors equally and takes no per-adapter weights",
                          hint="use equal weights (the default) with median / trimmed_mean")
    return sum(ws)


@register_method("median", "robust: coordinate-wise median of delta-W (resists poisoned contributors)",
                 dense=True, exact=False)
def _median(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    scale = _require_equal(ws, "median")
    stack = _stack(fs)
    # torch.median picks the lower middle for even N; the true median averages both.
    lo = stack.kthvalue((len(fs) + 1) // 2, dim=0).values
    hi = stack.kthvalue(len(fs) // 2 + 1, dim=0).values
    return _dense_to_factors(scale * (lo + hi) / 2, rank)


def trim_count(n: int, trim: float = 0.1) -> int:
    """How many values ``trimmed_mean`` drops at each end of ``n``: ``floor(trim * n)``, but
    at least 1 once ``n >= 5`` (so a small hub still sheds its most extreme contributor on
    each side, whatever ``trim``), and never so many that nothing is left."""
    k = int(math.floor(trim * n))
    if n >= 5:
        k = max(k, 1)
    return max(0, min(k, (n - 1) // 2))


@register_method("trimmed_mean", "robust: per coordinate drop the --trim fraction at each end (at least one "
                                 "value each side from 5 adapters on), average the rest",
                 dense=True, exact=False)
def _trimmed_mean(fs: list[LoraFactors], ws: list[float], rank: int, opts: dict) -> tuple[LoraFactors, float]:
    scale = _require_equal(ws, "trimmed_mean")
    n = len(fs)
    k = trim_count(n, opts.get("trim", 0.1))
    stack = _stack(fs).sort(dim=0).values
    return _dense_to_factors(scale * stack[k:n - k].mean(0), rank)


# ------------------------------------------------------------------ entry point


def merge(
    adapters: Sequence[Mapping[str, Any]],
    weights: Sequence[float] | None = None,
    *,
    method: str = "svd",
    rank: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> MergeResult:
    """Merge N adapters module by module with a registered ``method``.

    ``rank`` defaults to the largest input rank (``sum`` of ranks for ``cat``).
    Options: ``density`` (ties/dare), ``trim`` (trimmed_mean), ``seed`` (dare),
    ``dtype`` (svd's working precision, float32 by default). A module missing from
    an adapter counts as a zero update for it. ``progress(done, total)`` is called per module.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown merge method {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    if not adapters:
        raise ConfigError("nothing to merge: no adapters given", hint="accept at least one adapter first")
    fas = [as_factors(a) for a in adapters]
    ws = [float(w) for w in (equal_weights(len(fas)) if weights is None else weights)]
    if len(ws) != len(fas):
        raise ConfigError(f"{len(ws)} weights for {len(fas)} adapters", hint="give one weight per adapter")
    if not all(math.isfinite(w) for w in ws):
        raise ConfigError(f"merge weights must be finite numbers, got {ws}")
    for key in ("density", "trim"):
        if key in options and not 0.0 <= float(options[key]) <= (1.0 if key == "density" else 0.5):
            raise ConfigError(f"{key}={options[key]} is out of range",
                              hint="density is in (0, 1]; trim is in [0, 0.5)")
    if options.get("density", 1.0) <= 0:
        raise ConfigError("density must be > 0", hint="density is the fraction of entries kept, e.g. 0.5")
    modules = sorted(set().union(*(f.keys() for f in fas)))
    if method == "cat" and rank is None:
        rank = max(sum(f[m].rank for f in fas if m in f) for m in modules)
    rank = rank or max(f.rank for fa in fas for f in fa.values())
    if rank < 1:
        raise ConfigError(f"rank must be >= 1, got {rank}")

    out, errors = {}, {}
    fn = METHODS[method].fn
    for i, module in enumerate(modules):
        present = [(fa[module], w) for fa, w in zip(fas, ws, strict=True) if module in fa]
        shapes = {f.shape for f, _ in present}
        if len(shapes) != 1:
            raise ModelError(f"module {module!r} has different shapes across adapters: {sorted(shapes)}",
                             hint="all adapters must be trained on the same base model")
        fs = [f for f, _ in present]
        # Absent adapters contribute zero to sums; robust methods must still count them.
        if METHODS[method].dense and len(fs) < len(fas):
            d_out, d_in = fs[0].shape
            zero = LoraFactors(torch.zeros(1, d_in), torch.zeros(d_out, 1), 1.0)
            fs, mws = fs + [zero] * (len(fas) - len(fs)), [w for _, w in present] + [
                w for fa, w in zip(fas, ws, strict=True) if module not in fa]
        else:
            mws = [w for _, w in present]
        out[module], errors[module] = fn(fs, mws, rank, {**options, "module": module})
        if progress is not None:
            progress(i + 1, len(modules))
    return MergeResult(factors=out, rank=rank, method=method, weights=ws, errors=errors)


def relative_error(merged: Adapter, reference: Adapter | Mapping[str, torch.Tensor]) -> float:
    """``||merged - ref||_F / ||ref||_F`` over all modules; ``reference`` may be factors
    or dense tensors (for tests and benchmarks; forms dense matrices)."""
    num = den = 0.0
    for m, ref in reference.items():
        r = ref.delta(torch.float64) if isinstance(ref, LoraFactors) else ref.to(torch.float64)
        got = merged[m].delta(torch.float64) if m in merged else torch.zeros_like(r)
        num += float(((got - r) ** 2).sum())
        den += float((r ** 2).sum())
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def projected_cosine(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """Cosine of ``a``'s delta-W with ``b``'s delta-W projected onto ``a``'s own column and
    row spaces: 1.0 when ``a`` is a projection (a rank cut, a truncated SVD) of ``b``, however
    little of ``b``'s energy it keeps. Factor space only (r x r cores)."""
    fa, fb = as_factors(a), as_factors(b)
    inner = proj2 = 0.0
    for m, f in fa.items():
        if m not in fb:
            continue
        g = fb[m]
        qu, _ = torch.linalg.qr(f.B.to(torch.float64))  # a's column space
        qv, _ = torch.linalg.qr(f.A.to(torch.float64).T)  # a's row space
        core_b = g.scaling * (qu.T @ g.B.to(torch.float64)) @ (g.A.to(torch.float64) @ qv)  # [r, r]
        core_a = f.scaling * (qu.T @ f.B.to(torch.float64)) @ (f.A.to(torch.float64) @ qv)
        inner += float((core_a * core_b).sum())
        proj2 += float((core_b ** 2).sum())
    na = delta_norm(fa)
    if na == 0.0 or proj2 <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, inner / (na * math.sqrt(proj2))))


def energy_rank(result: MergeResult, energy: float = 0.99, cap: int | None = None) -> MergeResult:
    """Cut a merge to the smallest rank that keeps ``energy`` of every module's update.

    Every method returns each module as ``B = U sqrt(S)``, ``A = sqrt(S) V^T`` with the
    singular values in descending order, so the singular values are the products of the
    column and row norms and the cut is a slice. One rank for all modules (the largest any
    module needs, at most ``cap``), so the result stays a plain PEFT adapter with one ``r``.
    """
    if result.method == "cat":
        raise ConfigError("energy_rank needs a merge in SVD form; cat stacks the factors",
                          hint="use the svd method with rank = the sum of the input ranks (exact) instead")
    if not 0 < energy <= 1:
        raise ConfigError(f"energy must be in (0, 1], got {energy}", hint="e.g. 0.99 keeps 99% of the update")
    need = 1
    spectra = {}
    for m, f in result.factors.items():
        s2 = (f.B.double().norm(dim=0) * f.A.double().norm(dim=1)) ** 2  # squared singular values
        spectra[m] = s2
        total = float(s2.sum())
        if total > 0:
            cum = torch.cumsum(s2, 0) / total
            need = max(need, int((cum < energy - 1e-12).sum()) + 1)
    rank = min(need, cap or result.rank, result.rank)
    out, errors = {}, {}
    for m, f in result.factors.items():
        s2 = spectra[m]
        total = float(s2.sum())
        kept = float(s2[:rank].sum())
        prior = result.errors.get(m, 0.0) ** 2  # what the merge itself had already cut
        errors[m] = math.sqrt(max(0.0, prior + (1 - prior) * (1 - kept / total))) if total > 0 else 0.0
        out[m] = LoraFactors(f.A[:rank].contiguous(), f.B[:, :rank].contiguous(), f.scaling)
    return MergeResult(factors=out, rank=rank, method=result.method, weights=result.weights, errors=errors)
