"""Where the command writes, with the API key masked out of everything it prints.

Results go to stdout (the summary, or the one ``--json`` document); progress,
notes and errors go to stderr, one line each. The library already keeps the
key out of its messages; masking here as well is a second line of defence for
what the library cannot see, such as a key pasted into an input URL.

Every line printed for people also goes through `escape_controls`: a gateway's
error text or a line of a batch file is data, and a control character in it
(``ESC]0;...`` retitles a terminal, ``ESC[2J`` clears it) must print as an
escape such as ``\\x1b``, never act. The ``--json`` document is written as
it is: JSON escapes control characters itself.
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

    def for_people(self, text: str) -> str:
        """`text` as it may be shown to people: secrets masked, control characters escaped."""
        return escape_controls(self.redact(text))

    def result(self, text: str) -> None:
        """Print a line of the result on stdout, for people (control characters escaped)."""
        print(self.for_people(text), file=self.stdout, flush=True)

    def document(self, text: str) -> None:
        """Print a document for programs on stdout (JSON: it escapes control characters)."""
        print(self.redact(text), file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        """Print a line of information on stderr (above the progress bar, if any)."""
        line = self.for_people(text)
        if self.stderr_sink is not None:
            self.stderr_sink(line)
        else:
            print(line, file=self.stderr, flush=True)

    def error(self, text: str) -> None:
        """Print an error on stderr as one ``real-esrgan: error: ...`` line (shortened)."""
        self.note(f"{PROG}: error: {shorten(one_line(text))}")


def one_line(text: str) -> str:
    """`text` folded onto one line (gateway messages sometimes span several)."""
    return " ".join(text.split())


#: Characters of an error message shown on a human line; ``--json`` keeps them all.
MAX_MESSAGE = 300


def shorten(text: str, limit: int = MAX_MESSAGE, *, in_json: bool = False) -> str:
    """`text` cut to `limit` characters, saying how many were left out.

    A gateway may answer with a page of HTML or a stack trace; a line of stderr
    should stay a line.

    Args:
        text: The message.
        limit: How many characters to keep.
        in_json: Say that ``--json`` has the whole message (it does for inputs and states).
    """
    if len(text) <= limit:
        return text
    where = "; --json has them all" if in_json else ""
    return f"{text[:limit]}... ({len(text) - limit} more characters{where})"


def escape_controls(text: str) -> str:
    """`text` with every non-printable character written as a Python escape (``\\x1b``).

    Control characters, format characters such as the bidirectional overrides,
    and line or paragraph separators are escaped; printable text in any script
    is kept as it is.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
