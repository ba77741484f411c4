"""Spine timestamps: ISO dates and date-times may be mixed; other text is refused clearly
(notebook review: '2025-03-03T12:00:00' beside '2025-04-01' was refused as 'use ISO dates')."""

from __future__ import annotations

import pandas as pd
import pytest

from leadml.errors import DataError
from leadml.features.offline import to_utc


def test_mixed_iso_dates_and_times_are_read() -> None:
    got = to_utc(pd.Series(["2025-03-03T12:00:00", "2025-04-01", "2025-04-02 08:30+02:00"]), "x")
    assert got.tolist() == [
        pd.Timestamp("2025-03-03 12:00", tz="UTC"),
        pd.Timestamp("2025-04-01", tz="UTC"),
        pd.Timestamp("2025-04-02 06:30", tz="UTC"),
    ]


def test_ambiguous_text_is_refused_with_the_column_named() -> None:
    with pytest.raises(DataError, match=r"spine\.as_of: not ISO timestamps .*03/04/2025"):
        to_utc(pd.Series(["03/04/2025"]), "spine.as_of")
