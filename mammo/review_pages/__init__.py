"""The review of a run, an evaluation or a CV job: a static site in its ``review/`` folder that
shows what the model saw, where it fails and for whom it works (``python -m mammo.review``)."""
