"""The model: the transformer in one file (`transformer.py`), its CPU kernels, reading
its attention out, the device it runs on, and its folder on disk."""
