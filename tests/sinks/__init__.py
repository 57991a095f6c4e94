"""Tests of the sink framework and the SQL sinks; ``conformance`` is the shared suite."""

import pytest

# The shared suite is imported by other sinks' tests: have pytest explain its asserts.
pytest.register_assert_rewrite("etl.testing.sink_conformance", "tests.sinks.sqlharness")
