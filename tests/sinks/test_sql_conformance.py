"""The shared sink conformance suite, run by the PostgreSQL and MySQL sinks."""

from __future__ import annotations

import pytest

from etl.testing.sink_conformance import SinkConformance
from tests.sinks.sqlharness import SqlConformanceHarness, SqlTarget


class TestSqlSinkConformance(SinkConformance):
    @pytest.fixture
    def harness(self, sql_target: SqlTarget) -> SqlConformanceHarness:
        return SqlConformanceHarness(sql_target)
