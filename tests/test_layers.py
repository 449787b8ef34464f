"""Each scheme's layer forward equals the float64 reference written from the paper's formula (docs/methods.md)."""
import pytest
import torch

import reference as ref
from helpers import build_model

SCHEMES = ["postln", "preln", "admin", "b2t", "deepnorm"]
# fairseq's attention (outside the encoder's fused path) takes its softmax in float32 (fairseq.utils.softmax), so a
# float64 decoder agrees with the float64 reference to float32 precision only; a formula error shows as O(1).
DECODER_TOL = dict(rtol=1e-5, atol=1e-6)


def _model(scheme, *extra):
    torch.manual_seed(0)
    closed_form = ("--admin-init", "O(logn)") if scheme == "admin" else ()
    model = build_model(f"{scheme}_transformer", *closed_form, *extra, layers=(3, 2)).double().eval()
    if scheme == "admin":  # distinct, non-trivial ω per dimension so a mix-up of sublayers would show
        with torch.no_grad():
            for layer in list(model.encoder.layers) + list(model.decoder.layers):
                layer.residual.omega.uniform_(0.5, 2.0)
    return model


def _inputs(T=6, B=3, C=16, S=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, C, generator=g, dtype=torch.float64)
    enc = torch.randn(S, B, C, generator=g, dtype=torch.float64)
    enc_pad = torch.zeros(B, S, dtype=torch.bool)
    enc_pad[0, :2] = True
    self_pad = torch.zeros(B, T, dtype=torch.bool)
    self_pad[1, -2:] = True
    return x, enc, enc_pad, self_pad


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_encoder_layer_matches_reference(scheme, padding):
    model = _model(scheme)
    x, _, _, self_pad = _inputs()
    pad = self_pad if padding else None
    for layer in model.encoder.layers:
        out = layer(x, encoder_padding_mask=pad)
        expected = ref.encoder_layer(scheme, layer, x, pad)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
        x = out


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_decoder_layer_matches_reference(scheme, padding):
    model = _model(scheme)
    x, enc, enc_pad, self_pad = _inputs()
    enc_pad = enc_pad if padding else None
    self_pad = self_pad if padding else None
    T = x.shape[0]
    causal = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    for layer in model.decoder.layers:
        out, _, _ = layer(x, enc, enc_pad, self_attn_mask=causal, self_attn_padding_mask=self_pad)
        expected = ref.decoder_layer(scheme, layer, x, enc, enc_pad, self_pad)
        torch.testing.assert_close(out, expected, **DECODER_TOL)
        x = out


@pytest.mark.parametrize("scheme", SCHEMES)
def test_incremental_decoding_matches_reference(scheme):
    """Step-by-step decoding with fairseq's incremental state gives, at each step, the reference's full output."""
    model = _model(scheme)
    x, enc, enc_pad, _ = _inputs()
    layer = model.decoder.layers[0]
    expected = ref.decoder_layer(scheme, layer, x, enc, enc_pad)
    state = {}
    for t in range(x.shape[0]):
        out, _, _ = layer(x[t:t + 1], enc, enc_pad, incremental_state=state)
        torch.testing.assert_close(out[0], expected[t], **DECODER_TOL)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_model_incremental_decoder_equals_full_decoder(scheme):
    """What fairseq-generate relies on: the whole decoder, run incrementally, reproduces its full forward."""
    model = _model(scheme)
    d = model.decoder.dictionary
    src = torch.randint(d.nspecial, len(d), (2, 6))
    src[0, :2] = d.pad()
    prev = torch.randint(d.nspecial, len(d), (2, 5))
    enc_out = model.encoder(src, src_lengths=(src != d.pad()).sum(1))
    full, _ = model.decoder(prev, encoder_out=enc_out)
    state = {}
    for t in range(prev.shape[1]):
        step, _ = model.decoder(prev[:, : t + 1], encoder_out=enc_out, incremental_state=state)
        torch.testing.assert_close(step[:, -1], full[:, t], **DECODER_TOL)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_routing_keeps_no_tensors_and_sets_no_module_attributes(scheme, monkeypatch):
    """After a layer forward the scheme holds no reference to its tensors (they would stay alive until the next
    forward), and the per-forward bookkeeping never goes through nn.Module.__setattr__, whose checks made an 18-18
    beam search 1.7% slower than vanilla fairseq's (BENCHMARKS.md, "Cost")."""
    model = _model(scheme)
    x, enc, enc_pad, self_pad = _inputs()
    assigned = []
    original = torch.nn.Module.__setattr__

    def spy(module, name, value):
        assigned.append((type(module).__name__, name))
        original(module, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", spy)
    enc_layer, dec_layer = model.encoder.layers[0], model.decoder.layers[0]
    enc_layer(x, encoder_padding_mask=self_pad)
    dec_layer(x, enc, enc_pad, self_attn_padding_mask=self_pad)
    dec_layer(x, None, None)  # no encoder output: fairseq skips cross-attention, the scheme must follow
    monkeypatch.undo()
    assert [a for a in assigned if a[0] == type(enc_layer.residual).__name__] == []
    for layer in (enc_layer, dec_layer):
        assert layer.residual.layer_input is None and layer.residual.padding_mask is None


def test_preln_has_final_layer_norms_and_postln_schemes_do_not():
    assert _model("preln").encoder.layer_norm is not None and _model("preln").decoder.layer_norm is not None
    for scheme in ("postln", "admin", "b2t"):
        model = _model(scheme)
        assert model.encoder.layer_norm is None and model.decoder.layer_norm is None
        assert not model.encoder.layers[0].normalize_before


def test_b2t_scales_every_non_layernorm_weight_by_inverse_sqrt_depth():
    torch.manual_seed(0)
    scaled = build_model("b2t_transformer", layers=(4, 9))
    torch.manual_seed(0)
    plain = build_model("b2t_transformer", "--no-b2t-init-scale", layers=(4, 9))
    for stack, L in (("encoder", 4), ("decoder", 9)):
        params = dict(getattr(plain, stack).named_parameters())
        for name, p in getattr(scaled, stack).named_parameters():
            if not name.startswith("layers."):
                torch.testing.assert_close(p, params[name])  # embeddings untouched
            elif "layer_norm" in name or name.endswith(".bias"):
                torch.testing.assert_close(p, params[name])
            else:
                assert name.endswith(".weight"), name
                torch.testing.assert_close(p, params[name] * L ** -0.5)
