"""The registry of KD methods (``distill.method``): one object per name, one file per method.

    from structkd.kd.methods import get_method
    method = get_method("structural")

To add a method, write ``kd/methods/NAME.py`` with a ``KDMethod`` subclass and register an
instance below (or with ``register_method`` from your own code); tests/test_kd_methods.py checks
every registered method on a brute-force oracle.
"""

from __future__ import annotations

from structkd.kd.methods.base import KDMethod, KDPair, Layout, Stats
from structkd.kd.methods.kbest import TOP1, TOPK, TOPWK, KBestKD
from structkd.kd.methods.posterior import PosteriorKD
from structkd.kd.methods.structural import StructuralKD
from structkd.kd.methods.substructure import SubstructureKD
from structkd.kd.methods.token import TokenKD

_METHODS: dict[str, KDMethod] = {}


def register_method(method: KDMethod) -> KDMethod:
    """Makes ``method`` available as ``distill.method: NAME``; returns it.

    Raises:
        ValueError: if another method has the name already.
    """
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"a KD method named {method.name!r} is registered already")
    _METHODS[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """The registered methods' names, in registration order."""
    return tuple(_METHODS)


def methods_for(pair: KDPair) -> tuple[str, ...]:
    """The registered methods that can distil ``pair`` (their ``needs`` it ``provides``)."""
    return tuple(name for name, m in _METHODS.items() if m.needs in pair.provides)


def get_method(name: str) -> KDMethod:
    """The method registered as ``name``.

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown KD method {name!r}; choose one of {', '.join(_METHODS)}") from None


for _method in (StructuralKD(), TokenKD(), PosteriorKD(), TOPK, TOPWK, TOP1, SubstructureKD()):
    register_method(_method)

__all__ = [
    "KBestKD",
    "KDMethod",
    "KDPair",
    "Layout",
    "Stats",
    "get_method",
    "method_names",
    "methods_for",
    "register_method",
]
