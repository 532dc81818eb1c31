"""REST paths: every label is one quoted segment, whatever it holds."""

from xnat_ml.xnat.uris import resource_uri, roi_collection_uri, scan_uri, subject_uri


def test_odd_labels_stay_one_segment():
    assert subject_uri("P 1", "a/b?c") == "/data/projects/P%201/subjects/a%2Fb%3Fc"
    assert scan_uri("E1", "2") == "/data/experiments/E1/scans/2"
    assert resource_uri("/data/projects/P/", "Ünïcode #1") == (
        "/data/projects/P/resources/%C3%9Cn%C3%AFcode%20%231"
    )
    assert roi_collection_uri("P", "E1", "../x") == (
        "/xapi/roi/projects/P/sessions/E1/collections/..%2Fx"
    )
