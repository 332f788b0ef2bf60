"""The exit codes of the ``actprobe`` command, defined once."""

EXIT_OK = 0
EXIT_FINDINGS = 1  # diagnose: a finding reached --fail-on
EXIT_BAD_INPUT = 2  # bad input, or a failure after recording started (what was recorded is kept)
EXIT_INTERRUPTED = 130  # Ctrl-C: what was recorded is kept
