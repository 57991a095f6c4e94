"""Transform files: loading, templates and hot reload."""

from etl.transforms.loader import (
    TransformSpec,
    compile_transform,
    discover_transforms,
    load_transform_file,
)
from etl.transforms.templates import list_templates, load_template_file, render_template

__all__ = [
    "TransformSpec",
    "compile_transform",
    "discover_transforms",
    "list_templates",
    "load_template_file",
    "load_transform_file",
    "render_template",
]
