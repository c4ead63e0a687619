"""The one report of a run, printed after pytest's summary, whether the tests
passed or not: the figures of each drill, the coherence checker's tables, the
statuses of a fuzz. A pytest plugin (tests/conftest.py loads it)."""

import json

import pytest

_sections = {}  # title -> lines, in the order first reported


def report(title, *lines):
    """Add ``lines`` to the section ``title`` of the report."""
    _sections.setdefault(title, []).extend(lines)


@pytest.fixture
def figures(request):
    """A dict for this test's figures, reported when the test ends, passed or failed."""
    entry = {}
    yield entry
    report("figures", f"{request.node.name}: {json.dumps(entry, default=str)}")


def pytest_terminal_summary(terminalreporter):
    for title, lines in _sections.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
