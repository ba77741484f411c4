"""Revenue forecast with uncertainty, its backtest, and deal-hygiene alerts.

- :mod:`.distribution`: exact distribution of won + open (Poisson-binomial) + new deals.
- :mod:`.deals`: point-in-time deal book, periods, the empirical close-rate baseline.
- :mod:`.newdeals`: the run-rate model of deals not yet created.
- :mod:`.modelsource`: the deal-close model as probability source, point in time at any as-of.
- :mod:`.forecast`: :func:`forecast` (a period as of a moment, in total and per group).
- :mod:`.backtest`: :func:`backtest` on past quarters or months (or periods ahead) with
  baselines and the oracle.
- :mod:`.alerts`: :func:`alerts` (deal hygiene).
- :mod:`.plots`: fan chart and waterfall (PNG).

Nothing is imported eagerly; import the submodule you need.
"""
