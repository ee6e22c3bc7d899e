"""Prefect flows of the pipeline.

Importing this package switches Prefect's telemetry off unless the user has set it explicitly:
nothing phones home from a nightly run by default.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# The plain modules' loggers reach each run's log in the Prefect UI.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ut_pipeline")
# ... and outside a run (the CLI's checks before a flow starts) they simply are not sent there.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# A machine that has never run Prefect creates and migrates its database on the first start of the
# ephemeral server: about 25 s on 2 cores, more than Prefect's default wait of 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
