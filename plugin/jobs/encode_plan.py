"""What Encode stack will do and did, in words that stay true (issue 23, item 1).

Pure Python, no Qt. Before a run the workers' caches are sized
(:func:`protocol.ops.embed_many.cache_room`); when the stack does not fit,
the user is told *before* encoding how much does and chooses between
:data:`FIT` (encode the images nearest the current slice that the caches
keep) and :data:`ALL` (encode everything; the caches then keep only about
the last ones). The summary after the run says how many images were encoded,
how many the caches keep, in how many workers' caches, and what a click
elsewhere costs — never "clicks need no encoding" when that is not so.

When the workers have an on-disk cache (``workers/disk_cache.py``, issue 24 §3)
it keeps what the memory caches cannot: a stack that does not fit in memory
but fits on disk is encoded whole without a question, and the messages say
how many images are kept in memory and how many on disk (a click on one on
disk needs no re-encoding: its embedding is read back in milliseconds).

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
        """Whether the caches keep every image, in memory or on disk (then nothing is asked)."""
        return self.room is None or self.kept >= self.images

    @property
    def in_memory(self) -> int:
        """Images the memory caches keep (all of them when the caches could not say)."""
        return self.images if self.room is None else min(self.images, self.room.capacity)

    @property
    def on_disk(self) -> int:
        """Images the disk caches keep (0: none)."""
        return 0 if self.room is None or self.room.disk is None else min(self.images, self.room.disk)

    @property
    def kept(self) -> int:
        """Images the caches keep, in memory or on disk (all of them when the caches could not say)."""
        return max(self.in_memory, self.on_disk)

    def disk_text(self) -> str:
        """``"their disk cache"`` (or ``"their 2 disk caches"``), naming the folder of one."""
        dirs = () if self.room is None else self.room.disk_dirs
        if len(dirs) == 1:
            return f"the disk cache ({dirs[0]})"
        return f"their {len(dirs)} disk caches"

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
        where = f" ({self.in_memory} in memory, {self.on_disk} in {self.disk_text()})" if self.on_disk else ""
        return (
            f"{caches} {self.verb('hold')} about {kept} of the stack's {self.unit(total)}{where}.\n\n"
            f"Encode the {self.unit(kept)} nearest {self.here}: clicks on them need no encoding, "
            f"a click on the other {total - kept} is encoded when made.\n"
            f"Or encode all {total}: the caches then keep only about the last {kept} encoded, "
            "and the others are encoded again when clicked."
        )

    def before(self, choice: str) -> str:
        """Said as the run starts, for a stack that does not fit in memory ("" for one that does)."""
        if self.in_memory >= self.images:
            return ""
        if self.fits:  # the disk caches keep the rest
            return (
                f"Encode stack: {self.caches()} {self.verb('hold')} about {self.in_memory} of "
                f"{self.unit(self.images)} in memory; {self.disk_text()} holds all {self.images}: "
                f"encoding all {self.images}, so that clicks on any of them need no re-encoding."
            )
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
    def in_memory(self) -> int:
        """Images of this run the memory caches keep (estimate: the caches' room, or all when unknown)."""
        room = self.room or self.plan.room
        return self.encoded if room is None else min(self.encoded, room.capacity)

    @property
    def on_disk(self) -> int:
        """Images of this run the disk caches keep (0: no disk cache)."""
        room = self.room or self.plan.room
        return 0 if room is None or room.disk is None else min(self.encoded, room.disk)

    @property
    def kept(self) -> int:
        """Images of this run the caches keep, in memory or on disk."""
        return max(self.in_memory, self.on_disk)


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
    if kept == plan.images and report.in_memory == kept:
        return head + f"All {kept} are kept in {where}: clicks on them need no encoding now."
    if report.on_disk > report.in_memory:  # the disk caches keep more than memory
        them = "them" if report.on_disk == report.encoded else f"those {report.on_disk}"
        rest = plan.images - report.on_disk
        after = (
            f"; a click on one of the other {rest} is "
            + ("encoded again (a few seconds)." if report.encoded > report.on_disk else "encoded when made.")
            if rest
            else "."
        )
        return head + (
            f"{where.capitalize()} {plan.verb('keep')} about {report.in_memory} in memory and "
            f"{plan.disk_text()} keeps {report.on_disk}: clicks on {them} need no re-encoding "
            f"(an embedding on disk is read back in milliseconds){after}"
        )
    if report.encoded > kept:
        return head + (
            f"{where.capitalize()} {plan.verb('keep')} only about the last {kept} encoded: "
            f"a click on one of the other {rest} is encoded again (a few seconds)."
        )
    return head + (
        f"They are kept in {where}: clicks on them need no encoding; a click on one of the "
        f"other {rest} is encoded when made."
    )
