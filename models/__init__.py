"""ESTDepth models: ``from models.depthnet import DepthNetHybrid``.

The package face imports nothing, so importing any one module of it loads no other."""
