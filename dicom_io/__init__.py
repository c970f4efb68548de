"""RadCheck DICOM side: reading, validation, selection, pixels, networking, SR."""
