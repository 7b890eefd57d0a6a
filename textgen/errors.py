"""The one exception family that library code raises.

Library code never prints and never exits: it raises a `TextgenError` whose message tells
the user what was wrong and what to do. The CLI prints it on one line and exits non-zero.
"""


class TextgenError(Exception):
    """A problem the user can act on (bad file, bad model folder, bad setting). Exit code 1."""

    exit_code = 1
    quiet = False  # already reported (by process 0, under torchrun): exit without a word


class SettingError(TextgenError):
    """An option or setting value out of its range. Exit code 2, like a usage error.

    `setting` names the setting it is about (a field of `textgen.settings`' dataclasses,
    e.g. "top_k") and the message calls it "{name}", so that each front end says it in its
    own words: the command line as its option (`--top-k`), the HTTP API as its JSON field
    (`top_k`). Plain `str()` uses the field's own name."""

    exit_code = 2

    def __init__(self, message: str, setting: str | None = None) -> None:
        self.template, self.setting = message, setting
        super().__init__(self.phrased())

    def phrased(self, name: str | None = None) -> str:
        """The message, with the setting called `name` (default: its field name)."""
        return self.template.replace("{name}", name or self.setting or "")


class Interrupted(TextgenError):
    """The user stopped the command: Ctrl-C, or a termination signal. The exit code is the
    shell's for that signal (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, signal_number: int = 2, message: str = "interrupted") -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number


# The name textgen is published under: `textgen` on PyPI is another project.
DISTRIBUTION = "textgen-cli"


def install_hint(extra: str) -> str:
    """How to install an optional part: "pip install 'textgen-cli[serve]'"."""
    return f"pip install '{DISTRIBUTION}[{extra}]' (in a clone: pip install -e '.[{extra}]')"
