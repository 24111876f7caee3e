"""Prefect flows that orchestrate the DVC pipeline (DVC owns the stage graph and caching)."""

import os

# Defaults for the Prefect server these flows talk to, also the temporary one a flow starts when
# PREFECT_API_URL is unset (a user's own setting wins):
# - no anonymous usage reports: a robot's machine may have no network, and the report's start-up
#   row is one more writer on the temporary server's sqlite file at start;
# - wait up to 60 s for sqlite's lock instead of 10: beside a training on a 2-core machine the
#   server's own services and the flow's writes queue for it longer than that ("database is locked");
# - wait up to 90 s for the temporary server to start instead of 20: on a slow 2-core machine with
#   a training beside it, it took longer ("Timed out while attempting to connect to ephemeral
#   Prefect API server").
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
