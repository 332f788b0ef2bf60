"""Names fixed by the run-file format (docs/FORMAT.md), shared by the writer and the reader."""

FORMAT_NAME = "actprobe"
FORMAT_VERSION = 1

# The statistics recorded for every site and step, in the order of the last axis of a row.
STATISTICS: tuple[str, ...] = ("count", "mean", "std", "min", "max", "near_zero", "dead", "nonfinite")
