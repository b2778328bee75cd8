"""Dense detection heads: the shared interface (:mod:`.base`) and one file per detector."""
