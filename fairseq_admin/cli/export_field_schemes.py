"""What ``fairseq-admin-export`` does with the schemes of issue 28 (called from fairseq_admin/cli/export.py).

* ``lns`` (LayerNorm Scaling) becomes fairseq's own Pre-LN Transformer exactly. Its pre-norm of layer l computes
  LN(x)·s, s = 1/√l a constant, and LN(x)·s = (x̂⊙γ + β)·s = x̂⊙(s·γ) + s·β with x̂ = (x − mean)/sqrt(var + ε): a
  LayerNorm with γ' = s·γ and β' = s·β and the same ε. Each product is computed in float64 and rounded once to the
  tensor's dtype (a relative change of at most 2^-24 per entry in float32); the tensors are renamed from
  the plugin's ``<norm>.norm.weight`` to fairseq's ``<norm>.weight``. The final norms are not scaled.
* ``resi_dual``, ``mix_ln`` and ``peri_ln`` have no stock fairseq equivalent and are refused in one line (Peri-LN goes to
  CTranslate2 instead: fairseq_admin/cli/ct2_peri_ln.py).
"""
import math
from typing import Dict, List, Optional

import torch

#: scheme -> why it cannot be exported
REFUSALS = {
    "resi_dual": "resi_dual cannot be exported: its stack output x_N + LN_f(res_N) needs a second residual stream, "
                 "which fairseq's Transformer does not have",
    "mix_ln": "mix_ln cannot be exported: it mixes Post-LN and Pre-LN layers in one stack, and fairseq's Transformer "
              "has one --encoder/decoder-normalize-before per stack",
    "peri_ln": "peri_ln cannot be exported to fairseq: its Transformer has no norm on a sublayer's output; convert "
               "it to CTranslate2 with python -m fairseq_admin.cli.ct2_peri_ln",
}
#: the stock layout each exportable scheme of this module becomes
STOCK_LAYOUT = {"lns": "preln"}
NORM_SLOTS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")


def refusal(scheme: str) -> Optional[str]:
    """The one-line reason ``scheme`` cannot be exported, or None."""
    return REFUSALS.get(scheme)


def stock_layout(scheme: str) -> str:
    """The scheme whose fairseq layout the export has: Pre-LN for ``lns``; the scheme itself otherwise."""
    return STOCK_LAYOUT.get(scheme, scheme)


def fold(scheme: str, weights: Dict[str, torch.Tensor], model_cfg) -> Dict[str, torch.Tensor]:
    """The checkpoint's tensors with the scheme's constants folded in (a new dict; the input is not written to)."""
    if scheme != "lns":
        return weights
    out = dict(weights)
    for stack in ("encoder", "decoder"):
        for layer in range(model_cfg[f"{stack}_layers"]):
            scale = 1 / math.sqrt(layer + 1)  # schemes/layernorm_scaling.py's lns_scale: l = layer + 1
            for slot in NORM_SLOTS:
                prefix = f"{stack}.layers.{layer}.{slot}"
                for part in ("weight", "bias"):
                    key = f"{prefix}.norm.{part}"
                    if key in out:
                        out[f"{prefix}.{part}"] = (out.pop(key).double() * scale).to(weights[key].dtype)
    return out


def notes(scheme: str) -> List[str]:
    if scheme == "lns":
        return ["LayerNorm Scaling's 1/sqrt(l) folded into the affine of each sublayer's pre-norm"]
    return []
