"""Files on disk: pose zips (:mod:`.ziplayout`, :mod:`.posezip`, :mod:`.zipwriter`), shard lists (:mod:`.shards`),
per-point statistics (:mod:`.statistics`) and codes corpora (:mod:`.corpus`)."""
