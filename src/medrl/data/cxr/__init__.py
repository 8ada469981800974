"""Chest X-ray sources for report generation and visual grounding: MIMIC-CXR-JPG, MS-CXR, VinDr-CXR (DICOM)
and a synthetic stand-in with known boxes and reports. Each is a prep source: (DataConfig, staging) -> rows."""
