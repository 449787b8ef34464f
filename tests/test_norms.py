"""``--norm {layernorm,rmsnorm,dyt}`` (fairseq_admin/modules/norms.py): the formulas against float64 references, the
official DyT code's rule, every placement scheme with every norm, DyT's α per role, the refusals, mixed precision,
the export refusals, CTranslate2's ``rms_norm`` layers, and 30-update fairseq-train runs.

The official rule, read in jiachenzhu/DyT at aab5dde, dynamic_tanh.py:
    :7   ``def __init__(self, normalized_shape, channels_last, alpha_init_value=0.5)``
    :13  ``self.alpha = nn.Parameter(torch.ones(1) * alpha_init_value)``
    :14  ``self.weight = nn.Parameter(torch.ones(normalized_shape))``
    :15  ``self.bias = nn.Parameter(torch.zeros(normalized_shape))``
    :18  ``x = torch.tanh(self.alpha * x)``
    :20  ``x = x * self.weight + self.bias``            (channels_last, our (time, batch, channels) layout)
and its LLaMA code (other_tasks/LLaMA/fms_fsdp/models/llama.py): ``attn_alpha_init_value`` for each block's attention
norm (:85-88), ``ffn_alpha_init_value`` for its FFN norm (:89-92), ``dec_alpha_init_value`` for the final norm
(:245-248). :func:`official_dynamic_tanh` transcribes :17-23; :data:`MUTATIONS` lists the one-rule mutations each
shown to fail the tests below.
"""
import math

import pytest
import torch
from torch import nn

from fairseq_admin.modules import norms
from fairseq_admin.modules.norms import DyT, RMSNorm
from helpers import assert_one_error_line, build_model, parse_args, random_batch, run_cli

D = 16
PLACEMENTS = ["postln", "preln", "b2t", "resi_dual", "peri_ln", "lns", "mix_ln"]
#: every norm of a 2-2 model (TINY dimensions), counted by hand from each scheme's layout: 2 per encoder layer and 3
#: per decoder layer (their sublayers' norms), plus a final norm per stack (Pre-LN-like layouts and ResiDual's LN_f),
#: plus Peri-LN's output norm per sublayer and its two embedding norms
NORM_COUNT = {"postln": 10, "b2t": 10, "admin": 10, "deepnorm": 10, "preln": 12, "lns": 12, "mix_ln": 12,
              "resi_dual": 12, "peri_ln": 10 + 10 + 2 + 2}


# ---- references ------------------------------------------------------------------------------------------------------
def rmsnorm_reference(x, g, eps):
    """x / sqrt(mean(x²) + eps) · g in float64 (Zhang & Sennrich 2019, eps inside the root as torch.nn.RMSNorm)."""
    x, g = x.double(), g.double()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g


def dyt_reference(x, alpha, gamma, beta):
    """γ ⊙ tanh(α·x) + β in float64 (Zhu et al. 2025, Eq. 1)."""
    return gamma.double() * torch.tanh(alpha.double() * x.double()) + beta.double()


def official_dynamic_tanh(module, x):
    """``DynamicTanh.forward`` of jiachenzhu/DyT dynamic_tanh.py:17-23 with channels_last=True, on our parameters."""
    x = torch.tanh(module.alpha * x)  # :18
    x = x * module.weight + module.bias  # :20
    return x


def _inputs(seed=0, dtype=torch.float32):
    """(time, batch, D) activations: unit-scale rows, large rows, and rows of scale 1e-3, where mean(x²) is of the
    order of eps and where the placement of eps shows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, D, generator=g) + 0.5
    x[1] *= 30
    x[2] *= 1e-3
    return x.to(dtype)


def _randomized(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.empty(p.shape).uniform_(0.2, 1.5, generator=g) if name == "alpha"
                    else torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name == "weight" else 0.0))
    return module


# ---- the modules: formulas, the official rule, defaults -------------------------------------------------------------
@pytest.mark.parametrize("eps", [1e-5, 1e-7])
def test_rmsnorm_equals_the_float64_formula(eps):
    norm = _randomized(RMSNorm(D, eps))
    x = _inputs()
    expected = rmsnorm_reference(x, norm.weight, eps)
    torch.testing.assert_close(norm(x).double(), expected, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(norm.double()(x.double()), expected, rtol=1e-12, atol=1e-14)
    assert [name for name, _ in norm.named_parameters()] == ["weight"]  # no bias
    assert norm.eps == eps


def test_rmsnorm_starts_with_unit_gain():
    assert torch.equal(RMSNorm(D, 1e-5).weight, torch.ones(D))


def test_dyt_equals_the_float64_formula_and_the_official_code():
    dyt = _randomized(DyT(D))
    x = _inputs()
    expected = dyt_reference(x, dyt.alpha, dyt.weight, dyt.bias)
    torch.testing.assert_close(dyt(x).double(), expected, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(dyt.double()(x.double()), expected, rtol=1e-12, atol=1e-14)
    dyt.float()
    assert torch.equal(dyt(x), official_dynamic_tanh(dyt, x))  # the same operations in the same order: bit for bit


def test_dyt_defaults_are_the_official_ones():
    """dynamic_tanh.py:7 (α 0.5), :13 (a one-element α), :14 (weight ones), :15 (bias zeros); their names."""
    dyt = DyT(D)
    assert [name for name, _ in dyt.named_parameters()] == ["alpha", "weight", "bias"]
    assert dyt.alpha.shape == (1,) and dyt.alpha.item() == 0.5 == norms.DYT_ALPHA_INIT
    assert torch.equal(dyt.weight, torch.ones(D)) and torch.equal(dyt.bias, torch.zeros(D))
    assert DyT(D, 0.8).alpha.item() == pytest.approx(0.8)
    x = _inputs()
    torch.testing.assert_close(dyt(x).double(), torch.tanh(0.5 * x.double()), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("make", [lambda: RMSNorm(D, 1e-5), lambda: DyT(D)], ids=["rmsnorm", "dyt"])
def test_low_precision_is_float32_arithmetic_rounded_once(make, dtype):
    """fp16/bf16 inputs and parameters (what fairseq's --fp16/--bf16 model holds): the float32 computation on the
    same values, rounded once to the input's dtype, as fairseq's LayerNorm does."""
    low = _randomized(make()).to(dtype)
    high = make()
    high.load_state_dict({k: v.float() for k, v in low.state_dict().items()})
    x = _inputs(dtype=dtype)
    y = low(x)
    assert y.dtype == dtype
    assert torch.equal(y, high(x.float()).to(dtype))
    y.float().sum().backward()  # the gradients reach the parameters, in their dtypes (DyT's α: float32)
    assert all(p.grad is not None and p.grad.dtype == p.dtype for p in low.parameters())


@pytest.mark.parametrize("cast", ["half", "bfloat16", "to_dtype"])
def test_dyt_alpha_stays_float32_under_low_precision_casts(cast):
    dyt = _randomized(DyT(D))
    alpha = dyt.alpha.detach().clone()  # a value fp16/bf16 cannot hold exactly
    dyt = dyt.half() if cast == "half" else dyt.bfloat16() if cast == "bfloat16" else dyt.to(torch.float16)
    assert dyt.weight.dtype in (torch.float16, torch.bfloat16) and dyt.bias.dtype == dyt.weight.dtype
    assert dyt.alpha.dtype == torch.float32 and torch.equal(dyt.alpha, alpha)
    assert isinstance(dyt.alpha, nn.Parameter)
    assert dyt.double().alpha.dtype == torch.float64  # a float64 cast is not a low precision: α follows it


def test_dyt_alpha_has_the_largest_fp16_gradient():
    """Why α stays float32: with fairseq's sum-reduced loss at its initial fp16 loss scale (128), the α gradients are
    the model's largest, near fp16's 65504 already in a toy model (they sum over tokens and channels)."""
    torch.manual_seed(1)
    dims = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
            "--decoder-ffn-embed-dim", "64"]
    model = build_model("preln_transformer", "--norm", "dyt", *dims).half()
    batch = random_batch(model.encoder.dictionary, bsz=64, src_len=10, tgt_len=10)
    logits = model(**batch)[0]
    (-torch.log_softmax(logits.float(), -1).mean() * 128 * logits.shape[0] * logits.shape[1]).backward()
    grads = {name: p.grad.float().abs().max().item() for name, p in model.named_parameters()}
    largest = max(grads, key=grads.get)
    assert largest.endswith(".alpha") and grads[largest] > 1e4, (largest, grads[largest])
    assert all(p.grad.dtype == torch.float32 for name, p in model.named_parameters() if name.endswith(".alpha"))


def test_rmsnorm_eps_does_not_depend_on_the_dtype():
    """torch.nn.RMSNorm without an eps takes a machine epsilon; ours always has the one it was built with."""
    norm = RMSNorm(D, 1e-5)
    x = _inputs()[2:3] * 1e-2  # mean(x²) ~ 1e-10: the output is x / sqrt(eps), not x / rms(x)
    torch.testing.assert_close(norm(x.half()).double(), rmsnorm_reference(x.half(), norm.weight, 1e-5),
                               rtol=2e-3, atol=1e-6)


# ---- one-rule mutations: each must make the tests above fail -----------------------------------------------------
def _rmsnorm_mutation(forward):
    def mutate(monkeypatch):
        monkeypatch.setattr(RMSNorm, "forward", forward)
        test_rmsnorm_equals_the_float64_formula(1e-5)
    return mutate


def _dyt_mutation(forward=None, init=None, test=None):
    def mutate(monkeypatch):
        if forward is not None:
            monkeypatch.setattr(DyT, "forward", forward)
        if init is not None:
            monkeypatch.setattr(norms, "DYT_ALPHA_INIT", init)
            monkeypatch.setattr(DyT.__init__, "__defaults__", (init,))
        (test or test_dyt_equals_the_float64_formula_and_the_official_code)()
    return mutate


def _mean_square(x):
    return (x * x).mean(-1, keepdim=True)


MUTATIONS = {
    # RMSNorm subtracts the mean (i.e. LayerNorm without β)
    "rmsnorm_subtracts_the_mean": _rmsnorm_mutation(
        lambda self, x: nn.functional.layer_norm(x, self.normalized_shape, self.weight, None, self.eps)),
    # eps outside the root, bzhangGo/rmsnorm's x / (rms + eps): visible on the 1e-3 rows
    "rmsnorm_eps_outside_the_root": _rmsnorm_mutation(
        lambda self, x: x / (_mean_square(x).sqrt() + self.eps) * self.weight),
    # the gain forgotten
    "rmsnorm_without_gain": _rmsnorm_mutation(lambda self, x: x * torch.rsqrt(_mean_square(x) + self.eps)),
    # the LLaMA code's DyT, no bias (llama.py:46)
    "dyt_without_bias": _dyt_mutation(lambda self, x: torch.tanh(self.alpha * x) * self.weight),
    # γ inside the tanh
    "dyt_gain_inside_tanh": _dyt_mutation(lambda self, x: torch.tanh(self.alpha * x * self.weight) + self.bias),
    # α applied after the tanh
    "dyt_alpha_outside_tanh": _dyt_mutation(lambda self, x: self.alpha * torch.tanh(x) * self.weight + self.bias),
    # the LLaMA code's config default α₀ = 1.0 (llama.py:73-75) in place of dynamic_tanh.py's 0.5
    "dyt_alpha_init_1": _dyt_mutation(init=1.0, test=test_dyt_defaults_are_the_official_ones),
    # α cast to 16 bits with the rest of the model
    "dyt_alpha_cast_to_16_bits": lambda monkeypatch: (monkeypatch.setattr(DyT, "_apply", nn.Module._apply),
                                                      test_dyt_alpha_stays_float32_under_low_precision_casts("half")),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_the_references_catch_a_broken_rule(mutation, monkeypatch):
    with pytest.raises(AssertionError):
        MUTATIONS[mutation](monkeypatch)


# ---- the model: every norm follows --norm -----------------------------------------------------------------------
def _norm_modules(model):
    return [m for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm, DyT))]


@pytest.mark.parametrize("norm, module", [("rmsnorm", RMSNorm), ("dyt", DyT)])
@pytest.mark.parametrize("scheme", PLACEMENTS + ["admin", "deepnorm"])
def test_every_norm_of_every_placement_is_the_chosen_one(scheme, norm, module):
    if norm == "dyt" and scheme in ("admin", "deepnorm"):
        pytest.skip("refused (test_refused_at_build)")
    model = build_model(f"{scheme}_transformer", "--norm", norm)
    found = _norm_modules(model)
    assert len(found) == NORM_COUNT[scheme] == len(_norm_modules(build_model(f"{scheme}_transformer")))
    assert all(type(m) is module for m in found), {type(m).__name__ for m in found}
    out = model(**random_batch(model.encoder.dictionary))[0]
    assert torch.isfinite(out).all()


def test_layernorm_is_todays_model_bit_for_bit():
    """--norm layernorm (and no --norm) build fairseq's LayerNorm, the same tensors from the same seed."""
    models = []
    for extra in ([], ["--norm", "layernorm"]):
        torch.manual_seed(0)
        models.append(build_model("preln_transformer", *extra))
    assert all(type(m) is nn.LayerNorm for m in _norm_modules(models[1]))
    a, b = (m.state_dict() for m in models)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rmsnorm_eps_follows_each_role():
    """eps is what fairseq's LayerNorm gets at the same place: 1e-5, and ResiDual's LN_f 1e-7."""
    model = build_model("resi_dual_transformer", "--norm", "rmsnorm")
    assert model.encoder.layer_norm.norm.eps == model.decoder.layer_norm.norm.eps == 1e-7
    assert {m.eps for m in _norm_modules(model)} == {1e-5, 1e-7}


def _alphas(model):
    """{where: initial α} of every DyT of a Peri-LN model, by its place."""
    out = {}
    for stack in (model.encoder, model.decoder):
        out.setdefault("embedding", set()).add(stack.layernorm_embedding.alpha.item())
        out.setdefault("final", set()).add(stack.layer_norm.alpha.item())
        for layer in stack.layers:
            attn = [layer.self_attn_layer_norm, *layer.residual.output_norms[:-1]]
            attn += [layer.encoder_attn_layer_norm] if hasattr(layer, "encoder_attn_layer_norm") else []
            out.setdefault("attn", set()).update(m.alpha.item() for m in attn)
            out.setdefault("ffn", set()).update(m.alpha.item() for m in (layer.final_layer_norm,
                                                                        layer.residual.output_norms[-1]))
    return {k: sorted(round(v, 6) for v in values) for k, values in out.items()}


def test_dyt_alpha_inits_per_role():
    """--dyt-alpha-init for every norm; -attn/-ffn/-final (the LLaMA code's attn/ffn/dec_alpha_init_value): theirs."""
    assert _alphas(build_model("peri_ln_transformer", "--norm", "dyt")) == {
        "embedding": [0.5], "final": [0.5], "attn": [0.5], "ffn": [0.5]}
    assert _alphas(build_model("peri_ln_transformer", "--norm", "dyt", "--dyt-alpha-init", "0.3")) == {
        "embedding": [0.3], "final": [0.3], "attn": [0.3], "ffn": [0.3]}
    model = build_model("peri_ln_transformer", "--norm", "dyt", "--dyt-alpha-init", "0.3", "--dyt-alpha-init-attn",
                        "0.8", "--dyt-alpha-init-ffn", "0.2", "--dyt-alpha-init-final", "0.1")
    assert _alphas(model) == {"embedding": [0.3], "final": [0.1], "attn": [0.8], "ffn": [0.2]}
    model = build_model("resi_dual_transformer", "--norm", "dyt", "--dyt-alpha-init-final", "0.1")
    assert model.decoder.layer_norm.norm.alpha.item() == pytest.approx(0.1)  # ResiDual's LN_f is a final norm
    assert model.decoder.layers[0].self_attn_layer_norm.alpha.item() == 0.5


def test_every_role_has_an_alpha_group():
    from fairseq_admin.schemes.base import NORM_ROLES

    assert set(norms.DYT_ALPHA_GROUPS) == set(NORM_ROLES)


# ---- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, extra, message", [
    ("preln_transformer", ["--dyt-alpha-init", "0.3"], "--dyt-alpha-init is an option of --norm dyt"),
    ("preln_transformer", ["--norm", "rmsnorm", "--dyt-alpha-init-ffn", "0.3"],
     "--dyt-alpha-init-ffn is an option of --norm dyt"),
    ("preln_transformer", ["--norm", "dyt", "--dyt-alpha-init", "0"], "must be a positive finite number"),
    ("preln_transformer", ["--norm", "dyt", "--dyt-alpha-init-attn", "-0.5"], "must be a positive finite number"),
    ("preln_transformer", ["--norm", "dyt", "--dyt-alpha-init-final", "nan"], "must be a positive finite number"),
    ("preln_transformer", ["--norm", "dyt", "--dyt-alpha-init", "inf"], "must be a positive finite number"),
    ("admin_transformer", ["--norm", "dyt"], "admin cannot take --norm dyt"),
    ("deepnorm_transformer", ["--norm", "dyt"], "deepnorm cannot take --norm dyt"),
])
def test_refused_at_build(arch, extra, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        build_model(arch, *extra)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra, needle", [
    (["--arch", "deepnorm_transformer", "--norm", "dyt"], "deepnorm cannot take --norm dyt"),
    (["--arch", "postln_transformer", "--dyt-alpha-init-attn", "0.8"], "--dyt-alpha-init-attn is an option of"),
])
def test_fairseq_train_refuses_in_one_line(extra, needle, synthetic_data, tmp_path):
    from test_cli_end_to_end import train_args

    argv = train_args(synthetic_data, tmp_path, "postln_transformer", max_update=1)
    argv = argv[:argv.index("--arch")] + argv[argv.index("--arch") + 2:] + extra
    assert_one_error_line(run_cli(*argv, check=False), needle)
    assert not list(tmp_path.glob("*.pt"))


# ---- export: no stock fairseq equivalent; CTranslate2's rms_norm layers -----------------------------------------
@pytest.mark.parametrize("arch, norm", [("preln_transformer", "rmsnorm"), ("postln_transformer", "dyt")])
def test_export_refuses_in_one_line(arch, norm, tmp_path, capsys):
    from fairseq_admin.cli import export
    from test_export import _save_like_fairseq_train

    _save_like_fairseq_train(build_model(arch, "--norm", norm), parse_args(arch, "--norm", norm, task="translation"),
                             tmp_path / "in.pt")
    capsys.readouterr()
    assert export.cli_main(["--checkpoint", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"a --norm {norm} model cannot be exported" in err, err
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("arch", ["preln_transformer", "peri_ln_transformer"])
def test_rmsnorm_to_ctranslate2_scores_as_fairseq(arch, synthetic_data, tmp_path):
    """fairseq_admin/cli/ct2_peri_ln.py with CTranslate2's rms_norm layers: score_batch gives fairseq's per-token
    log-probabilities within 1e-4, on random weights (every RMSNorm gain too)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from fairseq import options, tasks

    from fairseq_admin.cli import ct2_peri_ln
    from helpers import TINY
    from test_export import (CT2_TOLERANCE, _batches, _fairseq_token_log_probs, _plugin_model, _randomize,
                             _save_like_fairseq_train)

    argv = [str(synthetic_data), "--task", "translation", "--arch", arch, "--encoder-layers", "3",
            "--decoder-layers", "2", "--norm", "rmsnorm", *TINY]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    model = tasks.setup_task(args).build_model(args)
    _randomize(model, 0)
    assert all(type(m) is RMSNorm for m in _norm_modules(model))
    src = tmp_path / "model.pt"
    _save_like_fairseq_train(model, args, src)
    assert ct2_peri_ln.cli_main(["--checkpoint", str(src), "--data", str(synthetic_data), "--out",
                                 str(tmp_path / "ct2")]) == 0
    plugin, task = _plugin_model(src, synthetic_data)
    expected = _fairseq_token_log_probs(plugin, task, _batches(task))
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", compute_type="float32", intra_threads=1)
    results = translator.score_batch([s for s, _, _ in expected], [t for _, t, _ in expected])
    diff = max(abs(a - b) for (_, _, scores), r in zip(expected, results) for a, b in zip(scores, r.log_probs))
    print(f"ctranslate2 {arch} rmsnorm: max |Δ log-prob| vs fairseq = {diff:.2e}")
    assert diff <= CT2_TOLERANCE, f"CTranslate2 log-probabilities differ by {diff:.3e}"


@pytest.mark.parametrize("arch, norm, message", [
    ("preln_transformer", "dyt", "CTranslate2 has no tanh normalization layer"),
    ("peri_ln_transformer", "dyt", "CTranslate2 has no tanh normalization layer"),
    ("postln_transformer", "rmsnorm", "this converter is for peri_ln, and preln with --norm rmsnorm"),
])
def test_ctranslate2_converter_refuses_in_one_line(arch, norm, message, tmp_path, capsys):
    from fairseq_admin.cli import ct2_peri_ln
    from test_export import _save_like_fairseq_train

    src = tmp_path / "in.pt"
    _save_like_fairseq_train(build_model(arch, "--norm", norm), parse_args(arch, "--norm", norm, task="translation"),
                             src)
    capsys.readouterr()
    assert ct2_peri_ln.cli_main(["--checkpoint", str(src), "--data", str(tmp_path), "--out",
                                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m fairseq_admin.cli.ct2_peri_ln: error:") and "\n" not in err, err
    assert message in err, err
    assert not (tmp_path / "out").exists()


# ---- mixed precision: fairseq's real trainers on the CPU (tests/test_mixed_precision.py says what runs) ----------
@pytest.mark.parametrize("arch, norm", [("preln_transformer", "rmsnorm"), ("postln_transformer", "dyt")])
def test_bf16_training_stays_finite(arch, norm, synthetic_data, tmp_path, monkeypatch, caplog):

    from test_cli_end_to_end import train_args
    from test_mixed_precision import train_bf16_three_updates

    argv = train_args(synthetic_data, tmp_path, arch, "--norm", norm, "--bf16", "--log-format", "json",
                      "--max-tokens", "500", "--disable-validation", max_update=3)
    train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog)


@pytest.mark.parametrize("arch, norm", [("peri_ln_transformer", "rmsnorm"), ("resi_dual_transformer", "dyt")])
def test_fp16_cli_trains_on_cpu(arch, norm, synthetic_data, tmp_path):
    import re

    from test_cli_end_to_end import train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, arch, "--norm", norm, "--fp16", "--fp16-no-flatten-grads",
                              max_update=4))
    text = log.stdout + log.stderr
    assert "done training" in text and "loss_scale" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses)


# ---- the command line: 30 updates, then generation -------------------------------------------------------------
@pytest.mark.parametrize("arch, extra", [
    ("postln_transformer", ["--norm", "dyt"]),
    ("preln_transformer", ["--norm", "rmsnorm"]),
    ("peri_ln_transformer", ["--norm", "rmsnorm"]),
    ("resi_dual_transformer", ["--norm", "dyt", "--dyt-alpha-init-attn", "0.8", "--dyt-alpha-init-ffn", "0.2",
                               "--dyt-alpha-init-final", "0.2"]),
])
def test_train_30_updates_then_generate(arch, extra, synthetic_data, tmp_path):
    from test_cli_end_to_end import generate, load_checkpoint, train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, arch, *extra, max_update=30))
    assert "done training" in log.stdout + log.stderr
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 30
    norm = extra[extra.index("--norm") + 1]
    assert state["cfg"]["model"].norm == norm
    weights = state["model"]
    alphas = [k for k in weights if k.endswith(".alpha")]
    if norm == "dyt":  # one α per norm, learned (moved off its initial value)
        assert len(alphas) == NORM_COUNT[arch[:-len("_transformer")]]
        assert all(torch.isfinite(weights[k]).all() for k in alphas)
        assert any(weights[k].item() not in {torch.tensor(v).item() for v in (0.5, 0.8, 0.2)} for k in alphas)
    else:  # RMSNorm: a gain, no bias
        assert not alphas and all(k.endswith(".weight") for k in weights if "norm" in k)
    out = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    hypotheses = sorted(line for line in out.splitlines() if line.startswith("H-"))
    assert len(hypotheses) == 30


def test_every_placement_trains_30_updates_with_every_norm(synthetic_data, tmp_path):
    """The issue's "a 30-update CLI run each": every placement scheme × {rmsnorm, dyt}, 14 runs of fairseq's own
    trainer in one fairseq-hydra-train multirun (one process: the per-run start-up of the 14 commands would cost more
    than their training), from a shipped recipe config with tiny dimensions; each run ends below the uniform loss."""
    from fairseq_admin.checkpoint_safety import load_checkpoint
    from test_hydra import BASE_CONFIG, TINY, hydra_train

    archs = ",".join(f"{scheme}_transformer_wmt_en_de" for scheme in PLACEMENTS)
    tiny = [o.replace("max_update=2", "max_update=30") for o in TINY]
    proc = hydra_train(BASE_CONFIG, "--multirun", f"model._name={archs}", "++model.norm=rmsnorm,dyt",
                       f"task.data={synthetic_data}", f"checkpoint.save_dir={tmp_path}/ckpt/${{model._name}}-"
                       "${model.norm}", "++checkpoint.no_save_optimizer_state=true",
                       "++lr_scheduler.warmup_updates=5", *tiny, cwd=tmp_path)  # the row warms up for 8000
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    for scheme in PLACEMENTS:
        for norm in ("rmsnorm", "dyt"):
            state = load_checkpoint(tmp_path / "ckpt" / f"{scheme}_transformer_wmt_en_de-{norm}" / "checkpoint_last.pt")
            assert state["optimizer_history"][-1]["num_updates"] == 30, (scheme, norm)
            assert state["cfg"]["model"]["norm"] == norm and state["cfg"]["model"]["residual_scheme"] == scheme
            assert any(k.endswith(".alpha") for k in state["model"]) == (norm == "dyt"), (scheme, norm)
            # learned something: the best validation loss (bits) is below a uniform guess over the vocabulary
            vocabulary = state["model"]["decoder.embed_tokens.weight"].shape[0]
            assert state["extra_state"]["best"] < math.log2(vocabulary), (scheme, norm, state["extra_state"]["best"])
