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

# the batch profile a dynamic-batch export gets when build is given no --batch or shape flags:
# small requests build at batch 1, the engine is tuned for 4, and Triton may batch up to 16
DEFAULT_DYNAMIC_BATCH = (1, 4, 16)


def default_batch(onnx_path: str) -> tuple[tuple[int, int, int], str]:
    """The batch profile build uses without --batch / shape flags, and how it was chosen: the
    export's own batch when it is static, :data:`DEFAULT_DYNAMIC_BATCH` when it is dynamic."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    dims = [i.type.tensor_type.shape.dim[0] for i in model.graph.input if i.name not in weights and i.type.tensor_type.shape.dim]
    static = {d.dim_value for d in dims if d.HasField("dim_value")}
    if dims and len(static) == 1 and all(d.HasField("dim_value") for d in dims):
        b = static.pop()
        return (b, b, b), f"the export's static batch {b}"
    lo, opt, hi = DEFAULT_DYNAMIC_BATCH
    return DEFAULT_DYNAMIC_BATCH, f"default for a dynamic-batch export; set --batch MIN:OPT:MAX to change it"


def check_batch_agrees(batch: tuple[int, int, int], profile: Profile) -> None:
    """--batch together with shape flags: every shape's first dimension must be that batch range,
    or the two flags contradict each other (one would be silently ignored)."""
    for name, (lo, opt, hi) in profile.items():
        given = (lo[0], opt[0], hi[0])
        if given != tuple(batch):
            raise ValueError(
                f"--batch {':'.join(map(str, batch))} contradicts the shape flags, which give {name!r} the batch "
                f"{':'.join(map(str, given))}; give the batch in one place (drop --batch, or the shape flags)"
            )


def describe_profile(profile: "dict[str, dict[str, list[int]]]") -> str:
    """``images 1x3x224x224 / 4x3x224x224 / 16x3x224x224 (min/opt/max)`` for every input of a sidecar profile."""
    def dims(shape: list[int]) -> str:
        return "x".join(map(str, shape))

    return "; ".join(f"{name} {dims(p['min'])} / {dims(p['opt'])} / {dims(p['max'])} (min/opt/max)" for name, p in profile.items())


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
