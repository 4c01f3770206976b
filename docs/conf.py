"""Sphinx configuration. The build needs no network access."""

from __future__ import annotations

import os
import sys
from importlib import metadata

# Document the checkout even when the package is not installed.
sys.path.insert(0, os.path.abspath(".."))

project = "flask-relay-session"
copyright = "the flask-relay-session authors"
author = "the flask-relay-session authors"

try:
    release = metadata.version("flask-relay-session")
except metadata.PackageNotFoundError:
    release = "0.1.0.dev0"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
# No intersphinx: CI has no network, and a mapping would be fetched.

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"flask-relay-session {release}"
