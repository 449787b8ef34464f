"""Independent float64 references of the schemes of issue 28, written from each official code's rule (the file:line
of every rule is in tests/test_field_schemes.py and docs/methods.md), not from our implementation.

Only weights are read from the fairseq modules (the norms' γ/β, the projections); the layer structure, placements,
scales and the dual stream are re-derived here with tests/reference.py's attention, FFN and LayerNorm arithmetic.
Layer positions (l) come from the order of the layers in their stack, never from the scheme object under test.
"""
import math

import torch

import reference as ref


def layer_norm(x, ln, eps=1e-5):
    """y = (x − mean) / sqrt(var + eps) · γ + β, over the last dimension (population variance)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * ln.weight.double() + ln.bias.double()


def _sublayers(layer, stack, enc=None, enc_pad=None, self_pad=None):
    """[(f, fairseq's norm of that sublayer)] of one layer, bottom to top."""
    sa = (lambda h: ref.attention(h, h, layer.self_attn, self_pad, causal=stack == "decoder"))
    out = [(sa, layer.self_attn_layer_norm)]
    if stack == "decoder":
        out.append((lambda h: ref.attention(h, enc, layer.encoder_attn, enc_pad), layer.encoder_attn_layer_norm))
    out.append((lambda h: ref.ffn(h, layer), layer.final_layer_norm))
    return out


def _inner(norm):
    """The LayerNorm inside a norm slot (LayerNorm Scaling wraps it with its constant scale)."""
    return getattr(norm, "norm", norm)


def lns_layer(layer, depth, x, stack, **kw):
    """LayerNorm Scaling (lmsdss/LayerNorm-Scaling modeling_llama.py:429-453): x + f(LN(x) · 1/√l), l = depth."""
    scale = 1 / math.sqrt(depth)
    for f, norm in _sublayers(layer, stack, **kw):
        x = x + f(layer_norm(x, _inner(norm)) * scale)
    return x


def mix_ln_layer(layer, index, num_layers, x, stack, alpha=0.25, **kw):
    """Mix-LN (pixeli99/MixLN modeling_llama.py:327, :566-601): layer index < floor(α·L) Post-LN, else Pre-LN."""
    post = index < int(alpha * num_layers)
    for f, norm in _sublayers(layer, stack, **kw):
        x = layer_norm(x + f(x), norm) if post else x + f(layer_norm(x, norm))
    return x


def peri_ln_layer(layer, x, stack, output_only=False, **kw):
    """Peri-LN (Kim et al. 2025): x + LN_out(f(LN_in(x))) for every sublayer, cross-attention included; with
    ``output_only`` (OLMo 2, Swin v2): x + LN_out(f(x))."""
    output_norms = layer.residual.output_norms  # weights only
    for i, (f, norm) in enumerate(_sublayers(layer, stack, **kw)):
        h = x if output_only else layer_norm(x, norm)
        x = x + layer_norm(f(h), output_norms[i])
    return x


def resi_dual_stack(layers, x, stack, final_norm, alpha=1.0, final_eps=1e-7, branches=None, **kw):
    """ResiDual (microsoft/ResiDual resi_dual.py:107/:252 res = x_0; resi_dual_layers.py res += drop(f(x)),
    x = LN(x + drop(f(x))); resi_dual.py:131/:283 out = α·x_N + LN_f(res_N), LN_f eps 1e-7 (:24, :157)).

    ``branches``: the sublayer outputs after dropout, in order, when the model ran in train mode (dropout is drawn
    inside fairseq's layer, so a train-mode reference takes the dropped-out outputs as given); None in eval mode."""
    res = x
    taken = iter(branches) if branches is not None else None
    for layer in layers:
        for f, norm in _sublayers(layer, stack, **kw):
            d = next(taken) if taken is not None else f(x)
            res = res + d
            x = layer_norm(x + d, norm)
    return alpha * x + layer_norm(res, final_norm, eps=final_eps)
