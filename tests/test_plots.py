"""Plots: one fixed colour per scheme in every figure, legends outside the axes, integer layer ticks, a caption line
with the setting, and a BLEU panel in the depth-grid figures. Figures are inspected instead of written."""
import os
import sys

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="the [plots] extra is not installed")
from matplotlib.figure import Figure  # noqa: E402

from fairseq_admin.cli.diagnose import main  # noqa: E402
from fairseq_admin.diagnostics import SCHEME_COLORS  # noqa: E402
from helpers import ROOT  # noqa: E402

DIMS = ["--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
        "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]


@pytest.fixture
def figures(monkeypatch):
    saved = {}
    def record(fig, target, **kw):
        # diagnose writes each PNG through output_safety.atomic_write: a file object on ".<name>.<random>.tmp"
        name = getattr(target, "name", target)
        if isinstance(name, int):  # a file object opened on a descriptor: its path, from the kernel
            name = os.readlink(f"/proc/self/fd/{name}")
        name = os.path.basename(name)
        if name.startswith(".") and name.endswith(".tmp"):
            name = name[1:].rsplit(".", 2)[0]
        saved[name] = fig

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def line_colors(fig):
    """{label: colour} of the labelled lines and error-bar plots of every axes."""
    colors = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
    colors.update({c.get_label(): c.lines[0].get_color() for ax in fig.axes for c in ax.containers
                   if hasattr(c, "has_yerr")})
    return {label: matplotlib.colors.to_hex(c) for label, c in colors.items() if not label.startswith("_")}


def assert_legend_outside(fig):
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)


def diagnose(figures, tmp_path, schemes):
    figures.clear()
    main(["--arch", "transformer", "--schemes", schemes, "--layers", "1,2", "--synthetic-batch", "--batch-size", "2",
          "--src-len", "5", "--tgt-len", "5", "--vocab-size", "30", "--draws", "1", *DIMS, "--threads", "1",
          "--plot-dir", str(tmp_path)])
    return dict(figures)


def test_diagnose_plots(figures, tmp_path):
    one = diagnose(figures, tmp_path, "admin,b2t")
    other = diagnose(figures, tmp_path, "b2t,preln,admin")
    assert set(one) == {"grad_norms.png", "beta.png", "last_ffn_grad.png", "output_change.png", "omega.png"}
    for name in ("grad_norms.png", "beta.png", "last_ffn_grad.png", "output_change.png"):
        for figs in (one, other):
            colors = line_colors(figs[name])
            assert colors["admin"] == matplotlib.colors.to_hex(SCHEME_COLORS["admin"]), name
            assert colors["b2t"] == matplotlib.colors.to_hex(SCHEME_COLORS["b2t"]), name
            assert_legend_outside(figs[name])
            assert "arch transformer" in figs[name]._supxlabel.get_text()  # the caption line
    for ax in one["grad_norms.png"].axes + one["beta.png"].axes + one["omega.png"].axes:
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_title()
    omega = [line for line in one["omega.png"].axes[0].get_lines()]
    assert {line.get_label() for line in omega} == {"admin 1 layers", "admin 2 layers"}
    assert len({line.get_linestyle() for line in omega}) == 2  # depths told apart by line style, not by shade


def test_depth_grid_plot_has_scheme_colours_and_a_bleu_panel(figures):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import depth_grid
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    curve = [{"update": 10, "loss": 9.0}, {"update": 20, "loss": 8.0}]
    rows = [dict(regime="standard", layers="6-6", scheme=s, seed=seed, diverged=False, valid_curve=curve,
                 train_curve=curve, bleu=b, regime_desc="lr 1e-3", max_update=20, max_tokens=100)
            for s, seed, b in (("preln", 1, 10.0), ("admin", 1, 12.5), ("admin", 2, 11.0))]
    depth_grid.plot(rows, "/nonexistent")
    fig = figures["standard_6-6.png"]
    valid, train, bleu = fig.axes
    colors = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in valid.get_lines()}
    assert colors["admin s1"] == colors["admin s2"] == matplotlib.colors.to_hex(SCHEME_COLORS["admin"])
    assert colors["preln s1"] == matplotlib.colors.to_hex(SCHEME_COLORS["preln"])
    assert sorted(round(p.get_width(), 2) for p in bleu.patches) == [10.0, 11.0, 12.5]
    assert_legend_outside(fig)
    assert "lr 1e-3" in fig._supxlabel.get_text()
