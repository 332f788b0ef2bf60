"""Analysis: judging and comparing runs that were read from run files; no rendering here.

Owns: the one thresholds table (``thresholds``) and rule engine (``rules``: observations per site),
its two views — by site for ``show`` (``summary``) and by rule with advice (``diagnose``) — and the
tables DIAGNOSE.md is generated from (``rules_doc``); the layer graph's paths (``graph``); what kind
of layer a site is (``roles``); which rows a view looks at (``rows``); a statistic decimated for
figures (``series``); the site matching of ``compare`` (``compare``).

May import: NumPy, ``actprobe.errors`` and ``actprobe.runfile`` (the ``Run`` it reads). Never torch,
the engine, rendering (rich, matplotlib) or the CLI.
"""
