"""mmdetection 3.3 as a second engine: its stock configs edited from a run config, its
runner, and checkpoint conversion between mmdet's and the native detector's names.

Needs the optional ``mmdet`` extra; nothing outside this package imports mmdet.
"""
