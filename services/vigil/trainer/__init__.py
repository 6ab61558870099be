"""Trainer: runs training code in isolated workers and records runs, metrics, artifacts and reference profiles."""
