"""Scheduler: retraining policies and jobs; turns data updates and retrain requests into training jobs."""
