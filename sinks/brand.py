"""Brand colours checked before any mail is rendered: every text the layout paints on a brand colour must
reach the WCAG 2 contrast minimum (4.5:1, 3:1 for large text), or customers get buttons they cannot read
(white on amber ``#f59e0b`` is 2.15:1).

The sink refuses to start with such colours (``check_brand``); ``shopmail preview`` prints the same lines as
a warning and renders anyway, so the owner can see what is wrong. The light-mode colours are the ones that
matter: the dark-mode block repaints text and surfaces with fixed colours (``sinks/templates/layout.mjml``).
"""

from __future__ import annotations

import re

from streams.config import BrandSettings

CARD = "#ffffff"  # the card's inline background (layout.mjml)
FOOTER_TEXT = "#52525b"  # the footer's text and links (layout.mjml)
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def _luminance(colour: str) -> float:
    """WCAG 2 relative luminance of ``#rgb`` / ``#rrggbb``."""
    hexes = colour[1:] if len(colour) == 7 else "".join(c * 2 for c in colour[1:])
    channels = [int(hexes[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast_ratio(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two hex colours (1.0 … 21.0)."""
    hi, lo = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def brand_problems(brand: BrandSettings) -> list[str]:
    """One line per brand colour pair the layout paints whose contrast is under the WCAG minimum."""
    colours = {"primary_color": brand.primary_color, "button_text_color": brand.button_text_color,
               "text_color": brand.text_color, "background_color": brand.background_color}
    bad = [f"brand.{name} = {value!r} is not a #rgb or #rrggbb colour" for name, value in colours.items()
           if not _HEX.match(value)]
    if bad:
        return bad
    pairs = [  # (what, foreground, background, minimum)
        ("button text (brand.button_text_color on brand.primary_color)", brand.button_text_color,
         brand.primary_color, 4.5),
        ("body text (brand.text_color on the white card)", brand.text_color, CARD, 4.5),
        ("shop name without a logo (brand.text_color on brand.background_color, large text)", brand.text_color,
         brand.background_color, 3.0),
        (f"footer text ({FOOTER_TEXT} on brand.background_color)", FOOTER_TEXT, brand.background_color, 4.5),
    ]
    problems = []
    for what, fg, bg, minimum in pairs:
        ratio = contrast_ratio(fg, bg)
        if ratio < minimum:
            problems.append(f"{what}: {fg} on {bg} has contrast {ratio:.2f}:1, under the WCAG minimum "
                            f"{minimum}:1")
    return problems


def check_brand(brand: BrandSettings) -> None:
    """Refuse (ValueError) brand colours that would make mail unreadable; the message names each pair."""
    problems = brand_problems(brand)
    if problems:
        raise ValueError("brand colours fail the contrast check: " + "; ".join(problems))
