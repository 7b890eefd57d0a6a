"""The network: the transformer in one file (`transformer.py`), its CPU kernels, the KV
caches decoding keeps, the device it runs on, and a loaded model's record (`loaded.py`)."""
