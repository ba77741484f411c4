"""The nightly batch: scores, the IS call list, the forecast snapshot, alerts and drift.

- :mod:`~leadml.batch.nightly`: the run (``leadml batch --as-of D``);
- :mod:`~leadml.batch.outputs`: Parquet partitions and SQL tables, replaced atomically per date;
- :mod:`~leadml.batch.calllist`: the capacity-aware IS call list (pure);
- :mod:`~leadml.batch.drift`: population stability index against the training reference (pure);
- :mod:`~leadml.batch.manifest`: what a run read, used, wrote and how long it took.
"""
