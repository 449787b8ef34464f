"""Every scheme's default initialization is its official code's, tensor by tensor.

The rules below were written from reading the official repositories (file:line of each snapshot):

* fairseq main (ve-fairseq 0.12.3), what ``postln``/``preln`` must equal (fairseq's own ``transformer``):
  fairseq/modules/multihead_attention.py ``reset_parameters``: q/k/v Xavier-uniform gain 1/sqrt(2), out_proj
  Xavier-uniform gain 1 and bias 0; q/k/v biases keep ``nn.Linear``'s U(±1/sqrt(fan_in)); fc1/fc2 plain ``nn.Linear``
  (kaiming-uniform a=sqrt(5): U(±1/sqrt(fan_in)) weights and biases).
* Admin, Transformer-Clinic (fairseq 0.9): fairseq/fairseq/modules/multihead_attention.py:76-87 (fused in_proj
  Xavier-uniform = the same bound as separate q/k/v at gain 1/sqrt(2); in_proj_bias and out_proj.bias zero);
  fairseq/fairseq/modules/transformer_layer.py:54-55 and 688-693 (fc1/fc2 Xavier-uniform, zero biases); ω starts at
  1 before profiling (transformer_layer.py:60-61).
* B2T, takase/b2t_connection: fairseq/modules/transformer_layer.py:59-63 / 219-223 (fc1/fc2 ``nn.Linear``), its
  multihead_attention.py:85-99 (fairseq main's), transformer_layer.py:401-405 (every parameter whose name has "weight"
  and not "layer_norm" times L^-0.5).
* DeepNorm, Wang et al. 2022 Fig. 2: Xavier-normal, gain β for v_proj/out_proj/fc1/fc2 and 1 for q/k; biases are not
  named by the paper, so they stay fairseq main's.
Distributions are checked by bounds and moments within sampling error; zeros exactly; scalings exactly against the
same-seed unscaled build.
"""
import math

import pytest
import torch

from helpers import build_model

D, FFN, LAYERS = 64, 256, (3, 2)
DIMS = ["--encoder-embed-dim", str(D), "--decoder-embed-dim", str(D), "--encoder-ffn-embed-dim", str(FFN),
        "--decoder-ffn-embed-dim", str(FFN), "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


def xavier_bound(fan_in, fan_out, gain=1.0):
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def xavier_std(fan_in, fan_out, gain=1.0):
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


# A rule: ("uniform", bound) | ("normal", std) | ("zero",) | ("one",)
def fairseq_main_rules(layer, beta=None):
    """{tensor name: rule} of one layer as fairseq main builds it (``beta``: DeepNorm's Xavier-normal instead)."""
    rules = {}
    for attn_name in ("self_attn", "encoder_attn"):
        attn = getattr(layer, attn_name, None)
        if attn is None:
            continue
        for proj in ("q_proj", "k_proj", "v_proj"):
            fan_out, fan_in = getattr(attn, proj).weight.shape
            if beta is None:
                rules[f"{attn_name}.{proj}.weight"] = ("uniform", xavier_bound(fan_in, fan_out, 2 ** -0.5))
            else:
                rules[f"{attn_name}.{proj}.weight"] = ("normal", xavier_std(fan_in, fan_out, beta if proj == "v_proj"
                                                                            else 1.0))
            rules[f"{attn_name}.{proj}.bias"] = ("uniform", 1 / math.sqrt(fan_in))
        rules[f"{attn_name}.out_proj.weight"] = ("uniform", xavier_bound(D, D)) if beta is None else \
            ("normal", xavier_std(D, D, beta))
        rules[f"{attn_name}.out_proj.bias"] = ("zero",)
    for fc in ("fc1", "fc2"):
        fan_out, fan_in = getattr(layer, fc).weight.shape
        rules[f"{fc}.weight"] = ("uniform", 1 / math.sqrt(fan_in)) if beta is None else \
            ("normal", xavier_std(fan_in, fan_out, beta))
        rules[f"{fc}.bias"] = ("uniform", 1 / math.sqrt(fan_in))
    for name, _ in layer.named_parameters():
        if "layer_norm" in name:
            rules[name] = ("one",) if name.endswith("weight") else ("zero",)
    return rules


def fairseq_09_rules(layer):
    """Transformer-Clinic's: fairseq main's weights for attention, zero attention biases, Xavier fc1/fc2, zero fc
    biases (see the module docstring)."""
    rules = fairseq_main_rules(layer)
    for name in list(rules):
        if name.endswith("bias") and "layer_norm" not in name:
            rules[name] = ("zero",)
    for fc in ("fc1", "fc2"):
        fan_out, fan_in = getattr(layer, fc).weight.shape
        rules[f"{fc}.weight"] = ("uniform", xavier_bound(fan_in, fan_out))
    return rules


def check(name, tensor, rule):
    t = tensor.detach().double().flatten()
    n = t.numel()
    kind = rule[0]
    if kind == "zero":
        assert torch.all(t == 0), f"{name}: not zero"
    elif kind == "one":
        assert torch.all(t == 1), f"{name}: not one"
    elif kind == "uniform":
        bound = rule[1]
        assert t.abs().max() <= bound * (1 + 1e-6), f"{name}: |w| {t.abs().max():.4g} > bound {bound:.4g}"
        if n >= 1000:  # moments within ~6 standard errors; the range is used
            assert t.abs().max() > 0.97 * bound, f"{name}: max {t.abs().max():.4g} well below bound {bound:.4g}"
            std = bound / math.sqrt(3)
            assert abs(t.std().item() - std) < 6 * std / math.sqrt(n) * 0.9 + 0.01 * std, f"{name}: std"
            assert abs(t.mean().item()) < 6 * std / math.sqrt(n), f"{name}: mean"
        else:  # a bias vector: nonzero and not constant
            assert t.std() > 0.3 * bound / math.sqrt(3), f"{name}: looks constant"
    elif kind == "normal":
        std = rule[1]
        assert abs(t.std().item() - std) < 6 * std / math.sqrt(2 * n), f"{name}: std {t.std():.5g} vs {std:.5g}"
        assert abs(t.mean().item()) < 6 * std / math.sqrt(n), f"{name}: mean"
        assert t.abs().max() > 2.5 * std, f"{name}: no normal tails (uniform?)"
    else:
        raise ValueError(rule)


def _build(arch, *extra, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, *extra, *DIMS, layers=LAYERS)


def _layers(model):
    for stack in ("encoder", "decoder"):
        for layer in getattr(model, stack).layers:
            yield stack, layer


def _check_model(model, rules_of):
    for stack, layer in _layers(model):
        rules = rules_of(stack, layer)
        params = dict(layer.named_parameters())
        covered = {name for name in params if name in rules}
        missing = {name for name in params if name not in rules and "residual" not in name}
        assert not missing, f"no rule for {missing}"
        for name in covered:
            check(f"{stack}.{name}", params[name], rules[name])


@pytest.mark.parametrize("scheme", ["postln", "preln"])
def test_postln_preln_are_fairseq_mains(scheme):
    _check_model(_build(f"{scheme}_transformer"), lambda stack, layer: fairseq_main_rules(layer))


def test_admin_default_is_transformer_clinics():
    model = _build("admin_transformer")
    _check_model(model, lambda stack, layer: fairseq_09_rules(layer))
    for _, layer in _layers(model):
        assert torch.all(layer.residual.omega == 1)  # before profiling
        for attn in filter(None, (layer.self_attn, getattr(layer, "encoder_attn", None))):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
                assert torch.all(proj.bias == 0)  # "What must show": q/k/v/out_proj biases zero in every attention
    assert model.args.layer_init == "fairseq-0.9"  # the value used is saved in the checkpoint's config


@pytest.mark.parametrize("omega_option", [[], ["--admin-omega", "vector"]])
def test_admin_omega_is_a_learned_vector_per_sublayer_as_transformer_clinics(omega_option):
    """The official ω: one ``nn.Parameter(torch.ones(embed_dim))`` per residual sublayer (Transformer-Clinic
    fairseq/fairseq/modules/transformer_layer.py:60-61 encoder, :382-384 decoder), trained with the model. Ours: a
    (sublayers, d) parameter per layer, in the model's parameters, with a gradient per dimension."""
    model = _build("admin_transformer", *omega_option, "--dropout", "0")
    params = dict(model.named_parameters())
    for stack, layer in _layers(model):
        omega = layer.residual.omega
        assert isinstance(omega, torch.nn.Parameter) and omega.requires_grad
        assert omega.shape == ((2 if stack == "encoder" else 3), D)
        assert any(p is omega for p in params.values())  # the optimizer gets it
    from helpers import random_batch

    out, _ = model(**random_batch(model.encoder.dictionary, bsz=3, src_len=6, tgt_len=5))
    out.float().pow(2).mean().backward()
    for stack, layer in _layers(model):
        grad = layer.residual.omega.grad
        assert grad is not None and grad.shape == layer.residual.omega.shape, stack
        assert (grad != 0).all(), stack
        assert len(torch.unique(grad[0])) > D // 2, stack  # per dimension: not one value broadcast over d


def test_admin_scalar_omega_is_a_fixed_buffer():
    """``--admin-omega scalar`` (ours, not the official code's): one ω per sublayer, a buffer, saved, never trained."""
    model = _build("admin_transformer", "--admin-omega", "scalar")
    state = model.state_dict()
    for stack, layer in _layers(model):
        omega = layer.residual.omega
        assert not isinstance(omega, torch.nn.Parameter) and not omega.requires_grad
        assert omega.shape == ((2 if stack == "encoder" else 3),)
    assert not any(name.endswith("residual.omega") for name, _ in model.named_parameters())
    assert sum(name.endswith("residual.omega") for name in state) == sum(LAYERS)


def test_b2t_default_is_postln_times_the_official_scaling():
    """Every Linear weight equals the same-seed postln model's times L^-0.5 (L per stack); biases, LayerNorms and
    embeddings equal postln's exactly."""
    b2t, postln = _build("b2t_transformer"), _build("postln_transformer")
    for (stack, a), (_, p) in zip(_layers(b2t), _layers(postln)):
        scale = LAYERS[0 if stack == "encoder" else 1] ** -0.5
        pp = dict(p.named_parameters())
        for name, tensor in a.named_parameters():
            if "weight" in name and "layer_norm" not in name:
                assert torch.equal(tensor, pp[name] * scale), name
            else:
                assert torch.equal(tensor, pp[name]), name
    for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        assert torch.equal(b2t.state_dict()[name], postln.state_dict()[name])
    assert b2t.args.layer_init == "fairseq"


# DeepNet's encoder-decoder β (Wang et al. 2022, Fig. 2), computed here from the paper's formula in float64, never
# from the code under test: encoder 0.87·(N⁴M)^(-1/16), decoder (12M)^(-1/4), N = 3 and M = 2 (LAYERS).
DEEPNORM_BETA = {"encoder": 0.87 * math.exp(-math.log(3 ** 4 * 2) / 16), "decoder": math.exp(-math.log(12 * 2) / 4)}


def test_deepnorm_default_is_the_papers():
    assert LAYERS == (3, 2)  # the constants above are for this depth
    assert DEEPNORM_BETA["encoder"] == pytest.approx(0.63303, abs=1e-5)  # by hand: 0.87 · 162^(-1/16)
    assert DEEPNORM_BETA["decoder"] == pytest.approx(0.45180, abs=1e-5)  # by hand: 24^(-1/4)
    _check_model(_build("deepnorm_transformer"), lambda stack, layer: fairseq_main_rules(layer,
                                                                                          beta=DEEPNORM_BETA[stack]))


@pytest.mark.parametrize("scheme", ["postln", "preln", "b2t", "deepnorm"])
def test_any_scheme_takes_fairseq_09_init(scheme):
    """One flag gives the Admin paper's baselines their Post-LN/Pre-LN init (Transformer-Clinic's fairseq 0.9)."""
    model = _build(f"{scheme}_transformer", "--layer-init", "fairseq-0.9")
    for _, layer in _layers(model):
        for name, tensor in layer.named_parameters():
            if name.endswith("bias") and "layer_norm" not in name:
                assert torch.all(tensor == 0), name
    if scheme in ("postln", "preln"):
        _check_model(model, lambda stack, layer: fairseq_09_rules(layer))


def test_admin_takes_fairseq_mains_init():
    _check_model(_build("admin_transformer", "--layer-init", "fairseq"),
                 lambda stack, layer: fairseq_main_rules(layer))


def test_deprecated_ffn_init_options_say_what_replaced_them(caplog):
    model = _build("admin_transformer", "--admin-ffn-init", "fairseq")
    assert model.args.layer_init == "fairseq"
    assert "deprecated" in caplog.text and "--layer-init fairseq" in caplog.text
    with pytest.raises(ValueError, match="contradicts --layer-init"):
        _build("b2t_transformer", "--b2t-ffn-init", "xavier", "--layer-init", "fairseq")


def test_the_suite_catches_a_broken_rule():
    """Mutations the checks must see: a nonzero bias where zero is the rule, a wrong bound, a normal for a uniform."""
    g = torch.Generator().manual_seed(0)
    with pytest.raises(AssertionError):
        check("bias", torch.full((64,), 1e-3), ("zero",))
    with pytest.raises(AssertionError):
        check("w", torch.empty(256, 64).uniform_(-0.2, 0.2, generator=g), ("uniform", 0.1))
    with pytest.raises(AssertionError):  # Xavier-uniform at ffn=4d is 2.2x the nn.Linear bound of fc2
        check("w", torch.empty(64, 256).uniform_(-1 / 16, 1 / 16, generator=g), ("uniform", xavier_bound(256, 64)))
    with pytest.raises(AssertionError):
        check("w", torch.empty(256, 64).normal_(0, 0.1, generator=g), ("uniform", 0.1 * math.sqrt(3)))
    with pytest.raises(AssertionError):
        check("w", torch.empty(256, 64).normal_(0, 0.1, generator=g), ("normal", 0.12))


def test_in_run_profiling_equals_loading_its_own_profile(synthetic_data, tmp_path):
    """The official two-stage flow (profile, restart with the same seed) through the real fairseq-train: in-run
    profiling and --admin-profile-load of the profile it wrote give bit-identical models after 3 updates, dropout on
    (profiling restores the random state it used, so the first update draws the same dropout masks)."""
    from test_cli_end_to_end import load_checkpoint, train_args
    from helpers import run_cli

    profile = tmp_path / "profile.ratio.init"
    run_cli(*train_args(synthetic_data, tmp_path / "profiled", "admin_transformer", "--dropout", "0.1",
                        "--admin-profile-save", profile, max_update=3))
    run_cli(*train_args(synthetic_data, tmp_path / "loaded", "admin_transformer", "--dropout", "0.1",
                        "--admin-profile-load", profile, max_update=3))
    a = load_checkpoint(tmp_path / "profiled" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "loaded" / "checkpoint_last.pt")
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"] == 3
    assert a["model"].keys() == b["model"].keys()
    different = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not different, different[:5]


@pytest.mark.parametrize("scheme", ["postln", "preln", "admin", "b2t", "deepnorm"])
def test_embeddings_and_final_layer_norms_are_the_same_in_every_code_base(scheme):
    """fairseq main, fairseq 0.9 (Transformer-Clinic) and the B2T fork build embeddings alike: N(0, d^-0.5) with a
    zero padding row (transformer.py ``Embedding``); no scheme rescales them; Pre-LN's final LayerNorms start at 1/0."""
    model = _build(f"{scheme}_transformer", "--share-all-embeddings")
    table = model.encoder.embed_tokens.weight
    pad = model.encoder.padding_idx
    assert torch.all(table[pad] == 0)
    rest = torch.cat([table[:pad], table[pad + 1:]])
    check("embed_tokens", rest, ("normal", D ** -0.5))
    assert model.decoder.embed_tokens is model.encoder.embed_tokens
    for stack in (model.encoder, model.decoder):
        if stack.layer_norm is not None:  # Pre-LN's final LN
            check("final layer_norm.weight", stack.layer_norm.weight, ("one",))
            check("final layer_norm.bias", stack.layer_norm.bias, ("zero",))


def test_b2t_on_fairseq_09_init_scales_the_xavier_ffn():
    model = _build("b2t_transformer", "--layer-init", "fairseq-0.9")
    for stack, layer in _layers(model):
        scale = LAYERS[0 if stack == "encoder" else 1] ** -0.5
        for fc in (layer.fc1, layer.fc2):
            fan_out, fan_in = fc.weight.shape
            check(f"{stack}.fc", fc.weight, ("uniform", xavier_bound(fan_in, fan_out) * scale))
            check(f"{stack}.fc.bias", fc.bias, ("zero",))
