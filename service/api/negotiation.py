"""Picking a response media type from the Accept header (RFC 9110 quality values)."""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import NotAcceptable, quoted


def _parse(accept: str) -> list[tuple[str, str, float]]:
    ranges = []
    for part in accept.split(","):
        fields = [field.strip() for field in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        main, _, sub = media.partition("/")
        quality = 1.0
        for parameter in fields[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((main, sub or "*", quality))
    return ranges


def _quality(media_type: str, ranges: list[tuple[str, str, float]]) -> float:
    """Quality of `media_type` under the most specific matching range; 0 when none matches."""
    main, _, sub = media_type.partition("/")
    best_specificity, best_quality = -1, 0.0
    for range_main, range_sub, quality in ranges:
        if range_main == main and range_sub == sub:
            specificity = 2
        elif range_main == main and range_sub == "*":
            specificity = 1
        elif range_main == "*" and range_sub == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, best_quality = specificity, quality
    return best_quality


def negotiate(accept: str | None, offered: Sequence[str]) -> str:
    """The offered type the client prefers (ties go to the first offered); 406 when none fits."""
    if accept is None or not accept.strip():
        return offered[0]
    ranges = _parse(accept)
    best, best_quality = None, 0.0
    for media_type in offered:
        quality = _quality(media_type, ranges)
        if quality > best_quality:
            best, best_quality = media_type, quality
    if best is None:
        raise NotAcceptable(
            f"cannot produce {quoted(accept)}; this endpoint offers {', '.join(offered)}"
        )
    return best
