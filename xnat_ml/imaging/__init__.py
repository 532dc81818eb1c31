"""DICOM series, RTSTRUCT and SEG to NIfTI images and label maps, and back: files only."""
