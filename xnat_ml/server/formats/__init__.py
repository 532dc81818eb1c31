"""File formats and value checks: XSD datatypes, names and labels, listings, XML documents,
zip archives, DICOM headers and ROI files. No database and no routes."""
