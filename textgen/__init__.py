"""textgen: train a small transformer on your own text and watch it write.

The package follows the data flow of a decoder-only transformer, one module per arrow:

    text --tokenizer--> ids --model--> logits --sampling--> next id --generate--> loop

Importing the package is cheap: torch is only imported by the modules that need it.
"""

__version__ = "0.1.0"
