"""Reading a model from the inside: attention patterns and the logit lens (`readout.py`),
what each attention head does (`heads.py`), and the embedding's geometry (`embedding.py`)."""
