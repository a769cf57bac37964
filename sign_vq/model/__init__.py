"""The FSQ autoencoder: the network (:mod:`.network`), its quantizers (:mod:`.quantizers`), the loss (:mod:`.loss`),
windows over long poses (:mod:`.windows`), arrays <-> codes (:mod:`.codes`), checkpoints (:mod:`.checkpoint`) and
shareable model folders (:mod:`.hub`, :mod:`.card`)."""
