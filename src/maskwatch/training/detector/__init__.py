"""Training maskwatch's own face detector: YuNet fine-tuned on VOC scene sets (``maskwatch train-detector``)."""
