"""Stability diagnostics: what the papers measure, on our models (``fairseq-admin-diagnose``, ``--log-stability N``).

Three measurements, each one small function:

* :func:`gradient_norms` — Xiong et al. 2020 (Theorem 1): the gradient, at initialization, of each sublayer's weight
  matrices per layer, and of the last FFN weight (``fc2`` of the last decoder layer), whose norm is
  O(d·sqrt(ln d)) for Post-LN independently of the depth L and O(d·sqrt(ln d / L)) for Pre-LN.
* :func:`output_change` — Liu et al. 2020 (§4, "amplification effect"): |F(x; W) − F(x; W + δ)| for a small random
  parameter perturbation δ, which grows like O(N) with depth for Post-LN and O(log N) for Admin.
* :func:`residual_dependency` — Liu et al. 2020 (§4.1, "dependency on the residual branch"): per sublayer,
  β_i = Var(f_i) / (Var(s_i) + Var(f_i)), f_i the branch as the sum holds it (``ResidualScheme.branch_term``), s_i
  the shortcut term of the sum (x_i·ω_i for Admin). Post-LN depends
  on its branch in every layer; Admin's ω make the share fall like 1/i, as in Pre-LN.

The residual sums are observed by wrapping each layer's ``ResidualScheme.combine`` (:func:`record_residuals`), so
the diagnostics work with every scheme in ``fairseq_admin.schemes.SCHEMES``; a scheme whose join scales or normalizes
the branch says so through its ``branch_term`` (ReZero, Peri-LN).
"""
import contextlib
import math
from typing import Dict, List, Optional

import torch
from torch import Tensor

from fairseq_admin.profiling import unwrap_model

STACKS = ("encoder", "decoder")
#: one fixed colour per scheme in every plot (fairseq-admin-diagnose, benchmarks/depth_grid.py), never by position
SCHEME_COLORS = {"postln": "tab:blue", "preln": "tab:orange", "admin": "tab:green", "b2t": "tab:red",
                 "deepnorm": "tab:purple", "vanilla": "tab:gray"}


def scheme_color(scheme: str) -> str:
    """The plot colour of ``scheme`` (:data:`SCHEME_COLORS`; black for a scheme not listed there)."""
    return SCHEME_COLORS.get(scheme, "black")
#: which modules of fairseq's layer make each residual sublayer's branch f_i (weights = their >= 2-D parameters)
SUBLAYER_MODULES = {"self_attn": ("self_attn",), "cross_attn": ("encoder_attn",), "ffn": ("fc1", "fc2")}


def _layers(model, stack: str):
    model = unwrap_model(model)
    return list((model.encoder if stack == "encoder" else model.decoder).layers)


def _variance(x: Tensor, mask: Optional[Tensor]) -> float:
    """Population variance of all entries of ``x`` (real tokens only when ``mask`` is given), one scalar, float64."""
    x = x.detach().to(torch.float64)
    if mask is not None:
        x = x[mask]
    return float(x.var(unbiased=False)) if x.numel() else float("nan")


# ---- the loss ----------------------------------------------------------------------------------------------------------
def token_loss(model, sample, label_smoothing: float = 0.1) -> Tensor:
    """Label-smoothed cross-entropy (fairseq's ``label_smoothed_cross_entropy``; plain CE with 0) on ``sample``,
    averaged over its real target tokens: the loss whose gradient fairseq's trainer applies (sum / ntokens)."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    model = unwrap_model(model)
    net_output = model(**sample["net_input"])
    lprobs = model.get_normalized_probs(net_output, log_probs=True)
    target = sample["target"]
    pad = model.decoder.dictionary.pad()
    loss, _ = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target.reshape(-1), label_smoothing,
                                      ignore_index=pad, reduce=True)
    return loss / target.ne(pad).sum()


# ---- (a) gradient norms -----------------------------------------------------------------------------------------------
def sublayer_weights(layer, sublayer: str) -> List[Tensor]:
    """The weight matrices (parameters with >= 2 dims: no biases, no LayerNorms) of one sublayer's branch."""
    weights = []
    for name in SUBLAYER_MODULES.get(sublayer, ()):
        module = getattr(layer, name, None)
        if module is not None:
            weights += [p for p in module.parameters() if p.dim() >= 2]
    return weights


def weight_gradient_norms(model, scale: float = 1.0) -> Dict:
    """Frobenius norms of the gradients already in ``.grad``, divided by ``scale``.

    Returns ``{"encoder": [[norm per sublayer] per layer], "decoder": [...], "sublayers": {stack: names},
    "last_ffn": ||dL/dW|| of fc2 of the last decoder layer}``; a sublayer's norm is that of all its weight matrices
    together (sqrt of the sum of squares), None where no gradient reached it."""
    out = {"sublayers": {}}
    for stack in STACKS:
        layers = _layers(model, stack)
        names = layers[0].residual.sublayers if layers else ()
        out["sublayers"][stack] = list(names)
        out[stack] = [[_grad_norm(sublayer_weights(layer, s), scale) for s in names] for layer in layers]
    decoder = _layers(model, "decoder")
    out["last_ffn"] = _grad_norm([decoder[-1].fc2.weight], scale) if decoder else None
    return out


def _grad_norm(params, scale: float) -> Optional[float]:
    grads = [p.grad.detach().to(torch.float64) for p in params if p.grad is not None]
    if not grads:
        return None
    return math.sqrt(sum(float((g * g).sum()) for g in grads)) / scale


def gradient_norms(model, sample, label_smoothing: float = 0.1) -> Dict:
    """(a) Xiong et al. 2020, Theorem 1: ||∂L/∂W|| of every sublayer's weights per layer and of the last FFN weight
    (``fc2`` of the last decoder layer), for the token-averaged label-smoothed CE of one batch (:func:`token_loss`),
    in the model's current mode (the CLI uses eval mode: no dropout, as in the theorem). Existing ``.grad`` are
    cleared before and after. See :func:`weight_gradient_norms` for the returned layout."""
    model = unwrap_model(model)
    model.zero_grad(set_to_none=True)
    token_loss(model, sample, label_smoothing).backward()
    try:
        return weight_gradient_norms(model)
    finally:
        model.zero_grad(set_to_none=True)


# ---- (b) output change under parameter perturbation -------------------------------------------------------------------
def perturbed_parameters(model) -> List[Tensor]:
    """What δ perturbs: every weight matrix (>= 2 dims) of the encoder and decoder layers (attention projections,
    fc1, fc2). Embeddings, biases, LayerNorms and the schemes' own parameters (Admin's ω) are left alone."""
    params = []
    for stack in STACKS:
        for layer in _layers(model, stack):
            params += [p for name, p in layer.named_parameters() if p.dim() >= 2 and not name.startswith("residual.")]
    return params


def decoder_features(model, sample) -> Tensor:
    """F(x; W): the decoder's last hidden states (after Pre-LN's final LayerNorm, before the output projection)."""
    features, _ = unwrap_model(model)(**sample["net_input"], features_only=True)
    return features


@torch.no_grad()
def output_change(model, sample, relative_scale: float = 0.01, draws: int = 3, seed: int = 0) -> Dict:
    """(b) Liu et al. 2020's amplification effect: how much the output moves under a small random change of W.

    For each draw k, every perturbed parameter W (:func:`perturbed_parameters`) gets δ = ``relative_scale`` · rms(W) · ε,
    ε ~ N(0, 1) elementwise (so every matrix moves by the same fraction of its own scale); the change is
    mean over real target tokens and dimensions of (F(x; W + δ) − F(x; W))², F = :func:`decoder_features`, in eval
    mode (no dropout). Returns ``{"mean": mean over draws, "std": ..., "draws": [...]}``; W is restored exactly."""
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    try:
        base = decoder_features(model, sample)
        mask = sample["target"].ne(model.decoder.dictionary.pad())
        params = perturbed_parameters(model)
        saved = [p.detach().clone() for p in params]
        values = []
        for k in range(draws):
            generator = torch.Generator().manual_seed(seed + k)
            for p in params:
                rms = float(p.detach().to(torch.float64).pow(2).mean().sqrt())
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
                p.add_(noise * (relative_scale * rms))
            try:
                diff = (decoder_features(model, sample) - base).to(torch.float64)
            finally:
                for p, original in zip(params, saved):
                    p.copy_(original)
            values.append(float(diff[mask].pow(2).mean()))
    finally:
        model.train(was_training)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {"mean": mean, "std": std, "draws": values}


# ---- (c) residual dependency β and ω ----------------------------------------------------------------------------------
class ResidualRecord:
    """Per (stack, layer, sublayer): Var(f_i) and Var(s_i) of the residual sums seen while recording (f_i the scheme's
    ``branch_term``, s_i the rest of the sum); and the
    largest |value| of any residual sum on real tokens (``max_abs``: what overflows first in fp16, max 65504)."""

    def __init__(self):
        self.variances: Dict[tuple, List[tuple]] = {}
        self.sublayers: Dict[str, tuple] = {}
        self.max_abs: Optional[float] = None

    def observe(self, stack: str, layer: int, scheme, sublayer: int, branch: Tensor, combined: Tensor) -> None:
        mask = scheme.token_mask(branch)
        term = scheme.branch_term(sublayer, branch.detach())  # f_i as the sum holds it (ReZero: α·f)
        shortcut = combined.detach() - term  # s_i: everything of the sum that is not the branch
        self.sublayers[stack] = scheme.sublayers
        self.variances.setdefault((stack, layer, sublayer), []).append(
            (_variance(term, mask), _variance(shortcut, mask)))
        values = combined.detach() if mask is None else combined.detach()[mask]
        if values.numel():
            largest = values.abs().max().item()
            self.max_abs = largest if self.max_abs is None else max(self.max_abs, largest)

    def beta(self) -> Dict[str, List[List[Optional[float]]]]:
        """β per stack, per layer, per sublayer (None for a sublayer that did not run), averaged over observations."""
        out = {}
        for stack in STACKS:
            layers = sorted({key[1] for key in self.variances if key[0] == stack})
            rows = []
            for layer in range(layers[-1] + 1 if layers else 0):
                row = []
                for sublayer in range(len(self.sublayers.get(stack, ()))):
                    seen = self.variances.get((stack, layer, sublayer))
                    row.append(sum(f / (s + f) for f, s in seen) / len(seen) if seen else None)
                rows.append(row)
            out[stack] = rows
        return out


@contextlib.contextmanager
def record_residuals(model):
    """Wrap every layer's ``residual.combine`` so each residual sum's branch and shortcut variances are recorded.

    The scheme's result is returned unchanged (the wrapper only reads it); the original methods are back after the
    ``with`` block, even on error. Variances are over real tokens (the scheme's padding mask), one scalar per tensor,
    as Admin's profiling takes them."""
    model = unwrap_model(model)
    record = ResidualRecord()
    patched = []
    try:
        for stack in STACKS:
            for index, scheme in enumerate(model.scheme_layers(stack)):
                previous = scheme.__dict__.get("combine")
                combine = scheme.combine

                def wrapper(sublayer, branch, shortcut, _combine=combine, _stack=stack, _index=index, _scheme=scheme):
                    combined = _combine(sublayer, branch, shortcut)
                    if not model.profiling:  # Admin's profiling forward (first batch) is not the step's forward
                        record.observe(_stack, _index, _scheme, sublayer, branch, combined)
                    return combined

                scheme.combine = wrapper
                patched.append((scheme, previous))
        yield record
    finally:
        for scheme, previous in reversed(patched):
            if previous is None:
                del scheme.combine
            else:
                scheme.combine = previous


def residual_dependency(model, sample) -> Dict[str, List[List[Optional[float]]]]:
    """(c) Liu et al. 2020's dependency on the residual branch, per sublayer i of each stack:

        β_i = Var(f_i) / (Var(s_i) + Var(f_i))

    f_i the branch as the join adds it (the scheme's ``branch_term``: the sublayer output, after dropout when in train
    mode; α·f for ReZero, LN_out(f) for Peri-LN) and s_i = combine(f, x_i) − f_i the shortcut term of the same sum:
    x_i·ω_i for Admin, x_i for Post-LN and Pre-LN (whose sum is the residual stream), x_i plus the layer input at
    B2T's FFN sum, α·x_i for DeepNorm. Each Var is one scalar over the real tokens of the batch.
    One forward pass in the model's current mode, no gradients. β near 1: the sum (and the LN after it) is dominated
    by the branch; small β: by the shortcut."""
    with torch.no_grad(), record_residuals(model) as record:
        unwrap_model(model)(**sample["net_input"])
    return record.beta()


def omega_values(model) -> Optional[Dict[str, List[List[float]]]]:
    """ω per stack, per layer, per sublayer (the mean over dimensions of a vector ω), or None if no layer has ω."""
    out = {}
    for stack in STACKS:
        rows = []
        for scheme in unwrap_model(model).scheme_layers(stack):
            omega = getattr(scheme, "omega", None)
            if omega is None:
                return None
            omega = omega.detach().to(torch.float64)
            rows.append([float(omega[i].mean()) for i in range(omega.shape[0])])
        out[stack] = rows
    return out


# ---- training-time logging (--log-stability N) ------------------------------------------------------------------------
def log_stability(model, record: ResidualRecord, grad_scale: float = 1.0, prefix: str = "stab") -> Dict[str, float]:
    """Log, through ``fairseq.logging.metrics.log_scalar``, the per-layer figures of one training step:

    * ``{prefix}_g_{enc|dec}{l}``: gradient norm of layer l's sublayer weights (all together), from the ``.grad`` of
      this step divided by ``grad_scale`` (the step's sample size × the fp16 loss scale, so it is the gradient of the
      token-averaged loss, as in :func:`gradient_norms`), and ``{prefix}_g_last_ffn``;
    * ``{prefix}_beta_{enc|dec}{l}``: β of layer l (mean over its sublayers) from this step's forward (``record``);
    * ``{prefix}_omega_{enc|dec}_{min|mean|max}`` for schemes with ω;
    * ``{prefix}_act_max``: the largest |value| of any residual sum of this step's forward, on real tokens.

    Returns the logged values."""
    from fairseq.logging import metrics

    values = {}
    grads = weight_gradient_norms(model, scale=grad_scale)
    for stack, short in (("encoder", "enc"), ("decoder", "dec")):
        for layer, norms in enumerate(grads[stack]):
            present = [n for n in norms if n is not None]
            if present:
                values[f"{prefix}_g_{short}{layer}"] = math.sqrt(sum(n * n for n in present))
    if grads["last_ffn"] is not None:
        values[f"{prefix}_g_last_ffn"] = grads["last_ffn"]
    for stack, rows in record.beta().items():
        short = stack[:3]
        for layer, row in enumerate(rows):
            present = [b for b in row if b is not None]
            if present:
                values[f"{prefix}_beta_{short}{layer}"] = sum(present) / len(present)
    if record.max_abs is not None:
        values[f"{prefix}_act_max"] = record.max_abs
    omega = omega_values(model)
    for stack, rows in (omega or {}).items():
        flat = [v for row in rows for v in row]
        if flat:
            short = stack[:3]
            values.update({f"{prefix}_omega_{short}_min": min(flat), f"{prefix}_omega_{short}_mean":
                           sum(flat) / len(flat), f"{prefix}_omega_{short}_max": max(flat)})
    for key, value in values.items():
        metrics.log_scalar(key, value, priority=900, round=4)
    return values


def install_stability_log(task, every: int) -> None:
    """Make ``task`` (this object only) log :func:`log_stability` every ``every`` updates, from the first (0: never),
    and keep log lines free of ``stab_*`` columns without a value (:func:`drop_idle_stability_meters`).

    The model calls this at build with the task that trains it (``--log-stability N``, or 0 without it), so any
    fairseq task logs the ``stab_*`` keys: a task's ``train_step`` is the one place that sees a step's gradients after
    its backward together with its sample size and loss scale. β comes from that step's forward, the gradient norms
    from its backward, per token as the trainer will apply them (before clipping)."""
    inner = task.train_step
    if getattr(inner, "stability_every", None) is not None:  # a second model built for the same task
        return

    def train_step(sample, model, criterion, optimizer, update_num, ignore_grad=False):
        drop_idle_stability_meters()
        if not every or ignore_grad or update_num % every:
            return inner(sample, model, criterion, optimizer, update_num, ignore_grad)
        core = unwrap_model(model)
        with record_residuals(core) as residuals:
            loss, sample_size, logging_output = inner(sample, model, criterion, optimizer, update_num, ignore_grad)
        log_stability(core, residuals, grad_scale=max(sample_size, 1) * loss_scale(optimizer))
        return loss, sample_size, logging_output

    train_step.stability_every = every
    task.train_step = train_step


def drop_idle_stability_meters(prefix: str = "stab") -> None:
    """Remove the ``{prefix}_*`` meters that hold no value from fairseq's active metrics aggregators.

    fairseq prints every meter an aggregator holds, one without a value since its last reset as ``=None``, and saves
    the meters with each checkpoint (``extra_state["metrics"]``), restoring them on resume: without this, a log line
    of an update that measured nothing (``--log-stability N``, N > 1) and every line of a run resumed without
    ``--log-stability`` from a checkpoint written with it carried one ``stab_*=None`` column per figure. Called before
    each training step, inside fairseq's ``train``/``train_inner`` aggregation, so a meter reset at the last log line
    is gone before the next unless this step logs it again."""
    from fairseq.logging import metrics

    for meters in metrics.get_active_aggregators():
        idle = [key for key, meter in meters.items()
                if key.startswith(prefix + "_") and getattr(meter, "smoothed_value", 0) is None]
        for key in idle:
            del meters[key]
        # a MetersDict orders and saves its meters by its `priorities` list (fairseq/logging/meters.py): drop them there
        meters.priorities[:] = [entry for entry in meters.priorities if entry[2] not in idle]


def loss_scale(optimizer) -> float:
    """The fp16 loss scale the gradients are multiplied by (1 without one)."""
    scaler = getattr(optimizer, "scaler", None)
    return float(getattr(scaler, "loss_scale", 1.0) or 1.0) if scaler is not None else 1.0
