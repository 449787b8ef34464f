"""DeepNorm (Wang et al. 2022): the constants, the initialization's statistics, Post-LN only, and the forward pass at
other depths than test_layers' (which runs DeepNorm through every scheme-wide test)."""
import math

import pytest
import torch

import reference as ref
from fairseq_admin.schemes import SCHEMES
from fairseq_admin.schemes.deepnorm import DeepNorm, deepnorm_constants
from helpers import build_model

BIG = ["--encoder-embed-dim", "256", "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "1024",
       "--decoder-ffn-embed-dim", "1024", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


def paper_constants(N, M):
    """DeepNet's encoder-decoder constants, written out from the paper."""
    return {"encoder": (0.81 * (N ** 4 * M) ** (1 / 16), 0.87 * (N ** 4 * M) ** (-1 / 16)),
            "decoder": ((3 * M) ** (1 / 4), (12 * M) ** (-1 / 4))}


def test_registered_with_its_architectures():
    from fairseq.models import ARCH_MODEL_REGISTRY

    assert SCHEMES["deepnorm"] is DeepNorm and not DeepNorm.normalize_before
    for arch in ("deepnorm_transformer", "deepnorm_transformer_wmt_en_de", "deepnorm_transformer_vaswani_wmt_en_de_big"):
        assert ARCH_MODEL_REGISTRY[arch].__name__ == "ResidualTransformerModel"


@pytest.mark.parametrize("N, M", [(1, 1), (2, 2), (6, 6), (18, 18), (12, 3), (100, 100)])
def test_constants_match_the_paper(N, M):
    for stack, (alpha, beta) in paper_constants(N, M).items():
        assert deepnorm_constants(N, M, stack) == pytest.approx((alpha, beta), rel=1e-12)
    # spot values computed by hand: N = M = 6: encoder α = 0.81·6^(5/16) ≈ 1.1935, decoder α = 18^(1/4) ≈ 2.0598
    if (N, M) == (6, 6):
        assert deepnorm_constants(6, 6, "encoder")[0] == pytest.approx(0.81 * 6 ** 0.3125)
        assert deepnorm_constants(6, 6, "decoder") == pytest.approx((18 ** 0.25, 72 ** -0.25))


@pytest.mark.parametrize("N, M", [(3, 2), (2, 5)])
def test_each_layer_gets_its_stacks_constants(N, M):
    model = build_model("deepnorm_transformer", layers=(N, M))
    expected = paper_constants(N, M)
    for stack in ("encoder", "decoder"):
        for scheme in model.scheme_layers(stack):
            assert scheme.stack == stack
            assert (scheme.alpha, scheme.beta) == pytest.approx(expected[stack], rel=1e-12)


def _xavier_std(weight, gain):
    fan_out, fan_in = weight.shape
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def test_initial_weight_statistics_match_the_gains():
    """std of v_proj/out_proj/fc1/fc2 ≈ β·sqrt(2/(fan_in+fan_out)), q/k ≈ sqrt(2/(fan_in+fan_out)), each within 5
    standard errors of the sample std (SE ≈ σ/sqrt(2n) for n normal samples); the mean within 5 SE (σ/sqrt(n))."""
    torch.manual_seed(0)
    N, M = 4, 3
    model = build_model("deepnorm_transformer", *BIG, layers=(N, M))
    gains = {stack: beta for stack, (_, beta) in paper_constants(N, M).items()}
    checked = 0
    for stack in ("encoder", "decoder"):
        beta = gains[stack]
        for layer in getattr(model, stack).layers:
            attentions = [layer.self_attn] + ([layer.encoder_attn] if stack == "decoder" else [])
            matrices = [(layer.fc1.weight, beta), (layer.fc2.weight, beta)]
            for attn in attentions:
                matrices += [(attn.q_proj.weight, 1.0), (attn.k_proj.weight, 1.0), (attn.v_proj.weight, beta),
                             (attn.out_proj.weight, beta)]
            for weight, gain in matrices:
                w = weight.detach().double().flatten()
                n, sigma = w.numel(), _xavier_std(weight, gain)
                assert abs(w.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n), (stack, weight.shape, gain)
                assert abs(w.mean().item()) < 5 * sigma / math.sqrt(n)
                checked += 1
    assert checked == N * 6 + M * 10
    # β really is below 1 here, so a missed gain would fail: e.g. a q/k-style gain 1 on fc1
    assert gains["encoder"] < 0.6 and gains["decoder"] < 0.6


def test_biases_and_layer_norms_keep_fairseqs_initialization():
    """init_layer runs after fairseq built the layer, so with the same seed the first layer's biases and LayerNorms
    are fairseq's, bit for bit (later layers draw from a generator DeepNorm's init has advanced)."""
    torch.manual_seed(0)
    deep = build_model("deepnorm_transformer", layers=(2, 2))
    torch.manual_seed(0)
    plain = build_model("postln_transformer", layers=(2, 2))
    ref_params = dict(plain.encoder.layers[0].named_parameters())
    names = [n for n, _ in deep.encoder.layers[0].named_parameters()]
    assert set(names) == set(ref_params)  # no new parameter: α is a Python float
    for name, p in deep.encoder.layers[0].named_parameters():
        if name.endswith(".bias") or "layer_norm" in name:
            assert torch.equal(p, ref_params[name]), name
    assert torch.all(deep.encoder.layers[0].self_attn.out_proj.bias == 0)


@pytest.mark.parametrize("flag", ["--encoder-normalize-before", "--decoder-normalize-before"])
def test_pre_ln_flags_are_refused(flag):
    with pytest.raises(ValueError, match="deepnorm is a Post-LN scheme"):
        build_model("deepnorm_transformer", flag)


@pytest.mark.parametrize("layers", [(6, 3), (1, 4)])
def test_forward_matches_reference_at_other_depths(layers):
    torch.manual_seed(0)
    model = build_model("deepnorm_transformer", layers=layers).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 16, generator=g, dtype=torch.float64)
    enc = torch.randn(5, 3, 16, generator=g, dtype=torch.float64)
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, -2:] = True
    enc_pad = torch.zeros(3, 5, dtype=torch.bool)
    enc_pad[0, :2] = True
    h = x
    for layer in model.encoder.layers:
        out = layer(h, encoder_padding_mask=pad)
        torch.testing.assert_close(out, ref.encoder_layer("deepnorm", layer, h, pad), rtol=1e-10, atol=1e-10)
        h = out
    causal = torch.triu(torch.full((6, 6), float("-inf"), dtype=torch.float64), 1)
    h = x
    for layer in model.decoder.layers:
        out, _, _ = layer(h, enc, enc_pad, self_attn_mask=causal, self_attn_padding_mask=pad)
        torch.testing.assert_close(out, ref.decoder_layer("deepnorm", layer, h, enc, enc_pad, pad),
                                   rtol=1e-5, atol=1e-6)
        h = out
    # α is not 1, so this is not plain Post-LN
    assert model.decoder.layers[0].residual.alpha > 1.3
