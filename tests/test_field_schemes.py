"""The schemes of issue 28 (ResiDual, Peri-LN, LayerNorm Scaling, Mix-LN): each equal to a float64 reference written
from its official rule (tests/field_reference.py) within 1e-12, incremental decoding equal to full decoding, one
conformance row per official rule (file:line in each docstring), the mutations those rows catch, its options refused
elsewhere, and a 30-update fairseq-train + fairseq-generate run.

Float64 throughout, with fairseq's attention softmax taken in float64 too (fairseq computes it in float32,
fairseq.utils.softmax; the encoder's fused attention is float64 already): what is compared is the scheme's math, to
1e-12. Every LayerNorm's γ and β is drawn at random, so a norm that is missing, doubled or swapped shows.
"""
import math

import pytest
import torch

import field_reference as fref
from helpers import build_model, run_cli

ATOL = 1e-12
LAYERS = (5, 4)  # Mix-LN's default α = 0.25: one Post-LN layer in each stack; α = 0.5: two in each
# (test id, --arch, extra options, per-layer reference)
LAYER_CASES = [
    ("lns", "lns_transformer", [], lambda layer, i, L, x, stack, **kw: fref.lns_layer(layer, i + 1, x, stack, **kw)),
    ("mix_ln", "mix_ln_transformer", [],
     lambda layer, i, L, x, stack, **kw: fref.mix_ln_layer(layer, i, L, x, stack, **kw)),
    ("mix_ln-alpha-0.5", "mix_ln_transformer", ["--mix-ln-alpha", "0.5"],
     lambda layer, i, L, x, stack, **kw: fref.mix_ln_layer(layer, i, L, x, stack, alpha=0.5, **kw)),
    ("peri_ln", "peri_ln_transformer", [],
     lambda layer, i, L, x, stack, **kw: fref.peri_ln_layer(layer, x, stack, **kw)),
    ("peri_ln-output-only", "peri_ln_transformer", ["--peri-ln-output-only"],
     lambda layer, i, L, x, stack, **kw: fref.peri_ln_layer(layer, x, stack, output_only=True, **kw)),
]
CASE = {name: (arch, extra, reference) for name, arch, extra, reference in LAYER_CASES}


@pytest.fixture(autouse=True)
def float64_softmax(monkeypatch):
    """fairseq's attention takes its softmax in float32 (fairseq.utils.softmax); here in the input's dtype."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))


def _model(arch, *extra, layers=LAYERS, seed=0):
    """A float64 eval model whose every norm has random γ and β."""
    torch.manual_seed(seed)
    model = build_model(arch, *extra, layers=layers).double().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * torch.randn(p.shape, generator=g))
    return model


def _inputs(T=6, B=3, C=16, S=5, seed=1, padding=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    enc = torch.randn(S, B, C, generator=g, dtype=torch.float64)
    enc_pad = torch.zeros(B, S, dtype=torch.bool)
    self_pad = torch.zeros(B, T, dtype=torch.bool)
    if padding:
        enc_pad[0, :2] = True
        self_pad[1, -2:] = True
    return x, enc, enc_pad if padding else None, self_pad if padding else None


def _causal(T):
    return torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)


def _max_diff(a, b):
    return (a - b).abs().max().item()


def _check_encoder_layers(model, reference, padding=True):
    x, _, _, pad = _inputs(padding=padding)
    L = len(model.encoder.layers)
    for i, layer in enumerate(model.encoder.layers):
        out = layer(x, encoder_padding_mask=pad)
        expected = reference(layer, i, L, x, "encoder", self_pad=pad)
        assert _max_diff(out, expected) <= ATOL, f"encoder layer {i}: {_max_diff(out, expected):.3g}"
        x = out


def _check_decoder_layers(model, reference, padding=True):
    x, enc, enc_pad, self_pad = _inputs(padding=padding)
    L = len(model.decoder.layers)
    for i, layer in enumerate(model.decoder.layers):
        out, _, _ = layer(x, enc, enc_pad, self_attn_mask=_causal(x.shape[0]), self_attn_padding_mask=self_pad)
        expected = reference(layer, i, L, x, "decoder", enc=enc, enc_pad=enc_pad, self_pad=self_pad)
        assert _max_diff(out, expected) <= ATOL, f"decoder layer {i}: {_max_diff(out, expected):.3g}"
        x = out


# ---- each layer equals its float64 reference ------------------------------------------------------------------------
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("case", list(CASE))
def test_encoder_layers_match_reference(case, padding):
    arch, extra, reference = CASE[case]
    _check_encoder_layers(_model(arch, *extra), reference, padding)


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("case", list(CASE))
def test_decoder_layers_match_reference(case, padding):
    arch, extra, reference = CASE[case]
    _check_decoder_layers(_model(arch, *extra), reference, padding)


def _batch(model, seed=0, pad_target=True):
    """Left-padded sources; right-padded targets unless ``pad_target`` is False (a decoder fed one position at a
    time never sees padding, so incremental decoding is compared on unpadded targets)."""
    d = model.decoder.dictionary
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (3, 7), generator=g)
    src[0, :2] = d.pad()
    prev = torch.randint(d.nspecial, len(d), (3, 6), generator=g)
    prev[:, 0] = d.eos()
    if pad_target:
        prev[1, -2:] = d.pad()
    return src, (src != d.pad()).sum(1), prev


def _embedded(stack, tokens):
    """A stack's input as fairseq computes it (embeddings, positions, embedding norm; the encoder zeroes padding),
    (time, batch, dim). Eval mode: no dropout."""
    if hasattr(stack, "forward_embedding"):
        x, _ = stack.forward_embedding(tokens)
        x = x * (1 - tokens.eq(stack.padding_idx).unsqueeze(-1).type_as(x))
    else:
        x = stack.embed_scale * stack.embed_tokens(tokens) + stack.embed_positions(tokens)
    return x.transpose(0, 1)


def _resi_dual_check(model, recorded=None):
    """The whole encoder and decoder against the ResiDual stack reference. ``recorded``: in train mode, {stack:
    {"input": the first layer's input, "branches": the sublayer outputs}} as fairseq's layers drew their dropout."""
    src, lengths, prev = _batch(model)
    enc_pad = src.eq(model.encoder.padding_idx)
    enc_out = model.encoder(src, src_lengths=lengths)
    features, _ = model.decoder(prev, encoder_out=enc_out, features_only=True)
    enc = enc_out["encoder_out"][0]
    inputs = {"encoder": _embedded(model.encoder, src), "decoder": _embedded(model.decoder, prev)}
    branches = {"encoder": None, "decoder": None}
    if recorded:
        inputs = {stack: recorded[stack]["input"] for stack in recorded}
        branches = {stack: recorded[stack]["branches"] for stack in recorded}
    expected_enc = fref.resi_dual_stack(model.encoder.layers, inputs["encoder"], "encoder",
                                        model.encoder.layer_norm.norm, self_pad=enc_pad, branches=branches["encoder"])
    assert _max_diff(enc, expected_enc) <= ATOL, f"encoder: {_max_diff(enc, expected_enc):.3g}"
    expected_dec = fref.resi_dual_stack(model.decoder.layers, inputs["decoder"], "decoder",
                                        model.decoder.layer_norm.norm, enc=enc, enc_pad=enc_pad,
                                        self_pad=prev.eq(model.decoder.padding_idx), branches=branches["decoder"])
    diff = _max_diff(features.transpose(0, 1), expected_dec)
    assert diff <= ATOL, f"decoder: {diff:.3g}"


def test_resi_dual_stacks_match_reference():
    """microsoft/ResiDual: resi_dual_layers.py:35-39, :49-51 (encoder), :134-136, :162-164, :175-177 (decoder)
    res += the dropped-out branch, x = LN(x + branch); resi_dual.py:107, :252 res starts at the first layer's input;
    :131, :283 output α·x_N + LN_f(res_N), α = 1 (:296-297); :24, :157 LN_f with eps 1e-7. Afterwards no stack
    keeps a tensor of that forward."""
    model = _model("resi_dual_transformer")
    _resi_dual_check(model)
    assert model.encoder.carry.stream is None and model.decoder.carry.stream is None


def test_resi_dual_one_layer_stacks_match_reference():
    _resi_dual_check(_model("resi_dual_transformer", layers=(1, 1)))


def test_resi_dual_dual_stream_takes_the_dropped_out_branch(monkeypatch):
    """In training the dual stream adds the same dropped-out sublayer output the Post-LN sum gets (resi_dual_layers.py
    :35-37 ``x = self.dropout_module(x); res = res + x * scale``): with dropout on, the stacks equal the reference
    fed with the branches fairseq's layers produced."""
    from fairseq_admin.schemes.resi_dual import ResiDual

    model = _model("resi_dual_transformer", "--dropout", "0.3", "--attention-dropout", "0", "--activation-dropout",
                   "0").train()
    recorded = {"encoder": {"branches": []}, "decoder": {"branches": []}}
    combine = ResiDual.combine

    def recording(self, sublayer, branch, shortcut):
        if self.layer_index == 0 and sublayer == 0:
            recorded[self.stack]["input"] = self.layer_input  # after the embedding's own dropout
        recorded[self.stack]["branches"].append(branch)
        return combine(self, sublayer, branch, shortcut)

    monkeypatch.setattr(ResiDual, "combine", recording)
    with torch.no_grad():
        _resi_dual_check(model, recorded)


# ---- incremental decoding equals full decoding ----------------------------------------------------------------------
@pytest.mark.parametrize("arch, extra", [("resi_dual_transformer", []), ("peri_ln_transformer", []),
                                         ("peri_ln_transformer", ["--peri-ln-output-only"]),
                                         ("lns_transformer", []), ("mix_ln_transformer", [])])
def test_incremental_decoding_equals_full_decoding(arch, extra):
    """What fairseq-generate relies on: the decoder run one position at a time (its incremental state, and for
    ResiDual the dual stream started again at each step) gives the full forward's output at every position."""
    model = _model(arch, *extra)
    src, lengths, prev = _batch(model, pad_target=False)
    enc_out = model.encoder(src, src_lengths=lengths)
    full, _ = model.decoder(prev, encoder_out=enc_out)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc_out, incremental_state=state)
        assert _max_diff(step[:, -1], full[:, t]) <= 1e-10, f"step {t}"


# ---- conformance rows: one per official rule ------------------------------------------------------------------------
def test_resi_dual_final_step_replaces_the_final_layernorm():
    """resi_dual.py:24/:157: LayerNorm(embed_dim, eps=1e-7) in place of fairseq's final norm, in both stacks (the
    layers themselves are Post-LN: resi_dual_layers.py:39, :51 norm after the sum); :296-297 α = 1."""
    model = _model("resi_dual_transformer")
    for stack in (model.encoder, model.decoder):
        assert stack.layer_norm.norm.eps == 1e-7 and stack.layer_norm.alpha == 1.0
        assert tuple(stack.layer_norm.norm.normalized_shape) == (16,)
        assert not any(layer.normalize_before for layer in stack.layers)
        assert stack.layernorm_embedding is None


def test_lns_scale_is_one_over_sqrt_of_the_1_based_depth():
    """modeling_llama.py:432 and :449: ``scale_factor = 1 / math.sqrt(self.layer_index + 1)`` on the output of the
    norm before each sublayer (:430, :447); Pre-LN sums (:443, :453); the final norm (:1116) unscaled."""
    model = _model("lns_transformer")
    for stack in (model.encoder, model.decoder):
        for position, layer in enumerate(stack.layers):
            assert layer.normalize_before
            for slot in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
                norm = getattr(layer, slot, None)
                if norm is not None:
                    assert norm.scale == 1 / math.sqrt(position + 1), (slot, position)
        assert isinstance(stack.layer_norm, torch.nn.LayerNorm)  # the final norm, not scaled


@pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 0.5, 1.0])
def test_mix_ln_places_post_ln_in_the_first_floor_alpha_l_layers(alpha):
    """pixeli99/MixLN modeling_llama.py:327 and :566 ``if self.layer_index < self.max_post_norm_layer``: Post-LN
    (:568-583), else Pre-LN (:585-601); :929, :1077 the final norm always applied. Default α = 0.25 (the official
    scripts: POST_NUM=3 of 12 layers, 6 of 24). Counted per stack: N = 1..7 encoder and M = 7..1 decoder layers."""
    extra = () if alpha is None else ("--mix-ln-alpha", str(alpha))
    a = 0.25 if alpha is None else alpha
    for n in range(1, 8):
        model = build_model("mix_ln_transformer", *extra, layers=(n, 8 - n))
        for stack, count in ((model.encoder, n), (model.decoder, 8 - n)):
            posts = math.floor(a * count)
            assert [not layer.normalize_before for layer in stack.layers] == [i < posts for i in range(count)]
            assert isinstance(stack.layer_norm, torch.nn.LayerNorm)


def test_peri_ln_norms_every_sublayer_output_and_the_embedding():
    """Kim et al. 2025 (no official code; the paper's equations): x + LN_out(f(LN_in(x))) for every sublayer, the
    decoder's cross-attention included; the embedding normalized and a final norm. ``--peri-ln-output-only``:
    x + LN_out(f(x)), no input norm, no embedding norm, the final norm kept (OLMo 2, Swin v2)."""
    model = _model("peri_ln_transformer")
    for stack in (model.encoder, model.decoder):
        assert stack.layernorm_embedding is not None and stack.layer_norm is not None
        for layer in stack.layers:
            assert layer.normalize_before and len(layer.residual.output_norms) == len(layer.residual.sublayers)
    assert model.decoder.layers[0].residual.sublayers == ("self_attn", "cross_attn", "ffn")
    only = _model("peri_ln_transformer", "--peri-ln-output-only")
    for stack in (only.encoder, only.decoder):
        assert stack.layernorm_embedding is None and stack.layer_norm is not None
        for layer in stack.layers:
            assert isinstance(layer.self_attn_layer_norm, torch.nn.Identity)


# ---- the mutations the rows above catch (each one rule broken) -----------------------------------------------------
def _mutation_lns_0_based(monkeypatch):
    import fairseq_admin.schemes.layernorm_scaling as lns

    monkeypatch.setattr(lns, "lns_scale", lambda depth: 1 / math.sqrt(depth + 1))
    _check_encoder_layers(_model("lns_transformer"), CASE["lns"][2])


def _mutation_lns_scale_the_final_norm_too(monkeypatch):
    from fairseq_admin.schemes.base import ResidualScheme
    from fairseq_admin.schemes.layernorm_scaling import LayerNormScaling, ScaledNorm

    monkeypatch.setattr(LayerNormScaling, "build_stack_final", classmethod(
        lambda cls, cfg, stack, dim, carry, final: ScaledNorm(ResidualScheme.build_norm(cfg, dim, "final"), 0.5)))
    test_lns_scale_is_one_over_sqrt_of_the_1_based_depth()


def _mutation_mix_ln_ceil(monkeypatch):
    import fairseq_admin.schemes.mix_ln as mix_ln

    monkeypatch.setattr(mix_ln, "post_ln_layers", lambda alpha, n: math.ceil(alpha * n))
    _check_encoder_layers(_model("mix_ln_transformer", layers=(5, 4)), CASE["mix_ln"][2])


def _mutation_mix_ln_pre_ln_first(monkeypatch):
    from fairseq_admin.schemes.mix_ln import MixLN

    monkeypatch.setattr(MixLN, "pre_norm", lambda self: self.layer_index < self.num_layers - 1)
    _check_decoder_layers(_model("mix_ln_transformer"), CASE["mix_ln"][2])


def _mutation_mix_ln_no_final_norm(monkeypatch):
    from fairseq_admin.schemes.mix_ln import MixLN

    monkeypatch.setattr(MixLN, "build_stack_final", classmethod(lambda cls, *args: None))
    test_mix_ln_places_post_ln_in_the_first_floor_alpha_l_layers(None)


def _mutation_peri_ln_no_cross_attention_output_norm(monkeypatch):
    from fairseq_admin.schemes.peri_ln import PeriLN

    def combine(self, sublayer, branch, shortcut):
        if self.sublayers[sublayer] == "cross_attn":
            return shortcut + branch
        return shortcut + self.output_norms[sublayer](branch)

    monkeypatch.setattr(PeriLN, "combine", combine)
    _check_decoder_layers(_model("peri_ln_transformer"), CASE["peri_ln"][2])


def _mutation_peri_ln_norm_after_the_sum(monkeypatch):
    from fairseq_admin.schemes.peri_ln import PeriLN

    monkeypatch.setattr(PeriLN, "combine", lambda self, i, branch, shortcut: self.output_norms[i](shortcut + branch))
    _check_encoder_layers(_model("peri_ln_transformer"), CASE["peri_ln"][2])


def _mutation_resi_dual_stream_starts_at_zero(monkeypatch):
    from fairseq_admin.schemes.resi_dual import ResiDual

    def combine(self, sublayer, branch, shortcut):
        self.carry.stream = branch if self.carry.stream is None else self.carry.stream + branch
        return shortcut + branch

    monkeypatch.setattr(ResiDual, "combine", combine)
    test_resi_dual_stacks_match_reference()


def _mutation_resi_dual_final_eps_1e5(monkeypatch):
    import fairseq_admin.schemes.resi_dual as resi_dual

    monkeypatch.setattr(resi_dual, "FINAL_NORM_EPS", 1e-5)
    test_resi_dual_stacks_match_reference()


def _mutation_resi_dual_no_reset_between_steps(monkeypatch):
    from fairseq_admin.schemes.base import StackCarry

    monkeypatch.setattr(StackCarry, "reset", lambda self: None)
    monkeypatch.setattr("fairseq_admin.schemes.resi_dual.DualStreamOutput.forward",
                        lambda self, x: x + self.norm(self.carry.stream))  # the stream is never released either
    test_incremental_decoding_equals_full_decoding("resi_dual_transformer", [])


MUTATIONS = [_mutation_lns_0_based, _mutation_lns_scale_the_final_norm_too, _mutation_mix_ln_ceil,
             _mutation_mix_ln_pre_ln_first, _mutation_mix_ln_no_final_norm,
             _mutation_peri_ln_no_cross_attention_output_norm, _mutation_peri_ln_norm_after_the_sum,
             _mutation_resi_dual_stream_starts_at_zero, _mutation_resi_dual_final_eps_1e5,
             _mutation_resi_dual_no_reset_between_steps]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.__name__[len("_mutation_"):] for m in MUTATIONS])
def test_the_rows_catch_a_broken_rule(mutation, monkeypatch):
    with pytest.raises(AssertionError):
        mutation(monkeypatch)


# ---- options --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, extra, message", [
    ("preln_transformer", ["--mix-ln-alpha", "0.5"], "--mix-ln-alpha is an option of --residual-scheme mix_ln"),
    ("postln_transformer", ["--peri-ln-output-only"],
     "--peri-ln-output-only is an option of --residual-scheme peri_ln"),
    ("mix_ln_transformer", ["--mix-ln-alpha", "1.5"], "--mix-ln-alpha must be in [0, 1]"),
    ("resi_dual_transformer", ["--checkpoint-activations"], "--checkpoint-activations"),
    ("resi_dual_transformer", ["--no-decoder-final-norm"], "--no-decoder-final-norm is not supported"),
    ("resi_dual_transformer", ["--encoder-normalize-before"], "is a Post-LN scheme"),
])
def test_refused_at_build(arch, extra, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        build_model(arch, *extra)
    assert "\n" not in str(info.value)


# ---- the command line -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, extra", [("resi_dual_transformer", []), ("peri_ln_transformer", []),
                                         ("peri_ln_transformer", ["--peri-ln-output-only"]),
                                         ("lns_transformer", []), ("mix_ln_transformer", ["--mix-ln-alpha", "0.5"])])
def test_train_30_updates_then_generate(arch, extra, synthetic_data, tmp_path):
    from test_cli_end_to_end import generate, load_checkpoint, train_args

    log = run_cli(*train_args(synthetic_data, tmp_path, arch, *extra, max_update=30))
    assert "done training" in log.stdout + log.stderr
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 30
    assert state["cfg"]["model"].residual_scheme == arch[: -len("_transformer")]
    out = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    hypotheses = sorted(line for line in out.splitlines() if line.startswith("H-"))
    assert len(hypotheses) == 30
    if arch == "lns_transformer":  # exported, stock fairseq-generate (no --user-dir) gives the same hypotheses
        from fairseq_admin.cli import export
        from test_export import _hypotheses

        export.main(["--checkpoint", str(tmp_path / "checkpoint_last.pt"), "--out", str(tmp_path / "stock.pt")])
        stock = run_cli("fairseq-generate", synthetic_data, "--path", tmp_path / "stock.pt", "--beam", "4",
                        "--lenpen", "0.6", "--batch-size", "16", "--required-batch-size-multiple", "1", "--cpu",
                        "--num-workers", "0").stdout
        assert _hypotheses(stock) == _hypotheses(out)  # the text; scores agree to float32 rounding (the fold)


@pytest.mark.parametrize("arch", ["resi_dual_transformer", "mix_ln_transformer", "peri_ln_transformer"])
def test_export_refuses_in_one_line(arch, tmp_path, capsys):
    """No stock fairseq equivalent: refused before anything is written (fairseq_admin/cli/export_field_schemes.py)."""
    from fairseq_admin.cli import export
    from test_export import _save_like_fairseq_train
    from helpers import parse_args

    args = parse_args(arch, task="translation")
    model = build_model(arch)
    _save_like_fairseq_train(model, args, tmp_path / "in.pt")
    capsys.readouterr()
    assert export.cli_main(["--checkpoint", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{arch[:-len('_transformer')]} cannot be exported" in err, err
    assert not (tmp_path / "out.pt").exists()


# ---- Peri-LN to CTranslate2 (the optional `deploy` extra) -----------------------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--share-all-embeddings"]])
def test_peri_ln_to_ctranslate2_scores_as_fairseq(extra, synthetic_data, tmp_path):
    """Our converter (fairseq_admin/cli/ct2_peri_ln.py) to CTranslate2's pre_post_layer_norm layers: score_batch
    gives fairseq's per-token log-probabilities within 1e-4, on random weights (every norm's γ and β too)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from fairseq import options, tasks

    from fairseq_admin.cli import ct2_peri_ln
    from helpers import TINY
    from test_export import (CT2_TOLERANCE, _batches, _fairseq_token_log_probs, _plugin_model, _randomize,
                             _save_like_fairseq_train)

    argv = [str(synthetic_data), "--task", "translation", "--arch", "peri_ln_transformer", "--encoder-layers", "3",
            "--decoder-layers", "2", *TINY, *extra]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    model = tasks.setup_task(args).build_model(args)
    _randomize(model, 0)
    src = tmp_path / "peri_ln.pt"
    _save_like_fairseq_train(model, args, src)
    assert ct2_peri_ln.cli_main(["--checkpoint", str(src), "--data", str(synthetic_data), "--out",
                                 str(tmp_path / "ct2")]) == 0
    plugin, task = _plugin_model(src, synthetic_data)
    expected = _fairseq_token_log_probs(plugin, task, _batches(task))
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", compute_type="float32", intra_threads=1)
    results = translator.score_batch([s for s, _, _ in expected], [t for _, t, _ in expected])
    assert all(len(r.log_probs) == len(s) for (_, _, s), r in zip(expected, results))
    diff = max(abs(a - b) for (_, _, scores), r in zip(expected, results) for a, b in zip(scores, r.log_probs))
    print(f"ctranslate2 peri_ln {extra}: max |Δ log-prob| vs fairseq = {diff:.2e}")
    assert diff <= CT2_TOLERANCE, f"CTranslate2 log-probabilities differ by {diff:.3e}"


def test_ctranslate2_converter_refuses_in_one_line(tmp_path, capsys):
    from fairseq_admin.cli import ct2_peri_ln
    from helpers import parse_args
    from test_export import _save_like_fairseq_train

    for arch, extra, message in (("peri_ln_transformer", ["--peri-ln-output-only"], "has no input norms"),
                                 ("lns_transformer", [], "this converter is for peri_ln")):
        src = tmp_path / f"{arch}.pt"
        _save_like_fairseq_train(build_model(arch, *extra), parse_args(arch, *extra, task="translation"), src)
        capsys.readouterr()
        assert ct2_peri_ln.cli_main(["--checkpoint", str(src), "--data", str(tmp_path), "--out",
                                     str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("python -m fairseq_admin.cli.ct2_peri_ln: error:") and "\n" not in err, err
        assert message in err, err
        assert not (tmp_path / "out").exists()
