"""Predictive models: specs, training, calibration, evaluation, explanations, hand-off policy.

- :mod:`~leadml.modeling.spec`: model specs (``models/*.yaml``), pydantic-validated.
- :mod:`~leadml.modeling.train`: rolling-origin backtest, LightGBM + logistic baseline,
  calibration on a later slice, the deal-close hazard, the final fit.
- :mod:`~leadml.modeling.calibrate`, :mod:`~leadml.modeling.evaluate`,
  :mod:`~leadml.modeling.plots`, :mod:`~leadml.modeling.explain`,
  :mod:`~leadml.modeling.policy`: calibration, metrics and model card, PNG plots,
  TreeSHAP reasons, the IS hand-off policy and grades.
- :mod:`~leadml.modeling.bundle` / :mod:`~leadml.modeling.pyfunc`: the scoring bundle and
  its MLflow pyfunc wrapper.
- :mod:`~leadml.modeling.workflow`: the retraining workflow as a Python API (docs/retraining.md).
- :mod:`~leadml.modeling.synthetic`: small synthetic training sets with known truth.

Nothing is imported at package import time.
"""
