"""Built-in training entrypoints: real examples for the loop, and a probe for operating the trainer.

- :mod:`.breast_cancer` — logistic regression on scikit-learn's bundled breast-cancer data (no download).
- :mod:`.patient_risk` — a synthetic "patient risk" dataset generator with controllable drift, and its trainer.
- :mod:`.logistic` — the numpy logistic regression both use, its JSON artifact and the pickle-free ``predict``.
- :mod:`.probe` — sleeps, streams metrics, raises or allocates on request: checks a trainer's limits end to end.
"""
