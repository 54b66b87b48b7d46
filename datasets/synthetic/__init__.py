"""Synthetic posed RGB-D video of textured rooms, written in the ScanNet or 7-Scenes layout.

Tooling, not a dataset reader: the files it writes are read by :mod:`datasets` like real
scans. Modules: :mod:`~datasets.synthetic.scene` (rooms, boxes, textures, camera paths),
:mod:`~datasets.synthetic.render` (ray caster), :mod:`~datasets.synthetic.writer` (dataset
layouts, :func:`generate`), :mod:`~datasets.synthetic.cli` (command line).

Each scene is a closed room (textured walls, floor and ceiling) with a few boxes, pictures
and leaning boards, seen by a camera moving smoothly like a hand-held video (a few cm and
about a degree per frame). Rendering is vectorised numpy ray casting with analytic
ray/plane and ray/box intersections; the depth is the exact z-depth (along the optical
axis) of the first hit, so the loaders and the geometry can be checked against it.

Command line (see ``--help``)::

    python -m datasets.synthetic --out /tmp/synth --layout scannet --scenes 10 \\
        --frames 100 --height 480 --width 640 --seed 0

The output is deterministic for a seed (independent of ``--workers``). Each scene is
written to a hidden temporary folder and renamed into place when complete, so an
interrupted run never leaves a scene that looks finished.
"""
