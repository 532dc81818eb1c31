"""Sample data: a small brain MRI project with ROI collections, made from nilearn's MNI152
template without network, and built on any XNAT through its REST API.

The builder loads lazily (PEP 562): `xnat-ml --help` should not pay for scipy, pydicom and
xnatpy just because this package registers a verb.
"""

DEFAULT_PROJECT = "SAMPLE"
DEFAULT_SUBJECTS = 12

__all__ = ["DEFAULT_PROJECT", "DEFAULT_SUBJECTS", "SampleSession", "build_sample_project"]


def __getattr__(name: str):
    if name in ("SampleSession", "build_sample_project"):
        from xnat_ml.sample import project

        return getattr(project, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
