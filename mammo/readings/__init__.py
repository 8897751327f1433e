"""Readers' readings of a run's images: the queue a reader works through (the model's confident
errors mixed with correct controls), the ``readings/<reader>.csv`` files each reading is appended
to, and the adjudicated labels that ``data.readings`` trains on. How far readers agree is
:mod:`mammo.evaluation.agreement`."""
