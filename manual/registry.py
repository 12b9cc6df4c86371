"""One registry mechanism for activations, losses and optimizers."""
from __future__ import annotations


def registrar(registry: dict[str, type], kind: str):
    """A class decorator factory: ``@register("name")`` adds the class to
    ``registry`` under ``name`` (and sets ``cls.name``); a name registered twice
    is an error."""

    def register(name: str):
        def add(cls):
            if name in registry:
                raise ValueError(f"{kind} {name!r} registered twice")
            registry[name] = cls
            cls.name = name
            return cls

        return add

    register.__doc__ = f"Class decorator: add {kind} class to the registry under ``name``."
    return register
