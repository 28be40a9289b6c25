# The netns fixtures live in netns/fixtures.py (a pytest plugin). pytest refuses
# `pytest_plugins` in a conftest below the rootdir, so import the fixtures instead.
from netns.fixtures import topology  # noqa: F401
