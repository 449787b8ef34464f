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


def test_decoder_word_dropout_is_switched_off_after_the_decoder_runs():
    """The decoder's mask goes in through a hook on the (shared) embedding table, on only while the decoder runs: the
    encoder's embeddings of the next forward, and any other use of the table, are never masked."""
    model = _model("--decoder-word-dropout", "0.9").train()
    batch = random_batch(model.encoder.dictionary, bsz=8, src_len=12, tgt_len=6)
    table = model.encoder.embed_tokens
    assert model.decoder.embed_tokens is table
    for _ in range(3):  # each forward: the encoder's call first, then the decoder's
        enc_emb, dec_emb = _decoder_embeddings(model, batch)
        assert torch.equal(enc_emb, table.weight[batch["src_tokens"]])
        assert (dec_emb[:, 1:] == 0).all(-1).any()  # the decoder's tokens are dropped (p = 0.9)
    assert torch.equal(table(batch["src_tokens"]), table.weight[batch["src_tokens"]])  # the table alone, after it
    model.decoder(batch["prev_output_tokens"], encoder_out=model.encoder(batch["src_tokens"], batch["src_lengths"]))
    enc_after, _ = model.encoder.forward_embedding(batch["src_tokens"])
    assert torch.equal(enc_after, model.encoder.embed_scale * table.weight[batch["src_tokens"]] +
                       model.encoder.embed_positions(batch["src_tokens"]))


def test_off_by_default_and_bad_rates_refused():
    model = _model()
    assert model.encoder.word_dropout == 0 and model.decoder._word_dropout is None
    for bad in ("1.0", "-0.1"):
        with pytest.raises(ValueError, match="word-dropout must be in"):
            _model("--encoder-word-dropout", bad)
