"""ONNX export of both twins with one interface, and reduced-precision (fp16, int8)
conversion of the exported files."""
