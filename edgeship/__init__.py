"""edgeship: compress a trained PyTorch model and ship it to edge devices.

The Python API (see README.md, "Python API"): ``export``, ``train``, ``load_recipe``, ``load_run``,
``check``, ``profile``, ``provision``, ``report_html``, ``devices``; the run record's schema is ``RunRecord``
(``edgeship.record``). Importing edgeship does not import torch or any converter.
"""

from edgeship.api import check, devices, export, load_recipe, load_run, profile, provision, report_html, train
from edgeship.devices.android import AdbTarget
from edgeship.devices.remote import SshTarget
from edgeship.errors import EdgeshipError, TargetError
from edgeship.recipe import Recipe
from edgeship.record import RunRecord, Verdict
from edgeship.version import __version__

__all__ = ["AdbTarget", "EdgeshipError", "Recipe", "RunRecord", "SshTarget", "TargetError", "Verdict", "__version__",
           "check", "devices", "export", "load_recipe", "load_run", "profile", "provision", "report_html", "train"]
