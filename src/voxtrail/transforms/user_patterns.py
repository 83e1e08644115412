"""Regular expressions from the configuration, run in linear time (RE2).

A ``[[mask.rules]]`` pattern runs on every text field of every event, and the text comes from
end users. Python's ``re`` backtracks: ``(a+)+$`` takes exponential time on a run of ``a``, and
most patterns with two quantifiers side by side take polynomial time on some text. Google's RE2
(the ``google-re2`` package) runs any pattern in time linear in the text it searches, so a
configured pattern cannot stall an import, a tail or a Recorder whatever the text. What RE2
cannot do in linear time it does not offer: lookaround, backreferences, atomic groups and
possessive quantifiers are refused when the configuration is read.

Replacements keep Python's ``re.sub`` template syntax (``\\1``, ``\\g<name>``, ``\\n``, ...),
expanded here: the binding's own expansion mangles non-ASCII text in a template.
"""

from __future__ import annotations

import re
from typing import Callable

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print each refused pattern on stderr, besides raising

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_SURROGATES = re.compile("([\ud800-\udfff])")
_OCTAL = "01234567"
_DIGITS = "0123456789"


class _TextMatch:
    """A match on the UTF-8 bytes, with the groups as text (what masks and templates read)."""

    __slots__ = ("_match",)

    def __init__(self, match):
        self._match = match

    def group(self, index: int | str = 0) -> str | None:
        value = self._match.group(index)
        return None if value is None else value.decode()


class PatternError(ValueError):
    """A pattern or replacement that cannot be used; the message says why."""


class LinearPattern:
    """A compiled pattern with the part of :class:`re.Pattern`'s interface masking uses."""

    def __init__(self, pattern: str):
        try:
            self._regex = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            raise PatternError(_why_refused(pattern, exc)) from None
        self.pattern = pattern
        self.groups: int = self._regex.groups
        self.groupindex: dict[str, int] = dict(self._regex.groupindex)

    def sub(self, repl: Callable[[object], str], text: str) -> str:
        """``text`` with each match replaced by ``repl(match)``, as ``re.sub`` does (an empty match
        next to the previous match counts); ``text`` itself if nothing matched.

        RE2 runs on the UTF-8 bytes: the binding maps every match's offsets back to characters
        otherwise, which costs more than the search. Matches end on character boundaries."""
        try:
            data = text.encode()
        except UnicodeEncodeError:  # lone surrogates: no match spans one, mask the text between them
            parts = _SURROGATES.split(text)
            return "".join(part if i % 2 else self.sub(repl, part) for i, part in enumerate(parts))
        m = self._regex.search(data)
        if m is None:
            return text
        pieces, copied, size = [], 0, len(data)
        while m is not None:
            start, end = m.span()
            pieces += (data[copied:start], repl(_TextMatch(m)).encode("utf-8", "surrogatepass"))
            copied = end
            if end == start:  # an empty match: the next search starts after one more character
                if end == size:
                    break
                end += 1
                while end < size and 0x80 <= data[end] < 0xC0:
                    end += 1
            m = self._regex.search(data, end)
        pieces.append(data[copied:])
        return b"".join(pieces).decode("utf-8", "surrogatepass")

    def template(self, replacement: str) -> Callable[[object], str]:
        """A function of a match expanding ``replacement`` as ``re.sub`` would; PatternError for an
        escape or group reference ``re.sub`` would refuse."""
        parts = self._parse_template(replacement)
        if all(isinstance(p, str) for p in parts):
            literal = "".join(parts)  # type: ignore[arg-type]
            return lambda m: literal
        return lambda m: "".join(p if isinstance(p, str) else (m.group(p) or "") for p in parts)

    def _parse_template(self, template: str) -> list[str | int]:
        """Literal text and group numbers, by the rules of Python's ``re`` templates."""
        parts: list[str | int] = []
        i, n = 0, len(template)
        while i < n:
            ch = template[i]
            if ch != "\\":
                j = template.find("\\", i)
                j = n if j < 0 else j
                parts.append(template[i:j])
                i = j
                continue
            if i + 1 == n:
                raise PatternError("bad escape (end of replacement)")
            c = template[i + 1]
            i += 2
            if c == "g":
                close = template.find(">", i)
                if i >= n or template[i] != "<" or close < 0:
                    raise PatternError("missing group name in \\g<...>")
                parts.append(self._group(template[i + 1:close]))
                i = close + 1
            elif c == "0":  # \0, \07, \077: octal
                digits = c
                while len(digits) < 3 and i < n and template[i] in _OCTAL:
                    digits += template[i]
                    i += 1
                parts.append(chr(int(digits, 8)))
            elif c in _DIGITS:  # \1 to \99 name groups; three octal digits (\101) are a character
                digits = c
                if i < n and template[i] in _DIGITS:
                    digits += template[i]
                    i += 1
                    if c in _OCTAL and digits[1] in _OCTAL and i < n and template[i] in _OCTAL:
                        value = int(digits + template[i], 8)
                        i += 1
                        if value > 0o377:
                            raise PatternError(f"octal escape value {value:#o} outside of range 0-0o377")
                        parts.append(chr(value))
                        continue
                parts.append(self._group(digits))
            elif c in _ESCAPES:
                parts.append(_ESCAPES[c])
            elif c.isascii() and c.isalpha():
                raise PatternError(f"bad escape \\{c}")
            else:
                parts.append("\\" + c)
        return parts

    def _group(self, ref: str) -> int:
        if ref.isdigit() and ref.isascii():
            number = int(ref)
            if number > self.groups:
                raise PatternError(f"invalid group reference {number}")
            return number
        if ref not in self.groupindex:
            raise PatternError(f"unknown group name {ref!r}")
        return self.groupindex[ref]


def _why_refused(pattern: str, exc: re2.error) -> str:
    reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    try:
        re.compile(pattern)
    except re.error as python_exc:
        return str(python_exc)  # not a regular expression at all: Python's words, as users write them
    return (f"{reason} (patterns run on RE2, which guarantees linear time and so has no lookaround, "
            f"backreferences, atomic groups or possessive quantifiers, and repeats at most 1000 times: "
            f"see docs/masking.md)")
