"""Hardware descriptions with cited sources: the TP links of each GPU type (:mod:`.links`)."""

from llmsim.hardware.links import LinkKind, LinkSpec, find_link_spec, load_link_spec

__all__ = ["LinkKind", "LinkSpec", "find_link_spec", "load_link_spec"]
