from __future__ import annotations

# Type-checked, never run: importing it would load an overdrive.toml that is not there.
collect_ignore = ["readme_snippets.py"]
