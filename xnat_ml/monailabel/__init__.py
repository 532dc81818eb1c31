"""MONAI Label's REST API over one XNAT project, so that 3D Slicer's and OHIF's MONAI Label
clients annotate with the project's models and train on its data.

A Flask blueprint (`blueprint.bp`) that the embedded server mounts at ``/monailabel/<project>/``
and ``xnat-ml monailabel`` serves alone; it reaches XNAT only through its REST API, as the
caller (basic auth, or the XNAT alias token ``/auth/token`` handed out as a Bearer token).
See docs/monailabel.md.
"""
