"""What Encode stack will do and did, in words that stay true (issue 23, item 1).

Pure Python, no Qt. Before a run the workers' caches are sized
(:func:`protocol.ops.embed_many.cache_room`); when the stack does not fit,
the user is told *before* encoding how much does and chooses between
:data:`FIT` (encode the images nearest the current slice that the caches
keep) and :data:`ALL` (encode everything; the caches then keep only about
the last ones). The summary after the run says how many images were encoded,
how many the caches keep, in how many workers' caches, and what a click
elsewhere costs — never "clicks need no encoding" when that is not so.

An *image* is what one click sends: a whole slice, or a window of a large
slice (:mod:`plugin.jobs.embed_targets`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plugin.jobs.embed_targets import EmbedTarget
from plugin.view.coords import SlicePlane
from plugin.wording import plural
from protocol.ops.embed_many import CacheRoom, EmbedManyResult

FIT = "fit"
"""Encode only the images the caches keep, nearest the current slice first."""
ALL = "all"
"""Encode every image although the caches keep only about the last ones."""


def nearest_first(targets: Sequence[EmbedTarget], here: SlicePlane) -> list[EmbedTarget]:
    """``targets`` ordered by how far their slice is from ``here`` (sum of index steps over the
    non-displayed axes); a slice's windows stay together, in their order."""

    def distance(target: EmbedTarget) -> int:
        return sum(
            abs(int(i) - int(j))
            for i, j in zip(target.plane.index, here.index, strict=True)
            if i is not None and j is not None
        )

    return sorted(targets, key=distance)


@dataclass(frozen=True)
class EncodePlan:
    """A stack to encode, and how much of it the workers' caches keep.

    Attributes:
        targets: every image of the stack, nearest the current slice first.
        workers: workers of the service.
        room: what their caches hold together (None: they could not say).
        here: the current slice (``"slice 45"``).
        ahead: the first ``ahead`` targets were embedded while sizing the caches.
    """

    targets: tuple[EmbedTarget, ...]
    workers: int
    room: CacheRoom | None
    here: str
    ahead: int = 0

    @property
    def images(self) -> int:
        return len(self.targets)

    @property
    def slices(self) -> int:
        return len({t.plane.key for t in self.targets})

    @property
    def fits(self) -> bool:
        return self.room is None or self.room.capacity >= self.images

    @property
    def kept(self) -> int:
        """Images the caches keep (all of them when the caches could not say)."""
        return self.images if self.room is None else min(self.images, self.room.capacity)

    def chosen(self, choice: str) -> tuple[EmbedTarget, ...]:
        """The images to encode for ``choice`` (:data:`FIT` or :data:`ALL`)."""
        return self.targets if choice == ALL or self.fits else self.targets[: self.kept]

    def unit(self, count: int) -> str:
        """``"12 slices"``, or ``"40 windows"`` when large slices send windows."""
        return plural(count, "slice") if self.images == self.slices else plural(count, "window")

    def caches(self) -> str:
        return "the worker's cache" if self.workers == 1 else f"the {self.workers} workers' caches"

    def verb(self, plural_form: str) -> str:
        """``plural_form`` ("hold") agreeing with :meth:`caches` ("holds" for one worker's cache)."""
        return plural_form + "s" if self.workers == 1 else plural_form

    def question(self) -> str:
        """What the user is asked before a stack that does not fit (see :data:`FIT`, :data:`ALL`)."""
        kept, total, caches = self.kept, self.images, self.caches().capitalize()
        return (
            f"{caches} {self.verb('hold')} about {kept} of the stack's {self.unit(total)}.\n\n"
            f"Encode the {self.unit(kept)} nearest {self.here}: clicks on them need no encoding, "
            f"a click on the other {total - kept} is encoded when made.\n"
            f"Or encode all {total}: the caches then keep only about the last {kept} encoded, "
            "and the others are encoded again when clicked."
        )

    def before(self, choice: str) -> str:
        """Said as the run starts, for a stack that does not fit."""
        if self.fits:
            return ""
        kept, total = self.kept, self.images
        head = f"Encode stack: {self.caches()} {self.verb('hold')} about {kept} of {self.unit(total)}; "
        if choice == ALL:
            return head + f"encoding all {total}: only about the last {kept} will stay cached."
        return head + f"encoding the {kept} nearest {self.here}."


@dataclass(frozen=True)
class EncodeReport:
    """How an Encode stack run ended (for the summary and tests).

    Attributes:
        plan: what was planned.
        choice: :data:`FIT` or :data:`ALL`.
        result: what :func:`protocol.ops.embed_many.embed_many` did.
        room: the caches after the run (None: they could not say).
    """

    plan: EncodePlan
    choice: str
    result: EmbedManyResult
    room: CacheRoom | None

    @property
    def encoded(self) -> int:
        return self.result.done

    @property
    def kept(self) -> int:
        """Images of this run the caches keep (estimate: the caches' room, or all when unknown)."""
        room = self.room or self.plan.room
        return self.encoded if room is None else min(self.encoded, room.capacity)


def summary(report: EncodeReport) -> str:
    """One notification: what was encoded, what the caches keep, and what a click elsewhere costs."""
    plan, result = report.plan, report.result
    workers = plural(result.in_flight, "worker")
    cached = f" ({result.cached} already cached)" if result.cached else ""
    encoded = (
        f"encoded {plan.unit(report.encoded)}"
        if report.encoded == plan.images
        else f"encoded {report.encoded} of {plan.unit(plan.images)} (those nearest {plan.here})"
    )
    head = f"Encode stack: {encoded} on {workers} in {result.seconds:.0f} s{cached}. "
    kept, rest = report.kept, plan.images - report.kept
    where = plan.caches()
    if report.room is None and plan.room is None:
        return head + (
            "The workers did not say how large their caches are: clicks on these images need no "
            "encoding while the images stay cached."
        )
    if kept == plan.images:
        return head + f"All {kept} are kept in {where}: clicks on them need no encoding now."
    if report.encoded > kept:
        return head + (
            f"{where.capitalize()} {plan.verb('keep')} only about the last {kept} encoded: "
            f"a click on one of the other {rest} is encoded again (a few seconds)."
        )
    return head + (
        f"They are kept in {where}: clicks on them need no encoding; a click on one of the "
        f"other {rest} is encoded when made."
    )
