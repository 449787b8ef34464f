"""Mixed precision keeps the stabilizers exact: ω stays float32 under .half()/.bfloat16(), every scheme trains with
fairseq's real bf16 / fp16 trainers on this CPU, and Admin's profiling measures its variances in float64.

What runs where on a CPU (fairseq 0.12.3), found by running the real ``fairseq-train``:
  * ``--bf16`` implies ``--tpu`` in fairseq's option post-processing and then needs torch_xla; the bf16 trainer itself
    (model.to(bfloat16), FP16Optimizer without flattening and without loss scaling) runs on the CPU once
    ``args.tpu`` is set back to False, which is what :func:`_train_in_process` does.
  * ``--fp16`` (flattened FP16Optimizer) calls ``torch.cuda.current_device()`` and fails without CUDA, for every
    scheme; ``--fp16 --fp16-no-flatten-grads`` and ``--memory-efficient-fp16`` train on the CPU.
"""
import logging
import math
import re

import pytest
import torch

from fairseq import optim
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_admin.profiling import profile_model
from helpers import build_model, parse_args, random_batch, run_cli
from test_cli_end_to_end import SCHEMES, load_checkpoint, train_args

LOW = (torch.float16, torch.bfloat16)


def _admin(*extra, layers=(2, 2), seed=0):
    torch.manual_seed(seed)
    return build_model("admin_transformer", *extra, layers=layers)


def _omegas(model):
    return [layer.residual.omega for stack in (model.encoder, model.decoder) for layer in stack.layers]


# ---- ω stays float32 -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("omega", ["vector", "scalar"])
@pytest.mark.parametrize("cast", ["half", "bfloat16", "to_dtype"])
def test_omega_stays_float32_after_casting_the_model(omega, cast):
    model = _admin("--admin-init", "O(logn)", "--admin-omega", omega)
    with torch.no_grad():
        for w in _omegas(model):
            w.uniform_(0.5, 3.0)  # values that fp16/bf16 cannot hold exactly
    before = [w.detach().clone() for w in _omegas(model)]
    dtype = torch.bfloat16 if cast == "bfloat16" else torch.float16
    model = model.half() if cast == "half" else model.bfloat16() if cast == "bfloat16" else model.to(dtype)
    assert model.encoder.layers[0].fc1.weight.dtype == dtype and model.decoder.layers[0].final_layer_norm.weight.dtype == dtype
    for w, b in zip(_omegas(model), before):
        assert w.dtype == torch.float32
        assert torch.equal(w, b)  # bit for bit: never went through the low precision
        assert isinstance(w, torch.nn.Parameter) == (omega == "vector")
    model.double()  # a float64 cast is not a low precision: ω follows it
    assert all(w.dtype == torch.float64 for w in _omegas(model))


@pytest.mark.parametrize("dtype", LOW)
def test_admin_combine_is_float32_then_one_rounding(dtype):
    """x·ω + f in float32 with the float32 ω, rounded once to the activations' dtype (what the LayerNorm gets)."""
    model = _admin("--admin-init", "O(logn)")
    with torch.no_grad():
        model.encoder.layers[0].residual.omega.uniform_(0.5, 3.0)
    omega32 = model.encoder.layers[0].residual.omega[1].detach().clone()
    scheme = model.to(dtype).encoder.layers[0].residual
    g = torch.Generator().manual_seed(0)
    x, f = (torch.randn(5, 2, 16, generator=g).to(dtype) for _ in range(2))
    out = scheme.combine(1, f, x)
    assert out.dtype == dtype
    expected = (x.double() * omega32.double() + f.double()).to(dtype)  # correctly rounded exact value
    assert (out == expected).float().mean() > 0.99  # float32 intermediate: at most rare double-rounding ties
    torch.testing.assert_close(out.double(), expected.double(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize("dtype", LOW)
def test_deepnorm_alpha_is_a_full_precision_constant(dtype):
    model = build_model("deepnorm_transformer", layers=(3, 2)).to(dtype)
    scheme = model.encoder.layers[0].residual
    assert isinstance(scheme.alpha, float) and not any("alpha" in k for k in model.state_dict())
    x = torch.randn(1000).to(dtype)
    # α·x is the correctly rounded product with the exact α (PyTorch multiplies by a Python scalar in float32+)
    assert torch.equal(scheme.combine(0, torch.zeros_like(x), x), (x.double() * scheme.alpha).to(dtype))


# ---- fairseq's optimizers with a float32 ω among fp16 parameters -----------------------------------------------------
def _fp16_cfg(*extra):
    args = parse_args("admin_transformer", "--admin-init", "O(logn)", "--optimizer", "adam", "--lr", "1e-2",
                      "--fp16", "--fp16-init-scale", "8", *extra)
    return convert_namespace_to_omegaconf(args)


@pytest.mark.parametrize("flatten", [True, False])
def test_fp16_optimizer_steps_float32_omega_exactly(flatten, monkeypatch):
    """FP16Optimizer's fp32 master copy (flattened or not) holds ω; copying it back into the float32 ω is exact.
    The flattened path keys its buffer by ``torch.cuda.current_device()``; on a CPU we key it by the CPU's device
    index (None), which is what the CUDA path does with a GPU's index."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    cfg = _fp16_cfg(*(() if flatten else ("--fp16-no-flatten-grads",)))
    model = _admin("--admin-init", "O(logn)").half().train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optim.FP16Optimizer.build_optimizer(cfg, params)
    assert opt.has_flat_params == flatten
    omega = model.decoder.layers[1].residual.omega
    start = omega.detach().clone()
    out, _ = model(**random_batch(model.encoder.dictionary))
    loss = out.float().logsumexp(-1).mean()
    opt.zero_grad()
    opt.backward(loss)
    assert omega.grad is not None and omega.grad.dtype == torch.float32
    opt.clip_grad_norm(0.0)
    opt.step()
    assert omega.dtype == torch.float32 and not torch.equal(omega, start)
    # ω equals its fp32 master exactly; an fp16 weight equals its master rounded to fp16
    if flatten:
        master = next(iter(opt.fp32_params.values())).data
        offset = 0
        for p in params:
            chunk = master[offset: offset + p.numel()].view_as(p)
            offset += p.numel()
            assert torch.equal(p.data.float(), chunk if p.dtype == torch.float32 else chunk.half().float())
        assert sum(p.dtype == torch.float32 for p in params) == 2 + 2  # the four ω vectors, nothing else
    else:
        master = opt.fp32_params[[i for i, p in enumerate(params) if p is omega][0]]
        assert torch.equal(omega.data, master.data)
    assert all(torch.isfinite(p).all() for p in params)


# ---- the real trainer: bf16 per scheme, fp16 through the CLI ---------------------------------------------------------
def _train_in_process(argv, monkeypatch):
    """fairseq_cli.train.main on parsed fairseq-train arguments, with --bf16's implied --tpu switched back off."""
    from fairseq import options
    from fairseq.tasks.fairseq_task import FairseqTask
    from fairseq_cli import train

    seen = {}
    original = FairseqTask.train_step  # every task's train_step ends here

    def spy(self, sample, model, *args, **kwargs):
        seen.setdefault("weight", model.encoder.layers[0].fc1.weight.dtype)
        seen.setdefault("omega", {layer.residual.omega.dtype for layer in model.encoder.layers
                                  if hasattr(layer.residual, "omega")})
        return original(self, sample, model, *args, **kwargs)

    monkeypatch.setattr(FairseqTask, "train_step", spy)
    args = options.parse_args_and_arch(options.get_training_parser(), [str(a) for a in argv[1:]])
    assert args.bf16 and args.tpu  # fairseq's own post-processing: bf16 implies tpu
    args.tpu = False
    train.main(convert_namespace_to_omegaconf(args))
    return seen


def train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog):
    """``argv`` (train_args(..., max_update=3) with --bf16 --log-format json) trained in process: bf16 weights, finite
    losses, 3 updates saved with finite values. Returns (what the training step saw, the checkpoint)."""
    with caplog.at_level(logging.INFO):
        seen = _train_in_process(argv, monkeypatch)
    assert seen["weight"] == torch.bfloat16
    losses = [float(v) for v in re.findall(r'"train_loss": "([^"]+)"', caplog.text)]
    assert losses and all(math.isfinite(v) for v in losses)
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    return seen, state


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bf16_training_stays_finite(scheme, synthetic_data, tmp_path, monkeypatch, caplog):
    # bf16 kernels are slow on this CPU (about 1 s per update of this tiny model): 3 updates, small batches
    argv = train_args(synthetic_data, tmp_path, f"{scheme}_transformer", "--bf16", "--log-format", "json",
                      "--max-tokens", "500", "--disable-validation", max_update=3)
    seen, _state = train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog)
    if scheme == "admin":
        assert seen["omega"] == {torch.float32}
        assert "admin: profiled ω on the first batch" in caplog.text


@pytest.mark.parametrize("scheme, flags", [
    ("admin", ["--memory-efficient-fp16"]),
    ("deepnorm", ["--fp16", "--fp16-no-flatten-grads"]),
])
def test_fp16_cli_trains_on_cpu(scheme, flags, synthetic_data, tmp_path):
    log = run_cli(*train_args(synthetic_data, tmp_path, f"{scheme}_transformer", *flags, max_update=4))
    text = log.stdout + log.stderr
    assert "done training" in text and "loss_scale" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses)


# ---- profiling precision ---------------------------------------------------------------------------------------------
def test_profiling_under_bf16_matches_float32_profiling():
    """The moments are float64 whatever the activations: bf16 profiling differs from float32 profiling only by the
    bf16 rounding of the activations themselves (about 2^-8 relative), not by a low-precision variance."""
    batch = random_batch(_admin().encoder.dictionary, bsz=4, src_len=9, tgt_len=7)
    enc32, dec32 = profile_model(_admin("--dropout", "0"), {"net_input": batch})
    model = _admin("--dropout", "0").bfloat16()
    enc16, dec16 = profile_model(model, {"net_input": batch})
    assert all(w.dtype == torch.float32 for w in _omegas(model))
    assert enc16 == pytest.approx(enc32, rel=2e-2) and dec16 == pytest.approx(dec32, rel=2e-2)
    assert len(set(enc16)) == len(enc16)
    # ω holds the profiled float64 value rounded to float32, not to bf16
    assert model.encoder.layers[1].residual.omega[0, 0].item() == pytest.approx(enc16[2], rel=1e-7)


def test_variance_moments_are_float64_for_low_precision_inputs():
    from fairseq_admin.profiling import _moments, _variance

    x = (torch.randn(64, 3, 16) * 3 + 100).bfloat16()  # a large mean: a bf16/fp32 sum of squares would cancel badly
    stats = _moments(x, None)
    assert all(s.dtype == torch.float64 for s in stats)
    assert _variance(*stats) == pytest.approx(float(x.double().var(unbiased=False)), rel=1e-9)
