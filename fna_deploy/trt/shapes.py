"""Optimisation-profile shapes spelled as trtexec spells them.

    --shapes images:4x3x224x224                    one fixed shape (min = opt = max)
    --min-shapes images:1x3x224x224 --opt-shapes images:4x3x224x224 --max-shapes images:8x3x224x224
    several inputs: images:1x3x224x224,mask:1x197 (comma between inputs, x between dimensions)

The older fna-deploy spelling ``name:MINxOPTxMAX`` with comma-separated dimensions
(``images:1,3,224,224x4,3,224,224x8,3,224,224``) is still read for one release, with a note.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

Profile = dict[str, tuple[list[int], list[int], list[int]]]


def is_legacy(spec: str) -> bool:
    """The old ``name:MINxOPTxMAX`` spelling: commas inside one input's dimensions."""
    parts = spec.split(",")
    return len(parts) > 1 and any(":" not in p for p in parts[1:])


def parse_trtexec_shapes(spec: str, flag: str = "--shapes") -> dict[str, list[int]]:
    """``name:1x3x224x224,name2:1x197`` -> {name: [1, 3, 224, 224], name2: [1, 197]}."""
    shapes: dict[str, list[int]] = {}
    for entry in spec.split(","):
        name, sep, dims = entry.strip().rpartition(":")
        if not sep or not name or not dims:
            raise ValueError(f"{flag} {spec!r}: expected name:DxDxD (trtexec syntax), e.g. images:1x3x224x224")
        try:
            shape = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            raise ValueError(f"{flag} {spec!r}: the dimensions of {name!r} must be integers separated by x, e.g. 1x3x224x224") from None
        if any(d < 1 for d in shape):
            raise ValueError(f"{flag} {spec!r}: every dimension of {name!r} must be >= 1")
        if name in shapes:
            raise ValueError(f"{flag} {spec!r}: {name!r} is given twice")
        shapes[name] = shape
    return shapes


def profile_from_flags(
    shapes: Sequence[str] = (),
    min_shapes: Sequence[str] = (),
    opt_shapes: Sequence[str] = (),
    max_shapes: Sequence[str] = (),
    *,
    legacy: Optional[Callable[[list[str]], Profile]] = None,
    on_legacy: Optional[Callable[[], None]] = None,
) -> Profile:
    """The profile for build's shape flags: each input gets (min, opt, max).

    ``--shapes`` fixes an input; ``--min/--opt/--max-shapes`` give a range (all three per input,
    opt defaulting to max when left out, as trtexec does). ``legacy`` parses old-style ``--shapes``
    entries (``on_legacy`` is told when one is seen).
    """
    profile: Profile = {}
    new_style = []
    old_style = []
    for spec in shapes:
        (old_style if is_legacy(spec) else new_style).append(spec)
    if old_style:
        if legacy is None:
            raise ValueError(f"--shapes {old_style[0]!r}: use name:1x3x224x224 (trtexec syntax)")
        if on_legacy is not None:
            on_legacy()
        profile.update(legacy(old_style))
    for spec in new_style:
        for name, shape in parse_trtexec_shapes(spec).items():
            if name in profile:
                raise ValueError(f"--shapes: {name!r} is given twice")
            profile[name] = (list(shape), list(shape), list(shape))

    def merged(specs: Sequence[str], flag: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for spec in specs:
            for name, shape in parse_trtexec_shapes(spec, flag).items():
                if name in out:
                    raise ValueError(f"{flag}: {name!r} is given twice")
                out[name] = shape
        return out

    lo, opt, hi = merged(min_shapes, "--min-shapes"), merged(opt_shapes, "--opt-shapes"), merged(max_shapes, "--max-shapes")
    for name in sorted(set(lo) | set(opt) | set(hi)):
        if name in profile:
            raise ValueError(f"{name!r} has a fixed --shapes and a range; give one")
        if name not in lo or name not in hi:
            raise ValueError(f"{name!r}: a range needs both --min-shapes and --max-shapes (--opt-shapes defaults to max)")
        low, high = lo[name], hi[name]
        mid = opt.get(name, high)
        if not len(low) == len(mid) == len(high):
            raise ValueError(f"{name!r}: min, opt and max shapes must have the same rank")
        if any(not a <= b <= c for a, b, c in zip(low, mid, high)):
            raise ValueError(f"{name!r}: min <= opt <= max must hold in every dimension")
        profile[name] = (low, mid, high)
    return profile
