"""The diffusers families attnsearch knows, by name and by preset.

The adapters (``wan``, ``cogvideox``, ``hunyuan``) each define one :class:`Family`; this module
registers them (and :func:`register_family` adds another), so nothing an adapter imports depends
on the list of adapters.
"""

from __future__ import annotations

from torch import nn

from . import cogvideox, hunyuan, wan
from .family import Family

FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` known by its name and its presets' names; returns it."""
    FAMILIES[family.name] = family
    for preset in family.presets:
        PRESETS[preset] = family
    return family


def family_of(model: nn.Module) -> Family:
    """The family of a diffusers transformer instance (subclasses included)."""
    for fam in FAMILIES.values():
        if fam.matches(model):
            return fam
    known = ", ".join(f.class_name for f in FAMILIES.values())
    raise ValueError(f"no attnsearch adapter for {type(model).__name__} (known: {known})")


def resolve_preset(name: str) -> tuple[Family, str]:
    """A preset ('wan2.1-1.3b') or family name ('wan': its first preset) → (family, preset)."""
    key = name.lower()
    if key in PRESETS:
        return PRESETS[key], key
    if key in FAMILIES:
        fam = FAMILIES[key]
        return fam, next(iter(fam.presets))
    raise ValueError(f"unknown diffusers preset {name!r} (presets: {', '.join(PRESETS)}; "
                     f"families: {', '.join(FAMILIES)})")


for _adapter in (cogvideox, hunyuan, wan):
    register_family(_adapter.FAMILY)

__all__ = ["FAMILIES", "PRESETS", "family_of", "register_family", "resolve_preset"]
