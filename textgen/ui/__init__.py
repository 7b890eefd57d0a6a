"""Everything the user sees, drawn with Rich, one module per screen; and every JSON object
textgen prints (`jsonout.py`). Draws plain records (`textgen.records`), never imports
torch."""
