"""Sample data: a small brain MRI project with ROI collections, made from nilearn's MNI152
template without network, and built on any XNAT through its REST API."""

from xnat_ml.sample.project import SampleSession, build_sample_project

__all__ = ["SampleSession", "build_sample_project"]
