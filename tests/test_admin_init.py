"""Admin's FFN initialization: the official code's Xavier-uniform fc1/fc2 with zero biases (fairseq 0.9's ``Linear``,
Transformer-Clinic), or fairseq main's ``nn.Linear`` default with --admin-ffn-init fairseq."""
import math

import pytest
import torch

from helpers import build_model

DIMS = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "256",
        "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]


def _ffns(model):
    for stack in (model.encoder, model.decoder):
        for layer in stack.layers:
            yield layer.fc1
            yield layer.fc2


def test_default_is_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = build_model("admin_transformer", "--admin-init", "O(logn)", *DIMS, layers=(3, 2))
    for fc in _ffns(model):
        fan_out, fan_in = fc.weight.shape
        limit = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier-uniform: U(-limit, limit), std limit / sqrt(3)
        w = fc.weight.detach().double()
        assert torch.all(fc.bias == 0)
        assert w.abs().max().item() <= limit
        assert w.abs().max().item() > 0.99 * limit  # the whole range is used (16k draws)
        assert abs(w.std().item() - limit / math.sqrt(3)) < 0.03 * limit / math.sqrt(3)


def test_fairseq_option_keeps_fairseq_mains_initialization_bit_for_bit():
    torch.manual_seed(0)
    admin = build_model("admin_transformer", "--admin-init", "O(logn)", "--admin-ffn-init", "fairseq", *DIMS,
                        layers=(3, 2))
    torch.manual_seed(0)
    postln = build_model("postln_transformer", *DIMS, layers=(3, 2))
    for a, p in zip(_ffns(admin), _ffns(postln)):
        assert torch.equal(a.weight, p.weight) and torch.equal(a.bias, p.bias)
    fc2 = admin.encoder.layers[0].fc2
    assert fc2.bias.abs().max() > 0  # PyTorch's default draws the biases too
    assert fc2.weight.abs().max() <= 1 / math.sqrt(fc2.weight.shape[1])  # U(±1/sqrt(fan_in)): 2.2x below Xavier


def test_only_the_ffns_change():
    """Attention, embeddings and LayerNorms are fairseq's in both: with the same seed the first layer's attention
    weights are identical (its FFNs are drawn after them)."""
    torch.manual_seed(0)
    xavier = build_model("admin_transformer", "--admin-init", "O(logn)", *DIMS, layers=(2, 2))
    torch.manual_seed(0)
    plain = build_model("admin_transformer", "--admin-init", "O(logn)", "--admin-ffn-init", "fairseq", *DIMS,
                        layers=(2, 2))
    plain_params = dict(plain.encoder.layers[0].named_parameters())
    for name, p in xavier.encoder.layers[0].named_parameters():
        if not name.startswith(("fc1", "fc2")):
            assert torch.equal(p, plain_params[name]), name
    assert torch.equal(xavier.encoder.embed_tokens.weight, plain.encoder.embed_tokens.weight)
