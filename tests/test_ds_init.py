"""DS-Init (fairseq_admin/schemes/ds_init.py): conformance rows from the official code, the paper's rule as an option,
the forward (Post-LN's) against the float64 reference, the mutations the rows catch, the options, a 30-update CLI
run exported to stock fairseq, and fp16/bf16 training.

The official rule, read in bzhangGo/zero at d97e2c2 (TensorFlow):

* models/transformer.py:37-45 (encoder) and :123-131 (decoder): for ``layer in range(L)``, with
  ``deep_transformer_init``, the scope ``layer_{layer}`` gets ``tf.variance_scaling_initializer(
  params.initializer_gain * (layer + 1) ** -0.5, mode="fan_avg", distribution="uniform")``: U(−b, b) with
  b = sqrt(3·scale / fan_avg), scale = gain·l^(-1/2), fan_avg = (fan_in + fan_out)/2, l = layer + 1 per stack.
  ``initializer_gain=1.`` in the DS-Init command (docs/depth_scale_init_and_merged_attention/README.md).
* The variables that initializer reaches (created without an initializer of their own, func.py:48): the fused
  self-attention ``qkv_map`` [d, 3d] (func.py:196), the cross-attention's ``q_map`` [d, d], ``k_map``/``v_map``
  [d_enc, d] (func.py:207, :211, :212), every ``o_map`` [d, d] (func.py:278), the FFN's ``enlarge`` [d, ffn] and
  ``output`` [ffn, d] (func.py:331, :336). Biases zero (func.py:16, :58), LayerNorm scale 1 and offset 0
  (func.py:297-298). Embeddings outside the layer scopes, N(0, d^-1/2) (models/transformer.py:18, :24-26).

The paper's text (README figure dsinit.png): U(−γα/√l, γα/√l), γ = sqrt(6/(d_i + d_o)).

A weight drawn U(−b, b) is checked by its largest magnitude (≤ b, and ≥ 0.98·b: with ≥ 2,304 draws the chance of
missing that is below 1e-20) and its variance (b²/3 within 10%, about 5 standard errors); biases and LayerNorms
exactly. The reference bounds are float64 arithmetic written here from the formulas above, not the scheme's helpers.
"""
import math

import pytest
import torch

import reference as ref
from helpers import build_model, run_cli

D_ENC, D_DEC, FFN_ENC, FFN_DEC, LAYERS = 48, 64, 256, 128, (4, 3)
DIMS = ["--encoder-embed-dim", str(D_ENC), "--decoder-embed-dim", str(D_DEC), "--encoder-ffn-embed-dim",
        str(FFN_ENC), "--decoder-ffn-embed-dim", str(FFN_DEC), "--encoder-attention-heads", "2",
        "--decoder-attention-heads", "2"]


# ---- the float64 reference of the rule ------------------------------------------------------------------------------
def official_reference_bound(fan_in, fan_out, l, gain=1.0):
    """TF VarianceScaling(scale=gain·l^-1/2, mode=fan_avg, distribution=uniform): limit = sqrt(3·scale/fan_avg)."""
    scale = gain * l ** -0.5
    return math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))


def paper_reference_bound(fan_in, fan_out, l, alpha=1.0):
    """The paper: γ·α/√l, γ = sqrt(6/(d_i + d_o))."""
    return math.sqrt(6.0 / (fan_in + fan_out)) * alpha / math.sqrt(l)


def official_variables(stack):
    """fairseq weight -> (fan_in, fan_out) of the official TF variable it is drawn as (see the module docstring)."""
    d, ffn = (D_ENC, FFN_ENC) if stack == "encoder" else (D_DEC, FFN_DEC)
    rows = {f"self_attn.{p}_proj.weight": (d, 3 * d) for p in "qkv"}  # slices of qkv_map [d, 3d], func.py:196
    rows["self_attn.out_proj.weight"] = (d, d)  # o_map, func.py:278
    if stack == "decoder":
        rows["encoder_attn.q_proj.weight"] = (d, d)  # q_map, func.py:207
        rows["encoder_attn.k_proj.weight"] = (D_ENC, d)  # k_map over the encoder output, func.py:211
        rows["encoder_attn.v_proj.weight"] = (D_ENC, d)  # v_map, func.py:212
        rows["encoder_attn.out_proj.weight"] = (d, d)  # o_map, func.py:278
    rows["fc1.weight"] = (d, ffn)  # ffn_layer "enlarge", func.py:331
    rows["fc2.weight"] = (ffn, d)  # ffn_layer "output", func.py:336
    return rows


def _ds_init_model(*extra, seed=0):
    torch.manual_seed(seed)
    return build_model("ds_init_transformer", *DIMS, *extra, layers=LAYERS)


def _check_uniform(w, b, where):
    w = w.detach().double()
    top = w.abs().max().item()
    assert top <= b * (1 + 1e-6), f"{where}: max |w| = {top:.6g} > bound {b:.6g}"
    assert top >= 0.98 * b, f"{where}: max |w| = {top:.6g}, far below the bound {b:.6g}"
    ratio = w.var().item() / (b * b / 3)
    assert abs(ratio - 1) < 0.1, f"{where}: variance is {ratio:.3f} x bound^2/3"


def _check_rows(model, bound_of, zero_biases=True):
    """Every parameter of every layer: each weight matrix U(−b, b) with b = ``bound_of(fan_in, fan_out, l)``,
    biases zero (func.py:16, :58), LayerNorm 1 and 0 (func.py:297-298). A parameter of no row fails."""
    for stack in ("encoder", "decoder"):
        rows = official_variables(stack)
        for index, layer in enumerate(getattr(model, stack).layers):
            l = index + 1  # models/transformer.py:40, :126: (layer + 1) ** -0.5
            for name, p in layer.named_parameters():
                where = f"{stack} layer {l}: {name}"
                if name in rows:
                    _check_uniform(p, bound_of(*rows[name], l), where)
                elif "layer_norm" in name:
                    assert torch.equal(p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)), where
                elif name.endswith("bias"):
                    if zero_biases:
                        assert torch.equal(p, torch.zeros_like(p)), where
                else:
                    raise AssertionError(f"{where}: a parameter no row covers")


def _official_rows():
    _check_rows(_ds_init_model(), official_reference_bound)


# ---- conformance rows -----------------------------------------------------------------------------------------------
def test_registered_with_its_architectures():
    from fairseq.models import ARCH_MODEL_REGISTRY

    from fairseq_admin.schemes import SCHEMES

    assert SCHEMES["ds_init"].name == "ds_init" and not SCHEMES["ds_init"].normalize_before
    assert "ds_init_transformer_iwslt_de_en" in ARCH_MODEL_REGISTRY
    assert "ds_init_transformer_wmt_en_de" in ARCH_MODEL_REGISTRY


def test_official_rule_per_layer_encoder_and_decoder():
    """bzhangGo/zero models/transformer.py:38-42 (encoder), :124-128 (decoder): variance_scaling_initializer(
    initializer_gain · (layer + 1)^-1/2, fan_avg, uniform), gain 1; the variables of func.py:196, :207, :211, :212,
    :278, :331, :336; zero biases (func.py:16, :58); LayerNorm 1/0 (func.py:297-298)."""
    _official_rows()


def test_official_bound_is_the_xavier_bound_times_l_to_the_minus_quarter():
    """The variance scales by l^-1/2, so the bound by l^-1/4 (not the paper's l^-1/2)."""
    from fairseq_admin.schemes.ds_init import official_bound

    for fan_in, fan_out in [(64, 192), (48, 48), (512, 2048), (2048, 512)]:
        xavier = math.sqrt(6.0 / (fan_in + fan_out))
        for l in (1, 2, 3, 6, 12, 30):
            assert official_bound(fan_in, fan_out, l, 1.0) == pytest.approx(xavier * l ** -0.25, rel=1e-15)
            assert official_bound(fan_in, fan_out, l, 1.0) == pytest.approx(
                official_reference_bound(fan_in, fan_out, l), rel=1e-15)
            assert official_bound(fan_in, fan_out, l, 0.5) == pytest.approx(
                official_reference_bound(fan_in, fan_out, l, 0.5), rel=1e-15)
    # at l = 1 the fused qkv_map's slices are fairseq's own q/k/v init (Xavier-uniform, gain 1/sqrt(2))
    assert official_bound(64, 192, 1, 1.0) == pytest.approx(math.sqrt(6.0 / 128) / math.sqrt(2), rel=1e-15)


@pytest.mark.parametrize("gain", [None, 0.5])
def test_paper_rule_option(gain):
    """--ds-init-rule paper: the bound γ·α/√l (README figure dsinit.png), α = --ds-init-gain."""
    extra = ["--ds-init-rule", "paper"] + (["--ds-init-gain", str(gain)] if gain else [])
    _check_rows(_ds_init_model(*extra), lambda fi, fo, l: paper_reference_bound(fi, fo, l, gain or 1.0))


def test_official_gain_multiplies_the_variance():
    _check_rows(_ds_init_model("--ds-init-gain", "0.5"), lambda fi, fo, l: official_reference_bound(fi, fo, l, 0.5))


def test_layer_init_fairseq_keeps_fairseq_main_biases():
    """The default --layer-init is fairseq-0.9 (all biases zero, as func.linear); fairseq keeps fairseq main's
    nn.Linear biases, and the weights still follow the rule."""
    model = _ds_init_model("--layer-init", "fairseq")
    _check_rows(model, official_reference_bound, zero_biases=False)
    assert model.encoder.layers[0].fc1.bias.abs().max() > 0
    assert _ds_init_model().encoder.layers[0].fc1.bias.abs().max() == 0


def test_embeddings_are_fairseqs_untouched():
    """Embeddings are outside the official layer scopes (models/transformer.py:18, :24-26: N(0, d^-1/2), fairseq's
    own): the same tensors as a same-seed Post-LN model's."""
    ds = _ds_init_model()
    torch.manual_seed(0)
    post = build_model("postln_transformer", *DIMS, layers=LAYERS)
    for stack in ("encoder", "decoder"):
        assert torch.equal(getattr(ds, stack).embed_tokens.weight, getattr(post, stack).embed_tokens.weight)


# ---- the forward is Post-LN's ---------------------------------------------------------------------------------------
@pytest.fixture
def float64_softmax(monkeypatch):
    """fairseq's attention takes its softmax in float32 (fairseq.utils.softmax); here in the input's dtype."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))


def _float64_model():
    torch.manual_seed(0)
    model = build_model("ds_init_transformer", layers=(3, 2)).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # random γ and β, so a missing or swapped norm shows
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * torch.randn(p.shape, generator=g))
    return model


def test_layers_match_the_post_ln_float64_reference(float64_softmax):
    model = _float64_model()
    g = torch.Generator().manual_seed(2)
    T, S, B, C = 6, 5, 3, 16
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    enc = torch.randn(S, B, C, generator=g, dtype=torch.float64)
    enc_pad = torch.zeros(B, S, dtype=torch.bool)
    enc_pad[0, :2] = True
    self_pad = torch.zeros(B, T, dtype=torch.bool)
    self_pad[1, :3] = True
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    h = x
    for i, layer in enumerate(model.encoder.layers):
        out = layer(h, encoder_padding_mask=self_pad)
        expected = ref.encoder_layer("postln", layer, h, self_pad)
        assert (out - expected).abs().max() <= 1e-12, f"encoder layer {i}"
        h = out
    h = x
    for i, layer in enumerate(model.decoder.layers):
        out, _, _ = layer(h, enc, enc_pad, self_attn_mask=causal)
        expected = ref.decoder_layer("postln", layer, h, enc, enc_pad=enc_pad)
        assert (out - expected).abs().max() <= 1e-12, f"decoder layer {i}"
        h = out


def test_incremental_decoding_equals_full_decoding(float64_softmax):
    model = _float64_model()
    d = model.decoder.dictionary
    g = torch.Generator().manual_seed(0)
    src = torch.randint(d.nspecial, len(d), (3, 7), generator=g)
    src[0, :2] = d.pad()
    prev = torch.randint(d.nspecial, len(d), (3, 6), generator=g)
    prev[:, 0] = d.eos()
    enc_out = model.encoder(src, src_lengths=(src != d.pad()).sum(1))
    full, _ = model.decoder(prev, encoder_out=enc_out)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc_out, incremental_state=state)
        assert (step[:, -1] - full[:, t]).abs().max() <= 1e-10, f"step {t}"


def test_same_tensors_as_post_ln_and_bit_identical_outputs():
    """What the export by renaming relies on: a DS-Init state dict loads strictly into a Post-LN model, which then
    computes the same outputs bit for bit."""
    from helpers import random_batch

    ds = _ds_init_model().eval()
    post = build_model("postln_transformer", *DIMS, layers=LAYERS).eval()
    post.load_state_dict(ds.state_dict(), strict=True)
    batch = random_batch(ds.encoder.dictionary)
    with torch.no_grad():
        assert torch.equal(ds(**batch)[0], post(**batch)[0])


# ---- the mutations the rows catch (each one rule broken) -------------------------------------------------------------
def _mutation_bound_scaled_by_l_to_the_minus_half(monkeypatch):
    """The paper's exponent in the official rule: the bound (not the variance) times l^-1/2."""
    import fairseq_admin.schemes.ds_init as ds_init

    monkeypatch.setattr(ds_init, "official_bound",
                        lambda fi, fo, l, gain: math.sqrt(3 * gain / ((fi + fo) / 2)) * l ** -0.5)
    _official_rows()


def _mutation_fan_in_instead_of_fan_avg(monkeypatch):
    import fairseq_admin.schemes.ds_init as ds_init

    monkeypatch.setattr(ds_init, "official_bound", lambda fi, fo, l, gain: math.sqrt(3 * gain * l ** -0.5 / fi))
    _official_rows()


def _mutation_self_attention_qkv_with_their_own_fans(monkeypatch):
    """q/k/v as separate d x d matrices instead of slices of the fused qkv_map (func.py:196)."""
    import fairseq_admin.schemes.ds_init as ds_init

    original = ds_init.fans
    monkeypatch.setattr(ds_init, "fans", lambda layer: [
        (n, p, fi, p.out_features if n.startswith("self_attn.") else fo) for n, p, fi, fo in original(layer)])
    _official_rows()


def _mutation_l_off_by_one(monkeypatch):
    from fairseq_admin.schemes.ds_init import DSInit

    monkeypatch.setattr(DSInit, "depth", property(lambda self: self.layer_index + 2))
    _official_rows()


def _mutation_decoder_depth_continues_after_the_encoder(monkeypatch):
    from fairseq_admin.schemes.ds_init import DSInit

    monkeypatch.setattr(DSInit, "depth", property(
        lambda self: self.layer_index + 1 + (self.cfg.encoder.layers if self.stack == "decoder" else 0)))
    _official_rows()


def _mutation_cross_attention_left_as_fairseq_drew_it(monkeypatch):
    import fairseq_admin.schemes.ds_init as ds_init

    original = ds_init.fans
    monkeypatch.setattr(ds_init, "fans", lambda layer: [row for row in original(layer)
                                                        if not row[0].startswith("encoder_attn.")])
    _official_rows()


def _mutation_fairseq_main_biases(monkeypatch):
    from fairseq_admin.schemes.ds_init import DSInit

    monkeypatch.setattr(DSInit, "official_layer_init", "fairseq")
    _official_rows()


def _mutation_paper_rule_scales_the_variance(monkeypatch):
    import fairseq_admin.schemes.ds_init as ds_init

    monkeypatch.setattr(ds_init, "paper_bound", ds_init.official_bound)
    test_paper_rule_option(None)


MUTATIONS = [_mutation_bound_scaled_by_l_to_the_minus_half, _mutation_fan_in_instead_of_fan_avg,
             _mutation_self_attention_qkv_with_their_own_fans, _mutation_l_off_by_one,
             _mutation_decoder_depth_continues_after_the_encoder, _mutation_cross_attention_left_as_fairseq_drew_it,
             _mutation_fairseq_main_biases, _mutation_paper_rule_scales_the_variance]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.__name__[len("_mutation_"):] for m in MUTATIONS])
def test_the_rows_catch_a_broken_rule(mutation, monkeypatch):
    with pytest.raises(AssertionError):
        mutation(monkeypatch)


# ---- options --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, extra, message", [
    ("postln_transformer", ["--ds-init-rule", "paper"], "--ds-init-rule is an option of --residual-scheme ds_init"),
    ("postln_transformer", ["--ds-init-gain", "0.5"], "--ds-init-gain is an option of --residual-scheme ds_init"),
    ("ds_init_transformer", ["--ds-init-gain", "0"], "--ds-init-gain must be a positive number"),
    ("ds_init_transformer", ["--ds-init-gain", "nan"], "--ds-init-gain must be a positive number"),
    ("ds_init_transformer", ["--encoder-normalize-before"], "is a Post-LN scheme"),
])
def test_refused_at_build(arch, extra, message):
    with pytest.raises(ValueError, match=message) as info:
        build_model(arch, *extra)
    assert "\n" not in str(info.value)


def test_bad_rule_is_one_line_at_the_command_line(synthetic_data, tmp_path):
    from helpers import assert_one_error_line
    from test_cli_end_to_end import train_args

    proc = run_cli(*train_args(synthetic_data, tmp_path, "ds_init_transformer", "--ds-init-rule", "text"),
                   check=False)
    assert_one_error_line(proc, "--ds-init-rule")


# ---- the command line, and the export to stock fairseq --------------------------------------------------------------
def _generation_lines(stdout):
    """The hypotheses and their per-token scores (H- and P- lines), sorted by sentence."""
    return sorted(line for line in stdout.splitlines() if line.startswith(("H-", "P-")))


def test_train_30_updates_export_and_stock_fairseq_generate(synthetic_data, tmp_path):
    """fairseq-train 30 updates; fairseq-admin-export; stock fairseq-generate (no --user-dir, no plugin option in
    the exported config) prints the plugin's hypotheses and scores line for line."""
    from fairseq_admin.cli import export
    from test_cli_end_to_end import generate, load_checkpoint, train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, "ds_init_transformer", "--encoder-layers", "3",
                              max_update=30))
    assert "done training" in log.stdout + log.stderr
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 30
    cfg = state["cfg"]["model"]
    assert cfg.residual_scheme == "ds_init" and cfg.layer_init == "fairseq-0.9"
    plugin = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    assert len([line for line in plugin.splitlines() if line.startswith("H-")]) == 30

    lines = export.main(["--checkpoint", str(tmp_path / "checkpoint_last.pt"), "--out", str(tmp_path / "stock.pt"),
                         "--data", str(synthetic_data)])
    assert lines[0].startswith("ds_init -> fairseq transformer")
    stock_state = torch.load(tmp_path / "stock.pt", weights_only=True)
    assert stock_state["cfg"]["common"]["user_dir"] is None
    assert not any("ds_init" in str(k) or "residual" in str(k) for k in stock_state["cfg"]["model"])
    assert stock_state["cfg"]["model"]["arch"] == "transformer"
    assert stock_state["model"].keys() == state["model"].keys()  # renaming only: the same tensors, bit for bit
    assert all(torch.equal(stock_state["model"][k], v) for k, v in state["model"].items())

    stock = run_cli("fairseq-generate", synthetic_data, "--path", tmp_path / "stock.pt", "--beam", "4", "--lenpen",
                    "0.6", "--batch-size", "16", "--required-batch-size-multiple", "1", "--cpu",
                    "--num-workers", "0").stdout
    assert _generation_lines(stock) == _generation_lines(plugin)


# ---- mixed precision ------------------------------------------------------------------------------------------------
def test_bf16_training_stays_finite(synthetic_data, tmp_path, monkeypatch, caplog):
    """fairseq's real bf16 trainer on the CPU (tests/test_mixed_precision.py says how): 3 updates, finite."""

    from test_cli_end_to_end import train_args
    from test_mixed_precision import train_bf16_three_updates

    argv = train_args(synthetic_data, tmp_path, "ds_init_transformer", "--bf16", "--log-format", "json",
                      "--max-tokens", "500", "--disable-validation", max_update=3)
    train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog)


def test_fp16_cli_trains_on_cpu(synthetic_data, tmp_path):
    import re

    from test_cli_end_to_end import train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, "ds_init_transformer", "--fp16", "--fp16-no-flatten-grads",
                              max_update=4))
    text = log.stdout + log.stderr
    assert "done training" in text and "loss_scale" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cast_keeps_the_bounds(dtype):
    """DS-Init draws in float32 at build time; a cast to fp16/bf16 rounds each weight, never past its bound's
    rounding (the smallest bounds here, ~0.1, are far above fp16's subnormals)."""
    model = _ds_init_model().to(dtype)
    for index, layer in enumerate(model.decoder.layers):
        rows = official_variables("decoder")
        for name, p in layer.named_parameters():
            if name in rows:
                assert p.dtype == dtype
                b = torch.tensor(official_reference_bound(*rows[name], index + 1)).to(dtype).item()
                assert p.abs().max().item() <= b
