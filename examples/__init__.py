"""Runnable examples; ``python -m examples.blackboard`` is the main demo."""
