"""Readers' readings of a run's images: the queue a reader works through (the model's confident
errors mixed with correct controls), the ``readings/<reader>.csv`` files each reading is appended
to, the agreement between readers, labels and the model, and the adjudicated labels that
``data.readings`` trains on."""
