"""The testing kit: for tests of this framework and of users' transforms, sinks and sources.

* :mod:`etl.testing.sink_conformance` - the suite every sink must pass;
* :mod:`etl.testing.source_conformance` - the suite every source must pass;
* :mod:`etl.testing.doubles` - an in-memory sink and source;
* :mod:`etl.testing.transforms` - ``run_transform``: a transform on messages, as the worker runs it;
* :mod:`etl.testing.servers`, :mod:`etl.testing.worker`, :mod:`etl.testing.kafka` - real
  servers, a real worker process, and Kafka helpers for tests.
"""

import sys

if "pytest" in sys.modules:  # the suites' asserts explain themselves when they fail
    import pytest

    pytest.register_assert_rewrite("etl.testing.sink_conformance", "etl.testing.source_conformance")
