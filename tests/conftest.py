import os

import pytest

from tests.support.crossbar import (
    SKIP_REASON,
    TEST_ITERATIONS,
    TEST_KEYLEN,
    TEST_SALT,
    CrossbarRouter,
    find_crossbar,
)

# Crossbar router fixtures (tests/support/crossbar.py). A node takes about 4-6 s to start, so the
# shared routers are module-scoped: tests using them must pick their own topic/procedure names and
# must not leave the router stopped. Tests that stop or restart the router take
# fresh_crossbar_router (function-scoped, its own node). The salted router uses the PBKDF2
# settings TEST_SALT / TEST_ITERATIONS / TEST_KEYLEN.
ROUTER_FIXTURES = ("crossbar_router", "crossbar_router_salted", "fresh_crossbar_router")


def _run_router(**kwargs):
    executable = find_crossbar()
    if executable is None:
        pytest.skip(SKIP_REASON)
    router = CrossbarRouter(executable=executable, **kwargs)
    try:
        router.start()
        yield router
    finally:
        router.close()


@pytest.fixture(scope="module")
def crossbar_router():
    yield from _run_router()


@pytest.fixture(scope="module")
def crossbar_router_salted():
    yield from _run_router(salt=TEST_SALT, iterations=TEST_ITERATIONS, keylen=TEST_KEYLEN)


@pytest.fixture
def fresh_crossbar_router():
    yield from _run_router()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the end of the Crossbar log to the report of a failed test that used a router."""
    report = yield
    if report.failed:
        for name in ROUTER_FIXTURES:
            router = getattr(item, "funcargs", {}).get(name)
            if isinstance(router, CrossbarRouter) and router.log_path is not None:
                report.sections.append((f"crossbar log ({name})", router.log_tail(120)))
    return report


@pytest.fixture(autouse=True)
def _private_analysis_dir(tmp_path_factory, monkeypatch):
    """Services started by tests save analysis state in a temporary folder, never in the checkout."""
    if "LIVETIMING_ANALYSIS_DIR" not in os.environ:
        monkeypatch.setenv("LIVETIMING_ANALYSIS_DIR", str(tmp_path_factory.mktemp("analysis")))
