"""Medical image recognition (智能医学影像识别): DICOM in, AI findings and a prioritised worklist out."""
