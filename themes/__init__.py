"""voxdock's own console themes, next to Textual's built-in ones (all selectable at run time).

Every theme keeps strong contrast between text and background, and the console never relies on
colour alone (the bottleneck and failures also carry a marker), so 16-colour terminals stay readable.
"""

from __future__ import annotations

from importlib import resources

from textual.theme import Theme

VOXDOCK_NIGHT = Theme(
    name="voxdock-night",
    primary="#4FA3E0",
    secondary="#7CC4A4",
    accent="#F0B35A",
    warning="#F0B35A",
    error="#F06A6A",
    success="#7CC47A",
    foreground="#E4E8EE",
    background="#10151C",
    surface="#18202A",
    panel="#223040",
    dark=True,
)

VOXDOCK_PHOSPHOR = Theme(
    name="voxdock-phosphor",
    primary="#33FF66",
    secondary="#22BB55",
    accent="#CCFF66",
    warning="#FFCC33",
    error="#FF5555",
    success="#33FF66",
    foreground="#B8FFC8",
    background="#000000",
    surface="#061006",
    panel="#0C200F",
    dark=True,
)

VOXDOCK_PAPER = Theme(
    name="voxdock-paper",
    primary="#1F5FA8",
    secondary="#2E7D5B",
    accent="#B85C00",
    warning="#B85C00",
    error="#B00020",
    success="#2E7D32",
    foreground="#1A1A1A",
    background="#F7F5EF",
    surface="#FFFFFF",
    panel="#E6E1D3",
    dark=False,
)

THEMES = (VOXDOCK_NIGHT, VOXDOCK_PHOSPHOR, VOXDOCK_PAPER)
DEFAULT_THEME = VOXDOCK_NIGHT.name


def console_css_path() -> str:
    """The console's layout stylesheet (Textual CSS)."""
    return str(resources.files(__name__) / "console.tcss")
