"""Training: the recipe (what is chosen when the user does not say), the model's size,
batches, the Trainer and its Checkpointer, evaluation, optimizers and several processes.

`textgen.training.run.train` and `.resume` are the entry points."""
