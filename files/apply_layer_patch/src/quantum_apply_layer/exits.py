"""The exit codes of `quantum-apply-layer`, shared by the CLI and the service's start-up (see --help)."""

EXIT_CONFIG = 2  # a setting or option is wrong: the message names it and what it accepts
EXIT_REDIS = 3  # Redis cannot be used: down, login refused, or a setting missing
EXIT_REFUSED = 4  # an emergency close the service refused (no position, wrong side, ...)
EXIT_PENDING = 5  # an emergency close with no result within --wait
EXIT_UNCONFIRMED = 6  # a switch set on the primary that no replica confirmed: a failover could lose it
EXIT_EXCHANGE = 7  # the exchange account cannot be traded as it is set up (hedge mode)
