"""benchmarks/choosing.py: docs/choosing.md's generated table from grid result files. Every seed's value is shown (two
seeds that disagree stay two values), a row without cells says "not run yet", the hand-written text outside the
marker lines is kept, and the export column is what the export tools decide for the row's configuration."""
import inspect
import json
import re
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import choosing
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

HAND_WRITTEN = ("# Which scheme\n\nAn answer written by hand, *kept*.\n\n"
                "<!-- choosing.py:begin status -->\nold status\n<!-- choosing.py:end status -->\n\n"
                "Text between the two regions.\n\n"
                "<!-- choosing.py:begin table -->\n| old | table |\n<!-- choosing.py:end table -->\n\nThe end.\n")


def cell(scheme, seed, loss, bleu, distinct=1000, layers="18-18", regime="standard", diverged_at=None, stalled=False):
    """A depth_grid result with the fields the page reads."""
    curve = [{"update": u, "loss": loss + (1000 - u) / 200, "nll_loss": loss - 1} for u in range(50, 1001, 50)]
    return {"cell": f"{regime}_{scheme}_{layers}_seed{seed}", "regime": regime, "scheme": scheme, "layers": layers,
            "seed": seed, "max_update": 1000, "final_valid_loss": loss, "best_valid_loss": loss, "bleu": bleu,
            "diverged": diverged_at is not None, "diverged_at_update": diverged_at, "stalled_near_unigram": stalled,
            "evaluation": {"bleu": bleu, "sentences": 1000, "distinct_hypotheses": distinct},
            "evaluated_checkpoint": "checkpoint_best.pt (update 1000)", "unigram_valid_bits": 9.0,
            "valid_curve": curve, "finished_utc": f"2026-12-0{seed}T10:00:00+00:00"}


@pytest.fixture
def grid(tmp_path):
    results, costs, docs = tmp_path / "grid-1000", tmp_path / "costs", tmp_path / "docs"
    for d in (results, costs, docs):
        d.mkdir()
    for result in (cell("deepnorm", 1, 5.291, 25.97, distinct=998), cell("deepnorm", 2, 6.462, 2.64, distinct=9),
                   cell("postln", 1, 15.026, 0.01, distinct=10, diverged_at=350, stalled=True),
                   cell("preln", 1, 7.0, 3.0, regime="aggressive")):  # another regime: left out
        (results / f"{result['cell']}.json").write_text(json.dumps(result))
    ratio = {"cpu_throughput_ratio_median": 0.9761, "cpu_throughput_ratio_min": 0.956,
             "cpu_throughput_ratio_max": 0.984}
    (costs / "cost-20261125T1400Z.json").write_text(json.dumps({"setup": {"scheme_args": ""}, "results": [
        {"layers": "18-18", "scheme": "deepnorm", "train": ratio, "generate": ratio}]}))
    return results, costs, docs / "choosing.md", docs / "choosing-18-18.png"


def run(grid):
    results, costs, doc, png = grid
    return choosing.main(["--results", str(results), "--cost-dir", str(costs), "--doc", str(doc), "--png", str(png)])


def rows_of(text):
    return {line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `")}


COLUMNS = ("family", "paper", "change", "deep_loss", "deep_bleu", "shallow", "failures", "cost", "export")


def test_two_seeds_that_disagree_are_two_values_and_a_row_without_cells_says_not_run_yet(grid):
    assert run(grid) == 0
    text = grid[2].read_text()
    rows = {name: dict(zip(COLUMNS, cells)) for name, cells in rows_of(text).items()}
    deepnorm = rows["deepnorm"]
    assert deepnorm["deep_loss"] == "5.29 / 6.46 ✗"  # each seed, never the mean (5.88)
    assert deepnorm["deep_bleu"] == "25.97 / 2.64 ✗"
    assert "18-18 seed 2: 9/1000 distinct outputs" in deepnorm["failures"]
    assert "the seeds disagree" in deepnorm["failures"]
    assert deepnorm["cost"] == "train 0.976 [0.956, 0.984]<br>generate 0.976 [0.956, 0.984]"
    postln = rows["postln"]
    assert postln["deep_loss"] == "15.03 ✗ (seed 1 only)"
    assert "diverged @350" in postln["failures"] and "stalled near the unigram level" in postln["failures"]
    assert postln["cost"] == "not measured"
    for name in ("rezero", "resi_dual", "admin-ologn", "peri_ln-output"):  # registered schemes and grid variants
        for column in ("deep_loss", "deep_bleu", "shallow", "failures"):
            assert rows[name][column] == "not run yet", (name, column, rows[name])
    # the aggressive cell is not a row's value; preln has no standard cell
    assert rows["preln"]["deep_loss"] == "not run yet"
    assert f"**Partial: 3 of {3 * len(rows)} cells.**" in text and "1 cell of other regimes or budgets left out" in text
    assert grid[3].read_bytes().startswith(b"\x89PNG")


def test_the_text_outside_the_markers_is_kept(grid):
    doc = grid[2]
    doc.write_text(HAND_WRITTEN)
    assert run(grid) == 0
    text = doc.read_text()
    assert "old status" not in text and "| old | table |" not in text
    outside = choosing.REGION.sub(lambda m: m.group(1) + m.group(4), text)
    assert outside == choosing.REGION.sub(lambda m: m.group(1) + m.group(4), HAND_WRITTEN)
    assert run(grid) == 0 and doc.read_text() == text  # re-running changes nothing


DOUBLED = "<!-- choosing.py:begin status -->\n<!-- choosing.py:end status -->\n"


@pytest.mark.parametrize("broken", [HAND_WRITTEN.replace("<!-- choosing.py:end table -->\n", ""),
                                    HAND_WRITTEN + DOUBLED])
def test_a_page_without_its_marker_pair_is_refused_in_one_line_before_anything_is_written(grid, broken, capsys):
    doc, png = grid[2], grid[3]
    doc.write_text(broken)
    assert run(grid) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("choosing.py: error:") and "\n" not in err and "choosing.py:begin" in err, err
    assert doc.read_text() == broken and not png.exists()


def test_the_export_column_is_the_export_tools_decision(grid, monkeypatch):
    from fairseq_admin.cli import export
    with pytest.raises(export.ExportError) as refused:
        export.scheme_of({"residual_scheme": "b2t"})
    assert export.scheme_of({"residual_scheme": "postln"}) == "postln"
    assert run(grid) == 0
    text = grid[2].read_text()
    rows = {name: dict(zip(COLUMNS, cells)) for name, cells in rows_of(text).items()}
    assert rows["postln"]["export"].startswith("stock fairseq")
    assert rows["b2t"]["export"] == "none" and f"- `b2t`: {refused.value}" in text
    assert rows["peri_ln"]["export"].startswith("CTranslate2")  # ct2_peri_ln converts it
    assert rows["peri_ln-output"]["export"] == "none"  # ... but not without its input norms
    assert "--peri-ln-output-only has no input norms" in text

    real = export.scheme_of  # the column follows the code: a b2t that export accepted would read "stock fairseq"
    monkeypatch.setattr(export, "scheme_of", lambda cfg: cfg["residual_scheme"] if cfg["residual_scheme"] == "b2t"
                        else real(cfg))
    assert run(grid) == 0
    assert rows_of(grid[2].read_text())["b2t"][COLUMNS.index("export")].startswith("stock fairseq")


def test_every_scheme_and_variant_is_a_row_in_its_family():
    from fairseq_admin.schemes import SCHEMES
    names = [row.name for row in choosing.all_rows()]
    assert set(SCHEMES) | set(choosing.depth_grid.VARIANTS) <= set(names)
    assert len(names) == len(set(names))
    families = {row.name: row.family.name for row in choosing.all_rows()}
    assert families["admin-ologn"] == families["deepnorm"] == families["postln"] == "Post-LN"
    assert families["lns"] == families["preln"] == "Pre-LN" and families["rezero"] == "norm-free"
    assert families["preln-rmsnorm"] == "Pre-LN" and families["postln-dyt"] == "Post-LN"  # depth_grid's --norm rows


def test_the_official_repositories_are_the_ones_the_scheme_modules_cite():
    from fairseq_admin.modules import norms
    from fairseq_admin.schemes import SCHEMES
    for row in choosing.all_rows():
        code, _ = choosing.ABOUT.get(row.name) or choosing.ABOUT[row.scheme]
        for repo in re.findall(r"(?<![\w/-])([A-Za-z0-9][\w.-]*/[\w.-]+)", code):  # owner/name, not an option
            doc = inspect.getmodule(SCHEMES[row.scheme]).__doc__
            assert repo.split("/")[1] in doc, (row.name, repo)
    for _, repo, _ in choosing.NORMS.values():
        assert repo in norms.__doc__, repo
