"""Independent float64 references, written from the papers' formulas (docs/methods.md; not from our code).

Only the weights are read from the fairseq modules; every operation (LayerNorm, multi-head attention, FFN, the
residual schemes, Admin's profiling recurrence) is re-derived here with plain tensor arithmetic.
"""
import math

import numpy as np
import torch

EPS = 1e-5  # fairseq's LayerNorm epsilon


def layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * ln.weight.double() + ln.bias.double()


def linear(x, lin):
    return x @ lin.weight.double().T + lin.bias.double()


def attention(query, key_value, mha, key_padding_mask=None, causal=False):
    """Scaled dot-product multi-head attention: softmax(q k^T / sqrt(d_h)) v, then the output projection."""
    T, B, C = query.shape
    S = key_value.shape[0]
    H = mha.num_heads
    d = C // H
    q = linear(query, mha.q_proj) / math.sqrt(d)
    k = linear(key_value, mha.k_proj)
    v = linear(key_value, mha.v_proj)
    q = q.reshape(T, B, H, d).permute(1, 2, 0, 3)  # B H T d
    k = k.reshape(S, B, H, d).permute(1, 2, 0, 3)
    v = v.reshape(S, B, H, d).permute(1, 2, 0, 3)
    scores = q @ k.transpose(-1, -2)  # B H T S
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
    if causal:
        future = torch.triu(torch.ones(T, S, dtype=torch.bool), diagonal=1 + S - T)
        scores = scores.masked_fill(future, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # B H T d
    out = out.permute(2, 0, 1, 3).reshape(T, B, C)
    return linear(out, mha.out_proj)


def ffn(x, layer):
    return linear(torch.relu(linear(x, layer.fc1)), layer.fc2)


def omega_of(layer, sublayer):
    """ω of a sublayer as stored (a size-d vector, or a scalar buffer entry)."""
    return layer.residual.omega[sublayer].double()


def deepnorm_alpha(layer, stack):
    """DeepNet (Wang et al. 2022) encoder-decoder α: 0.81·(N⁴M)^(1/16) (encoder), (3M)^(1/4) (decoder). N and M come
    from fairseq's config, which an encoder layer keeps (``layer.cfg``); a decoder layer does not, so there M is the
    depth the layer was built for (``layer.residual.num_layers``, i.e. cfg.decoder.layers)."""
    if stack == "encoder":
        N, M = layer.cfg.encoder.layers, layer.cfg.decoder.layers
        return 0.81 * (N ** 4 * M) ** (1 / 16)
    return (3 * layer.residual.num_layers) ** 0.25


def encoder_layer(scheme, layer, x, pad=None):
    """One encoder layer of ``scheme``; ``pad`` is (batch, time), True at padding."""
    ln1, ln2 = layer.self_attn_layer_norm, layer.final_layer_norm
    sa = lambda h: attention(h, h, layer.self_attn, pad)
    if scheme == "preln":
        h = x + sa(layer_norm(x, ln1))
        return h + ffn(layer_norm(h, ln2), layer)
    if scheme == "admin":
        h = layer_norm(x * omega_of(layer, 0) + sa(x), ln1)  # LN(x·ω + f(x))
        return layer_norm(h * omega_of(layer, 1) + ffn(h, layer), ln2)
    if scheme == "deepnorm":  # LN(α·x + f(x))
        a = deepnorm_alpha(layer, "encoder")
        h = layer_norm(a * x + sa(x), ln1)
        return layer_norm(a * h + ffn(h, layer), ln2)
    h = layer_norm(x + sa(x), ln1)
    if scheme == "postln":
        return layer_norm(h + ffn(h, layer), ln2)
    if scheme == "b2t":  # out = LN(x + h + FFN(h))
        return layer_norm(x + h + ffn(h, layer), ln2)
    raise ValueError(scheme)


def decoder_layer(scheme, layer, x, enc, enc_pad=None, self_pad=None):
    ln1, ln2, ln3 = layer.self_attn_layer_norm, layer.encoder_attn_layer_norm, layer.final_layer_norm
    sa = lambda h: attention(h, h, layer.self_attn, self_pad, causal=True)
    ca = lambda h: attention(h, enc, layer.encoder_attn, enc_pad)
    if scheme == "preln":
        h1 = x + sa(layer_norm(x, ln1))
        h2 = h1 + ca(layer_norm(h1, ln2))
        return h2 + ffn(layer_norm(h2, ln3), layer)
    if scheme == "admin":
        h1 = layer_norm(x * omega_of(layer, 0) + sa(x), ln1)
        h2 = layer_norm(h1 * omega_of(layer, 1) + ca(h1), ln2)
        return layer_norm(h2 * omega_of(layer, 2) + ffn(h2, layer), ln3)
    if scheme == "deepnorm":
        a = deepnorm_alpha(layer, "decoder")
        h1 = layer_norm(a * x + sa(x), ln1)
        h2 = layer_norm(a * h1 + ca(h1), ln2)
        return layer_norm(a * h2 + ffn(h2, layer), ln3)
    h1 = layer_norm(x + sa(x), ln1)
    h2 = layer_norm(h1 + ca(h1), ln2)
    if scheme == "postln":
        return layer_norm(h2 + ffn(h2, layer), ln3)
    if scheme == "b2t":  # out = LN(x + h2 + FFN(h2)): the connection skips both attention sublayers and their LNs
        return layer_norm(x + h2 + ffn(h2, layer), ln3)
    raise ValueError(scheme)


def pooled_var(tensors, pads):
    """np.var (ddof=0) over every entry of the real (non-padding) positions of (time, batch, dim) tensors, pooled
    over all of them (one tensor per distributed worker)."""
    chunks = []
    for t, pad in zip(tensors, pads):
        a = t.detach().double().numpy()
        chunks.append(a[~pad.numpy().T] if pad is not None else a.reshape(-1, a.shape[-1]))
    return float(np.var(np.concatenate(chunks)))


def _profile_walk(sublayers, xs, pads, count_padding=False):
    """Admin's profiling pass over one stack, each ω_i used as soon as it is known (as the official code does):
    ω_1 = 1, x_{i+1} = LN(x_i ω_i + f_i(x_i)), ω_{i+1} = sqrt(Var(x_i ω_i) + Var(f_i(x_i))).
    ``sublayers``: [(f(x, worker), ln)] bottom to top; ``xs``: the stack input of each worker."""
    omegas, omega, betas = [], 1.0, []
    for f_fn, ln in sublayers:
        fs = [f_fn(x, w) for w, x in enumerate(xs)]
        omegas.append(omega)
        var_pads = [None] * len(pads) if count_padding else pads  # the official np.var over the whole tensor
        var_shortcut, var_branch = pooled_var([x * omega for x in xs], var_pads), pooled_var(fs, var_pads)
        betas.append(var_branch / (var_shortcut + var_branch))  # Liu et al.'s residual dependency of sublayer i
        next_omega = math.sqrt(var_shortcut + var_branch)
        xs = [layer_norm(x * omega + f, ln) for x, f in zip(xs, fs)]
        omega = next_omega
    return omegas, xs, betas


def admin_profile_reference(encoder_layers, decoder_layers, batches, return_betas=False, count_padding=False):
    """Reference ω of both stacks. ``batches``: one dict per worker with ``enc_x``, ``enc_pad``, ``dec_x``,
    ``dec_pad`` (layer inputs after the embeddings); the encoder walk comes first, its outputs feed the decoder.
    With ``return_betas``, also each sublayer's residual dependency β_i = Var(f_i) / (Var(x_i ω_i) + Var(f_i)).
    With ``count_padding``, each Var covers every position, padding included (the official code's reading)."""
    enc_pads = [b["enc_pad"] for b in batches]
    dec_pads = [b["dec_pad"] for b in batches]
    enc_sublayers = []
    for l in encoder_layers:
        enc_sublayers += [(lambda h, w, l=l: attention(h, h, l.self_attn, enc_pads[w]), l.self_attn_layer_norm),
                          (lambda h, w, l=l: ffn(h, l), l.final_layer_norm)]
    enc_omegas, enc_outs, enc_betas = _profile_walk(enc_sublayers, [b["enc_x"] for b in batches], enc_pads,
                                                    count_padding)
    dec_sublayers = []
    for l in decoder_layers:
        dec_sublayers += [
            (lambda h, w, l=l: attention(h, h, l.self_attn, dec_pads[w], causal=True), l.self_attn_layer_norm),
            (lambda h, w, l=l: attention(h, enc_outs[w], l.encoder_attn, enc_pads[w]), l.encoder_attn_layer_norm),
            (lambda h, w, l=l: ffn(h, l), l.final_layer_norm)]
    dec_omegas, _, dec_betas = _profile_walk(dec_sublayers, [b["dec_x"] for b in batches], dec_pads, count_padding)
    if return_betas:
        return (enc_omegas, dec_omegas), (enc_betas, dec_betas)
    return enc_omegas, dec_omegas
