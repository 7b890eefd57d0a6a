"""The model folder on disk: saving, loading and validating it (`folder.py`), writing it
safely, one writer at a time (`writer.py`), and its metrics file (`metrics.py`)."""
