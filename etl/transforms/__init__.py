"""Transform files: loading, templates and hot reload."""

from etl.transforms.loader import (
    TransformSpec,
    compile_transform,
    discover_transforms,
    load_transform_file,
)

__all__ = ["TransformSpec", "compile_transform", "discover_transforms", "load_transform_file"]
