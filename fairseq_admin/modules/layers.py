"""fairseq's Transformer layers with their ``residual_connection`` seam routed to a residual scheme.

fairseq calls ``residual_connection(branch, shortcut)`` once per sublayer; these subclasses hand that call to the
layer's scheme (``self.residual``) and tell it, at the start of each forward, the layer input (B2T needs it) and
where the padding is (Admin's profiling measures real tokens only). At build time the scheme also sets the layer's
placement (``normalize_before``, which fairseq reads at forward time) and fills its norm slots
(``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``) from ``build_sublayer_norm``
(fairseq_admin/schemes/base.py). The rest of fairseq's layer runs unchanged.
"""
from typing import Dict, List, Optional

from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase
from torch import Tensor, nn

from fairseq_admin.modules.layer_init import apply_layer_init
from fairseq_admin.schemes import get_scheme
from fairseq_admin.schemes.base import NORM_SLOTS, StackCarry


def _install_scheme(layer: nn.Module, cfg, sublayers, num_layers: int, layer_index: int,
                    carry: Optional[StackCarry]) -> None:
    """Give a freshly built fairseq layer its scheme, the scheme's placement and norms, then its initialization."""
    scheme = get_scheme(cfg.residual_scheme)(cfg, sublayers, num_layers, layer.embed_dim, layer_index=layer_index,
                                             carry=carry)
    layer.residual = scheme
    layer.normalize_before = scheme.pre_norm()
    for index, sublayer in enumerate(sublayers):
        slot = NORM_SLOTS[sublayer]
        if getattr(layer, slot, None) is not None:  # the decoder without cross-attention has no such norm
            setattr(layer, slot, scheme.build_sublayer_norm(index))
    apply_layer_init(layer, _layer_init(cfg))
    scheme.init_layer(layer)


def _layer_init(cfg) -> str:
    """--layer-init as resolved by the model's build_model, else (a layer built on its own) the scheme's default."""
    return getattr(cfg, "layer_init", None) or get_scheme(cfg.residual_scheme).official_layer_init


class SchemeEncoderLayer(TransformerEncoderLayerBase):
    SUBLAYERS = ("self_attn", "ffn")

    def __init__(self, cfg, return_fc=False, layer_index: int = 0, carry: Optional[StackCarry] = None):
        super().__init__(cfg, return_fc=return_fc)
        _install_scheme(self, cfg, self.SUBLAYERS, cfg.encoder.layers, layer_index, carry)

    def residual_connection(self, x, residual):
        return self.residual.connect(x, residual)

    def forward(self, x, encoder_padding_mask: Optional[Tensor], attn_mask: Optional[Tensor] = None):
        self.residual.begin(x, encoder_padding_mask)
        return super().forward(x, encoder_padding_mask, attn_mask)


class SchemeDecoderLayer(TransformerDecoderLayerBase):
    SUBLAYERS = ("self_attn", "cross_attn", "ffn")

    def __init__(self, cfg, no_encoder_attn=False, add_bias_kv=False, add_zero_attn=False, layer_index: int = 0,
                 carry: Optional[StackCarry] = None):
        super().__init__(cfg, no_encoder_attn, add_bias_kv, add_zero_attn)
        _install_scheme(self, cfg, self.SUBLAYERS, cfg.decoder.layers, layer_index, carry)

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
