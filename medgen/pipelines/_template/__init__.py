"""A pipeline to copy: a 3D image-to-image method (one MR contrast to another) in two short files.

Copy this folder to `medgen/pipelines/<your_name>/`, rename the class and the config's `pipeline`
default to `<your_name>`, and replace the method. Nothing else in medgen needs to change: the registry finds
the new folder, and registration checks the contract (docs/extending.md walks through it).
"""

from medgen.pipelines._template.method import TemplateTranslation

__all__ = ["TemplateTranslation"]
