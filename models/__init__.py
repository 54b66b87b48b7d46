"""ESTDepth models: ``from models import DepthNetHybrid``."""

from models.depthnet import DepthNetHybrid

__all__ = ["DepthNetHybrid"]
