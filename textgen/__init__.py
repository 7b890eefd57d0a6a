"""textgen: train a small transformer on your own text and watch it write.

The package follows the data flow of a decoder-only transformer, one folder per stage:

    text/      text --tokenizer--> token ids (corpus sources, token files)
    model/     ids --embedding, [attention -> MLP] x n_layer, unembedding--> logits
    decode/    logits --softmax(logits / T)--> distribution --sample--> next id --> loop
    training/  batches --loss, gradients, optimizer--> better weights, checkpoints
    ui/        records --Rich--> the screen;  cli/  the commands

Each stage imports only the ones listed above it, and the leaves (`errors`, `settings`,
`units`, `records`, `files`); `ui` never imports torch (checked by `make lint`).
Importing the package is cheap: torch is only imported by the modules that need it.
"""

__version__ = "0.1.0"
