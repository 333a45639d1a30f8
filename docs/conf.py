"""Sphinx configuration for the taskevents documentation.

Build the site with ``./dev docs`` (``sphinx-build -W --keep-going -b html docs
docs/_build/html``) and run the examples with ``sphinx-build -W --keep-going -b doctest
docs docs/_build/doctest`` (``./dev test`` does both). The theme is Furo, which shows a
``.. contents::`` table as a red error box: do not use that directive (its right
sidebar lists the page's sections), tests/test_docs.py checks it.
"""

from __future__ import annotations

import taskevents

project = "taskevents"
author = "The taskevents developers"
copyright = "the taskevents developers"
release = taskevents.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
root_doc = "index"

# -- autodoc ---------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"

# -- cross references ------------------------------------------------------------------

# Every reference inside the project must resolve. There is no intersphinx (the docs are
# built offline), so references into the standard library, blinker, Flask and Socket.IO are
# left as text.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(abc|collections\.abc|contextlib|datetime|logging|os|ssl|threading|types|typing)\..*",
    ),
    (r"py:.*", r"blinker(\..*)?"),
    (r"py:.*", r"(flask|flask_socketio|socketio|engineio)(\..*)?"),
    (r"py:.*", r"(.*\.)?(A|P|R)"),  # type variables
    (r"py:class", r"datetime"),  # the bare name, as written in some annotations
    (r"py:func", r"repr"),
    (r"py:exc", r"(KeyboardInterrupt|BaseException|Exception|ValueError|LookupError|ImportError)"),
    (r"py:class", r"(BaseException|Exception|ValueError|LookupError|ImportError)"),
]


# -- HTML ------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"taskevents {release}"
