"""How good the codes are: metrics (:mod:`.metrics`), reconstructions of an archive's poses
(:mod:`.reconstruction`), the validation render (:mod:`.render`) and videos (:mod:`.videos`) and charts (:mod:`.charts`)."""
