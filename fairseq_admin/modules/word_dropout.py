"""Word dropout on token embeddings (the official B2T 18L recipe's ``--sampling-method worddrop``).

In training, every token embedding e_t (before the sqrt(d) scaling and the positions) is kept or zeroed:

    e_t <- m_t · e_t,   m_t ~ Bernoulli(1 - p),   no 1/(1 - p) rescaling,

one mask value per token (batch, time), shared by all embedding dimensions; the decoder always keeps position 0 (its
begin-of-sentence token). Evaluation and generation are untouched. This is ``replace_input_tokens`` of the official
code, takase/b2t_connection fairseq/models/transformer.py:1083-1092, called from the encoder's ``forward_embedding``
(:471-477) and the decoder (:885-891) with ``--enc-replace-rate`` / ``--dec-replace-rate``. Here it is a model option
of every scheme: ``--encoder-word-dropout P`` / ``--decoder-word-dropout P``.
"""
from torch import Tensor


def word_dropout(embedding: Tensor, p: float, keep_first: bool) -> Tensor:
    """``embedding`` (batch, time, dim) with whole tokens dropped with probability ``p`` (see the module docstring)."""
    keep = embedding.new_full(embedding.shape[:2], 1 - p).bernoulli()
    if keep_first:
        keep[:, 0] = 1
    return embedding * keep.unsqueeze(2)


class DecoderWordDropout:
    """A forward hook on the decoder's ``embed_tokens`` that applies :func:`word_dropout` while ``active``.

    fairseq's decoder embeds its tokens inline (no ``forward_embedding`` seam), so the mask goes in through the
    embedding module's output. The decoder sets ``active`` around its own forward only, so an embedding table shared
    with the encoder (``--share-all-embeddings``) is not masked twice.
    """

    def __init__(self, p: float):
        self.p = p
        self.active = False

    def __call__(self, module, inputs, output: Tensor) -> Tensor:
        return word_dropout(output, self.p, keep_first=True) if self.active else output
