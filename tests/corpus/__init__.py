"""Generated test corpora (bad evidence bundles)."""
