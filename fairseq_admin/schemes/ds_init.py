"""DS-Init (Zhang, Titov & Sennrich, EMNLP 2019, "Improving Deep Transformer with Depth-Scaled Initialization and
Merged Attention"): Post-LN whose layer weights are drawn with a variance that shrinks with the layer's depth.

The forward is Post-LN's, unchanged: x_{i+1} = LN(x_i + f_i(x_i)). Only the initialization of each layer changes.

Official code (bzhangGo/zero at d97e2c2, TensorFlow), the rule by default (``--ds-init-rule official``)
    models/transformer.py:37-45 (encoder) and :123-131 (decoder)::

        for layer in range(params.num_encoder_layer):            # num_decoder_layer in the decoder
            if params.deep_transformer_init:
                layer_initializer = tf.variance_scaling_initializer(
                    params.initializer_gain * (layer + 1) ** -0.5, mode="fan_avg", distribution="uniform")
            with tf.variable_scope("layer_{}".format(layer), initializer=layer_initializer): ...

    TF's VarianceScaling with ``fan_avg`` and ``uniform`` draws U(−b, b) with b = sqrt(3·scale / fan_avg),
    fan_avg = (fan_in + fan_out) / 2, so Var(W) = b²/3 = scale / fan_avg. With scale = gain · l^(-1/2):

        b_official(l) = sqrt(3 · gain · l^(-1/2) / fan_avg) = sqrt(gain) · sqrt(6 / (fan_in + fan_out)) · l^(-1/4)

    The depth scales the *variance* by l^(-1/2), so the bound by l^(-1/4). l = layer + 1: counted from 1, per stack
    (the first encoder layer and the first decoder layer both have l = 1). gain = ``initializer_gain``: 1.0 in the
    DS-Init training command (docs/depth_scale_init_and_merged_attention/README.md, "Model Training"); run.py:75's
    default 0.08 is the range of RNNSearch's plain uniform initializer, not used here.

    Which tensors: a scope's initializer reaches only the variables created without their own. In a layer those are
    the weight matrices of ``func.linear`` (func.py:48, ``weight_initializer=None``): the self-attention's fused
    ``qkv_map`` (func.py:196, one d × 3d matrix: fan_in d, fan_out 3d), the cross-attention's ``q_map``, ``k_map``,
    ``v_map`` (func.py:207, :211, :212, d × d each), every attention's ``o_map`` (func.py:278) and the FFN's
    ``enlarge`` and ``output`` (func.py:331, :336). Biases are zero (func.py:16 and :58) and LayerNorms 1 and 0
    (func.py:297-298): not depth-scaled. Embeddings live outside the layer scopes (models/transformer.py:18-26,
    N(0, d^-1/2), which fairseq's embeddings already are): untouched.

The paper's text (``--ds-init-rule paper``)
    W ∈ R^{d_i × d_o} ~ U(−γ·α/√l, γ·α/√l), γ = sqrt(6 / (d_i + d_o)) (the README's figure dsinit.png):

        b_paper(l) = α · sqrt(6 / (fan_in + fan_out)) · l^(-1/2)      (α = ``--ds-init-gain``)

    the bound scaled by l^(-1/2), the variance by l^(-1). Both rules are Xavier-uniform at l = 1 with gain 1.

How fairseq's layer maps onto it (``init_layer``, after ``--layer-init``)
    fairseq's self-attention has separate q_proj, k_proj, v_proj (d × d each) where the official code has one fused
    d × 3d ``qkv_map``: they are drawn with that matrix's fans (fan_in d, fan_out 3d, the sum of the three output
    sizes), i.e. exactly the distribution of its slices. (At l = 1 this is fairseq's own Xavier-uniform with gain
    1/√2, whose reason is the same fused matrix.) out_proj, the cross-attention's q/k/v/out_proj (fairseq's k and v
    read the encoder output: fan_in is the encoder's dimension) and fc1, fc2 are drawn with their own fans. The
    default ``--layer-init`` is fairseq-0.9 (fairseq_admin/modules/layer_init.py): every q/k/v/out_proj/fc1/fc2 bias
    zero, as the official ``func.linear``; ``--layer-init fairseq`` keeps fairseq main's biases.

Not implemented
    * Merged attention (MAtt). The official DS-Init recipe couples the two: its README trains
      ``model_name="transformer_fuse"`` with ``deep_transformer_init=True``, whose decoder replaces the self-attention
      sublayer by an average attention summed with the cross-attention (models/transformer_fuse.py:131-150,
      func.py:258-275). We implement the initialization only, on fairseq's decoder; the paper's "Ours" BLEU are
      DS-Init + MAtt. (DS-Init without MAtt is the official models/transformer.py with ``deep_transformer_init``.)
    * The rest of their base Transformer that is not DS-Init: a bias after the embeddings (models/transformer.py:27,
      :102), LayerNorm eps 1e-8 (utils/dtype.py:14; fairseq's 1e-5). fairseq's Transformer stays as it is.

Export: the model is fairseq's Post-LN Transformer with other initial values, so fairseq-admin-export copies it to
stock fairseq by renaming only.
"""
import math
from typing import List, Tuple

import torch
from torch import nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme

RULES = ("official", "paper")
DEFAULT_GAIN = 1.0  # initializer_gain=1. of the official DS-Init training command (its README)


def official_bound(fan_in: int, fan_out: int, depth: int, gain: float) -> float:
    """b of TF's variance_scaling_initializer(gain · l^-1/2, fan_avg, uniform) (models/transformer.py:39-42):
    b = sqrt(3 · scale / fan_avg), scale = gain · l^(-1/2), fan_avg = max(1, (fan_in + fan_out) / 2)."""
    scale = gain * depth ** -0.5
    fan_avg = max(1.0, (fan_in + fan_out) / 2.0)
    return math.sqrt(3.0 * scale / fan_avg)


def paper_bound(fan_in: int, fan_out: int, depth: int, gain: float) -> float:
    """b of the paper's U(−γα/√l, γα/√l), γ = sqrt(6 / (fan_in + fan_out)), α = ``gain``."""
    return gain * math.sqrt(6.0 / (fan_in + fan_out)) / math.sqrt(depth)


def fans(layer: nn.Module) -> List[Tuple[str, nn.Linear, int, int]]:
    """(name, projection, fan_in, fan_out) of every weight matrix DS-Init draws in a fairseq layer. The
    self-attention's q/k/v take the fans of the official fused d × 3d ``qkv_map`` (func.py:196)."""
    attn = layer.self_attn
    qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
    fused_out = sum(proj.out_features for proj in qkv)
    out = [(f"self_attn.{name}", proj, proj.in_features, fused_out) for name, proj in zip("qkv", qkv)]
    attentions = [("self_attn", attn, ("out_proj",))]
    if getattr(layer, "encoder_attn", None) is not None:
        attentions.append(("encoder_attn", layer.encoder_attn, ("q_proj", "k_proj", "v_proj", "out_proj")))
    for prefix, module, names in attentions:
        for name in names:
            proj = getattr(module, name)
            out.append((f"{prefix}.{name}", proj, proj.in_features, proj.out_features))
    for name in ("fc1", "fc2"):
        proj = getattr(layer, name)
        out.append((name, proj, proj.in_features, proj.out_features))
    return out


class DSInit(ResidualScheme):
    """Post-LN; each layer's weights U(−b, b), b = sqrt(3·gain·l^-1/2 / fan_avg) (official) or
    gain·sqrt(6/(fan_in+fan_out))·l^-1/2 (paper)."""

    name = "ds_init"
    paper = "Zhang, Titov & Sennrich 2019"
    formula = "x_{i+1} = LN(x_i + f_i(x_i)), layer l's weights U(-b, b), Var = gain * l^-1/2 / fan_avg"
    official_layer_init = "fairseq-0.9"  # every bias of a layer zero, as the official func.linear (func.py:16, :58)

    def __init__(self, cfg, sublayers, num_layers, embed_dim, **position):
        super().__init__(cfg, sublayers, num_layers, embed_dim, **position)
        self.rule = getattr(cfg, "ds_init_rule", None) or "official"
        gain = getattr(cfg, "ds_init_gain", None)
        self.gain = DEFAULT_GAIN if gain is None else gain

    @staticmethod
    def add_args(parser):
        parser.add_argument("--ds-init-rule", choices=RULES,
                            help="ds_init: 'official' (bzhangGo/zero models/transformer.py: variance "
                                 "gain*l^-1/2/fan_avg, i.e. the Xavier bound times l^-1/4; the default) or 'paper' "
                                 "(the paper's text: the Xavier bound times gain*l^-1/2)")
        parser.add_argument("--ds-init-gain", type=float, metavar="G",
                            help="ds_init: the official initializer_gain, multiplying the variance (official rule), "
                                 "or the paper's alpha, multiplying the bound (paper rule). Default 1")

    @classmethod
    def check_args(cls, args):
        gain = getattr(args, "ds_init_gain", None)
        if gain is not None and not (math.isfinite(gain) and gain > 0):
            raise OptionError(f"--ds-init-gain must be a positive number, got {gain}")

    def bound(self, fan_in: int, fan_out: int) -> float:
        """This layer's b for a weight with these fans, by ``--ds-init-rule``."""
        rule = official_bound if self.rule == "official" else paper_bound
        return rule(fan_in, fan_out, self.depth, self.gain)

    def init_layer(self, layer: nn.Module) -> None:
        with torch.no_grad():
            for _, proj, fan_in, fan_out in fans(layer):
                b = self.bound(fan_in, fan_out)
                proj.weight.uniform_(-b, b)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rule={self.rule}, gain={self.gain!r}"


__all__ = ["DSInit", "fans", "official_bound", "paper_bound"]
