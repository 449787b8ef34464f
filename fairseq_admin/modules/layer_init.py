"""One layer-initialization option for every scheme: ``--layer-init {fairseq,fairseq-0.9,pytorch}``.

The official codes of the papers start from two different fairseq versions or from PyTorch's own Transformer layers,
and their initializations differ in the biases, the attention's output projection and the FFN:

``fairseq`` (fairseq main, what fairseq's own ``transformer`` does today)
    q/k/v: Xavier-uniform with gain 1/sqrt(2), ``nn.Linear``'s U(±1/sqrt(d)) biases; out_proj: Xavier-uniform, bias 0
    (fairseq/modules/multihead_attention.py, ``reset_parameters``); fc1/fc2: plain ``nn.Linear`` (U(±1/sqrt(fan_in))
    weights and biases). The official B2T code (takase/b2t_connection, a fairseq fork after 0.9) builds exactly this:
    its ``build_fc1/build_fc2`` return ``nn.Linear`` (fairseq/modules/transformer_layer.py:59-63, 219-223) and its
    attention is fairseq main's (fairseq/modules/multihead_attention.py:85-99).

``fairseq-0.9`` (fairseq 0.9, the base of Transformer-Clinic, Admin's official code)
    attention: one fused (3d, d) ``in_proj_weight``, Xavier-uniform, bound sqrt(6 / (d + 3d)) — the same distribution
    as fairseq main's separate q/k/v with gain 1/sqrt(2) — and ``in_proj_bias`` and ``out_proj.bias`` zero
    (Transformer-Clinic fairseq/fairseq/modules/multihead_attention.py:76-87); fc1/fc2 by its ``Linear`` helper:
    Xavier-uniform weights, zero biases (fairseq/fairseq/modules/transformer_layer.py:54-55 and 688-693).
    Embeddings and LayerNorms are the same in both versions.

``pytorch`` (PyTorch's own ``nn.TransformerEncoderLayer``/``DecoderLayer`` parts, the base of ReZero's official
code, majumderb/rezero rezero/transformer/rztx.py:40-44, :105-110, which adds no initialization of its own)
    attention: ``nn.MultiheadAttention._reset_parameters`` (torch/nn/modules/activation.py): one fused (3d, d)
    ``in_proj_weight``, Xavier-uniform (the distribution of fairseq main's q/k/v, as above), ``in_proj_bias`` and
    ``out_proj.bias`` zero; ``out_proj.weight`` keeps ``nn.Linear``'s default, kaiming-uniform(a=√5) = U(±1/√d);
    fc1/fc2: ``nn.Linear``'s default, as fairseq main.

So ``fairseq-0.9`` = zero q/k/v/out_proj biases and Xavier-uniform fc1/fc2 with zero biases, and ``pytorch`` = zero
q/k/v biases and a U(±1/√d) out_proj weight, each applied on top of fairseq main's build. The other weights are
left as drawn: their distribution is the same in every version, and keeping the draw keeps two same-seed models equal
everywhere else. A scheme's own initialization (B2T's L^-0.5, DeepNorm's Xavier-normal with gain β) runs after this
one. Each scheme's default is its official code's (``ResidualScheme.official_layer_init``); any scheme takes any of
them, so a like-for-like baseline is one flag.
"""
import math

import torch
from torch import nn

from fairseq_admin.errors import OptionError

LAYER_INITS = ("fairseq", "fairseq-0.9", "pytorch")


def fairseq_09_init_(layer: nn.Module) -> None:
    """fairseq 0.9's initialization of one Transformer layer (see the module docstring)."""
    with torch.no_grad():
        for attn in filter(None, (layer.self_attn, getattr(layer, "encoder_attn", None))):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)
        for fc in (layer.fc1, layer.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)


def pytorch_init_(layer: nn.Module) -> None:
    """PyTorch's ``nn.MultiheadAttention`` initialization of one Transformer layer's attentions (see the module
    docstring); fc1/fc2 keep fairseq main's ``nn.Linear`` default, which is PyTorch's."""
    with torch.no_grad():
        for attn in filter(None, (layer.self_attn, getattr(layer, "encoder_attn", None))):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)
            nn.init.kaiming_uniform_(attn.out_proj.weight, a=math.sqrt(5))  # nn.Linear.reset_parameters


def apply_layer_init(layer: nn.Module, name: str) -> None:
    """Initialize a freshly built fairseq Transformer layer as fairseq version ``name`` did."""
    if name == "fairseq-0.9":
        fairseq_09_init_(layer)
    elif name == "pytorch":
        pytorch_init_(layer)
    elif name != "fairseq":
        raise OptionError(f"unknown --layer-init {name!r}; choose one of {', '.join(LAYER_INITS)}")
