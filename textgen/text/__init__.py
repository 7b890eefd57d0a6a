"""Text and tokens: corpus sources, the tokenizer, the token file and its cache, and
BPE-dropout segmentations."""
