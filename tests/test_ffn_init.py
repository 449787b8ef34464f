"""FFN initialization of the schemes whose official code is a fairseq 0.9 fork (Admin: Transformer-Clinic; B2T):
fc1/fc2 with Xavier-uniform weights and zero biases (fairseq 0.9's ``Linear``) by default, fairseq main's
``nn.Linear`` default with --<scheme>-ffn-init fairseq. B2T then scales every weight matrix by L^-0.5."""
import math

import pytest
import torch

from helpers import build_model

DIMS = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "256",
        "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]
LAYERS = (3, 2)
# scheme -> (arch, options that make the rest of its init fairseq's, the FFN-init option, weight scale per stack)
SCHEMES = {
    "admin": ("admin_transformer", ["--admin-init", "O(logn)"], "--admin-ffn-init", {"encoder": 1.0, "decoder": 1.0}),
    "b2t": ("b2t_transformer", [], "--b2t-ffn-init", {"encoder": LAYERS[0] ** -0.5, "decoder": LAYERS[1] ** -0.5}),
    "b2t-unscaled": ("b2t_transformer", ["--no-b2t-init-scale"], "--b2t-ffn-init", {"encoder": 1.0, "decoder": 1.0}),
}


def _ffns(model):
    for stack in ("encoder", "decoder"):
        for layer in getattr(model, stack).layers:
            yield stack, layer.fc1
            yield stack, layer.fc2


def _build(scheme, *extra, layers=LAYERS):
    arch, options, _, _ = SCHEMES[scheme]
    torch.manual_seed(0)
    return build_model(arch, *options, *extra, *DIMS, layers=layers)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_default_is_xavier_uniform_with_zero_biases(scheme):
    model = _build(scheme)
    scale = SCHEMES[scheme][3]
    for stack, fc in _ffns(model):
        fan_out, fan_in = fc.weight.shape
        limit = math.sqrt(6.0 / (fan_in + fan_out)) * scale[stack]  # Xavier-uniform: U(-limit, limit)
        w = fc.weight.detach().double()
        assert torch.all(fc.bias == 0)
        assert w.abs().max().item() <= limit * (1 + 1e-6)
        assert w.abs().max().item() > 0.99 * limit  # the whole range is used (16k draws)
        assert abs(w.std().item() - limit / math.sqrt(3)) < 0.03 * limit / math.sqrt(3)


@pytest.mark.parametrize("scheme", ["admin", "b2t-unscaled"])
def test_fairseq_option_keeps_fairseq_mains_initialization_bit_for_bit(scheme):
    model = _build(scheme, SCHEMES[scheme][2], "fairseq")
    torch.manual_seed(0)
    postln = build_model("postln_transformer", *DIMS, layers=LAYERS)
    for (_, a), (_, p) in zip(_ffns(model), _ffns(postln)):
        assert torch.equal(a.weight, p.weight) and torch.equal(a.bias, p.bias)
    fc2 = model.encoder.layers[0].fc2
    assert fc2.bias.abs().max() > 0  # PyTorch's default draws the biases too
    assert fc2.weight.abs().max() <= 1 / math.sqrt(fc2.weight.shape[1])  # U(±1/sqrt(fan_in)): 2.2x below Xavier


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_only_the_ffns_change(scheme):
    """Attention, embeddings and LayerNorms are the same with either FFN init: with the same seed the first layer's
    attention weights are identical (its FFNs are drawn after them)."""
    xavier = _build(scheme, layers=(2, 2))
    plain = _build(scheme, SCHEMES[scheme][2], "fairseq", layers=(2, 2))
    plain_params = dict(plain.encoder.layers[0].named_parameters())
    for name, p in xavier.encoder.layers[0].named_parameters():
        if not name.startswith(("fc1", "fc2")):
            assert torch.equal(p, plain_params[name]), name
    assert torch.equal(xavier.encoder.embed_tokens.weight, plain.encoder.embed_tokens.weight)
