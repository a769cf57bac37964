"""What a pose is: the 178-point skeleton (:mod:`.skeleton`) and reading and normalizing `.pose` files (:mod:`.preprocess`)."""
