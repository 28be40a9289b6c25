"""Hooks for the whole suite."""

import sys


def pytest_collection_finish(session):
    # Hypothesis' plugin imports all of Hypothesis for its terminal summary,
    # whether or not a test used it: a second of CPU on the host, most of a
    # minute in the kernel matrix's emulated guest (tests/e2e/test_matrix_boot.py),
    # which runs kernel tests only. A session that collected no Hypothesis test
    # (so nothing imported it) runs without the plugin.
    if "hypothesis" not in sys.modules:
        pm = session.config.pluginmanager
        plugin = pm.get_plugin("hypothesispytest")
        if plugin is not None:
            pm.unregister(plugin)
