"""Building the training data from poses: per-shard normalize (:mod:`.normalize`), the archive (:mod:`.archive`) and
the table of rejected files (:mod:`.rejected`)."""
