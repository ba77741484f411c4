"""Measurements on the raw tables (THE MODEL's funnel KPIs)."""

from leadml.analytics.funnel import Bottleneck, FunnelReport, RecycleFlow, StageStats, funnel

__all__ = ["Bottleneck", "FunnelReport", "RecycleFlow", "StageStats", "funnel"]
