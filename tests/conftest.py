"""conftest.py -- fixtures that start the real wshub stack for each test.

`make test-integration` runs this suite as
    WSHUB_BUILD=<abs build dir> /usr/bin/python3 -m pytest -q -x tests
so the same tests run against build/ and (make test-asan) build-asan/.

`make_stack(workers=3, options={...}, nginx=True)` starts a hub with a generated config (its own
instance name, free ports, run dir and log file in a private directory under /tmp) and nginx in
front of it, waits until /healthz answers 200, and stops everything at the end of the test:
SIGTERM, SIGKILL after a deadline, then a check that no wshub or nginx process and no segment
was left behind (a teardown error if so). When a test fails, the tails of wshub's log, its
stdout/stderr and nginx's error log are attached to the report and the directory is kept.
"""
import os

import pytest

import wshub_stack
from wshub_stack import Stack

wshub_stack.raise_nofile_limit()


def pytest_report_header(config):
    return "wshub build: %s (nofile limit %d)" % (wshub_stack.BUILD,
                                                   wshub_stack.raise_nofile_limit())


def pytest_sessionstart(session):
    missing = [b for b in ("wshub", "wshub-worker", "wshub-admin")
               if not os.access(wshub_stack.binary(b), os.X_OK)]
    if missing:
        pytest.exit("missing binaries in %s: %s (run make first)" %
                    (wshub_stack.BUILD, ", ".join(missing)), returncode=2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
    if report.failed:
        for i, stack in enumerate(getattr(item, "wshub_stacks", [])):
            report.sections.append(("wshub stack %d logs (%s)" % (i, stack.base), stack.logs()))


@pytest.fixture
def make_stack(request):
    stacks = []
    request.node.wshub_stacks = stacks

    def make(workers=2, options=None, nginx=True, start=True, **kw):
        stack = Stack(workers=workers, options=options, nginx=nginx, **kw)
        stacks.append(stack)
        if start:
            stack.start()
        return stack

    yield make

    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    problems = []
    for stack in stacks:
        stack.teardown(keep=failed)
        problems += stack.problems
        if failed or stack.problems:
            print("wshub test directory kept: %s" % stack.base)
    if problems:
        pytest.fail("teardown found: " + "; ".join(problems), pytrace=False)
