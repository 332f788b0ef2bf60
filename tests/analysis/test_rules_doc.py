"""docs/DIAGNOSE.md's rules and thresholds tables are the ones the code generates."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from actprobe.analysis.rules import RULES
from actprobe.analysis.rules_doc import legend, rules_markdown, thresholds_markdown, update_doc
from actprobe.analysis.thresholds import Thresholds

DOC = Path(__file__).resolve().parents[2] / "docs" / "DIAGNOSE.md"


def test_the_documented_tables_are_the_generated_ones():
    text = DOC.read_text()
    assert rules_markdown() in text
    assert thresholds_markdown() in text


def test_every_threshold_is_used_by_a_rule_and_named_in_its_text():
    rule_names = {rule.name for rule in RULES}
    texts = " ".join(rule.fires_when for rule in RULES)
    for f in fields(Thresholds):
        assert set(f.metadata["rules"].split(", ")) <= rule_names, f.name
        assert "{" + f.name + "}" in texts, f.name


def test_the_legend_gives_the_thresholds_values():
    lines = legend(["saturation", "dead-units"], Thresholds(saturation=0.6))
    assert lines[0].startswith("saturation (warning, info): at an activation") and "near-zero fraction > 0.6 at" in lines[0]
    assert lines[1].startswith("dead-units (warning, error): ") and "exceeds 0.2; an error above 0.5" in lines[1]
    assert len(legend([], Thresholds())) == 0


def test_update_doc_makes_the_tables_anew_and_leaves_the_rest():
    stale = DOC.read_text().replace("| `dead` | 0.2 |", "| `dead` | 0.1 |")
    assert stale != DOC.read_text()
    assert update_doc(stale) == DOC.read_text()


def test_thresholds_that_make_no_sense_are_refused():
    import pytest

    from actprobe.errors import OptionError

    for bad in ("min_layers=1", "min_layers=0", "drift_window=0", "drift_window=0.9", "drift_from=1"):
        with pytest.raises(OptionError, match=bad.split("=")[0]):
            Thresholds.parse([bad])
