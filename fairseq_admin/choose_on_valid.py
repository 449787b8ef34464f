"""Choosing the evaluation on the validation set: which checkpoints and which length penalty (``--choose-on-valid``).

A grid fixed in advance (checkpoint choices x length penalties, e.g. ``checkpoint_best.pt`` and the average of the
last 3 checkpoints x lenpen 0.6 / 1.0 / 1.5) is scored by sacreBLEU on the validation set; the best cell is taken,
and only then is the test set translated, once, with it. The test set takes no part in the choice.

One translation per checkpoint choice serves every length penalty. fairseq's beam search extends and finishes
hypotheses by their unnormalized log-probability; the length penalty alpha enters only when a finished hypothesis
is scored::

    score(y) = sum_t log p(y_t | y_<t, x) / |y| ** alpha        (|y|: the tokens and the EOS)

(``fairseq/sequence_generator.py``, ``finalize_hypos``: ``eos_scores /= (step + 1) ** self.len_penalty``, line 676 of
ve-fairseq 0.12.3; the search itself, ``search.py`` ``BeamSearch.step`` line 128, adds the raw ``lprobs`` to the
cumulative scores; a sentence is done when ``beam`` hypotheses have finished, whatever their scores). So the
``beam`` finished hypotheses of a sentence are the same at every alpha, and ``fairseq-generate --nbest BEAM`` at one
alpha holds everything a run at another alpha chooses among: re-ranking them by ``sum log p / |y| ** alpha`` gives
that run's translation, up to exact float ties (tests/test_evaluate.py checks it against separate runs). This does
not hold for ``--unnormalized`` (no division at all), sampling or diverse beam search, which the evaluation refuses.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

DEFAULT_LENPENS = (0.6, 1.0, 1.5)
# exact ties in validation sacreBLEU (as printed, 2 decimals) go to the earlier cell in grid order: checkpoint choices
# as given (checkpoint_best.pt first by default), then length penalties as given (ascending by default)
TIE_ORDER = "the earlier cell in grid order (checkpoint choices as listed, then length penalties as listed)"

_HYPO_RE = re.compile(r"^H-(\d+)\t([^\t]*)\t?(.*)$")
_POS_RE = re.compile(r"^P-(\d+)\t(.*)$")


class Hypothesis(NamedTuple):
    """One finished beam hypothesis: its pieces, ``sum log2 p`` over its tokens and EOS, and that length."""

    pieces: str
    log_prob: float
    length: int


@dataclass
class Cell:
    """One grid cell scored on the validation set."""

    checkpoints: str  # "best" (checkpoint_best.pt) or "avgN" (the last N averaged)
    lenpen: float
    sacrebleu: float
    length_ratio: float  # hypothesis length / reference length, in sacreBLEU's 13a tokens
    sacrebleu_text: str = ""

    def as_dict(self) -> Dict:
        return asdict(self)


def checkpoints_label(num: int) -> str:
    """``best`` for 1 (checkpoint_best.pt), ``avgN`` for the average of the last N."""
    return "best" if num <= 1 else f"avg{num}"


def parse_int_list(text: str, what: str) -> List[int]:
    """``"1,3"`` -> ``[1, 3]``: whole numbers >= 1, no repeats (ValueError naming ``what`` otherwise)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated whole numbers, e.g. 1,3; got {text!r}") from None
    if any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct whole numbers >= 1 (1: checkpoint_best.pt), got {text!r}")
    return values


def parse_float_list(text: str, what: str) -> List[float]:
    """``"0.6,1.0,1.5"`` -> ``[0.6, 1.0, 1.5]``: finite numbers, no repeats (ValueError naming ``what`` otherwise)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, e.g. 0.6,1.0,1.5; got {text!r}") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values) or len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct finite numbers, got {text!r}")
    return values


def parse_nbest(lines: Iterable[str], generated_lenpen: float) -> List[List[Hypothesis]]:
    """The n-best lists of a ``fairseq-generate --nbest K`` output, by sentence id (ids must be 0..n-1).

    fairseq prints each hypothesis as ``H-<id>\\t<score>\\t<pieces>`` then ``P-<id>\\t<one log2 p per token and EOS>``,
    where score = sum log2 p / |y| ** generated_lenpen; so sum log2 p = score * |y| ** generated_lenpen (the printed
    score keeps float32's precision, the rounded P values are only counted)."""
    nbest: Dict[int, List[Hypothesis]] = {}
    pending = None  # (id, score, pieces) of an H line waiting for its P line
    for line in lines:
        line = line.rstrip("\n")
        m = _HYPO_RE.match(line)
        if m:
            pending = (int(m.group(1)), float(m.group(2)), m.group(3))
            continue
        m = _POS_RE.match(line)
        if m and pending is not None and int(m.group(1)) == pending[0]:
            idx, score, pieces = pending
            length = len(m.group(2).split())
            nbest.setdefault(idx, []).append(Hypothesis(pieces, score * length ** generated_lenpen, length))
            pending = None
    if sorted(nbest) != list(range(len(nbest))):
        missing = sorted(set(range(max(nbest, default=-1) + 1)) - set(nbest))
        raise ValueError(f"fairseq-generate output has n-best lists for {len(nbest)} sentences but their ids are not "
                         f"0..{len(nbest) - 1} (missing: {missing[:10]})")
    return [nbest[i] for i in range(len(nbest))]


def rerank(nbest: Sequence[Sequence[Hypothesis]], lenpen: float) -> List[str]:
    """Each sentence's translation under length penalty ``lenpen``: the hypothesis with the highest
    ``log_prob / length ** lenpen`` (on an exact tie the one fairseq printed first)."""
    chosen = []
    for hyps in nbest:
        best = max(range(len(hyps)), key=lambda i: (hyps[i].log_prob / hyps[i].length ** lenpen, -i))
        chosen.append(hyps[best].pieces)
    return chosen


def choose(cells: Sequence[Cell]) -> Cell:
    """The cell with the highest validation sacreBLEU as printed (2 decimals); ties: :data:`TIE_ORDER`."""
    if not cells:
        raise ValueError("the grid has no cell")
    best = 0
    for i, cell in enumerate(cells):
        if round(cell.sacrebleu, 2) > round(cells[best].sacrebleu, 2):
            best = i
    return cells[best]


def format_grid(cells: Sequence[Cell], chosen: Optional[Cell], subset: str = "valid") -> List[str]:
    """The grid as printed lines: one row per cell with its validation sacreBLEU and length ratio, the choice marked."""
    lines = [f"{'checkpoints':<12} {'lenpen':>6}  {subset + ' sacreBLEU':>16}  {'length ratio':>12}"]
    for cell in cells:
        mark = "  <- chosen" if cell == chosen else ""
        lines.append(f"{cell.checkpoints:<12} {str(cell.lenpen):>6}  {cell.sacrebleu:>16.2f}  "
                     f"{cell.length_ratio:>12.3f}{mark}")
    return lines
