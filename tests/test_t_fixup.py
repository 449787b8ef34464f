"""T-Fixup (Huang et al., ICML 2020; fairseq_admin/schemes/t_fixup.py) against its official code, layer6ai-labs/T-Fixup
at b17e166 (a fairseq 0.9 fork; the file:line of each rule is beside its row below).

* conformance rows: every weight T-Fixup scales equals the same-seed *unscaled* draw times the official factor,
  computed here in float64 from the code's formulas (within float32 rounding), and every tensor of the model follows
  its official distribution (bounds and moments); each row fails under the one-rule mutations listed in MUTATIONS;
* no normalization module anywhere, whatever the embedding sharing;
* the layers equal a float64 reference x + f(x) within 1e-12; incremental decoding equals full decoding;
* ``--lr-scheduler inverse_sqrt_nowarmup`` equals the official formula exactly, and fairseq main has no equivalent;
* a 30-update fairseq-train run on the recipe's options (no warm-up), then fairseq-generate; export refused in one
  line; fp16 / bf16 forward, backward and training finite on the CPU.

The reference build for the exact rows is ``postln --layer-init fairseq-0.9``: fairseq main's layers with fc1/fc2
redrawn Xavier-uniform right after each layer is built, which is T-Fixup's unscaled base drawn from the same random
stream (its q/k/v biases are zeroed there, so those are checked by distribution instead).
"""
import json
import math

import pytest
import torch
from torch import nn

import reference as ref
from fairseq_admin.errors import OptionError
from fairseq_admin.schemes import t_fixup
from fairseq_admin.schemes.t_fixup import TFixup
from helpers import assert_one_error_line, build_model, parse_args, run_cli
from test_official_conformance import check, xavier_bound

N, M = 3, 2  # encoder and decoder layers: N != M, so a factor counted on the wrong side shows
D, FFN = 64, 256
DIMS = ["--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D), "--encoder-ffn-embed-dim", str(FFN),
        "--decoder-ffn-embed-dim", str(FFN), "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]

# The official factors, in float64 from the code's formulas (not from the module under test):
ENC = 0.67 * math.exp(-math.log(N) / 4)  # transformer_layer.py:42  (0.67 * (en_layers) ** (- 1. / 4.))
DEC = math.exp(-math.log(9 * M) / 4)  # transformer_layer.py:168  (9 * de_layers) ** (- 1. / 4.)
SQRT2 = math.sqrt(2)  # transformer_layer.py:44, :170  param * (2**0.5)
EMB = {"encoder": math.exp(-math.log(9 * N) / 4),  # transformer.py:380  (9 * args.encoder_layers) ** (- 1 / 4)
       "decoder": math.exp(-math.log(9 * M) / 4)}  # transformer.py:606  (9 * args.decoder_layers) ** (- 1 / 4)
FACTOR = {"encoder": ENC, "decoder": DEC}
RTOL = 4e-7  # float32: the draw is exact, each product rounded once or twice (v_proj: ·√2 then ·factor)


def test_the_factors_by_hand():
    assert (N, M) == (3, 2)  # the numbers below are for this depth
    assert ENC == pytest.approx(0.509090, abs=1e-6)  # 0.67 / 3^(1/4) = 0.67 / 1.316074
    assert DEC == pytest.approx(0.485492, abs=1e-6)  # 18^(-1/4) = 1 / 2.059767
    assert EMB["encoder"] == pytest.approx(0.438691, abs=1e-6)  # 27^(-1/4) = 1 / 2.279507
    for n in (1, 6, 18, 100):  # the module's constants are the official expressions
        assert t_fixup.encoder_factor(n) == 0.67 * (n) ** (- 1. / 4.)
        assert t_fixup.decoder_factor(n) == (9 * n) ** (- 1. / 4.)
        assert t_fixup.embedding_factor(n) == (9 * n) ** (- 1 / 4)


def _build(*extra, scheme="t_fixup", seed=0, layers=(N, M)):
    torch.manual_seed(seed)
    return build_model(f"{scheme}_transformer", *extra, *DIMS, layers=layers)


def _unscaled(*extra, seed=0, layers=(N, M)):
    """T-Fixup's base before its factors, from the same random stream (see the module docstring)."""
    return _build(*extra, "--layer-init", "fairseq-0.9", scheme="postln", seed=seed, layers=layers)


def _assert_scaled(name, ours, unscaled, factor):
    expected = unscaled.detach().double() * factor
    got = ours.detach().double()
    assert torch.allclose(got, expected, rtol=RTOL, atol=0), \
        f"{name}: off the official factor {factor:.6g} by {((got - expected).abs().max()):.3g}"


# ---- the conformance rows --------------------------------------------------------------------------------------------
def _weight_rows(stack):
    """(official source, parameter of every layer of ``stack``, factor on the unscaled draw)."""
    f = FACTOR[stack]
    if stack == "encoder":
        rows = [("transformer_layer.py:38-42", "fc1.weight", f), ("transformer_layer.py:38-42", "fc2.weight", f),
                ("transformer_layer.py:40-42", "self_attn.out_proj.weight", f),
                ("transformer_layer.py:43-44", "self_attn.v_proj.weight", f * SQRT2)]
        attns = ("self_attn",)
    else:
        rows = [("transformer_layer.py:163-168", "fc1.weight", f), ("transformer_layer.py:163-168", "fc2.weight", f),
                ("transformer_layer.py:165-168", "self_attn.out_proj.weight", f),
                ("transformer_layer.py:166-168", "encoder_attn.out_proj.weight", f),
                ("transformer_layer.py:169-170", "self_attn.v_proj.weight", f * SQRT2),
                ("transformer_layer.py:169-170", "encoder_attn.v_proj.weight", f * SQRT2)]
        attns = ("self_attn", "encoder_attn")
    for attn in attns:  # q and k are not in the rule: fairseq's Xavier gain 1/√2 (multihead_attention.py:89, :91)
        rows += [("multihead_attention.py:89", f"{attn}.k_proj.weight", 1.0),
                 ("multihead_attention.py:91", f"{attn}.q_proj.weight", 1.0)]
    return rows


def _distribution_rules(layer):
    """{tensor: rule} of one T-Fixup layer from the official code alone (test_official_conformance.check's rules)."""
    f = FACTOR["encoder" if getattr(layer, "encoder_attn", None) is None else "decoder"]
    rules = {}
    for attn_name in ("self_attn", "encoder_attn"):
        attn = getattr(layer, attn_name, None)
        if attn is None:
            continue
        for proj in ("q_proj", "k_proj", "v_proj"):
            fan_out, fan_in = getattr(attn, proj).weight.shape
            gain = 2 ** -0.5 * (f * SQRT2 if proj == "v_proj" else 1.0)  # multihead_attention.py:89-91
            rules[f"{attn_name}.{proj}.weight"] = ("uniform", xavier_bound(fan_in, fan_out, gain))
            rules[f"{attn_name}.{proj}.bias"] = ("uniform", 1 / math.sqrt(fan_in))  # nn.Linear's, untouched
        rules[f"{attn_name}.out_proj.weight"] = ("uniform", xavier_bound(D, D, f))  # :97, then the factor
        rules[f"{attn_name}.out_proj.bias"] = ("zero",)  # multihead_attention.py:98-99
    for fc in ("fc1", "fc2"):
        fan_out, fan_in = getattr(layer, fc).weight.shape
        rules[f"{fc}.weight"] = ("uniform", xavier_bound(fan_in, fan_out, f))  # transformer_layer.py:371-376
        rules[f"{fc}.bias"] = ("zero",)  # transformer_layer.py:375
    return rules


def _check_tables(model, base, shared_all, shared_out):
    enc_table, dec_table = model.encoder.embed_tokens.weight, model.decoder.embed_tokens.weight
    pad = model.encoder.padding_idx
    # transformer.py:378-381: the encoder's table times (9N)^-1/4, on the N(0, d^-1/2) draw (:908-912)
    _assert_scaled("encoder.embed_tokens", enc_table, base.encoder.embed_tokens.weight, EMB["encoder"])
    assert torch.all(enc_table[pad] == 0)
    check("encoder.embed_tokens", torch.cat([enc_table[:pad], enc_table[pad + 1:]]),
          ("normal", D ** -0.5 * EMB["encoder"]))
    if shared_all:  # :604: the decoder does not scale the shared table again
        assert dec_table is enc_table
    else:  # :604-607: the decoder's own table times (9M)^-1/4
        _assert_scaled("decoder.embed_tokens", dec_table, base.decoder.embed_tokens.weight, EMB["decoder"])
    out = model.decoder.output_projection.weight
    if shared_out:  # the output projection is the (scaled) input table
        assert out is dec_table
    else:  # :665-669: fairseq's own N(0, d^-1/2) output matrix, unscaled
        assert torch.equal(out, base.decoder.output_projection.weight)
        check("decoder.output_projection", out, ("normal", D ** -0.5))
    # transformer.py:385, :611: embed_scale = sqrt(d) kept
    assert model.encoder.embed_scale == model.decoder.embed_scale == math.sqrt(D)


SHARING = {"none": [], "share-all": ["--share-all-embeddings"],
           "share-decoder-input-output": ["--share-decoder-input-output-embed"]}


def conformance(sharing="none"):
    """Every row on one same-seed pair of builds; AssertionError names the first row that fails."""
    extra = SHARING[sharing]
    model, base = _build(*extra), _unscaled(*extra)
    for stack in ("encoder", "decoder"):
        for i, (layer, unscaled) in enumerate(zip(getattr(model, stack).layers, getattr(base, stack).layers)):
            ours, theirs = dict(layer.named_parameters()), dict(unscaled.named_parameters())
            for source, name, factor in _weight_rows(stack):
                _assert_scaled(f"{stack}.layers.{i}.{name} [{source}]", ours[name], theirs[name], factor)
            rules = _distribution_rules(layer)
            assert set(rules) == set(ours), f"{stack}.layers.{i}: no rule for {set(ours) - set(rules)}"
            for name, rule in rules.items():
                check(f"{stack}.layers.{i}.{name}", ours[name], rule)
    _check_tables(model, base, shared_all=sharing == "share-all", shared_out=sharing != "none")


@pytest.mark.parametrize("sharing", list(SHARING))
def test_initialization_is_the_official_codes(sharing):
    conformance(sharing)


def _norm_modules(model):
    return [name for name, module in model.named_modules() if "norm" in type(module).__name__.lower()]


def assert_no_norm(model):
    """transformer_layer.py:72-75/:222-225 and transformer.py:412-419/:671-681 under --dont-use-layernorm."""
    assert not _norm_modules(model), _norm_modules(model)
    assert not [k for k in model.state_dict() if "norm" in k]
    for stack in (model.encoder, model.decoder):
        assert stack.layer_norm is None and stack.layernorm_embedding is None
        for layer in stack.layers:
            assert not layer.normalize_before  # with no norm the placement is moot; fairseq builds no final norm
            for slot in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
                assert isinstance(getattr(layer, slot, None), (nn.Identity, type(None))), slot


@pytest.mark.parametrize("extra", [[], ["--share-all-embeddings"], ["--no-cross-attention"]])
def test_no_normalization_anywhere(extra):
    assert_no_norm(_build(*extra))


# ---- the mutations the rows catch ------------------------------------------------------------------------------------
def _cross_attention_unscaled(monkeypatch):
    original = TFixup.init_layer

    def init_layer(self, layer):
        cross = getattr(layer, "encoder_attn", None)
        if cross is not None:
            layer.encoder_attn = None
        original(self, layer)
        if cross is not None:
            layer.encoder_attn = cross

    monkeypatch.setattr(TFixup, "init_layer", init_layer)


def _shared_table_scaled_twice(monkeypatch):
    def init_model(cls, model):
        with torch.no_grad():
            model.encoder.embed_tokens.weight.mul_(t_fixup.embedding_factor(N))
            model.decoder.embed_tokens.weight.mul_(t_fixup.embedding_factor(M))

    monkeypatch.setattr(TFixup, "init_model", classmethod(init_model))


def _fc_biases_kept(monkeypatch):
    def xavier_ffn_(layer):
        for fc in (layer.fc1, layer.fc2):
            nn.init.xavier_uniform_(fc.weight)

    monkeypatch.setattr(t_fixup, "xavier_ffn_", xavier_ffn_)


MUTATIONS = {  # name -> (how, the sharing whose rows must catch it)
    "v_proj without the sqrt(2)": (lambda mp: mp.setattr(t_fixup, "V_PROJ_GAIN", 1.0), "none"),
    "decoder (9N)^-1/4 instead of (9M)^-1/4": (
        lambda mp: mp.setattr(t_fixup, "decoder_factor", lambda m: (9 * N) ** (-1 / 4)), "none"),
    "encoder without the 0.67": (lambda mp: mp.setattr(t_fixup, "encoder_factor", lambda n: n ** (-1 / 4)), "none"),
    "encoder N^-1/2 instead of N^-1/4": (
        lambda mp: mp.setattr(t_fixup, "encoder_factor", lambda n: 0.67 * n ** (-1 / 2)), "none"),
    "decoder table with the paper's one N": (
        lambda mp: mp.setattr(t_fixup, "embedding_factor", lambda layers: (9 * N) ** (-1 / 4)), "none"),
    "embeddings unscaled": (lambda mp: mp.setattr(t_fixup, "embedding_factor", lambda layers: 1.0), "none"),
    "cross-attention left unscaled": (_cross_attention_unscaled, "none"),
    "fc1/fc2 kept at fairseq main's nn.Linear init": (
        lambda mp: mp.setattr(t_fixup, "xavier_ffn_", lambda layer: None), "none"),
    "fc biases not zeroed": (_fc_biases_kept, "none"),
    "shared table scaled by both stacks": (_shared_table_scaled_twice, "share-all"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_the_rows_catch_a_broken_rule(mutation, monkeypatch):
    apply, sharing = MUTATIONS[mutation]
    apply(monkeypatch)
    with pytest.raises(AssertionError):
        conformance(sharing)


def test_a_layernorm_left_in_is_caught(monkeypatch):
    from fairseq.modules import LayerNorm

    monkeypatch.setattr(TFixup, "build_norm", classmethod(lambda cls, cfg, dim, role, eps=1e-5: LayerNorm(dim)))
    with pytest.raises(AssertionError):
        assert_no_norm(_build())


# ---- the forward: float64 reference, incremental decoding ------------------------------------------------------------
@pytest.fixture
def float64_softmax(monkeypatch):
    """fairseq takes the attention softmax in float32 (fairseq.utils.softmax); here in the input's dtype."""
    import fairseq.utils

    monkeypatch.setattr(fairseq.utils, "softmax", lambda x, dim, onnx_trace=False: torch.softmax(x, dim=dim))


def reference_layer(layer, x, stack, enc=None, enc_pad=None, self_pad=None):
    """x ← x + f(x) for each sublayer in order, no norm (transformer_layer.py:107-137, :262-353 with noLN)."""
    x = x + ref.attention(x, x, layer.self_attn, self_pad, causal=stack == "decoder")
    if stack == "decoder":
        x = x + ref.attention(x, enc, layer.encoder_attn, enc_pad)
    return x + ref.ffn(x, layer)


def _model64(seed=0):
    return _build("--dropout", "0.3", seed=seed, layers=(N, M)).double().eval()


def test_layers_equal_the_float64_reference(float64_softmax):
    model = _model64()
    g = torch.Generator().manual_seed(1)
    T, S, B = 6, 5, 3
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    enc = torch.randn(S, B, D, generator=g, dtype=torch.float64)
    enc_pad = torch.zeros(B, S, dtype=torch.bool)
    enc_pad[0, :2] = True
    self_pad = torch.zeros(B, T, dtype=torch.bool)
    self_pad[1, -2:] = True
    h = x
    for i, layer in enumerate(model.encoder.layers):
        out = layer(h, encoder_padding_mask=self_pad)
        expected = reference_layer(layer, h, "encoder", self_pad=self_pad)
        assert (out - expected).abs().max() <= 1e-12, f"encoder layer {i}"
        h = out
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    h = x
    for i, layer in enumerate(model.decoder.layers):
        out, _, _ = layer(h, enc, enc_pad, self_attn_mask=causal, self_attn_padding_mask=self_pad)
        expected = reference_layer(layer, h, "decoder", enc=enc, enc_pad=enc_pad, self_pad=self_pad)
        assert (out - expected).abs().max() <= 1e-12, f"decoder layer {i}"
        h = out


def _batch(model, seed=0):
    d = model.decoder.dictionary
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (3, 7), generator=g)
    src[0, :2] = d.pad()
    prev = torch.randint(d.nspecial, len(d), (3, 6), generator=g)
    prev[:, 0] = d.eos()
    return src, (src != d.pad()).sum(1), prev


def test_stacks_have_no_final_step(float64_softmax):
    """The encoder's output is its last layer's: embeddings (√d·E + positions) through the layers, nothing after."""
    model = _model64()
    src, lengths, _ = _batch(model)
    pad = src.eq(model.encoder.padding_idx)
    x, _ = model.encoder.forward_embedding(src)
    x = (x * (~pad).unsqueeze(-1)).transpose(0, 1)
    expected = x
    for layer in model.encoder.layers:
        expected = reference_layer(layer, expected, "encoder", self_pad=pad)
    out = model.encoder(src, src_lengths=lengths)["encoder_out"][0]
    real = (~pad).transpose(0, 1).unsqueeze(-1)
    assert ((out - expected) * real).abs().max() <= 1e-12


def test_incremental_decoding_equals_full_decoding(float64_softmax):
    model = _model64()
    src, lengths, prev = _batch(model)
    enc_out = model.encoder(src, src_lengths=lengths)
    full, _ = model.decoder(prev, encoder_out=enc_out)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc_out, incremental_state=state)
        assert (step[:, -1] - full[:, t]).abs().max() <= 1e-10, f"step {t}"


# ---- the options -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--encoder-normalize-before", "--decoder-normalize-before",
                                    "--layernorm-embedding"])
def test_norm_options_refused_at_build(option):
    with pytest.raises(OptionError, match=f"t_fixup has no LayerNorm.*remove {option}"):
        _build(option)


@pytest.mark.parametrize("norm", ["rmsnorm", "dyt"])
def test_another_norm_refused_at_build(norm):
    with pytest.raises(OptionError, match=f"t_fixup has no normalization to replace; remove --norm {norm}"):
        _build("--norm", norm)
    assert_no_norm(_build("--norm", "layernorm"))  # the default names no norm to build: accepted


# ---- the no-warm-up scheduler ----------------------------------------------------------------------------------------
def official_lr(lr, decay_period, num_updates):
    """inverse_sqrt_nowarmup_schedule.py:53, as written there (Python floats are float64)."""
    return lr * (decay_period / (decay_period + num_updates)) ** 0.5


def _scheduler(*extra):
    from fairseq import optim
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.optim import lr_scheduler

    args = parse_args("t_fixup_transformer", "--optimizer", "adam", "--lr-scheduler", "inverse_sqrt_nowarmup", *extra)
    cfg = convert_namespace_to_omegaconf(args)
    optimizer = optim.build_optimizer(cfg.optimizer, [nn.Parameter(torch.zeros(2))])
    return lr_scheduler.build_lr_scheduler(cfg.lr_scheduler, optimizer), optimizer


@pytest.mark.parametrize("lr, period", [(5e-4, 4000), (1e-3, 1), (7e-4, 123)])
def test_scheduler_is_the_official_formula(lr, period):
    scheduler, optimizer = _scheduler("--lr", str(lr), "--decay-period", str(period))
    assert optimizer.get_lr() == lr  # the first update at --lr: no warm-up (:32-34)
    for n in (0, 1, 2, 7, 100, period, 3999, 4000, 10 ** 6):
        assert scheduler.step_update(n) == official_lr(lr, period, n), n
        assert optimizer.get_lr() == official_lr(lr, period, n)
    assert scheduler.step_update(period) == pytest.approx(lr / math.sqrt(2), rel=1e-15)


def test_scheduler_default_decay_period_is_the_officials():
    scheduler, _ = _scheduler("--lr", "5e-4")
    assert scheduler.decay_period == 4000  # inverse_sqrt_nowarmup_schedule.py:40


@pytest.mark.parametrize("extra, message", [(["--lr", "5e-4", "--decay-period", "0"], "--decay-period"),
                                            (["--lr", "5e-4,1e-4"], "one --lr")])
def test_scheduler_refuses_bad_options(extra, message):
    with pytest.raises(OptionError, match=message):
        _scheduler(*extra)


def test_fairseq_main_has_no_equivalent_scheduler():
    """inverse_sqrt with --warmup-updates 0 divides by zero; with --warmup-init-lr = --lr it holds lr for W updates
    and then decays as sqrt(W / n), not sqrt(P / (P + n))."""
    from fairseq.optim.lr_scheduler.inverse_square_root_schedule import (InverseSquareRootLRScheduleConfig,
                                                                         InverseSquareRootSchedule)

    with pytest.raises(ZeroDivisionError):
        InverseSquareRootSchedule(InverseSquareRootLRScheduleConfig(warmup_updates=0, lr=[5e-4]), None)
    _, optimizer = _scheduler("--lr", "5e-4")
    stock = InverseSquareRootSchedule(InverseSquareRootLRScheduleConfig(warmup_updates=4000, warmup_init_lr=5e-4,
                                                                        lr=[5e-4]), optimizer)
    assert stock.step_update(1) == 5e-4 != official_lr(5e-4, 4000, 1)


# ---- the command line ------------------------------------------------------------------------------------------------
def t_fixup_train_args(data, save_dir, *extra, max_update):
    """test_cli_end_to_end's tiny run on the T-Fixup recipe's options: no warm-up, the decoder's input and output
    embeddings tied (Train_IWSLT_TFixup_example.sh), a short decay period so that the decay shows."""
    from test_cli_end_to_end import train_args

    argv = train_args(data, save_dir, "t_fixup_transformer", max_update=max_update)
    argv.remove("--share-all-embeddings")
    i = argv.index("--lr-scheduler")
    assert argv[i:i + 6] == ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4", "--warmup-init-lr", "1e-7"]
    argv[i:i + 6] = ["--lr-scheduler", "inverse_sqrt_nowarmup", "--decay-period", "10",
                     "--share-decoder-input-output-embed"]
    return argv + list(extra)


def test_train_30_updates_then_generate(synthetic_data, tmp_path):
    from test_cli_end_to_end import generate, load_checkpoint

    log = run_cli(*t_fixup_train_args(synthetic_data, tmp_path, "--log-format", "json", max_update=30))
    text = log.stdout + log.stderr
    assert "done training" in text
    inner = [json.loads(line[line.index("{"):]) for line in text.splitlines() if "| train_inner |" in line]
    lrs = {int(s["num_updates"]): float(s["lr"]) for s in inner}
    assert len(lrs) >= 25, text[-2000:]
    for n, lr in lrs.items():  # logged after update n, for update n + 1: lr·sqrt(P/(P + n)), printed to 6 digits
        assert lr == pytest.approx(official_lr(1e-3, 10, n), rel=1e-5), n
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 30
    assert state["cfg"]["model"].residual_scheme == "t_fixup"
    assert not [k for k in state["model"] if "norm" in k]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    out = generate(synthetic_data, tmp_path / "checkpoint_last.pt").stdout
    assert len([line for line in out.splitlines() if line.startswith("H-")]) == 30


def test_cli_refuses_a_norm_option_in_one_line(synthetic_data, tmp_path):
    proc = run_cli(*t_fixup_train_args(synthetic_data, tmp_path, "--layernorm-embedding", max_update=1), check=False)
    assert_one_error_line(proc, "t_fixup has no LayerNorm", "--layernorm-embedding")
    assert not list(tmp_path.glob("*.pt"))


def test_export_refuses_in_one_line(tmp_path, capsys):
    from fairseq_admin.cli import export
    from test_export import _save_like_fairseq_train

    args = parse_args("t_fixup_transformer", task="translation")
    _save_like_fairseq_train(build_model("t_fixup_transformer"), args, tmp_path / "in.pt")
    capsys.readouterr()
    assert export.cli_main(["--checkpoint", str(tmp_path / "in.pt"), "--out", str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "t_fixup cannot be exported" in err and "no LayerNorm" in err, err
    assert not (tmp_path / "out.pt").exists()


# ---- mixed precision (T-Fixup #1 upstream: fp16 overflow without LayerNorm) ------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_forward_backward_is_finite(dtype):
    """The paper's setting at a depth where nothing normalizes the residual stream: 12-12 layers, the recipe's
    embedding tying, the model cast as fairseq's --fp16 / --bf16 casts it."""
    from helpers import random_batch

    model = _build("--share-decoder-input-output-embed", layers=(12, 12)).to(dtype).train()
    batch = random_batch(model.encoder.dictionary, bsz=4, src_len=9, tgt_len=7)
    logits, _ = model(**batch)
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    loss = -lprobs.gather(-1, batch["prev_output_tokens"].unsqueeze(-1)).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_bf16_training_stays_finite(synthetic_data, tmp_path, monkeypatch, caplog):

    from test_mixed_precision import train_bf16_three_updates

    argv = t_fixup_train_args(synthetic_data, tmp_path, "--bf16", "--log-format", "json", "--max-tokens", "500",
                              "--disable-validation", max_update=3)
    train_bf16_three_updates(argv, tmp_path, monkeypatch, caplog)


def test_fp16_cli_trains_on_cpu(synthetic_data, tmp_path):
    import re

    log = run_cli(*t_fixup_train_args(synthetic_data, tmp_path, "--fp16", "--fp16-no-flatten-grads", max_update=4))
    text = log.stdout + log.stderr
    assert "done training" in text and "loss_scale" in text
    losses = [float(v) for v in re.findall(r"\| loss ([\d.]+) \|", text)]
    assert losses and all(math.isfinite(v) for v in losses)
