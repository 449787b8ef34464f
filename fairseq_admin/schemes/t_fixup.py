"""T-Fixup (Huang, Pérez, Ba & Volkovs, ICML 2020, "Improving Transformer Optimization Through Better Initialization"):
a Transformer with no LayerNorm at all, trained without learning-rate warm-up, kept stable by its initialization.

    x_{i+1} = x_i + f_i(x_i)       no norm in the layers, after the stacks or on the embeddings

For N encoder and M decoder layers, the initialization (official code: layer6ai-labs/T-Fixup at b17e166, a fairseq
0.9 fork, run with ``--Tfixup --dont-use-layernorm``; every line below read there):

* base: Xavier. fc1/fc2 by the fork's ``Linear``: Xavier-uniform, bias 0 (fairseq/modules/transformer_layer.py:371-376,
  used at :70-71, :220-221). Attention as fairseq's: q/k/v Xavier-uniform with gain 1/√2, out_proj gain 1 and bias 0,
  q/k/v biases keep ``nn.Linear``'s U(±1/√fan_in) (fairseq/modules/multihead_attention.py:85-99) — fairseq main's
  today, so our ``--layer-init fairseq`` is the base, and this scheme draws fc1/fc2 Xavier-uniform with zero biases.
* encoder layer (transformer_layer.py:31-49): fc1, fc2 and self_attn.out_proj weights times 0.67·N^(-1/4) (:38-42);
  self_attn.v_proj times 0.67·N^(-1/4)·√2 (:43-44). The √2 undoes fairseq's 1/√2 gain of v_proj, so v starts from
  the plain Xavier the paper's rule assumes. q_proj, k_proj and every bias are not touched (only these names match).
* decoder layer (transformer_layer.py:157-175): fc1, fc2, self_attn.out_proj and the cross-attention's
  encoder_attn.out_proj times (9M)^(-1/4) (:163-168); self_attn.v_proj and encoder_attn.v_proj times (9M)^(-1/4)·√2
  (:169-170). The cross-attention's q/k read the decoder and the encoder output and are not scaled.
* embeddings: N(0, d^(-1/2)) with a zero padding row (fairseq/models/transformer.py:908-912, fairseq main's
  ``Embedding`` too), then the encoder's table times (9N)^(-1/4) (transformer.py:378-381) and the decoder's times
  (9M)^(-1/4) (:604-607) — unless ``--share-all-embeddings``: one table, scaled once, by the encoder's factor (:604
  skips the decoder). With ``--share-decoder-input-output-embed`` the output projection is that scaled table; without
  it fairseq's own N(0, d^(-1/2)) output matrix, unscaled (:665-669). ``embed_scale`` = √d is kept (:385, :611;
  ``--no-scale-embedding`` still works); the positional embeddings are not scaled.
* no LayerNorm: ``--dont-use-layernorm`` skips every norm of the layers (transformer_layer.py:72-75, :222-225; applied
  only ``if not self.noLN``, :108-136, :263-353) and of the stacks (final and embedding norms, transformer.py:412-419,
  :671-681). The fork still builds the decoder's ``encoder_attn_layer_norm`` (transformer_layer.py:218) but never
  applies it; here no norm module exists at all (``build_norm`` is the identity, and the options that would place
  a norm are refused).

The paper states the rule with one N for both stacks ("(9N)^(-1/4)" on the decoder's weights and on both embeddings);
the code counts the layers of each side: the decoder's weights and table with M, the encoder's table with N. We follow
the code (equal when N = M; README.md, "Deviations from the official code"). The constants are applied as the code
writes them, ``factor * (weight * √2)`` for v_proj, each a Python float times a tensor.

The recipe trains with no warm-up: ``--lr-scheduler inverse_sqrt_nowarmup`` (fairseq_admin/optim/lr_scheduler/).
"""
import torch
from torch import nn

from fairseq_admin.errors import OptionError

from .base import ResidualScheme

#: options that place a norm or make fairseq build one (NormFormer's --scale-attn/--scale-fc: its LayerNorms)
_NORM_OPTIONS = {"encoder_normalize_before": "--encoder-normalize-before",
                 "decoder_normalize_before": "--decoder-normalize-before",
                 "layernorm_embedding": "--layernorm-embedding", "scale_attn": "--scale-attn", "scale_fc": "--scale-fc"}
#: fairseq's 1/√2 gain of v_proj undone (transformer_layer.py:44, :170: ``param * (2**0.5)``)
V_PROJ_GAIN = 2 ** 0.5


def encoder_factor(num_encoder_layers: int) -> float:
    """0.67·N^(-1/4): the encoder's fc1/fc2/out_proj factor (transformer_layer.py:42)."""
    return 0.67 * num_encoder_layers ** (-1.0 / 4.0)


def decoder_factor(num_decoder_layers: int) -> float:
    """(9M)^(-1/4): the decoder's fc1/fc2/out_proj factor, self- and cross-attention alike
    (transformer_layer.py:168)."""
    return (9 * num_decoder_layers) ** (-1.0 / 4.0)


def embedding_factor(num_layers: int) -> float:
    """(9L)^(-1/4), L the layers of the embedding's own stack (transformer.py:380 with N, :606 with M)."""
    return (9 * num_layers) ** (-1 / 4)


def xavier_ffn_(layer: nn.Module) -> None:
    """fc1 and fc2 as the fork's ``Linear`` builds them: Xavier-uniform weights, zero biases
    (transformer_layer.py:371-376; fairseq main's are ``nn.Linear``'s U(±1/√fan_in))."""
    for fc in (layer.fc1, layer.fc2):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)


def layer_factor(stack: str, num_layers: int) -> float:
    """The factor of a layer's fc1, fc2 and out_proj weights; v_proj's is this times √2."""
    return encoder_factor(num_layers) if stack == "encoder" else decoder_factor(num_layers)


class TFixup(ResidualScheme):
    """x_{i+1} = x_i + f_i(x_i), no LayerNorm; T-Fixup's scaled Xavier initialization."""

    name = "t_fixup"
    paper = "Huang et al. 2020"
    formula = "x_{i+1} = x_i + f_i(x_i), no LayerNorm; fc/out_proj/v_proj scaled by 0.67 N^-1/4 (enc), (9M)^-1/4 (dec)"

    @classmethod
    def check_args(cls, args) -> None:
        """Every option that would place or build a norm is refused: the model has none (a silently ignored flag
        would train another model than the one asked for)."""
        for dest, option in _NORM_OPTIONS.items():
            if getattr(args, dest, False):
                raise OptionError(f"t_fixup has no LayerNorm (Huang et al. 2020, --dont-use-layernorm): "
                                  f"remove {option}")
        norm = getattr(args, "norm", None)
        if norm not in (None, "layernorm"):
            raise OptionError(f"t_fixup has no normalization to replace; remove --norm {norm}")

    @classmethod
    def build_norm(cls, cfg, dim: int, role: str, eps: float = 1e-5) -> nn.Module:
        """No normalization anywhere: the identity in every norm slot fairseq's layer calls (Post-LN calls each
        after its join; with no norm, Pre-LN and Post-LN are the same model)."""
        return nn.Identity()

    @classmethod
    def build_stack_final(cls, cfg, stack, dim, carry, fairseq_final):
        return None  # no final norm (transformer.py:412-415, :671-676 under --dont-use-layernorm)

    def init_layer(self, layer: nn.Module) -> None:
        """Xavier-uniform fc1/fc2 with zero biases, then T-Fixup's factors (see the module docstring)."""
        xavier_ffn_(layer)
        factor = layer_factor(self.stack, self.num_layers)
        attentions = [layer.self_attn] + ([layer.encoder_attn] if self.stack == "decoder" else [])
        with torch.no_grad():
            for attn in filter(None, attentions):  # the decoder has no cross-attention under --no-cross-attention
                attn.out_proj.weight.mul_(factor)
                attn.v_proj.weight.mul_(V_PROJ_GAIN).mul_(factor)  # factor * (param * 2**0.5), as :44 and :170
            for fc in (layer.fc1, layer.fc2):
                fc.weight.mul_(factor)

    @classmethod
    def init_model(cls, model: nn.Module) -> None:
        """The token embeddings times (9N)^(-1/4) (encoder) and (9M)^(-1/4) (decoder); a table shared by both stacks
        (--share-all-embeddings) is scaled once, by the encoder's factor. In place: a decoder output projection tied
        to its input table (--share-decoder-input-output-embed) is the same tensor."""
        encoder, decoder = model.encoder, model.decoder
        with torch.no_grad():
            encoder.embed_tokens.weight.mul_(embedding_factor(model.cfg.encoder.layers))
            if decoder.embed_tokens.weight is not encoder.embed_tokens.weight:
                decoder.embed_tokens.weight.mul_(embedding_factor(model.cfg.decoder.layers))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={layer_factor(self.stack, self.num_layers):.6g}"


__all__ = ["TFixup", "decoder_factor", "embedding_factor", "encoder_factor"]
