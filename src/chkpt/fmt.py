"""Text for people: human sizes, durations, times, paths, aligned and HTML tables, sparklines,
natural order of names, colour and progress.

Text saved by a run (paths, argv, exception messages, labels, names) is shown through
`printable`, so it can neither restyle the terminal nor break a table row.

Colour and progress are for terminals only: both switch themselves off when the stream is
not a TTY, and colour also when `NO_COLOR` is set (https://no-color.org) or `TERM=dumb`.
Imported by the checkpoint writer for `human_size`, so it imports nothing at module level
beyond what Python has already loaded.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, TextIO

STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
          "magenta": "35", "cyan": "36"}

# Control characters (C0, DEL, C1), the Unicode line and paragraph separators, and the
# bidirectional embeddings, overrides and isolates, which reorder what a terminal shows.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7f, 0xa0)]}
_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})
_ESCAPES.update({code: f"\\u{code:04x}" for code in [0x2028, 0x2029, *range(0x202a, 0x202f),
                                                      *range(0x2066, 0x206a)]})


def printable(text: str) -> str:
    """`text` with each control character shown as an escape: ESC as `\\x1b`, a newline as `\\n`.

    Printable characters of every script are kept; backslashes are not doubled.
    """
    return text.translate(_ESCAPES)


def human_size(size: float) -> str:
    """1536 → "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """75 → "1m15s"."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def relative_time(when: float, now: float | None = None) -> str:
    """A past time as "just now", "3 min ago", "5 h ago", "yesterday 14:02" or a date."""
    now = time.time() if now is None else now
    delta = now - when
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 6 * 3600:
        return f"{int(delta // 3600)} h ago"
    then, today = time.localtime(when), time.localtime(now)
    if then[:3] == today[:3]:
        return time.strftime("today %H:%M", then)
    if then[:3] == time.localtime(now - 86400)[:3]:
        return time.strftime("yesterday %H:%M", then)
    return time.strftime("%Y-%m-%d %H:%M", then)


def closest_matches(word: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The candidates closest to a mistyped `word`, best first (for "did you mean" hints)."""
    import difflib

    return difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=n, cutoff=cutoff)


def date_time(when: float) -> str:
    """A Unix time as local "2025-06-03 14:45:01"."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def short_path(path: str, width: int = 32) -> str:
    """A directory for a narrow column: the home directory as "~", long paths cut to their
    last components ("…/work/proj-b")."""
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (path == home or path.startswith(home + os.sep)):
        path = "~" + path[len(home):]
    if len(path) <= width:
        return path
    tail = path.split(os.sep)[-1]
    for part in reversed(path.split(os.sep)[1:-1]):
        if len(part) + len(tail) + 3 > width:
            break
        tail = part + os.sep + tail
    return "…" + os.sep + tail


def natural_key(name: str) -> tuple[Any, ...]:
    """A sort key that puts "out[2]" before "out[10]": digit runs compare as numbers."""
    key: list[Any] = []
    digits = ""
    text = ""
    for char in name:
        if char.isdigit():
            if text:
                key.append((1, text))
                text = ""
            digits += char
        else:
            if digits:
                key.append((0, int(digits)))
                digits = ""
            text += char
    if digits:
        key.append((0, int(digits)))
    if text:
        key.append((1, text))
    return tuple(key)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """Numbers as a line of block characters, lowest ▁ to highest █ (the last `width` values)."""
    values = values[-width:]
    low, high = min(values), max(values)
    span = high - low
    return "".join(SPARKS[int((v - low) / span * (len(SPARKS) - 1))] if span else SPARKS[0]
                   for v in values)


def html_table(headers: list[str], rows: list[list[str]], caption: str = "") -> str:
    """An HTML table for notebooks (`_repr_html_`); every cell and the caption are escaped."""
    import html

    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(cell)}</td>"
                                    for cell in row) + "</tr>" for row in rows)
    title = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plural(count: int, word: str) -> str:
    """(1, "run") → "1 run"; (3, "run") → "3 runs"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def shorten(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def colour_enabled(stream: Any) -> bool:
    """Whether to colour text written to `stream`: a terminal, and NO_COLOR not set."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class Painter:
    """Wraps text in ANSI styles when enabled, and returns it unchanged otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @classmethod
    def for_stream(cls, stream: Any) -> Painter:
        """A painter that colours text written to `stream` when `colour_enabled(stream)`."""
        return cls(colour_enabled(stream))

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(STYLES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


def visible_len(text: str) -> int:
    """Length of `text` as shown on a terminal (ANSI style sequences take no room)."""
    length = 0
    inside = False
    for char in text:
        if inside:
            inside = char != "m"
        elif char == "\x1b":
            inside = True
        else:
            length += 1
    return length


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None,
          paint: Painter | None = None) -> str:
    """Aligned columns; the indexes in `right` are right-aligned (numbers, sizes).

    Cells may already be painted: widths count visible characters only. Run text in a
    cell must have gone through `printable`, so that no cell holds a newline.
    """
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], visible_len(cell))
    lines = []
    for number, row in enumerate([headers, *rows]):
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - visible_len(cell))
            cells.append(pad + cell if i in right else cell + pad)
        line = "  ".join(cells).rstrip()
        lines.append(paint(line, "bold") if number == 0 and paint else line)
    return "\n".join(lines)


class Progress:
    """One line on stderr that shows long work advancing ("exporting df (2/5, 1.2 of 3.4 GiB) 4s").

    Drawn only on a terminal and only once the work has lasted `delay` seconds, by a
    background thread so that one long step still shows time passing; erased at the end.
    Use as a context manager, calling `step(name, size)` before each item and `echo` for
    lines that should appear above it.
    """

    def __init__(self, verb: str, items: int, total_bytes: int, stream: TextIO | None = None,
                 delay: float = 0.5) -> None:
        self.verb = verb
        self.items = items
        self.total_bytes = total_bytes
        self.stream = sys.stderr if stream is None else stream
        self.delay = delay
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.count = 0
        self.done_bytes = 0
        self.current = ""
        self._current_size = 0
        self._drawn = False
        self._started = time.monotonic()
        self._stop: Any = None
        self._thread: Any = None
        self._lock: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            import threading

            self._lock = threading.Lock()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, name="chkpt-progress", daemon=True)
            self._thread.start()
        return self

    def step(self, name: str, size: int) -> None:
        """Start the next item (the previous one is done)."""
        self.done_bytes += self._current_size
        self.count += 1
        self.current = name
        self._current_size = size

    def echo(self, text: str) -> None:
        """Print `text` on stdout, above the progress line."""
        if self._lock is None:
            print(text, flush=True)
            return
        with self._lock:
            self._erase()
            print(text, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self._started
        done = human_size(self.done_bytes)
        return (f"{self.verb} {shorten(printable(self.current), 40)} ({self.count}/{self.items}, "
                f"{done} of {human_size(self.total_bytes)}) {elapsed:.0f}s")

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            if time.monotonic() - self._started >= self.delay:
                with self._lock:
                    self.stream.write("\r\x1b[K" + self.line())
                    self.stream.flush()
                    self._drawn = True

    def _erase(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._erase()
