"""Bring your own data: CRM / marketing-automation exports mapped to the canonical
tables (:mod:`.mapping`, presets in ``presets/``), a leakage guard for single
attribute tables (:mod:`.leakage`) and attribute-only lead tables (:mod:`.tabular`)."""
