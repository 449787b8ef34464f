"""fairseq's Transformer layers with their ``residual_connection`` seam routed to a residual scheme.

fairseq calls ``residual_connection(branch, shortcut)`` once per sublayer; these subclasses hand that call to the
layer's scheme (``self.residual``) and tell it, at the start of each forward, the layer input (B2T needs it) and
where the padding is (Admin's profiling measures real tokens only). The rest of fairseq's layer runs unchanged.
"""
from typing import Dict, List, Optional

from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from torch import Tensor

from fairseq_admin.modules.layer_init import apply_layer_init
from fairseq_admin.schemes import get_scheme


def _layer_init(cfg) -> str:
    """--layer-init as resolved by the model's build_model, else (a layer built on its own) the scheme's default."""
    return getattr(cfg, "layer_init", None) or get_scheme(cfg.residual_scheme).official_layer_init


class SchemeEncoderLayer(TransformerEncoderLayerBase):
    SUBLAYERS = ("self_attn", "ffn")

    def __init__(self, cfg, return_fc=False):
        super().__init__(cfg, return_fc=return_fc)
        self.residual = get_scheme(cfg.residual_scheme)(cfg, self.SUBLAYERS, cfg.encoder.layers, self.embed_dim)
        apply_layer_init(self, _layer_init(cfg))
        self.residual.init_layer(self)

    def residual_connection(self, x, residual):
        return self.residual.connect(x, residual)

    def forward(self, x, encoder_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor] = None):
        self.residual.begin(x, encoder_padding_mask)
        return super().forward(x, encoder_padding_mask, attn_mask)


class SchemeDecoderLayer(TransformerDecoderLayerBase):
    SUBLAYERS = ("self_attn", "cross_attn", "ffn")

    def __init__(self, cfg, no_encoder_attn=False, add_bias_kv=False, add_zero_attn=False):
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)
        self.residual = get_scheme(cfg.residual_scheme)(cfg, self.SUBLAYERS, cfg.decoder.layers, self.embed_dim)
        apply_layer_init(self, _layer_init(cfg))
        self.residual.init_layer(self)

    def residual_connection(self, x, residual):
        return self.residual.connect(x, residual)

    def forward(
        self,
        x,
        encoder_out: Optional[Tensor] = None,
        encoder_padding_mask: Optional[Tensor] = None,
        incremental_state: Optional[Dict[str, Dict[str, Optional[Tensor]]]] = None,
        prev_self_attn_state: Optional[List[Tensor]] = None,
        prev_attn_state: Optional[List[Tensor]] = None,
        self_attn_mask: Optional[Tensor] = None,
        self_attn_padding_mask: Optional[Tensor] = None,
        need_attn: bool = False,
        need_head_weights: bool = False,
    ):
        # fairseq skips the cross-attention sublayer when there is no encoder output
        skip = ("cross_attn",) if self.encoder_attn is None or encoder_out is None else ()
        self.residual.begin(x, self_attn_padding_mask, skip=skip)
        return super().forward(
            x, encoder_out, encoder_padding_mask, incremental_state, prev_self_attn_state, prev_attn_state,
            self_attn_mask, self_attn_padding_mask, need_attn, need_head_weights,
        )
