"""What ``prefect deploy`` and workers need: the pipeline's deployments, schedules and work pool."""

import flows  # noqa: F401  (sets the telemetry-off defaults before Prefect is imported)
