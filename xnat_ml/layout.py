"""Where ML assets live in XNAT: resource labels shared by the commands, tests and dashboard.

Plain project and scan resources, so any XNAT with the Container Service can hold them.
"""

NIFTI_RESOURCE = "NIFTI"  # scan resource: image NIfTI converted from the scan's DICOM
DICOM_RESOURCE = "DICOM"  # scan resource: the series as imported
LABELMAP_RESOURCE = "LABELMAP"  # on an icr:roiCollectionData assessor: masks made from it
MODELS_RESOURCE = "ML_MODELS"  # project resource, folder per model
LABELMAP_FILE = "region2MaskValueMap.txt"  # in ML_MODELS: ROI name -> value, read by roi-to-mask
EVALUATION_FILE = "metrics.json"  # in ML_MODELS/<name>/v<N>.derived/evaluations/<evaluation>/
DATASETS_RESOURCE = "ML_DATASETS"  # project resource, folder per dataset version
CONFIGS_RESOURCE = "ML_CONFIGS"  # project resource: training configs
RUNS_RESOURCE = "ML_RUNS"  # project resource, folder per run id
BATCHES_RESOURCE = "ML_BATCHES"  # project resource: one JSON record per batch (xnat-ml batch run)

ROI_COLLECTION_XSI = "icr:roiCollectionData"
