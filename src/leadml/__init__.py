"""leadml: lead scoring, deal close probability and revenue forecasting."""

__version__ = "0.1.0"
