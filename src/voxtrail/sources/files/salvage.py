"""A format that raises on a chunk costs the lines it raised on, not the import.

A format turns every line it cannot read into a :class:`~voxtrail.event.Reject`; when its
``parse`` raises instead, that is a bug not found yet, set off by some line of the chunk. Rather
than stopping ``import`` (on every run) or ``tail``, :func:`parse_chunk` re-parses growing
prefixes of the chunk to find the first line whose addition makes the format raise, keeps what
the format made of the lines before it, quarantines that line with the reason
``<format>: parser error: <ExceptionType>: <message>``, and goes on after it.

The search gallops (prefixes of 1, 2, 4, ... lines) and then bisects, each trial on a copy of
the parse state, so a chunk with one bad line costs a few parses of the chunk and a chunk whose
every line is bad costs one parse per line. Records that span lines (``indextts`` blocks) may
have been held back by the format when the bad line came: those lines are quarantined too, as
one reject at their start ("cut short by a parser error"), like a block interrupted by another.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import polars as pl

from voxtrail.event import EventBatch, Reject
from voxtrail.sources.formats import Chunk, Format, ParseContext, ParseResult, error_summary


@dataclass(frozen=True)
class ParserFault:
    """A line a format raised on: where, and the reason stored with its reject."""

    offset: int
    reason: str


def parse_chunk(fmt: Format, chunk: Chunk, ctx: ParseContext) -> tuple[ParseResult, list[ParserFault]]:
    """``fmt.parse(chunk, ctx)``, or, if it raises, the same chunk with the lines it raised on
    quarantined. ``ctx.state`` ends as the format left it after the last line it accepted."""
    try:
        return fmt.parse(chunk, ctx), []
    except Exception as exc:  # noqa: BLE001 - a format's bug on some line: find it, keep the rest
        return _Salvage(fmt, chunk, ctx, exc).run()


class _Salvage:
    def __init__(self, fmt: Format, chunk: Chunk, ctx: ParseContext, exc: Exception):
        self.fmt, self.chunk, self.ctx = fmt, chunk, ctx
        starts = (chunk.line_offsets() - chunk.start).tolist()
        self.bounds = [*starts, len(chunk.data)]  # line i is data[bounds[i]:bounds[i + 1]]
        self.lines = len(starts)
        self.whole_failed: Exception | None = exc  # parsing all the lines from `first` on raised this
        self.results: list[ParseResult] = []
        self.rejects: list[Reject] = []
        self.faults: list[ParserFault] = []

    def run(self) -> tuple[ParseResult, list[ParserFault]]:
        first, consumed = 0, self.chunk.end
        while first < self.lines:
            bad, exc, kept = self._first_bad_line(first)
            if bad is None:  # the rest parsed: done
                self._adopt(kept)
                consumed = kept[0].consumed
                break
            self._quarantine(first, bad, exc, kept)
            first, self.whole_failed = bad + 1, None
        return self._combined(consumed), self.faults

    def _first_bad_line(self, first: int) -> tuple[int | None, Exception | None, tuple | None]:
        """The first line from ``first`` on that makes the format raise, with the exception and the
        outcome (result, state) of the lines before it; (None, None, outcome) if none does."""
        good, good_outcome = first, None  # parsing lines[first:good] did not raise (none: trivially)
        bad, bad_exc = self.lines, self.whole_failed
        step = 1
        while bad_exc is None or good + step < bad:
            k = min(good + step, bad)
            outcome = self._trial(first, k)
            if isinstance(outcome, Exception):
                bad, bad_exc = k, outcome
                break
            good, good_outcome = k, outcome
            if k == self.lines:
                return None, None, outcome
            step *= 2
        while bad - good > 1:
            mid = (good + bad) // 2
            outcome = self._trial(first, mid)
            if isinstance(outcome, Exception):
                bad, bad_exc = mid, outcome
            else:
                good, good_outcome = mid, outcome
        return bad - 1, bad_exc, good_outcome

    def _trial(self, first: int, end: int) -> tuple[ParseResult, dict] | Exception:
        """Parse lines[first:end] on a copy of the state; the last piece is as final as the chunk."""
        last = end == self.lines
        piece = Chunk(self.chunk.start + self.bounds[first], self.chunk.data[self.bounds[first]:self.bounds[end]],
                      final=self.chunk.final and last)
        state = copy.deepcopy(self.ctx.state)
        try:
            return self.fmt.parse(piece, replace(self.ctx, state=state, final=self.ctx.final and last)), state
        except Exception as exc:  # noqa: BLE001 - the outcome the search is looking for
            return exc

    def _adopt(self, outcome: tuple[ParseResult, dict]) -> None:
        result, state = outcome
        self.results.append(result)
        self.ctx.state.clear()
        self.ctx.state.update(state)

    def _quarantine(self, first: int, bad: int, exc: Exception, kept: tuple | None) -> None:
        accounted = self.chunk.start + self.bounds[first]
        if kept is not None:
            self._adopt(kept)
            accounted = kept[0].consumed
        offset = self.chunk.start + self.bounds[bad]
        if accounted < offset:  # lines of a record the format was still reading: they go with it
            self.rejects.append(Reject(accounted, f"{self.fmt.name}: record cut short by a parser error at byte "
                                                  f"{offset}", self.chunk.line_bytes(accounted)))
        reason = f"{self.fmt.name}: parser error: {error_summary(exc)}"
        self.rejects.append(Reject(offset, reason, self.chunk.line_bytes(offset)))
        self.faults.append(ParserFault(offset, reason))

    def _combined(self, consumed: int) -> ParseResult:
        rejects = sorted([*self.rejects, *(x for r in self.results for x in r.batch.rejects)], key=lambda r: r.offset)
        if not self.results:  # every line raised
            return ParseResult(replace(EventBatch.empty(), rejects=rejects), consumed, 0)
        constants = {k: v for r in self.results for k, v in r.batch.constants.items()}
        frame = pl.concat([r.batch.frame for r in self.results], how="diagonal_relaxed")
        return ParseResult(EventBatch(frame, rejects, constants), consumed, sum(r.skipped for r in self.results))
