"""A property that is another object's attribute: ``Controller.session`` is ``controller.context.session``.

The controller hands out the state its jobs share (:mod:`plugin.jobs.context`,
:mod:`plugin.jobs.results`, ...) under short names; each such name is one line
(``session = Delegated[Session | None]("context", writable=True)``) instead of a
getter and a setter that only pass the value through.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class Delegated(Generic[T]):
    """``owner.<name>`` reads (and, if ``writable``, writes) ``owner.<via>.<name>``.

    Args:
        via: the owner's attribute holding the object with the value.
        writable: assignments go through to that object (else they raise ``AttributeError``).
    """

    def __init__(self, via: str, *, writable: bool = False) -> None:
        self.via = via
        self.writable = writable
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> Delegated[T]: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.via), self.name)

    def __set__(self, obj: object, value: T) -> None:
        if not self.writable:
            raise AttributeError(f"{self.name} is read-only (it belongs to {self.via})")
        setattr(getattr(obj, self.via), self.name, value)
