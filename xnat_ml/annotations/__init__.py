"""Annotations kept in XNAT (OHIF ROI collections) turned into training material."""
