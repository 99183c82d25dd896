"""A pytest plugin loaded before conftest (`-p tests.isolate`): sets the caller's QA_* aside."""

import os

# The suite checks the defaults and its own settings, never the caller's: whatever QA_*
# variables the shell holds (and prometheus_client's, which it reads when first imported and
# Settings reads too) are dropped before anything imports the service, and so before any test,
# or server it starts, reads them. Not in tests/__init__.py: servers the tests start import
# tests.fakes, and must keep the QA_* variables the tests gave them.
for _name in [name for name in os.environ
              if name.upper().startswith("QA_") or name.upper() == "PROMETHEUS_MULTIPROC_DIR"]:
    del os.environ[_name]
