"""Where the command writes, with the API key masked out of everything it prints.

Results go to stdout (the summary, or the one ``--json`` document); progress,
notes and errors go to stderr, one line each. The library already keeps the
key out of its messages; masking here as well is a second line of defence for
what the library cannot see, such as a key pasted into an input URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TextIO

PROG = "real-esrgan"
MASK = "***"
# Masking a very short "key" would mangle ordinary words in the output; such a
# key is no secret anyway.
_MIN_SECRET_LENGTH = 4


class Output:
    """The command's two streams, with secrets masked.

    Args:
        stdout: Where results go.
        stderr: Where notes and errors go.
        secrets: Strings never to print (the API key, wherever it came from).
    """

    def __init__(self, stdout: TextIO, stderr: TextIO, secrets: Iterable[str] = ()) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._secrets: list[str] = []
        # A live progress bar owns the terminal's last lines: while it runs,
        # stderr lines go through it so that they print above the bar.
        self.stderr_sink: Callable[[str], None] | None = None
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, secret: str | None) -> None:
        """Mask `secret` in everything printed from now on."""
        if secret and len(secret) >= _MIN_SECRET_LENGTH and secret not in self._secrets:
            self._secrets.append(secret)
            # Longest first, so that a key containing another is masked whole.
            self._secrets.sort(key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def result(self, text: str) -> None:
        """Print a line of the result on stdout."""
        print(self.redact(text), file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        """Print a line of information on stderr (above the progress bar, if any)."""
        line = self.redact(text)
        if self.stderr_sink is not None:
            self.stderr_sink(line)
        else:
            print(line, file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        """Print an error on stderr as one ``real-esrgan: error: ...`` line."""
        self.note(f"{PROG}: error: {one_line(text)}")


def one_line(text: str) -> str:
    """`text` folded onto one line (gateway messages sometimes span several)."""
    return " ".join(text.split())
