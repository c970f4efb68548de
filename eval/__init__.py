"""RadCheck offline evaluation: corpora, error injection, runners, metrics, plots."""
