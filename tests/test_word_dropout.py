"""Word dropout (--encoder-word-dropout / --decoder-word-dropout) against the official rule, takase/b2t_connection
fairseq/models/transformer.py:1083-1092: a Bernoulli(1 - p) keep mask per token on the token embedding, before the
sqrt(d) scaling and the positions, no rescaling, training only, the decoder keeping position 0."""
import pytest
import torch

from helpers import build_model, random_batch


def _model(*extra):
    torch.manual_seed(0)
    return build_model("b2t_transformer", "--dropout", "0", "--share-all-embeddings", *extra, layers=(2, 2))


def test_encoder_embedding_is_masked_before_scaling_and_positions():
    model = _model("--encoder-word-dropout", "0.5").train()
    enc = model.encoder
    src = random_batch(enc.dictionary, bsz=4, src_len=9)["src_tokens"]
    torch.manual_seed(7)
    got, _ = enc.forward_embedding(src)
    torch.manual_seed(7)
    raw = enc.embed_tokens(src)
    keep = raw.new_full(raw.shape[:2], 0.5).bernoulli()  # the official code's draw, in its order
    expected = enc.embed_scale * (raw * keep.unsqueeze(2)) + enc.embed_positions(src)
    assert torch.equal(got, expected)
    assert 0 < keep.sum() < keep.numel()  # some tokens dropped, some kept
    model.eval()
    plain, _ = enc.forward_embedding(src)
    assert torch.equal(plain, enc.embed_scale * raw + enc.embed_positions(src))  # never at evaluation


def _decoder_embeddings(model, batch):
    seen = []
    handle = model.decoder.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        model(**batch)
    finally:
        handle.remove()
    return seen


def test_decoder_masks_whole_tokens_and_keeps_position_0():
    p = 0.5
    model = _model("--decoder-word-dropout", str(p)).train()
    batch = random_batch(model.encoder.dictionary, bsz=8, src_len=7, tgt_len=12)
    seen = _decoder_embeddings(model, batch)
    enc_emb, dec_emb = seen  # shared table: the encoder's call (unmasked: its p is 0), then the decoder's
    raw = model.decoder.embed_tokens.weight[batch["prev_output_tokens"]]
    assert torch.equal(enc_emb, model.encoder.embed_tokens.weight[batch["src_tokens"]])
    kept = (dec_emb == raw).all(-1)
    dropped = (dec_emb == 0).all(-1)
    assert torch.all(kept | dropped)  # whole tokens, no rescaling
    assert torch.all(kept[:, 0])  # the begin-of-sentence position always stays
    frac = kept[:, 1:].float().mean().item()
    assert 0.2 < frac < 0.8
    model.eval()
    _, dec_eval = _decoder_embeddings(model, batch)
    assert torch.equal(dec_eval, raw)


def test_off_by_default_and_bad_rates_refused():
    model = _model()
    assert model.encoder.word_dropout == 0 and model.decoder._word_dropout is None
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ValueError, match="word-dropout must be in"):
            _model("--encoder-word-dropout", bad)
