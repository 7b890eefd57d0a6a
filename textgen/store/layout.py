"""The model folder's files, by name (one folder per model; see `textgen.store.folder`).
Torch-free, so that anything may ask what a model folder holds."""

from __future__ import annotations

FORMAT_VERSION = 1
CONFIG = "config.json"  # architecture, tokenizer summary, training settings, format version
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TRAIN_STATE = "train_state.pt"  # for resuming
METRICS = "metrics.jsonl"  # one line per evaluation
SAMPLES = "samples.jsonl"  # one short sample per evaluation
MODEL_FILES = frozenset({CONFIG, WEIGHTS, TOKENIZER, TRAIN_STATE, METRICS, SAMPLES})
