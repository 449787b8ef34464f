"""A Peri-LN checkpoint to a CTranslate2 model, through CTranslate2's ``pre_post_layer_norm`` layers.

    python -m fairseq_admin.cli.ct2_peri_ln --checkpoint checkpoint_best.pt --data DATA_BIN --out ct2_model

CTranslate2's fairseq converter only knows fairseq's own Transformer; Peri-LN (fairseq_admin/schemes/peri_ln.py)
needs a norm on every sublayer's output too. CTranslate2 (≥ 4.6.3, the layer specs added for T5Gemma,
python/ctranslate2/specs/transformer_spec.py) has that layout for encoder-decoder models: with
``pre_post_layer_norm=True`` an encoder layer holds ``input_layer_norm`` / ``post_attention_layer_norm`` around its
self-attention and ``pre_feedforward_layer_norm`` / ``post_feedforward_layer_norm`` around its FFN; a decoder layer
the same, plus, with ``external_pre_post_encoder_layers=True``, ``external_pre_encoder_attention_layer_norm`` /
``external_post_encoder_attention_layer_norm`` around its cross-attention. Mapped from ours:

    input_layer_norm                           <- self_attn_layer_norm        (LN_in of the self-attention)
    post_attention_layer_norm                  <- residual.output_norms[0]    (its LN_out)
    external_pre_encoder_attention_layer_norm  <- encoder_attn_layer_norm     (decoder: LN_in of cross-attention)
    external_post_encoder_attention_layer_norm <- residual.output_norms[1]    (its LN_out)
    pre_feedforward_layer_norm                 <- final_layer_norm            (LN_in of the FFN)
    post_feedforward_layer_norm                <- residual.output_norms[-1]   (its LN_out)

and everything else (embeddings and their √d scale, positions, the embedding norm, the final norms, attention and
FFN weights, vocabularies, decoder start token) as CTranslate2's own fairseq converter sets it, with its functions.
``--peri-ln-output-only`` (no input norm) has no such spec and is refused. tests/test_field_schemes.py compares
``score_batch`` with fairseq's log-probabilities.

``--norm rmsnorm`` (fairseq_admin/modules/norms.py): CTranslate2's ``rms_norm=True`` layers compute
x / sqrt(mean(x²) + eps) · γ (src/cpu/kernels.cc ``rms_norm``), our RMSNorm exactly, so a peri_ln model with it
converts the same way, and so does a ``preln`` one, which has no stock fairseq equivalent to go through
(fairseq-admin-export refuses it): its layers map onto CTranslate2's plain pre-norm layers as ct2-fairseq-converter
maps fairseq's. The model's eps is written as the config's ``layer_norm_epsilon`` (CTranslate2's default for a
norm without β would be 1e-6). ``--norm dyt`` is refused: CTranslate2 has no tanh normalization layer.
tests/test_norms.py compares ``score_batch`` with fairseq's log-probabilities.
"""
import argparse
import sys
from typing import List, Optional, Sequence


class CT2ExportError(RuntimeError):
    """A user-facing error, printed in one line."""


def _converter_class():
    from ctranslate2.converters.converter import Converter

    class PeriLNConverter(Converter):
        def __init__(self, checkpoint: str, data: str):
            self.checkpoint, self.data = checkpoint, data

        def _load(self):
            return build_spec(self.checkpoint, self.data)

    return PeriLNConverter


def _option(model_cfg, name: str):
    return model_cfg.get(name) if isinstance(model_cfg, dict) else getattr(model_cfg, name, None)


def refusal(model_cfg, checkpoint: str = "the model") -> Optional[str]:
    """Why a model of this config (a dict or namespace) cannot be converted, in one line, or None: everything
    :func:`_load_model` refuses before it builds the model (benchmarks/choosing.py reads it for each scheme)."""
    scheme = _option(model_cfg, "residual_scheme") if model_cfg is not None else None
    norm = (_option(model_cfg, "norm") if model_cfg is not None else None) or "layernorm"
    if norm not in ("layernorm", "rmsnorm"):
        return f"a --norm {norm} model cannot be converted: CTranslate2 has no tanh normalization layer"
    if scheme != "peri_ln" and not (scheme == "preln" and norm == "rmsnorm"):
        return (f"{checkpoint} is a {scheme or 'fairseq'} model with --norm {norm}; this converter is for peri_ln, "
                f"and preln with --norm rmsnorm (for the others: fairseq-admin-export, then ct2-fairseq-converter)")
    if _option(model_cfg, "peri_ln_output_only"):
        return ("--peri-ln-output-only has no input norms, which CTranslate2's pre_post_layer_norm layers require; it "
                "cannot be converted")
    for option, value in (("activation_fn", "relu"),
                          ("encoder_attention_heads", _option(model_cfg, "decoder_attention_heads"))):
        if _option(model_cfg, option) not in (None, value):
            return f"--{option.replace('_', '-')} {_option(model_cfg, option)} is not supported"
    return None


def _load_model(checkpoint: str, data: str):
    """(model, task, model config) of a peri_ln checkpoint; anything else is refused before the model is built."""
    import fairseq_admin  # noqa: F401  (the model, and the safe loader's allow-list)
    from fairseq import checkpoint_utils

    from fairseq_admin import checkpoint_safety

    model_cfg = checkpoint_safety.checkpoint_model_cfg(checkpoint_safety.load_checkpoint(checkpoint))
    reason = refusal(model_cfg, checkpoint)
    if reason:
        raise CT2ExportError(reason)
    try:
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint],
                                                                          arg_overrides={"data": data})
    except Exception as exc:  # fairseq's task set-up: dictionaries missing or not this model's
        raise CT2ExportError(f"cannot load {checkpoint} with --data {data}: {' '.join(str(exc).split())}") from None
    model = models[0].eval()
    if getattr(cfg.model, "no_token_positional_embeddings", False) or model.decoder.project_in_dim is not None:
        raise CT2ExportError("models without positions or with project-in/out dimensions are not supported")
    if model.decoder.layer_norm is None:  # CTranslate2's pre-norm decoder always ends with its layer_norm
        raise CT2ExportError("--no-decoder-final-norm is not supported")
    return model, task, cfg.model


def build_spec(checkpoint: str, data: str):
    """The CTranslate2 model spec of a Peri-LN checkpoint, or an RMSNorm Pre-LN one (see the module docstring)."""
    import torch
    from ctranslate2.converters import fairseq as ct2_fairseq
    from ctranslate2.specs import transformer_spec

    model, task, args = _load_model(checkpoint, data)
    with_cross = model.decoder.layers[0].encoder_attn is not None
    layernorm_embedding = bool(getattr(args, "layernorm_embedding", False))
    peri = args.residual_scheme == "peri_ln"  # else preln (with --norm rmsnorm): plain pre-norm layers
    rms_norm = (getattr(args, "norm", None) or "layernorm") == "rmsnorm"
    encoder = transformer_spec.TransformerEncoderSpec(
        args.encoder_layers, args.encoder_attention_heads, pre_norm=True, layernorm_embedding=layernorm_embedding,
        pre_post_layer_norm=peri, rms_norm=rms_norm)
    decoder = transformer_spec.TransformerDecoderSpec(
        args.decoder_layers, args.decoder_attention_heads, pre_norm=True, layernorm_embedding=layernorm_embedding,
        with_encoder_attention=with_cross, pre_post_layer_norm=peri,
        external_pre_post_encoder_layers=with_cross and peri, rms_norm=rms_norm)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    spec.config.layer_norm_epsilon = model.encoder.layer_norm.eps  # every norm of these two layouts has fairseq's

    def set_norm(norm_spec, module):
        if rms_norm:  # γ only (CTranslate2's LayerNormSpec(rms_norm=True) has no beta)
            norm_spec.gamma = module.weight.numpy()
        else:
            ct2_fairseq.set_layer_norm(norm_spec, module)

    with torch.no_grad():
        for stack_spec, stack in ((spec.encoder, model.encoder), (spec.decoder, model.decoder)):
            ct2_fairseq.set_input_layers(stack_spec, stack)
            set_norm(stack_spec.layer_norm, stack.layer_norm)
            if layernorm_embedding:
                set_norm(stack_spec.layernorm_embedding, stack.layernorm_embedding)
            for layer_spec, layer in zip(stack_spec.layer, stack.layers):
                ct2_fairseq.set_multi_head_attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
                if not peri:  # ct2-fairseq-converter's set_transformer_*_layer, with set_norm
                    set_norm(layer_spec.self_attention.layer_norm, layer.self_attn_layer_norm)
                    if stack is model.decoder and with_cross:
                        ct2_fairseq.set_multi_head_attention(layer_spec.attention, layer.encoder_attn)
                        set_norm(layer_spec.attention.layer_norm, layer.encoder_attn_layer_norm)
                    set_norm(layer_spec.ffn.layer_norm, layer.final_layer_norm)
                    ct2_fairseq.set_linear(layer_spec.ffn.linear_0, layer.fc1)
                    ct2_fairseq.set_linear(layer_spec.ffn.linear_1, layer.fc2)
                    continue
                out_norms = layer.residual.output_norms
                set_norm(layer_spec.input_layer_norm, layer.self_attn_layer_norm)
                set_norm(layer_spec.post_attention_layer_norm, out_norms[0])
                if stack is model.decoder and with_cross:
                    ct2_fairseq.set_multi_head_attention(layer_spec.attention, layer.encoder_attn)
                    set_norm(layer_spec.external_pre_encoder_attention_layer_norm, layer.encoder_attn_layer_norm)
                    set_norm(layer_spec.external_post_encoder_attention_layer_norm, out_norms[1])
                ct2_fairseq.set_linear(layer_spec.ffn.linear_0, layer.fc1)
                ct2_fairseq.set_linear(layer_spec.ffn.linear_1, layer.fc2)
                set_norm(layer_spec.pre_feedforward_layer_norm, layer.final_layer_norm)
                set_norm(layer_spec.post_feedforward_layer_norm, out_norms[-1])
        ct2_fairseq.set_linear(spec.decoder.projection, model.decoder.output_projection)
    spec.register_source_vocabulary(ct2_fairseq._get_vocab(task.source_dictionary))
    spec.register_target_vocabulary(ct2_fairseq._get_vocab(task.target_dictionary))
    spec.config.decoder_start_token = spec.config.eos_token  # as ct2-fairseq-converter: fairseq starts with </s>
    spec.config.add_source_eos = True
    return spec


def convert(checkpoint: str, data: str, out: str, force: bool = False) -> str:
    return _converter_class()(checkpoint, data).convert(out, force=force)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fairseq_admin.cli.ct2_peri_ln",
                                     description="Convert a peri_ln checkpoint (--norm layernorm or rmsnorm), or a "
                                                 "preln one with --norm rmsnorm, to a CTranslate2 model "
                                                 "(pre_post_layer_norm layers; CTranslate2 >= 4.6.3).")
    parser.add_argument("--checkpoint", required=True, metavar="IN.pt")
    parser.add_argument("--data", required=True, metavar="DATA_BIN", help="data-bin with the model's dict.*.txt")
    parser.add_argument("--out", required=True, metavar="DIR", help="the CTranslate2 model directory to write")
    parser.add_argument("--force", action="store_true", help="overwrite DIR if it exists")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    import os

    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        raise CT2ExportError(f"--checkpoint {args.checkpoint}: no such file")
    if not os.path.isdir(args.data):
        raise CT2ExportError(f"--data {args.data}: no such directory")
    if os.path.exists(args.out) and not args.force:
        raise CT2ExportError(f"--out {args.out} exists; give --force to overwrite it")
    from fairseq_admin import output_safety

    try:  # --force deletes --out whole before writing (CTranslate2's Converter.convert)
        output_safety.check_replaced_directory(args.out, [args.checkpoint, args.data], "--out")
    except output_safety.OutputPathError as exc:
        raise CT2ExportError(str(exc)) from None
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        raise CT2ExportError("ctranslate2 is not installed: pip install -e '.[deploy]'") from None
    written = convert(args.checkpoint, args.data, args.out, args.force)
    return [f"{args.checkpoint} -> CTranslate2: {written}"]


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        for line in main(argv):
            print(line)
    except CT2ExportError as exc:
        print(f"{get_parser().prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
