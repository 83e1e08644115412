"""PII masking: phone numbers, ID numbers, bank cards, e-mail addresses and IPv4 addresses in
the text fields of events, replaced by a recognisable masked form before anything is persisted.

Every source applies it (it is in :func:`voxtrail.transforms.default_chain`), and the Recorder
applies it in ``record()`` itself so that its local spool never holds the raw text.

The masked forms keep enough to recognise a value (``138****5678``) and are a function of the
value alone, so the same number is masked the same way in every event. Masking is idempotent:
a masked form never matches a rule again, because the number rules treat ``*`` next to a match
like a digit (a masked fragment is never mistaken for the end of a new number) and ``*`` cannot
end the local part of an e-mail address.

Rules run in order, each on the text the previous one left (see :data:`BUILTIN_ORDER`). The
checksum-verified rules come first: a resident ID number (18 characters) may also pass the Luhn
check of a bank card, and must be masked as an ID; and a grouped card number may contain groups
that look like a mobile number written ``138 1234 5678``, which must not be masked as a phone
(leaving the rest of the card in clear). Unverified patterns (mobile, e-mail, IPv4) follow.

The text is untrusted, so every pattern runs in time linear in its length. The built-in ones use
Python's ``re`` (they need lookbehind, which RE2 lacks) and are written for it: each match is
bounded in length or made of one run that no neighbouring quantifier can also match, and a
lookbehind keeps a rule from restarting inside a run (tests/test_linear_time.py times them on
hostile texts). Configured rules run on RE2 (:mod:`.user_patterns`), linear for any pattern.

``docs/masking.md`` lists what is and is not masked, and the settings.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import dataclass
from datetime import date
from typing import Callable, Iterable

import polars as pl

from voxtrail.config import ConfigError, Settings
from voxtrail.event import FIELDS_BY_NAME, EventBatch
from voxtrail.transforms.user_patterns import LinearPattern, PatternError

log = logging.getLogger("voxtrail.mask")

DEFAULT_FIELDS = ("text_input", "pinyin_input", "emotion_desc", "error_message")

#: Fields that identify or route an event: masking them would break the store, never allowed.
_STRUCTURAL = {"request_id", "status", "source", "source_format", "row_hash", "ref_audio_sha256",
               "output_audio_sha256", "emotion_control", "mode", "level"}
MASKABLE_FIELDS = tuple(f.name for f in FIELDS_BY_NAME.values()
                        if f.kind in ("text", "string") and f.name not in _STRUCTURAL)

#: Every value a built-in rule masks contains '@' or a run of 7+ digits, dots, spaces or dashes
#: starting and ending with a digit (the shortest is an IPv4 address, ``1.1.1.1``): the batch
#: transform's prefilter, in polars (Rust regex syntax, the same meaning in Python's).
CANDIDATE = r"@|[0-9][0-9 .\-]{5,}[0-9]"


def _may_contain_pii(text: str) -> bool:
    """The record() path's prefilter: a text with no ASCII digit and no '@' has nothing the
    built-in rules mask. Eleven ``in`` tests (memchr-fast) beat a regex character class by 2-3x
    on Chinese text (and str.count by 5x)."""
    return ("@" in text or "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
            or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text)


#: ID numbers, cards and mobile numbers all contain 11+ digits, spaces or dashes, starting and
#: ending with a digit: one search decides whether those three rules run (a date or a model
#: name such as "indextts2" has digits but no such run).
_digit_run = re.compile(r"[0-9][0-9 \-]{9,}[0-9]").search


_OFF_VALUES = {"off", "0", "false", "no"}
_ON_VALUES = {"on", "1", "true", "yes"}


# -- the built-in rules ----------------------------------------------------------------------

def _stars(text: str, keep_start: int, keep_end: int) -> str:
    """``text`` with every digit between the first ``keep_start`` and the last ``keep_end``
    digits replaced by '*'; separators stay where they are (the masked card keeps its layout)."""
    positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    hidden = set(positions[keep_start:len(positions) - keep_end])
    return "".join("*" if i in hidden else ch for i, ch in enumerate(text))


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def id_number_valid(value: str) -> bool:
    """GB 11643 resident ID: ISO 7064 MOD 11-2 check character and a real, past birth date."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    if _ID_CHECK[sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS)) % 11] != value[17].upper():
        return False
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Patterns start with a character class and check the character before it with a lookbehind
# placed after it: Python's re then scans for the first character quickly instead of trying
# the lookbehind at every position (5x faster on Chinese text).
_ID = re.compile(r"[1-9](?<![0-9*].)[0-9]{5}(?:19|20)[0-9]{2}[01][0-9][0-3][0-9][0-9]{3}[0-9Xx](?![0-9*])")


def _mask_id(m: re.Match) -> str:
    value = m.group()
    return value[:3] + "*" * 11 + value[-4:] if id_number_valid(value) else value


# Cards start with 2-6 (Mastercard 2/5, Amex and JCB 3, Visa 4, Discover and UnionPay 6): numbers
# starting 0, 1, 7-9 are order numbers or millisecond timestamps far more often than cards.
# Contiguous 13-19 digits, or groups of 3-6 separated by one space or dash (4-4-4-4, 4-4-4-4-3,
# Amex 4-6-5).
_CARD = re.compile(r"[2-6](?<![0-9*].)(?:[0-9]{3}(?:[ \-][0-9]{3,6}){2,4}|[0-9]{12,18})(?![0-9*])")


def _mask_card(m: re.Match) -> str:
    value = m.group()
    if value.isdigit():
        return _stars(value, 6, 4) if luhn_valid(value) else value
    # Grouped: the pattern takes as many groups as it can, so "4111 1111 1111 1111 123" (a card
    # and its CVV) arrives whole; try the longest run of leading groups that is a valid card.
    parts = re.split(r"([ \-])", value)
    for end in range(len(parts), 4, -2):
        candidate = "".join(parts[:end])
        digits = "".join(parts[:end:2])
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return _stars(candidate, 6, 4) + "".join(parts[end:])
    return value


# 1[3-9]x, then 4 and 4 digits, each group optionally preceded by a space or a dash; before it
# no digit, unless that is a country code (86, +86, 0086), which stays as written. The masked
# form drops the separators, so "138 1234 5678" and "13812345678" are both "138****5678".
_MOBILE = re.compile(r"(1[3-9][0-9])"
                     r"(?:(?<![0-9*]...)|(?<=86...)(?<![0-9*]86...)|(?<=0086...)(?<![0-9*]0086...))"
                     r"[ \-]?[0-9]{4}[ \-]?([0-9]{4})(?![0-9*])")


def _mask_mobile(m: re.Match) -> str:
    return f"{m.group(1)}****{m.group(2)}"


_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])([A-Za-z0-9_%+\-])[A-Za-z0-9._%+\-]*@"
                    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,})")


def _mask_email(m: re.Match) -> str:
    return f"{m.group(1)}***@{m.group(2)}"


# Not preceded by a letter, digit or dot (``v1.2.3.4``, ``build1.2.3.4``, ``1.2.3.4.5``) nor
# followed by a digit or a dot and a digit; octets above 255 are left alone by _mask_ipv4.
_IPV4 = re.compile(r"[0-9](?<![0-9A-Za-z.*].)[0-9]{0,2}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9*]|\.[0-9*])")


def _mask_ipv4(m: re.Match) -> str:
    value = m.group()
    octets = value.split(".")
    if any(int(o) > 255 for o in octets):
        return value
    return f"{octets[0]}.{octets[1]}.*.*"


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern | LinearPattern  # built-ins: re (reviewed to be linear); configured: RE2
    mask: Callable[[re.Match], str]  # the masked form of a match
    builtin: bool = True
    needs: str = ""  # a substring every match contains: texts without it skip the rule
    needs_digit_run: bool = False  # every match is a _digit_run: texts without one skip the rule


BUILTIN_RULES: dict[str, Rule] = {
    rule.name: rule for rule in (
        Rule("id_number", _ID, _mask_id, needs_digit_run=True),
        Rule("bank_card", _CARD, _mask_card, needs_digit_run=True),
        Rule("mobile", _MOBILE, _mask_mobile, needs_digit_run=True),
        Rule("email", _EMAIL, _mask_email, needs="@"),
        Rule("ipv4", _IPV4, _mask_ipv4, needs="."),
    )
}
#: The order rules run in (the module docstring says why).
BUILTIN_ORDER = tuple(BUILTIN_RULES)


def _keep_mask(keep_start: int, keep_end: int) -> Callable[[re.Match], str]:
    def mask(m: re.Match) -> str:
        value = m.group()
        start = min(keep_start, len(value))
        end = len(value) - min(keep_end, len(value) - start)
        return value[:start] + "*" * (end - start) + value[end:]
    return mask


# -- the policy ------------------------------------------------------------------------------

_warned_off = False


def _warn_off(why: str) -> None:
    global _warned_off
    if not _warned_off:
        _warned_off = True
        log.warning("voxtrail: PII masking is off (%s): phone numbers, ID numbers, cards, e-mail and IP "
                    "addresses in text fields are stored as received", why)


@dataclass(frozen=True)
class Masker:
    """Which rules mask which fields. Call it on a batch (a transform) or use :meth:`mask_text`."""

    rules: tuple[Rule, ...] = tuple(BUILTIN_RULES.values())
    fields: tuple[str, ...] = DEFAULT_FIELDS
    enabled: bool = True

    @classmethod
    def off(cls, why: str = "turned off") -> "Masker":
        _warn_off(why)
        return cls(rules=(), enabled=False)

    @classmethod
    def from_settings(cls, settings: Settings | None, *, warn: bool = True) -> "Masker":
        """TOML ``[mask]`` (enabled, fields, disable, [[mask.rules]]) and env ``VOXTRAIL_MASK``
        (which wins over the file). The whole table is checked even when masking is off; ``warn``:
        log the once-per-process warning when it is off."""
        section = settings.section("mask") if settings is not None else {}
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"[mask] enabled must be true or false, not {enabled!r}")
        env = os.environ.get("VOXTRAIL_MASK", "").strip().lower()
        if env and env not in _OFF_VALUES | _ON_VALUES:
            raise ConfigError(f"VOXTRAIL_MASK={env!r}: use 'on' or 'off'")
        fields = _names(section, "fields", DEFAULT_FIELDS, MASKABLE_FIELDS, "field")
        disabled = set(_names(section, "disable", (), BUILTIN_ORDER, "rule"))
        rules = [BUILTIN_RULES[name] for name in BUILTIN_ORDER if name not in disabled]
        extra = section.get("rules", [])
        if not isinstance(extra, list):
            raise ConfigError("[mask] rules must be an array of tables ([[mask.rules]])")
        rules += [_custom_rule(i, spec) for i, spec in enumerate(extra)]
        off = "VOXTRAIL_MASK=off" if env in _OFF_VALUES else None if env or enabled else "[mask] enabled = false"
        if off is None:
            return cls(rules=tuple(rules), fields=fields)
        if warn:
            _warn_off(off)
        return cls(rules=(), fields=fields, enabled=False)

    def __post_init__(self) -> None:
        # Plain tuples read in mask_text, the Recorder's hot path (frozen: set once here).
        builtin = tuple((r.needs_digit_run, r.needs, functools.partial(r.pattern.sub, r.mask))
                        for r in self.rules if r.builtin)
        custom = tuple(functools.partial(r.pattern.sub, r.mask) for r in self.rules if not r.builtin)
        object.__setattr__(self, "_builtin", builtin)
        object.__setattr__(self, "_custom", custom)

    def mask_text(self, text: str) -> str:
        """``text`` with every match of every rule masked; the same object when nothing matched."""
        if self._builtin and _may_contain_pii(text):
            digit_run = None
            for needs_digit_run, needs, sub in self._builtin:
                if needs_digit_run:
                    if digit_run is None:
                        digit_run = _digit_run(text) is not None
                    if not digit_run:
                        continue
                elif needs not in text:
                    continue
                text = sub(text)
        for sub in self._custom:
            text = sub(text)
        return text

    def mask_event(self, event: dict) -> None:
        """Mask the configured fields of an event dict in place (the Recorder's record())."""
        for name in self.fields:
            value = event.get(name)
            if value.__class__ is str:
                event[name] = self.mask_text(value)

    def __call__(self, batch: EventBatch) -> EventBatch:
        if not self.rules or batch.frame.height == 0 and not batch.constants:
            return batch
        frame = batch.frame
        updates = [masked for name in self.fields
                   if name in frame.columns and frame.schema[name] == pl.String
                   and (masked := self._mask_column(frame[name])) is not None]
        constants = batch.constants
        changed = {name: self.mask_text(constants[name]) for name in self.fields
                   if isinstance(constants.get(name), str)}
        if not updates and all(changed[n] is constants[n] for n in changed):
            return batch
        return EventBatch(frame.with_columns(updates) if updates else frame, batch.rejects,
                          {**constants, **changed})

    def _mask_column(self, column: pl.Series) -> pl.Series | None:
        """The column masked, or None when no value changed. Only candidate rows (polars finds
        them in Rust) go through Python."""
        if self._custom:
            candidates = column.is_not_null()
        else:
            candidates = column.str.contains(CANDIDATE).fill_null(False)
        rows = candidates.arg_true()
        if rows.len() == 0:
            return None
        before = column.gather(rows).to_list()
        after = [self.mask_text(v) for v in before]
        if after == before:
            return None
        return column.scatter(rows, after)


def _names(section: dict, key: str, default: tuple[str, ...], allowed: Iterable[str], what: str) -> tuple[str, ...]:
    value = section.get(key, default)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[mask] {key} must be a list of {what} names")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ConfigError(f"[mask] {key}: unknown {what} {', '.join(map(repr, unknown))}; "
                          f"allowed: {', '.join(allowed)}")
    return tuple(dict.fromkeys(value))


def _custom_rule(index: int, spec) -> Rule:
    if not isinstance(spec, dict):
        raise ConfigError(f"[[mask.rules]] number {index + 1} must be a table")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"[[mask.rules]] number {index + 1} needs a name")
    if name in BUILTIN_RULES:
        raise ConfigError(f"[[mask.rules]] {name!r} is a built-in rule's name: pick another name "
                          f"(and list {name!r} in [mask] disable to replace the built-in)")
    pattern = spec.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"[[mask.rules]] {name!r} needs a pattern (a regular expression)")
    try:
        compiled = LinearPattern(pattern)
    except PatternError as exc:
        raise ConfigError(f"[[mask.rules]] {name!r}: invalid regular expression {pattern!r}: {exc}") from None
    keeps = {k: spec[k] for k in ("keep_start", "keep_end") if k in spec}
    if "replacement" in spec:
        if keeps:
            raise ConfigError(f"[[mask.rules]] {name!r}: give either replacement or keep_start/keep_end")
        replacement = spec["replacement"]
        if not isinstance(replacement, str):
            raise ConfigError(f"[[mask.rules]] {name!r}: replacement must be a string")
        try:
            expand = compiled.template(replacement)  # a bad group reference fails here, not on the first match
        except PatternError as exc:
            raise ConfigError(f"[[mask.rules]] {name!r}: invalid replacement {replacement!r}: {exc}") from None
        return Rule(name, compiled, expand, builtin=False)
    for key, value in keeps.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"[[mask.rules]] {name!r}: {key} must be a whole number >= 0")
    return Rule(name, compiled, _keep_mask(keeps.get("keep_start", 0), keeps.get("keep_end", 0)), builtin=False)


def check_settings(settings: Settings) -> None:
    """Raise ConfigError if the ``[mask]`` settings cannot be used (commands check at start)."""
    Masker.from_settings(settings, warn=False)


@functools.cache
def default_masker() -> Masker:
    """The masker of the process's settings (env and ./voxtrail.toml), built once."""
    from voxtrail import config

    return Masker.from_settings(config.load())
