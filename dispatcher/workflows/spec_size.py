"""Sizes of a workflow spec computed from the spec, before anything is expanded: the number of
values of a dimension, of jobs of a compact label, of edges an `after` makes, and the longest text
a command or name template can render to.

Every function here costs time in the size of the spec text (never in the size of what it
describes): ranges are counted and intersected arithmetically, products of dimensions multiplied,
and edges between two labels summed per shared key. `spec.py` compares the results with the caps
(`AILURO_MAX_DAG_JOBS`, `AILURO_MAX_DAG_EDGES`) and refuses a spec over them with 413 before it
expands a single job.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from dispatcher.workflows.dag import WorkflowInvalid

# Range bounds are 64-bit integers: enough for any real data id, and a rendered value stays short.
RANGE_BOUND = 2**63
# A template field's width or precision: enough to zero-pad any id (`{visit:08d}`).
MAX_FIELD_WIDTH = 64
# The longest text a command or name template may render to for one job.
MAX_RENDERED_CHARS = 64 * 1024
# A label fans out over at most this many dimensions.
MAX_LABEL_AXES = 64


def values_len(values: Sequence[Any]) -> int:
    """How many values a dimension has; a range is counted arithmetically (`len()` of a range
    over 2**63 values overflows)."""
    if isinstance(values, range):
        return range_len(values.start, values.stop, values.step)
    return len(values)


def range_len(start: int, stop: int, step: int) -> int:
    """len(range(start, stop, step)) for any integers, without building anything."""
    if step > 0:
        return max(0, (stop - start + step - 1) // step)
    return max(0, (start - stop - step - 1) // -step)


def product_len(lengths: Iterable[int]) -> int:
    """The number of combinations of axes of these lengths (exact, in Python integers)."""
    return math.prod(lengths)


def _ascending(r: range) -> tuple[int, int, int]:
    """(first, last, step > 0) of a non-empty range, whatever the sign of its step."""
    n = values_len(r)
    first, last = r.start, r.start + (n - 1) * r.step
    if r.step < 0:
        first, last = last, first
    return first, last, abs(r.step)


def range_intersection_len(a: range, b: range) -> int:
    """How many integers two ranges share: the solutions of x ≡ a₀ (mod sa), x ≡ b₀ (mod sb) in
    the overlap of their spans (Chinese remainder theorem), counted without enumerating them."""
    if values_len(a) == 0 or values_len(b) == 0:
        return 0
    a0, a1, sa = _ascending(a)
    b0, b1, sb = _ascending(b)
    low, high = max(a0, b0), min(a1, b1)
    if low > high:
        return 0
    g = math.gcd(sa, sb)
    if (b0 - a0) % g:
        return 0
    lcm = sa // g * sb
    # x = a0 + sa * t with sa * t ≡ b0 - a0 (mod sb) → t ≡ ((b0 - a0) / g) * (sa / g)⁻¹ (mod sb / g)
    m = sb // g
    t = ((b0 - a0) // g) * pow(sa // g, -1, m) % m if m > 1 else 0
    x = a0 + sa * t
    first = x + ((low - x + lcm - 1) // lcm) * lcm
    if first > high:
        return 0
    return (high - first) // lcm + 1


def _contains(values: Sequence[Any], value: Any) -> bool:
    if isinstance(values, range):
        # `in` on a range is arithmetic only for ints; for anything else it would iterate. A bool
        # or an integral float equals its int, as when jobs are matched through a dict.
        if isinstance(value, float):
            return value.is_integer() and int(value) in values
        return isinstance(value, int) and value in values
    return value in values


def intersection_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many values two dimensions share (lists of distinct scalars, or ranges)."""
    if isinstance(a, range) and isinstance(b, range):
        return range_intersection_len(a, b)
    if isinstance(a, range):
        return sum(1 for v in b if _contains(a, v))
    if isinstance(b, range):
        return sum(1 for v in a if _contains(b, v))
    return len(set(a) & set(b))


class LabelShape:
    """What a label's jobs look like to the edge count: a product of named axes (`over`), or a list
    of data ids (`data_ids`, or the explicit jobs of a label)."""

    def __init__(
        self,
        keys: Sequence[str],
        *,
        axes: Mapping[str, Sequence[Any]] | None = None,
        ids: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.keys = list(keys)
        self.axes = axes
        self.ids = ids

    def count(self) -> int:
        if self.axes is not None:
            return product_len(values_len(v) for v in self.axes.values())
        return len(self.ids or ())

    def rest(self, shared: Sequence[str]) -> int:
        """Jobs per combination of the shared keys (product form)."""
        return product_len(values_len(v) for k, v in (self.axes or {}).items() if k not in shared)

    def tally(self, shared: Sequence[str]) -> Counter[tuple[Hashable, ...]]:
        """Jobs per tuple of shared-key values (list form; a missing key is None, as when wired)."""
        return Counter(tuple(i.get(k) for k in shared) for i in self.ids or ())

    def per_tuple(self, t: Sequence[Any], shared: Sequence[str]) -> int:
        """Jobs of a product-form label whose shared keys have the values `t`."""
        axes = self.axes or {}
        if all(_contains(axes[k], v) for k, v in zip(shared, t, strict=True)):
            return self.rest(shared)
        return 0


def edge_count(child: LabelShape, parent: LabelShape, shared: Sequence[str]) -> int | None:
    """How many edges `after` makes from `parent` to `child` when jobs are matched on the `shared`
    keys: Σ over shared values t of (children with t) × (parents with t). None when a data id holds
    a value that cannot be compared this way (a mapping or list); wiring then counts as it goes.

    Two product forms: (child jobs per t) × (parent jobs per t) × Π |C_k ∩ P_k| — arithmetic.
    A list form: one pass over its ids, looking each tuple up in the other side.
    """
    if not shared:
        return child.count() * parent.count()
    try:
        if child.axes is not None and parent.axes is not None:
            common = product_len(intersection_len(child.axes[k], parent.axes[k]) for k in shared)
            return child.rest(shared) * parent.rest(shared) * common if common else 0
        if child.axes is not None:
            return sum(n * child.per_tuple(t, shared) for t, n in parent.tally(shared).items())
        if parent.axes is not None:
            return sum(n * parent.per_tuple(t, shared) for t, n in child.tally(shared).items())
        theirs = parent.tally(shared)
        return sum(n * theirs.get(t, 0) for t, n in child.tally(shared).items())
    except TypeError:
        return None


# --- templates ---------------------------------------------------------------------------------

_FORMATTER = string.Formatter()
# [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[+\- ]?z?#?0?(?P<width>\d+)?[_,]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?", re.DOTALL
)
# `!a` may escape a character to `\U0001f600`: ten characters for one.
_CONVERSION_GROWTH = {None: 1, "s": 1, "r": 2, "a": 10}


def template_fields(template: str, allowed: Sequence[str], where: str) -> list[tuple[str, int, int]]:
    """Check a command or name template: every field names an allowed key, a format spec has no
    nested field and a width and precision of at most MAX_FIELD_WIDTH (400 naming `where`).
    Returns (key, width, growth) per field, after a first entry ('', literal characters, 1)."""
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise WorkflowInvalid(f"{where} is not a valid template: {exc}", field=where) from None
    literal = 0
    fields: list[tuple[str, int, int]] = []
    for text, name, spec, conversion in parsed:
        literal += len(text)
        if name is None:
            continue
        if name not in allowed:
            raise WorkflowInvalid(
                f"{where} uses {{{name}}}; the data-id keys of this label are: {', '.join(allowed) or 'none'}",
                field=where,
            )
        if spec and "{" in spec:
            raise WorkflowInvalid(f"{where}: nested template fields are not supported", field=where)
        width = 0
        if spec:
            match = _FORMAT_SPEC.fullmatch(spec)
            if match is None:
                raise WorkflowInvalid(f"{where}: {{{name}:{spec}}} is not a valid format", field=where)
            for part in ("width", "precision"):
                digits = match.group(part)
                if digits is not None and (len(digits) > 4 or int(digits) > MAX_FIELD_WIDTH):
                    raise WorkflowInvalid(
                        f"{where}: {{{name}:{spec[:20]}}} has a {part} of {int(digits[:20])}; "
                        f"at most {MAX_FIELD_WIDTH}",
                        field=where,
                    )
            width = max(int(match.group("width") or 0), int(match.group("precision") or 0))
        fields.append((name, width, _CONVERSION_GROWTH.get(conversion, 10)))
    return [("", literal, 1), *fields]


def rendered_max(fields: Sequence[tuple[str, int, int]], longest: Mapping[str, int], where: str) -> int:
    """The longest text a checked template can render to, given the longest rendering of each key's
    values; over MAX_RENDERED_CHARS is refused (400 naming `where`)."""
    total = fields[0][1]
    for name, width, growth in fields[1:]:
        # Grouping, a sign, a float or percent type: at most twice the plain text, plus ten.
        total += max(width, longest.get(name, 0) * growth * 2 + 10)
    if total > MAX_RENDERED_CHARS:
        raise WorkflowInvalid(
            f"{where} renders up to {total} characters for one job; at most {MAX_RENDERED_CHARS}",
            field=where,
        )
    return total


def longest_value(values: Sequence[Any]) -> int:
    """The longest str() of a dimension's values (a range: of its two ends)."""
    if isinstance(values, range):
        if values_len(values) == 0:
            return 0
        last = values.start + (values_len(values) - 1) * values.step
        return max(len(str(values.start)), len(str(last)))
    return max((len(str(v)) for v in values), default=0)
