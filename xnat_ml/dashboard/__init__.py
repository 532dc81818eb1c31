"""The ML dashboard: a project owner's web pages over any XNAT (docs/dashboard.md).

A Flask blueprint (`views.bp`) that talks to XNAT only over its REST API, through `xnat_ml.xnat`
and the stages' own functions, as the logged-in user: what the user may do is what that XNAT
lets them do. `xnat-ml serve` mounts it at `/ml/`; `xnat-ml dashboard --xnat URL` serves it for
another XNAT (`app.create_app`).
"""
