"""The notebook API pieces the DS review tripped over: spec variants are validated like
spec files, and the hand-off policy takes ScoringBundle.score's output as it comes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from leadml.errors import ConfigError
from leadml.modeling.policy import handoff, handoff_at_precision
from leadml.modeling.spec import PolicySpec, load_spec


def test_spec_variants_are_validated_and_merged_key_by_key(repo_root: Path) -> None:
    spec = load_spec(repo_root / "models" / "lead_readiness.yaml")
    wider = spec.with_changes(estimator={"params": {"num_leaves": 63}})
    assert wider.estimator.params["num_leaves"] == 63
    # the other params survive the nested change; the original is untouched
    assert {k: v for k, v in wider.estimator.params.items() if k != "num_leaves"} == {
        k: v for k, v in spec.estimator.params.items() if k != "num_leaves"
    }
    assert spec.estimator.params.get("num_leaves") != 63
    with pytest.raises(ConfigError, match=r"target\.horizon_days"):
        spec.with_changes(target={"horizon_days": -7})
    with pytest.raises(ConfigError, match="num_leavs"):
        spec.with_changes(estimator={"params": {"num_leavs": 63}})


def test_handoff_reads_the_bundles_probability_column_or_says_what_is_missing() -> None:
    scores = pd.DataFrame({"lead_id": ["a", "b", "c"], "probability": [0.2, 0.6, 0.4]})
    out = handoff(scores, 4, PolicySpec(slots_per_lead=2))
    assert out.set_index("lead_id")["decision"].to_dict() == {
        "a": "nurture",
        "b": "handoff",
        "c": "handoff",
    }
    assert handoff_at_precision(scores, 0.5, PolicySpec())["decision"].eq("handoff").sum() == 2
    with pytest.raises(ValueError, match=r"no 'readiness' or 'probability' column .*lead_id, p"):
        handoff(scores.rename(columns={"probability": "p"}), 4, PolicySpec())
