"""Why a launch was refused: one line for the user."""


class LaunchError(ValueError):
    """Bad launcher options or a failed submission (one line)."""
