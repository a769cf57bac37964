"""The bucket mirror behind `sign-vq sync`: the GCS client (:mod:`.gcs`), the manifest (:mod:`.manifest`), what to
fetch (:mod:`.plan`), the download pool (:mod:`.download`) and one run (:mod:`.sync`)."""
