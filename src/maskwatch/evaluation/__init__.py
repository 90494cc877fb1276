"""Evaluation: a training run's test split (``run_report``), face sets (``faces``) and annotated scenes (``scenes``).

Entry points: ``maskwatch evaluate`` (``evaluation.cli``) and
``maskwatch.evaluation.run_report.write_evaluation`` at the end of training.
Nothing here imports PyTorch.
"""
