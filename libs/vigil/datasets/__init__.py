"""Example datasets for the trainer's examples, the demo and the tests: no service code, so any of them may use it.

- :mod:`vigil.datasets.tabular` — the numeric CSV format of a dataset version (write, read back, ``data.updated``
  fields).
- :mod:`vigil.datasets.patient_risk` — seeded synthetic "patient risk" data with covariate and concept drift.
"""
