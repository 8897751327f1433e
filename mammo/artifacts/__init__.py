"""Everything a run writes into its directory: allocation, summary.json, run.log, history, metrics."""
