"""Decoding: logits to a distribution to a token (`sampling.py`, pure functions), the loop
that feeds tokens back (`loop.py`), and text in, text out (`completion.py`)."""
