"""Admin's profiling: ω from the model's own variances on one real training batch (Liu et al. 2020, §4.2).

Transformer-Clinic's ``--init-type adaptive-profiling`` runs one forward pass in train mode with ω = 1 and walks the
residual sublayers of each stack in order, keeping one running value per stack (encoder and decoder separately):

    ω_1 = 1,    ω_{i+1} = sqrt( Var(x_i · ω_i) + Var(f_i(x_i)) )

Each ω_i is set in the sublayer just before it is used, so the pass propagates the profiled model. Each Var is one
scalar over the whole tensor, f_i's output taken after dropout. By default we measure real tokens only; the official
code counts padding too (np.var over the whole tensor, Transformer-Clinic fairseq/fairseq/modules/
transformer_layer.py:193-194), which ``--admin-profile-tokens all`` reproduces. In distributed training the moments
(count, sum, sum of squares) are summed over all workers before each step of the recurrence, so every worker
computes the same ω from the pooled batch.

The official flow profiles inside the first training forward, exits, and restarts with the same seed, so the first
real update draws the same dropout masks as the profiling pass. Our profiling forward runs inside the training run,
so it saves the random state (torch's, and CUDA's where initialized) before and restores it after: the first update
then sees exactly the masks profiling saw, and in-run profiling gives the same model as ``--admin-profile-load`` of
the profile it wrote.

The profile file is Transformer-Clinic's ``profile.ratio.init``: one ``"{index} {omega}"`` line per sublayer, the
2N encoder lines first (indices 1..2N), then the 3M decoder lines (indices 1..3M).
"""
import logging
import math
import os
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fairseq_admin.errors import OptionError

logger = logging.getLogger(__name__)


def _moments(x: Tensor, mask: Optional[Tensor], scale: float = 1.0) -> List[Tensor]:
    """[count, sum, sum of squares] of the entries of ``x · scale`` (real tokens only when ``mask`` is given), in
    float64 whatever the training precision (the product too, so fp16/bf16 activations are not rounded twice)."""
    x = x.detach().to(torch.float64) * scale
    if mask is not None:
        x = x[mask]
    return [torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device), x.sum(), (x * x).sum()]


def _variance(count: Tensor, total: Tensor, total_sq: Tensor) -> float:
    """Population variance (numpy's np.var, ddof=0) from pooled moments."""
    mean = total / count
    return float(total_sq / count - mean * mean)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if _distributed() else 1


def rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _all_reduce_sum(stats: Tensor) -> None:
    if _distributed():
        torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)


class OmegaProfiler:
    """The running recurrence for one stack; each Admin layer calls :meth:`observe` from its residual connection."""

    def __init__(self):
        self.next_omega = 1.0  # ω_1 = 1
        self.values: List[float] = []

    def observe(self, scheme, sublayer: int, branch: Tensor, shortcut: Tensor) -> None:
        omega = self.next_omega
        scheme.set_omega(sublayer, omega)  # used by this very forward pass, as in the official code
        self.values.append(omega)
        mask = scheme.token_mask(branch) if scheme.profile_tokens == "real" else None
        stats = torch.stack(_moments(shortcut, mask, scale=omega) + _moments(branch, mask))
        _all_reduce_sum(stats)
        self.next_omega = math.sqrt(_variance(*stats[:3]) + _variance(*stats[3:]))


def unwrap_model(model):
    """The fairseq model inside DistributedDataParallel / fairseq's wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model


def profile_model(model, sample) -> Tuple[List[float], List[float]]:
    """Profile and set every ω of an Admin model from one batch; returns the (encoder, decoder) ω lists.

    One forward pass in train mode (dropout on, as during training) without gradients: the official code also ran a
    backward pass, whose gradients it never used.
    """
    model = unwrap_model(model)
    profilers = {stack: OmegaProfiler() for stack in ("encoder", "decoder")}
    schemes = {stack: model.scheme_layers(stack) for stack in profilers}
    was_training = model.training
    model.train()
    model.profiling = True
    random_state = _save_random_state()
    try:
        for stack, layers in schemes.items():
            for scheme in layers:
                scheme.profiler = profilers[stack]
        with torch.no_grad():
            model(**sample["net_input"])
    finally:
        _restore_random_state(random_state)
        model.profiling = False
        model.train(was_training)
        for layers in schemes.values():
            for scheme in layers:
                scheme.profiler = None
    values = profilers["encoder"].values, profilers["decoder"].values
    for stack, got in zip(profilers, values):
        expected = _num_sublayers(schemes[stack])
        if len(got) != expected:
            raise RuntimeError(f"profiling visited {len(got)} of the {expected} {stack} sublayers: the batch did not "
                               f"run through every sublayer")
    _check_identical_across_workers(values)
    model.omega_ready.fill_(True)
    return values


def _save_random_state():
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _restore_random_state(state) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _check_identical_across_workers(values: Tuple[List[float], List[float]]) -> None:
    """Every worker must end with the same ω (they pooled the same moments); one all-gather makes sure of it."""
    if world_size() == 1:
        return
    mine = torch.tensor(values[0] + values[1], dtype=torch.float64)
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    torch.distributed.all_gather(gathered, mine)
    if not all(torch.equal(mine, other) for other in gathered):
        raise RuntimeError("admin profiling: the workers computed different ω; every worker must run the same model "
                           "and take part in the same all-reduce")


def apply_profile(model, encoder_values: Sequence[float], decoder_values: Sequence[float]) -> None:
    """Set every ω of an Admin model from per-sublayer values (walk order), and mark ω as initialized."""
    model = unwrap_model(model)
    for stack, values in (("encoder", encoder_values), ("decoder", decoder_values)):
        layers = model.scheme_layers(stack)
        expected = _num_sublayers(layers)
        if len(values) != expected:
            raise OptionError(f"{stack}: expected {expected} ω values, found {len(values)}")
        it = iter(values)
        for scheme in layers:
            for sublayer in range(len(scheme.sublayers)):
                scheme.set_omega(sublayer, next(it))
    if hasattr(model, "omega_ready"):
        model.omega_ready.fill_(True)


def profile_sizes(model) -> Tuple[int, int]:
    """(2N, 3M): the number of encoder and decoder residual sublayers, i.e. the profile's line counts."""
    model = unwrap_model(model)
    return tuple(_num_sublayers(model.scheme_layers(stack)) for stack in ("encoder", "decoder"))


def _num_sublayers(schemes) -> int:
    """Residual sublayers of a stack: the number of ω values (and profile lines) it has."""
    return sum(len(s.sublayers) for s in schemes)


def write_profile(path: str, encoder_values: Sequence[float], decoder_values: Sequence[float]) -> None:
    """Write Transformer-Clinic's ``profile.ratio.init`` (repr() keeps every float bit, so it reads back exactly)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for values in (encoder_values, decoder_values):
            for index, value in enumerate(values, start=1):
                f.write(f"{index} {float(value)!r}\n")
    os.replace(tmp, path)  # never leave a half-written profile behind


# The largest ω a profile may hold. ω multiplies the shortcut x_i, a LayerNorm output whose entries are at most
# sqrt(d - 1) < 64 in size for any d <= 4096 (at γ = 1), and x_i·ω + f_i(x_i) is what the next LayerNorm reads in the
# activations' dtype: in fp16 that must stay below 65504, so ω <= 1000 (1000 · 64 = 64000). Far larger ω overflow
# even float32 (LayerNorm squares x·ω, inf once |x·ω| > 1.8e19) and the first forward dies on non-finite values.
# Profiled ω grow like sqrt(sublayers) (sqrt(2000) ≈ 45 for a 1000-layer encoder), far below the bound.
OMEGA_MAX = 1000.0


def read_profile(path: str, num_encoder: int, num_decoder: int) -> Tuple[List[float], List[float]]:
    """Read and validate a ``profile.ratio.init`` for a model with ``num_encoder`` (2N) and ``num_decoder`` (3M)
    residual sublayers. Every problem is a ValueError that says what was expected and what was found.

    An index is a decimal integer; ω must be finite, a normal float32 (ω is a float32 parameter: ω >= 2^-126) and at
    most :data:`OMEGA_MAX`, written as a plain decimal or exponent number (no ``_`` digit separators)."""
    float32_tiny = 2.0 ** -126
    if not os.path.isfile(path):
        raise OptionError(f"admin profile {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 4]
        raise OptionError(f"admin profile {path!r} is not UTF-8 text (byte {exc.start}: {bad!r}); expected lines "
                         "'<index> <omega>'") from None
    expected = num_encoder + num_decoder
    if len(lines) != expected:
        raise OptionError(
            f"admin profile {path!r} has {len(lines)} lines, but this model needs {expected}: {num_encoder} encoder "
            f"sublayers (2 x {num_encoder // 2} layers) then {num_decoder} decoder sublayers "
            f"(3 x {num_decoder // 3} layers). Was it made for another depth?")
    values = []
    for lineno, line in enumerate(lines, start=1):
        want_index = lineno if lineno <= num_encoder else lineno - num_encoder
        stack = "encoder" if lineno <= num_encoder else "decoder"
        fields = line.split()
        if len(fields) != 2 or not fields[0].isascii() or not fields[0].isdigit() or "_" in fields[1]:
            raise OptionError(f"admin profile {path!r} line {lineno}: expected '<index> <omega>', found {line!r}")
        try:
            index, value = int(fields[0]), float(fields[1])
        except ValueError:
            raise OptionError(f"admin profile {path!r} line {lineno}: expected '<index> <omega>', "
                             f"found {line!r}") from None
        if index != want_index:
            raise OptionError(f"admin profile {path!r} line {lineno}: expected {stack} sublayer index {want_index}, "
                             f"found {fields[0]} (was it made for another depth?)")
        if not math.isfinite(value) or not float32_tiny <= value <= OMEGA_MAX:
            raise OptionError(f"admin profile {path!r} line {lineno}: ω must be finite and positive, between "
                             f"{float32_tiny:.8g} (the smallest normal float32) and {OMEGA_MAX:g} (larger would "
                             f"overflow fp16 activations), found {fields[1]}")
        values.append(value)
    return values[:num_encoder], values[num_encoder:]


# ---- the training run's entry point: the model's first training forward --------------------------------------------
def profile_options(model) -> Tuple[Optional[str], Optional[str]]:
    """(--admin-profile-load, --admin-profile-save) of the model's configuration."""
    args = getattr(unwrap_model(model), "args", None)
    return getattr(args, "admin_profile_load", None), getattr(args, "admin_profile_save", None)


def check_profile_options(model) -> None:
    """At model build: the two profile options exclude each other. Nothing here reads or writes a file: a model
    rebuilt from its checkpoint (fairseq-generate, the hub, export) carries these paths in its config but never uses
    them; the files are checked by :func:`prepare_omega_before_training`."""
    load, save = profile_options(model)
    if load and save:
        raise OptionError("give --admin-profile-load or --admin-profile-save, not both")


def _check_profile_files(model) -> None:
    """Before a fresh run's first update: the save path is writable, the load file fits the depth."""
    load, save = profile_options(model)
    if save:
        if os.path.isdir(save):
            raise OptionError(f"--admin-profile-save {save!r} is a directory; give a file path, e.g. "
                             f"{os.path.join(save, 'profile.ratio.init')}")
        parent = os.path.dirname(os.path.abspath(save))
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            raise OptionError(f"--admin-profile-save {save!r}: cannot write into {existing!r}")
    if load:
        read_profile(load, *profile_sizes(model))


def prepare_omega_before_training(model) -> None:
    """Called once by fairseq-train after its resume step, before the first update (fairseq_admin/
    checkpoint_safety.py): a fresh Admin run checks its profile files now (so a bad one stops it before any training)
    and, with ``--admin-profile-load``, sets ω from the file. A resumed run or another model: nothing."""
    model = unwrap_model(model)
    if not getattr(model, "needs_profiling", lambda: False)():
        return
    _check_profile_files(model)
    if profile_options(model)[0]:
        initialize_omega(model, None)


def initialize_omega(model, net_input) -> None:
    """Set an Admin model's ω before its first update: from ``--admin-profile-load``, else by profiling this batch
    (and writing it to ``--admin-profile-save`` on rank 0). Called by the model itself, so any task works."""
    model = unwrap_model(model)
    load, save = profile_options(model)
    if load:
        apply_profile(model, *read_profile(load, *profile_sizes(model)))
        logger.info(f"admin: ω initialized from {load}")
        return
    encoder, decoder = profile_model(model, {"net_input": net_input})
    pad = model.decoder.dictionary.pad()
    tokens = int(net_input["prev_output_tokens"].ne(pad).sum())
    workers = f" on this worker, identical on all {world_size()} workers" if world_size() > 1 else ""
    logger.info("admin: profiled ω on the first batch (%d target tokens%s): encoder %s; decoder %s",
                tokens, workers, _summary(encoder), _summary(decoder))
    if save and rank() == 0:
        write_profile(save, encoder, decoder)
        logger.info(f"admin: profile written to {save}")


def _summary(values: Sequence[float]) -> str:
    return f"{len(values)} sublayers, ω from {values[0]:.4g} to {values[-1]:.4g}"
