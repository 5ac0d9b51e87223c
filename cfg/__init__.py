"""The default distillation settings (tsd.yaml), shipped inside the package as ``yolo_tsd.cfg``."""
