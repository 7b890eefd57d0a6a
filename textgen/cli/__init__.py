"""The command line (Typer): `app.py` holds the app and the exit codes, `options.py` what
the commands share, and one module per group of commands. Each command turns its options
into one library call and hands the result to `textgen.ui`."""
