"""ReZero (Bachlechner et al., UAI 2021) against its official code, majumderb/rezero at e2c94a8,
``rezero/transformer/rztx.py`` (every rule cited by file:line where it is checked):

* one encoder and one decoder layer equal a float64 reference written from rztx.py's rule, forward and the gradient
  of α, with each layer's α set to a nonzero value (at α = 0 every layer is the identity and nothing is checked);
* one α per layer, 0 at init, receiving gradient; no normalization module anywhere; PyTorch's initialization;
* incremental decoding equals full decoding; refusals in one line; a 30-update fairseq-train + fairseq-generate run;
  export refused; fp16 / bf16 on the CPU;
* and the mutations these rows catch, one rule broken each (``test_the_rows_catch_a_broken_rule``).

Float64 throughout the conformance rows, with fairseq's attention softmax taken in float64 too (fairseq computes it
in float32, fairseq.utils.softmax), so what is compared is the scheme's math, to 1e-12.
"""
import argparse
import math
import re

import pytest
import torch
from torch import nn

import reference as ref
from helpers import build_model, parse_args, random_batch, run_cli

ATOL = 1e-12
LAYERS = (3, 2)
ARCH = "rezero_transformer"


@pytest.fixture(autouse=True)
def float64_softmax(monkeypatch):
    """fairseq's attention takes its softmax in float32 (fairseq.utils.softmax); here in the input's dtype."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))


# ---- the reference: rztx.py's rule, re-derived with tests/reference.py's attention and FFN ---------------------------
def rezero_layer(layer, x, stack, alpha, enc=None, enc_pad=None, self_pad=None):
    """One ReZero layer (rztx.py): encoder :71-81, ``src = src + dropout(f(src) * resweight)`` for the self-attention
    and the FFN; decoder :137-148, ``tgt = tgt + dropout(f(tgt)) * resweight`` for the self-attention, the
    cross-attention and the FFN. One ``alpha`` (``resweight``) for every sublayer of the layer, no norm anywhere.
    Eval mode: dropout is the identity. Only the projections' weights are read from ``layer``."""
    decoder = stack == "decoder"
    x = x + alpha * ref.attention(x, x, layer.self_attn, self_pad, causal=decoder)
    if decoder:
        x = x + alpha * ref.attention(x, enc, layer.encoder_attn, enc_pad)
    return x + alpha * ref.ffn(x, layer)


def _model(*extra, layers=LAYERS, seed=0):
    torch.manual_seed(seed)
    return build_model(ARCH, *extra, layers=layers).double().eval()


def _alpha_value(stack, index):
    """A distinct nonzero α per layer, one negative."""
    return (-0.6 if index == 1 else 0.35 + 0.2 * index) * (1.3 if stack == "decoder" else 1.0)


def _set_alphas(model):
    """Every parameter of each layer's scheme (the one α, unless a mutation made more) to that layer's value."""
    with torch.no_grad():
        for name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
            for i, layer in enumerate(stack.layers):
                for p in layer.residual.parameters():
                    p.fill_(_alpha_value(name, i))
    return model


def _inputs(T=6, B=3, C=16, S=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    enc = torch.randn(S, B, C, generator=g, dtype=torch.float64)
    enc_pad = torch.zeros(B, S, dtype=torch.bool)
    self_pad = torch.zeros(B, T, dtype=torch.bool)
    enc_pad[0, :2] = True
    self_pad[1, -2:] = True
    w = torch.randn(T, B, C, generator=g, dtype=torch.float64)  # a random linear loss, for the gradients
    return x, enc, enc_pad, self_pad, w


def _max_diff(a, b):
    return (a - b).abs().max().item()


def _check_layers(model, stack):
    """Each layer of ``stack``: output, and the gradient of each of its scheme's parameters, equal the reference's
    (the reference's α is one scalar per layer: shared α gets the sum over the sublayers)."""
    x, enc, enc_pad, self_pad, w = _inputs()
    layers = model.encoder.layers if stack == "encoder" else model.decoder.layers
    for i, layer in enumerate(layers):
        alpha = torch.tensor(_alpha_value(stack, i), dtype=torch.float64, requires_grad=True)
        if stack == "encoder":
            out = layer(x, encoder_padding_mask=self_pad)
            expected = rezero_layer(layer, x, stack, alpha, self_pad=self_pad)
        else:
            causal = torch.triu(torch.full((x.shape[0],) * 2, float("-inf"), dtype=torch.float64), 1)
            out, _, _ = layer(x, enc, enc_pad, self_attn_mask=causal, self_attn_padding_mask=self_pad)
            expected = rezero_layer(layer, x, stack, alpha, enc=enc, enc_pad=enc_pad, self_pad=self_pad)
        assert _max_diff(out, expected) <= ATOL, f"{stack} layer {i}: {_max_diff(out, expected):.3g}"
        (expected_grad,) = torch.autograd.grad((expected * w).sum(), alpha)
        params = list(layer.residual.parameters())
        grads = torch.autograd.grad((out * w).sum(), params)
        for g in grads:
            diff = abs(g.item() - expected_grad.item())
            assert diff <= 1e-10, f"{stack} layer {i}: dα {g.item()} vs {expected_grad.item()}"
        x = out.detach()


# ---- conformance rows ------------------------------------------------------------------------------------------------
def test_encoder_layers_match_rztx():
    """rztx.py:74-75 and :80-81: x + α·f(x) after the self-attention and after the FFN, the same α (:47)."""
    _check_layers(_set_alphas(_model()), "encoder")


def test_decoder_layers_match_rztx():
    """rztx.py:139, :142, :148: x + α·f(x) after the self-attention, the cross-attention and the FFN, one α
    (:115)."""
    _check_layers(_set_alphas(_model()), "decoder")


def test_one_alpha_per_layer_exactly_zero_at_init():
    """rztx.py:47 and :115: ``self.resweight = nn.Parameter(torch.Tensor([0]))``, once per layer. Ours: the one
    parameter of each layer's scheme, a 0-dim α (see schemes/rezero.py for the shape), under a stable key."""
    model = build_model(ARCH, layers=LAYERS)
    state = model.state_dict()
    for name, stack in (("encoder", model.encoder), ("decoder", model.decoder)):
        for i, layer in enumerate(stack.layers):
            params = dict(layer.residual.named_parameters())
            assert list(params) == ["alpha"], params.keys()
            assert params["alpha"].numel() == 1 and params["alpha"].item() == 0.0
            assert f"{name}.layers.{i}.residual.alpha" in state
    assert sum(k.endswith("residual.alpha") for k in state) == sum(LAYERS)


def test_every_layer_starts_as_the_identity_and_alpha_gets_gradient():
    """The point of α = 0 (the paper's §3): each layer is the identity at init, exactly, so each stack outputs its
    embeddings. The first backward reaches only the decoder's α among the layer parameters: every branch is
    multiplied by an α = 0, the decoder's cross-attention too, so nothing of the encoder reaches the loss (its α gets
    an exact 0). Once a step has moved the decoder's α, the second backward reaches the encoder's α."""
    torch.manual_seed(0)
    model = build_model(ARCH, "--dropout", "0", layers=LAYERS).train()
    batch = random_batch(model.encoder.dictionary)
    for layer in model.encoder.layers:
        x = torch.randn(5, 2, 16)
        assert torch.equal(layer(x, encoder_padding_mask=None), x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        out, _ = model(**batch)
        out.float().log_softmax(-1).mean().neg().backward()
        grads = {stack: [layer.residual.alpha.grad.item() for layer in getattr(model, stack).layers]
                 for stack in ("encoder", "decoder")}
        optimizer.step()
        return grads

    first = step()
    assert all(g != 0.0 and math.isfinite(g) for g in first["decoder"]), first
    assert all(g == 0.0 for g in first["encoder"]), first
    for layer in model.encoder.layers + model.decoder.layers:  # α = 0 blocks every weight inside the branches
        assert not layer.fc2.weight.grad.any() and not layer.self_attn.q_proj.weight.grad.any()
    second = step()
    assert all(g != 0.0 and math.isfinite(g) for g in second["encoder"] + second["decoder"]), second
    assert all(layer.residual.alpha.item() != 0.0 for layer in model.encoder.layers + model.decoder.layers)


def test_no_normalization_module_anywhere():
    """rztx.py builds no norm in either layer; README.md:54 ``norm`` left None: no final norm per stack. Nor an
    embedding norm (rztx.py has no embedding; fairseq's is an option, refused below)."""
    model = build_model(ARCH, layers=LAYERS)
    norms = [n for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d))
             or type(m).__name__.lower().endswith(("norm", "rmsnorm", "layernorm", "dyt"))]
    assert norms == []
    for stack in (model.encoder, model.decoder):
        assert stack.layer_norm is None and stack.layernorm_embedding is None
        for layer in stack.layers:
            assert not layer.normalize_before
            for slot in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
                assert isinstance(getattr(layer, slot, None), (nn.Identity, type(None))), slot


def test_initialization_is_pytorchs():
    """rztx.py initializes nothing but α; its layers are nn.MultiheadAttention (:40, :105-106) and nn.Linear (:42,
    :44, :108, :110), initialized as torch does (nn.MultiheadAttention._reset_parameters: Xavier-uniform fused
    in_proj, zero in_proj_bias and out_proj.bias; out_proj.weight nn.Linear's U(±1/√d)); our default --layer-init is
    ``pytorch``. Each bound checked against a fresh torch.nn.MultiheadAttention's."""
    d, heads = 16, 2
    model = build_model(ARCH, layers=LAYERS)
    torch_mha = nn.MultiheadAttention(d, heads)
    assert not torch_mha.in_proj_bias.any() and not torch_mha.out_proj.bias.any()
    qkv_bound = math.sqrt(6 / (d + 3 * d))  # Xavier-uniform over the fused (3d, d) in_proj_weight
    out_bound = 1 / math.sqrt(d)
    assert torch_mha.in_proj_weight.abs().max() <= qkv_bound and torch_mha.out_proj.weight.abs().max() <= out_bound
    for layer in model.encoder.layers + model.decoder.layers:
        for attn in filter(None, (layer.self_attn, getattr(layer, "encoder_attn", None))):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                assert not proj.bias.any()
                assert 0.7 * qkv_bound < proj.weight.abs().max() <= qkv_bound
            assert not attn.out_proj.bias.any()
            assert 0.7 * out_bound < attn.out_proj.weight.abs().max() <= out_bound
        for fc in (layer.fc1, layer.fc2):  # nn.Linear's default, weights and biases
            bound = 1 / math.sqrt(fc.in_features)
            assert 0.7 * bound < fc.weight.abs().max() <= bound and 0 < fc.bias.abs().max() <= bound
    assert model.args.layer_init == "pytorch"  # the value used, saved in the checkpoint's config


def test_incremental_decoding_equals_full_decoding():
    """What fairseq-generate relies on, with α nonzero (at α = 0 the decoder would ignore its layers)."""
    from test_field_schemes import _batch

    model = _set_alphas(_model())
    src, lengths, prev = _batch(model, pad_target=False)
    enc_out = model.encoder(src, src_lengths=lengths)
    full, _ = model.decoder(prev, encoder_out=enc_out)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc_out, incremental_state=state)
        assert _max_diff(step[:, -1], full[:, t]) <= 1e-10, f"step {t}"


# ---- the mutations the rows above catch (each one rule broken) -------------------------------------------------------
def _mutation_one_alpha_per_sublayer(monkeypatch):
    from fairseq_admin.schemes.base import ResidualScheme
    from fairseq_admin.schemes.rezero import ReZero

    def init(self, cfg, sublayers, num_layers, embed_dim, **position):
        ResidualScheme.__init__(self, cfg, sublayers, num_layers, embed_dim, **position)
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(())) for _ in sublayers)

    monkeypatch.setattr(ReZero, "__init__", init)
    monkeypatch.setattr(ReZero, "_apply", nn.Module._apply)  # ours keeps ``alpha`` float32
    monkeypatch.setattr(ReZero, "combine", lambda self, i, branch, shortcut: shortcut + self.alphas[i] * branch)
    test_decoder_layers_match_rztx()  # the same forward; each α gets only its sublayer's share of the gradient


def _mutation_alpha_init_one(monkeypatch):
    from fairseq_admin.schemes.rezero import ReZero

    init = ReZero.__init__

    def init_one(self, *args, **kwargs):
        init(self, *args, **kwargs)
        nn.init.ones_(self.alpha)

    monkeypatch.setattr(ReZero, "__init__", init_one)
    test_one_alpha_per_layer_exactly_zero_at_init()


def _mutation_layernorm_left_in_the_ffn(monkeypatch):
    from fairseq_admin.schemes.base import ResidualScheme
    from fairseq_admin.schemes.rezero import ReZero

    def build_norm(cls, cfg, dim, role, eps=1e-5):
        return ResidualScheme.build_norm.__func__(cls, cfg, dim, role, eps) if role == "ffn" else nn.Identity()

    monkeypatch.setattr(ReZero, "build_norm", classmethod(build_norm))
    test_encoder_layers_match_rztx()


def _mutation_final_layernorm(monkeypatch):
    from fairseq_admin.schemes.base import ResidualScheme
    from fairseq_admin.schemes.rezero import ReZero

    monkeypatch.setattr(ReZero, "build_stack_final", classmethod(
        lambda cls, cfg, stack, dim, carry, final: ResidualScheme.build_norm(cfg, dim, "final")))
    test_no_normalization_module_anywhere()


def _mutation_cross_attention_unscaled(monkeypatch):
    from fairseq_admin.schemes.rezero import ReZero

    def combine(self, sublayer, branch, shortcut):
        if self.sublayers[sublayer] == "cross_attn":
            return shortcut + branch
        return shortcut + self.alpha * branch

    monkeypatch.setattr(ReZero, "combine", combine)
    test_decoder_layers_match_rztx()


def _mutation_fairseq_mains_init(monkeypatch):
    from fairseq_admin.schemes.rezero import ReZero

    monkeypatch.setattr(ReZero, "official_layer_init", "fairseq")
    test_initialization_is_pytorchs()


MUTATIONS = [_mutation_one_alpha_per_sublayer, _mutation_alpha_init_one, _mutation_layernorm_left_in_the_ffn,
             _mutation_final_layernorm, _mutation_cross_attention_unscaled, _mutation_fairseq_mains_init]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.__name__[len("_mutation_"):] for m in MUTATIONS])
def test_the_rows_catch_a_broken_rule(mutation, monkeypatch):
    with pytest.raises(AssertionError):
        mutation(monkeypatch)


# ---- options ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--layernorm-embedding"], "rezero has no normalization"),
    (["--encoder-normalize-before"], "is a Post-LN scheme"),
])
def test_refused_at_build(extra, message):
    with pytest.raises(ValueError, match=message) as info:
        build_model(ARCH, *extra)
    assert "\n" not in str(info.value)


def test_a_norm_choice_is_refused():
    """``--norm`` (the normalization as a choice, issue 29) has nothing to replace here."""
    from fairseq_admin.schemes.rezero import ReZero

    ReZero.check_args(argparse.Namespace(norm="layernorm"))
    with pytest.raises(ValueError, match="rezero has no normalization to replace; remove --norm rmsnorm"):
        ReZero.check_args(argparse.Namespace(norm="rmsnorm"))


def test_export_refuses_in_one_line(tmp_path, capsys):
    """No stock fairseq layer is norm-free (fairseq_admin/cli/export.py says why): refused before anything is
    written."""
    from fairseq_admin.cli import export
    from test_export import _save_like_fairseq_train

    _save_like_fairseq_train(build_model(ARCH), parse_args(ARCH, task="translation"), tmp_path / "in.pt")
    capsys.readouterr()
    assert export.cli_main(["--checkpoint", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rezero cannot be exported" in err and "LayerNorm" in err, err
    assert not (tmp_path / "out.pt").exists()


# ---- the command line ------------------------------------------------------------------------------------------------
def test_train_30_updates_then_generate(synthetic_data, tmp_path):
    from test_cli_end_to_end import generate, load_checkpoint, train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, ARCH, max_update=30))
    text = log.stdout + log.stderr
    assert "done training" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses  # it learns
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 30
    assert state["cfg"]["model"].residual_scheme == "rezero" and state["cfg"]["model"].layer_init == "pytorch"
    alphas = {k: v for k, v in state["model"].items() if k.endswith("residual.alpha")}
    assert len(alphas) == 4 and all(v.item() != 0.0 and math.isfinite(v.item()) for v in alphas.values())
    out = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    assert len([line for line in out.splitlines() if line.startswith("H-")]) == 30


# ---- mixed precision -------------------------------------------------------------------------------------------------
LOW = (torch.float16, torch.bfloat16)


@pytest.mark.parametrize("cast", ["half", "bfloat16", "to_dtype"])
def test_alpha_stays_float32_after_casting_the_model(cast):
    model = _set_alphas(build_model(ARCH, layers=LAYERS).float())
    before = [layer.residual.alpha.detach().clone() for layer in model.encoder.layers + model.decoder.layers]
    dtype = torch.bfloat16 if cast == "bfloat16" else torch.float16
    model = model.half() if cast == "half" else model.bfloat16() if cast == "bfloat16" else model.to(dtype)
    assert model.encoder.layers[0].fc1.weight.dtype == dtype
    for layer, b in zip(model.encoder.layers + model.decoder.layers, before):
        assert isinstance(layer.residual.alpha, nn.Parameter)
        assert layer.residual.alpha.dtype == torch.float32 and torch.equal(layer.residual.alpha, b)
    model.double()
    assert model.encoder.layers[0].residual.alpha.dtype == torch.float64


@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_forward_backward_on_cpu(dtype):
    """The model in fp16 / bf16 on the CPU (torch runs both there): the join keeps the activations' dtype, the
    output is the float32 model's to the precision's rounding, and every α gets a finite float32 gradient."""
    torch.manual_seed(0)
    model = _set_alphas(build_model(ARCH, "--dropout", "0", layers=LAYERS).float())
    batch = random_batch(model.encoder.dictionary)
    expected, _ = model(**batch)
    low = model.to(dtype).train()
    out, _ = low(**batch)
    assert out.dtype == dtype and torch.isfinite(out).all()
    error = (out.float() - expected).abs().max().item() / expected.abs().max().item()
    assert error < (2e-2 if dtype == torch.float16 else 8e-2), error
    scheme = low.encoder.layers[0].residual
    x = torch.randn(4, 2, 16).to(dtype)
    assert scheme.combine(0, x, x).dtype == dtype
    out.float().log_softmax(-1).mean().neg().backward()
    for layer in low.encoder.layers + low.decoder.layers:
        grad = layer.residual.alpha.grad
        assert grad.dtype == torch.float32 and torch.isfinite(grad) and grad.item() != 0.0


def test_bf16_trainer_stays_finite(synthetic_data, tmp_path, monkeypatch, caplog):
    """fairseq's bf16 trainer (tests/test_mixed_precision.py says how it runs on a CPU), 3 updates."""

    from test_cli_end_to_end import train_args
    from test_mixed_precision import train_bf16_three_updates

    argv = train_args(synthetic_data, tmp_path, ARCH, "--bf16", "--log-format", "json", "--max-tokens", "500",
                      "--disable-validation", max_update=3)
    _seen, state = train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog)
    alphas = [v for k, v in state["model"].items() if k.endswith("residual.alpha")]
    assert alphas and all(v.dtype == torch.float32 and v.item() != 0.0 for v in alphas)


def test_memory_efficient_fp16_cli_trains_on_cpu(synthetic_data, tmp_path):
    """``--memory-efficient-fp16`` (no float32 master copy: α stays float32 itself); plain ``--fp16`` needs CUDA in
    fairseq (tests/test_mixed_precision.py). Loss scale 8: at fairseq's initial 128 the shared embedding's fp16
    gradient overflows at update 4 here (the norm-free decoder output is √d·E + P, no LayerNorm scales it down; Post-LN
    runs 8 updates at 128), and fairseq's overflow path then calls ``torch.tensor(0.0).cuda()`` (trainer.py:1023),
    which a CPU cannot run. On a GPU fairseq halves the scale and goes on."""
    from test_cli_end_to_end import load_checkpoint, train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, ARCH, "--memory-efficient-fp16", "--fp16-init-scale", "8",
                              max_update=4))
    text = log.stdout + log.stderr
    assert "done training" in text and "loss_scale" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses)
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    alphas = [v for k, v in state["model"].items() if k.endswith("residual.alpha")]
    assert alphas and all(v.dtype == torch.float32 and v.item() != 0.0 for v in alphas)
