"""Training with Lightning: the module (:mod:`.module`), the data (:mod:`.data`), the callbacks (:mod:`.callbacks`),
the run's identity and lock (:mod:`.runs`) and one training run (:mod:`.trainer`)."""
