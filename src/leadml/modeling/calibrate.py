"""Probability calibration: raw model probabilities -> calibrated probabilities.

A :class:`Calibrator` follows scikit-learn conventions (``fit`` returns self,
fitted state ends in ``_``) and can be turned into plain data (``to_dict`` /
``from_dict``) so that the scoring bundle stores it as JSON, not a pickle.
It is always fitted on a slice of data *later* than the rows the booster was
trained on (see :mod:`leadml.modeling.train`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _no_certainty(levels: np.ndarray, fitted: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """Isotonic levels without an exact 0 or 1: a block of n rows without a single
    positive reads (0 + 1/2) / (n + 1) (Jeffreys), one of only positives 1 minus that.
    A score of exactly 0 says "this lead can never convert", which no calibration
    slice can know (DS review: 6.8% of the demo's leads scored exactly 0.0); the
    levels stay monotone."""
    w = np.ones(len(fitted)) if weight is None else np.asarray(weight, dtype=float)
    out = levels.copy()
    inner = out[(out > 0) & (out < 1)]
    low_cap = float(inner.min()) if len(inner) else 0.5
    high_cap = float(inner.max()) if len(inner) else 0.5
    n0, n1 = float(w[fitted <= 0].sum()), float(w[fitted >= 1].sum())
    out[out <= 0] = min(0.5 / (n0 + 1), low_cap)
    out[out >= 1] = max(1 - 0.5 / (n1 + 1), high_cap)
    return out


class Calibrator:
    """Isotonic (monotone, piecewise linear) or sigmoid (Platt on the logit) calibration."""

    def __init__(self, method: Literal["isotonic", "sigmoid"] = "isotonic") -> None:
        self.method = method

    def fit(
        self, p_raw: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> Calibrator:
        p_raw = np.asarray(p_raw, dtype=float)
        y = np.asarray(y, dtype=float)
        if len(p_raw) != len(y) or len(y) == 0:
            raise ValueError("calibration needs equal-length, non-empty scores and labels")
        if self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
            iso.fit(p_raw, y, sample_weight=sample_weight)
            self.x_ = np.asarray(iso.X_thresholds_, dtype=float)
            self.y_ = _no_certainty(
                np.asarray(iso.y_thresholds_, dtype=float), iso.predict(p_raw), sample_weight
            )
        elif self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(_logit(p_raw).reshape(-1, 1), y.astype(int), sample_weight=sample_weight)
            self.a_ = float(lr.coef_[0, 0])
            self.b_ = float(lr.intercept_[0])
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return self

    def predict(self, p_raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as ``p_raw``."""
        p_raw = np.asarray(p_raw, dtype=float)
        if self.method == "isotonic":
            if len(self.x_) == 1:
                return np.full_like(p_raw, self.y_[0])
            return np.interp(p_raw, self.x_, self.y_)
        z = self.a_ * _logit(p_raw) + self.b_
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        if self.method == "isotonic":
            return {"method": "isotonic", "x": self.x_.tolist(), "y": self.y_.tolist()}
        return {"method": "sigmoid", "a": self.a_, "b": self.b_}

    @classmethod
    def identity(cls) -> Calibrator:
        """The identity on [0, 1] (an isotonic map through (0, 0) and (1, 1), so it is
        stored and loaded like any other)."""
        return cls.from_dict({"method": "isotonic", "x": [0.0, 1.0], "y": [0.0, 1.0]})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        cal = cls(data["method"])
        if cal.method == "isotonic":
            cal.x_ = np.asarray(data["x"], dtype=float)
            cal.y_ = np.asarray(data["y"], dtype=float)
        else:
            cal.a_ = float(data["a"])
            cal.b_ = float(data["b"])
        return cal
